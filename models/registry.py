"""A folder of model versions and the pointer to the one to serve (stdlib only: a worker may read it).

Layout of a models folder (``stream-app train --from-kafka --out DIR``, ``stream-app retrain``)::

    DIR/
      20261206T061502123Z/     one complete checkpoint per version (InterestModel.load reads it),
        config.json ...        plus retrain.json: the data window, the parent version, the figures
        retrain.json           of the new and the serving model on the recent slice, the gate's call
      20261206T071502456Z/
      current                  one line: the name of the version folder to serve

To watch it, read ``current`` (``current_version``), and when the name changed load
``DIR/<name>`` (``current_checkpoint``). Both steps are safe at any moment:

* a version folder appears whole: it is written under a hidden name (``.<version>.partial``)
  and renamed when complete (``commit_version``), and is never changed afterwards;
* ``current`` is replaced atomically (``publish``: written to a temporary file in the same folder,
  flushed to disk, then ``os.replace``), so a reader sees either the old name or the new one,
  never a torn line; it only ever names a folder that exists.

Version names are UTC times to the millisecond, ``YYYYmmddTHHMMSSfffZ``; ``new_version`` never
returns a name at or below one already in the folder, so names sort in the order they were made.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> new_version(d, now=0.0)
'19700101T000000000Z'
>>> (d / '19700101T000000000Z').mkdir()
>>> new_version(d, now=0.0)  # the clock did not move on: still a later name
'19700101T000000001Z'
>>> current_version(d) is None
True
>>> publish(d, '19700101T000000000Z'); current_version(d)
'19700101T000000000Z'
"""
from __future__ import annotations

import os
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

POINTER = "current"
METADATA = "retrain.json"
_FORMAT = "%Y%m%dT%H%M%S"
_NAME = re.compile(r"^\d{8}T\d{6}\d{3}Z$")


def _name(t: datetime) -> str:
    return t.strftime(_FORMAT) + f"{t.microsecond // 1000:03d}Z"


def _parse(name: str) -> datetime:
    t = datetime.strptime(name[:15], _FORMAT).replace(tzinfo=timezone.utc)
    return t + timedelta(milliseconds=int(name[15:18]))


def is_version(name: str) -> bool:
    return bool(_NAME.match(name))


def versions(models_dir: str | Path) -> list[str]:
    """The complete version folders, oldest first."""
    d = Path(models_dir)
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if p.is_dir() and is_version(p.name))


def new_version(models_dir: str | Path, now: float | None = None) -> str:
    """A name for a new version: the UTC time ``now`` (default: the clock), moved on by a
    millisecond past the newest name already there (complete or partial) if it is not later."""
    t = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
    t = t.replace(microsecond=t.microsecond // 1000 * 1000)
    d = Path(models_dir)
    taken = [p.name.strip(".").removesuffix(".partial") for p in d.iterdir()] if d.is_dir() else []
    newest = max((n for n in taken if is_version(n)), default=None)
    if newest is not None and _name(t) <= newest:
        t = _parse(newest) + timedelta(milliseconds=1)
    return _name(t)


def partial_dir(models_dir: str | Path, version: str) -> Path:
    """Where a version is written before it is complete (hidden from ``versions``)."""
    return Path(models_dir) / f".{version}.partial"


def commit_version(models_dir: str | Path, version: str) -> Path:
    """Rename the complete ``partial_dir`` to its version name; returns the version folder."""
    final = Path(models_dir) / version
    os.replace(partial_dir(models_dir, version), final)
    _fsync_dir(Path(models_dir))
    return final


def publish(models_dir: str | Path, version: str) -> None:
    """Point ``current`` at ``version`` (a complete folder), atomically."""
    d = Path(models_dir)
    if not (d / version).is_dir() or not is_version(version):
        raise FileNotFoundError(f"{d / version}: no such version folder")
    tmp = d / f".{POINTER}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(version + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, d / POINTER)
    _fsync_dir(d)


def current_version(models_dir: str | Path) -> str | None:
    """The version ``current`` names, or None before the first publish."""
    try:
        name = (Path(models_dir) / POINTER).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return name or None


def current_checkpoint(models_dir: str | Path) -> Path | None:
    """The folder of the published version (what ``InterestModel.load`` takes), or None."""
    name = current_version(models_dir)
    return None if name is None else Path(models_dir) / name


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
