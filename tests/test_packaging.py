"""The wheel ships what the command line offers.

The project is built into a wheel from a copy of the Docker build context (the tree less what
``.dockerignore`` leaves out), installed with ``pip install --target`` into a folder that does not
see the source tree, and run from there with this interpreter (its dependencies), the editable
install of the repository switched off. Then:

- every Python file of ``stream_app/`` and ``models/`` is in the installed copy, with the static
  files of the live page, ``py.typed`` and the JSON Schemas of ``schemas/``;
- every module of the installed ``stream_app`` and ``models`` imports, from the installed copy;
- ``stream-app COMMAND --help`` answers for every command the parser offers (the list comes from
  :func:`stream_app.cli.build_parser`, so a new command is covered), and the console script is
  declared;
- the message schemas load from the installed copy by default (``Codec.load()``, ``Settings``).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stream_app.cli import build_parser
from stream_app.codec import SCHEMA_FILES
from stream_app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stream_app", "models")

# Run before anything else in each child: drop the finder of the editable install, which would
# otherwise fill in, from the source tree, any module the wheel left out.
NO_EDITABLE = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path "
               "if not getattr(f, '__module__', '').startswith('__editable__')]\n")

PROBE = NO_EDITABLE + """
import importlib, json, pkgutil
import stream_app, models
out = {"roots": [stream_app.__file__, models.__file__], "modules": {}, "errors": {}}
for pkg in (stream_app, models):
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        try:
            out["modules"][info.name] = importlib.import_module(info.name).__file__
        except Exception as exc:
            out["errors"][info.name] = repr(exc)
from stream_app.codec import SCHEMAS_DIR, Codec
from stream_app.settings import Settings
out["schemas_dir"] = str(SCHEMAS_DIR)
out["settings_schemas_dir"] = Settings().schemas_dir
out["schemas"] = sorted(Codec.load().schemas)
out["settings_schemas"] = sorted(Codec.load(Settings().schemas_dir).schemas)
import argparse
from stream_app.cli import build_parser
sub = next(a for a in build_parser(Settings())._actions if isinstance(a, argparse._SubParsersAction))
out["commands"] = sorted(sub.choices)
print(json.dumps(out))
"""

HELP = NO_EDITABLE + """
from stream_app.cli import main
sys.argv[0] = "stream-app"
sys.exit(main(sys.argv[1:]))
"""


def commands() -> list[str]:
    parser = build_parser(Settings())
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [ln.strip().strip("/") for ln in lines if ln.strip() and not ln.lstrip().startswith(("#", "!"))]


def copy_build_context(dest: Path) -> Path:
    """The tree as ``COPY . .`` in the Dockerfile sees it (symbolic links kept as links)."""
    patterns = dockerignore_patterns()

    def ignore(folder: str, names: list[str]) -> set[str]:
        rel_dir = Path(folder).relative_to(ROOT)
        out = set()
        for name in names:
            rel = (rel_dir / name).as_posix()
            if any(fnmatch.fnmatch(rel, p) or (p.startswith("**/") and fnmatch.fnmatch(name, p[3:]))
                   for p in patterns):
                out.add(name)
        return out

    shutil.copytree(ROOT, dest, symlinks=True, ignore=ignore)
    return dest


def run(args: list[str], cwd: Path, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    shown = " ".join("<script>" if "\n" in a else a for a in args)
    assert proc.returncode == 0, f"{shown}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict]:
    """(site folder holding the installed wheel, environment that runs Python against it)."""
    tmp = tmp_path_factory.mktemp("packaging")
    src = copy_build_context(tmp / "src")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STREAM_RECO_SCHEMAS_DIR")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PYTHONDONTWRITEBYTECODE="1")
    # No build isolation: setuptools comes from this environment, so nothing is downloaded.
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp / "dist"), str(src)], cwd=tmp, env=env, timeout=300)
    wheels = list((tmp / "dist").glob("*.whl"))
    assert len(wheels) == 1, wheels
    site = tmp / "site"
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target", str(site),
         str(wheels[0])], cwd=tmp, env=env)
    work = tmp / "elsewhere"
    work.mkdir()
    env["PYTHONPATH"] = str(site)
    return site, {"cwd": work, "env": env}


def test_every_source_file_static_file_and_schema_is_installed(installed):
    site, _ = installed
    ignore = {"__pycache__"}
    wanted = {p.relative_to(ROOT).as_posix() for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
              if not ignore & set(p.parts)}
    wanted |= {p.relative_to(ROOT).as_posix() for p in (ROOT / "stream_app" / "static").iterdir() if p.is_file()}
    wanted.add("stream_app/py.typed")
    missing = sorted(f for f in wanted if not (site / f).is_file())
    assert not missing, f"the wheel leaves out {missing}"
    schemas = {p.name for p in (ROOT / "schemas").glob("*.json")}
    assert schemas and schemas <= {p.name for p in site.rglob("*.json")}, "the wheel leaves out the JSON Schemas"
    assert not (site / "tests").exists(), "the wheel ships the tests"


def test_console_script_is_declared(installed):
    site, _ = installed
    entry_points = next(site.glob("stream_reco-*.dist-info")) / "entry_points.txt"
    assert "stream-app = stream_app.cli:main" in entry_points.read_text()


def test_every_module_imports_from_the_installed_copy_and_finds_the_schemas(installed):
    site, how = installed
    out = json.loads(run([sys.executable, "-c", PROBE], **how).stdout.strip().splitlines()[-1])
    assert not out["errors"], f"modules that do not import from the wheel: {out['errors']}"
    outside = {m: f for m, f in out["modules"].items() if not Path(f).is_relative_to(site)}
    assert not outside and all(Path(f).is_relative_to(site) for f in out["roots"]), outside
    for prefix in ("stream_app.dev.", "models.offline."):
        assert any(m.startswith(prefix) for m in out["modules"]), f"no {prefix}* module installed"
    for key in ("schemas_dir", "settings_schemas_dir"):
        assert Path(out[key]).is_relative_to(site), f"{key} = {out[key]}: not the installed copy"
    assert out["schemas"] == out["settings_schemas"] == sorted(SCHEMA_FILES)
    assert out["commands"] == commands(), "the installed command line differs from the source tree's"


@pytest.mark.parametrize("command", commands())
def test_every_command_answers_help_from_the_installed_copy(installed, command):
    _, how = installed
    proc = run([sys.executable, "-c", HELP, command, "--help"], **how)
    assert proc.stdout.startswith(f"usage: stream-app {command}"), proc.stdout[:300]
