"""Where ``stream_app.store.UserStore`` keeps the user states of one owned partition.

Both backends hand out, per partition, a mutable mapping of user id (bytes) to state bytes; the
store fills it from the partition's changelog on assignment and gives it back on revocation.

``memory`` (default): a dict per partition; every state of the owned partitions is in RAM.

``rocksdb``: one RocksDB database per partition (``rocksdict``), in a folder of its own under
``STREAM_RECO_STATE_DIR``, with a bounded LRU cache of raw states in front (``CACHE_STATES`` per
partition; a state enters it when read, a write updates it when it is there). The database is a
cache of the changelog, never a source of truth: each assignment restores into a fresh, empty
folder from the changelog's first offset, so nothing written under an earlier ownership (or by
another process) can be served; a revoked partition's database is closed and its folder removed.
Its writes skip RocksDB's write-ahead log for the same reason: after a crash the folder is thrown
away, and the next owner restores from Kafka. Folders of this worker live under
``<state dir>/<changelog>/<pid>-<random>``; the folders of processes that no longer run are
removed when a backend starts there.
"""
from __future__ import annotations

import os
import shutil
import uuid
from collections import OrderedDict
from collections.abc import MutableMapping
from pathlib import Path
from typing import Iterator

CACHE_STATES = 10_000  # raw states kept in memory per partition of the rocksdb backend (~20 MB at 2 KB)
WRITE_BUFFER = 16 * 2**20  # bytes of one memtable (RocksDB's default, 64 MB, is a lot per partition)
BACKENDS = ("memory", "rocksdb")


class MemoryBackend:
    """Every state in a dict per partition."""

    name = "memory"

    def open(self, partition: int) -> MutableMapping:
        return {}

    def release(self, states: MutableMapping) -> None:
        pass

    def close(self) -> None:
        pass


class RocksStates(MutableMapping):
    """One partition's states in a RocksDB database, the most recently used ones also in memory.
    The number of states is counted as they are written (RocksDB only estimates it)."""

    def __init__(self, path: Path, cache_states: int = CACHE_STATES):
        from rocksdict import Options, Rdict, WriteOptions

        self.path = path
        self._options = Options(raw_mode=True)  # bytes in, bytes out: no pickling
        self._options.create_if_missing(True)
        self._options.set_write_buffer_size(WRITE_BUFFER)
        self._db = Rdict(str(path), self._options)
        no_wal = WriteOptions()
        no_wal.disable_wal = True  # the changelog is the log: this folder never outlives its process
        self._db.set_write_options(no_wal)
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._room = cache_states
        self._count = 0

    def get(self, key: bytes, default=None):
        value = self._cache.get(key)
        if value is not None:
            self._cache.move_to_end(key)
            return value
        value = self._db.get(key)
        if value is None:
            return default
        self._remember(key, value)
        return value

    def __getitem__(self, key: bytes) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key) -> bool:
        return key in self._cache or self._db.get(key) is not None

    def __setitem__(self, key: bytes, value: bytes) -> None:
        if key in self._cache:  # write-through; a state enters the cache when it is read
            self._cache[key] = value
            self._cache.move_to_end(key)
        elif self._db.get(key) is None:
            self._count += 1
        self._db.put(key, value)

    def __delitem__(self, key: bytes) -> None:
        if self.pop(key, None) is None:
            raise KeyError(key)

    def pop(self, key: bytes, default=None):
        value = self._cache.pop(key, None)
        if value is None:
            value = self._db.get(key)
        if value is None:
            return default
        self._db.delete(key)
        self._count -= 1
        return value

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._db.keys())

    def __len__(self) -> int:
        return self._count

    def items(self):  # one pass over the database, not a lookup per key
        return list(self._db.items())

    def _remember(self, key: bytes, value: bytes) -> None:
        if not self._room:
            return
        self._cache[key] = value
        self._cache.move_to_end(key)
        if len(self._cache) > self._room:
            self._cache.popitem(last=False)

    def close(self) -> None:
        self._cache.clear()
        self._db.close()


class RocksBackend:
    """A fresh RocksDB database per assigned partition, removed when the partition is released."""

    name = "rocksdb"

    def __init__(self, folder: str | Path, cache_states: int = CACHE_STATES):
        base = Path(folder)
        base.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(base)
        self.root = base / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.root.mkdir()
        self.cache_states = cache_states
        self._open: dict[int, RocksStates] = {}  # id -> open database (a mapping is unhashable)

    def open(self, partition: int) -> RocksStates:
        states = RocksStates(self.root / f"p{partition}-{uuid.uuid4().hex[:8]}", self.cache_states)
        self._open[id(states)] = states
        return states

    def release(self, states: MutableMapping) -> None:
        if self._open.pop(id(states), None) is not None:
            states.close()
            shutil.rmtree(states.path, ignore_errors=True)

    def close(self) -> None:
        for states in list(self._open.values()):
            self.release(states)
        shutil.rmtree(self.root, ignore_errors=True)


def _remove_abandoned(base: Path) -> None:
    """Remove the folders of processes that no longer run (a crash leaves its folder behind)."""
    for child in base.iterdir():
        pid = child.name.split("-", 1)[0]
        if child.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            shutil.rmtree(child, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_backend(kind: str, folder: str | Path = "", changelog: str = "") -> MemoryBackend | RocksBackend:
    """The backend ``kind`` (``BACKENDS``); rocksdb keeps its databases under ``folder/changelog``."""
    if kind == "memory":
        return MemoryBackend()
    if kind == "rocksdb":
        if not folder:
            raise ValueError("the rocksdb state store needs a folder")
        return RocksBackend(Path(folder) / changelog if changelog else folder)
    raise ValueError(f"unknown state store {kind!r}: one of {', '.join(BACKENDS)}")


def backend_for(settings, changelog: str) -> MemoryBackend | RocksBackend:
    """The backend ``settings`` ask for (``state_store``, ``state_dir``; empty dir: under the cache dir)."""
    folder = settings.state_dir or str(Path(settings.cache_dir) / "state")
    return open_backend(settings.state_store, folder, changelog)
