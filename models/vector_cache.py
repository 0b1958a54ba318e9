"""Vector caches for the text encoder, keyed per text by a content hash (``text_key``): a bounded
in-memory LRU, an optional on-disk store that persists across runs, and ``CachedEncoder``, which
wraps an encoder with both so a text is never encoded twice."""
from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np


def text_key(text: str) -> bytes:
    """The cache key of one text: sha1 of its UTF-8 bytes (20 bytes)."""
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).digest()


def clean_texts(texts: Sequence[str | None]) -> list[str]:
    return ["" if t is None else t if isinstance(t, str) else str(t) for t in texts]


class LRUVectorCache:
    """Bounded in-memory map text key -> vector, least recently used evicted first. Vectors live
    in one growing float32 matrix (at most ``maxsize`` rows); the dict holds row numbers."""

    def __init__(self, maxsize: int, dim: int):
        self.maxsize = max(0, int(maxsize))
        self.dim = dim
        self._rows: OrderedDict[bytes, int] = OrderedDict()
        self._data = np.zeros((0, dim), dtype=np.float32)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        with self._lock:
            for k in keys:
                r = self._rows.get(k)
                if r is not None:
                    self._rows.move_to_end(k)
                    found[k] = self._data[r].copy()
        return found

    def put_many(self, items: Iterable[tuple[bytes, np.ndarray]]) -> None:
        if self.maxsize == 0:
            return
        with self._lock:
            for k, v in items:
                r = self._rows.get(k)
                if r is None:
                    if len(self._rows) >= self.maxsize:
                        _, r = self._rows.popitem(last=False)
                    else:
                        r = len(self._rows)
                        if r >= len(self._data):
                            grow = min(self.maxsize, max(1024, 2 * len(self._data)))
                            data = np.zeros((grow, self.dim), dtype=np.float32)
                            data[:len(self._data)] = self._data
                            self._data = data
                    self._rows[k] = r
                else:
                    self._rows.move_to_end(k)
                self._data[r] = v


class DiskVectorStore:
    """Vectors on disk in one sqlite file, keyed by (namespace, sha1 of text). Safe to share
    between processes (WAL); a namespace separates models, precisions and truncations."""

    def __init__(self, path: str | Path, namespace: str, dim: int):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.namespace = namespace
        self.dim = dim
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False,
                                   isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError:
            pass
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (ns TEXT NOT NULL, key BLOB NOT NULL, "
                         "vec BLOB NOT NULL, PRIMARY KEY (ns, key)) WITHOUT ROWID")

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        nbytes = 4 * self.dim
        with self._lock:
            for s in range(0, len(keys), 500):
                chunk = list(keys[s:s + 500])
                marks = ",".join("?" * len(chunk))
                for k, blob in self._db.execute(
                        f"SELECT key, vec FROM vectors WHERE ns = ? AND key IN ({marks})",
                        [self.namespace, *chunk]):
                    if len(blob) == nbytes:
                        found[bytes(k)] = np.frombuffer(blob, dtype="<f4").astype(np.float32)
        return found

    def put_many(self, items: Iterable[tuple[bytes, np.ndarray]]) -> None:
        rows = [(self.namespace, k, np.ascontiguousarray(v, dtype="<f4").tobytes()) for k, v in items]
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT OR REPLACE INTO vectors (ns, key, vec) VALUES (?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM vectors WHERE ns = ?",
                                    (self.namespace,)).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _store_path(disk_cache: str | Path) -> Path:
    p = Path(disk_cache).expanduser()
    if p.suffix in (".sqlite", ".sqlite3", ".db"):
        return p
    return p / "vectors.sqlite"  # a directory, as the old CachedEncoder took


class CachedEncoder:
    """Wraps an encoder with per-text caches keyed by the sha1 of the text: a bounded in-memory
    LRU (``cache_size`` vectors; 0 turns it off) and, when ``cache_dir`` is given, a sqlite store
    on disk (``cache_dir`` a directory, or a path ending in .sqlite / .db). Repeated texts, in
    one call or across calls and runs, are encoded once. Attributes not defined here (device,
    version, config, ...) are the wrapped encoder's."""

    def __init__(self, encoder, cache_dir: str | Path | None = None,
                 cache_size: int = 100_000):
        self.encoder = encoder
        self.dim = encoder.dim
        namespace = getattr(encoder, "cache_namespace", getattr(encoder, "version", "encoder"))
        self.memory = LRUVectorCache(cache_size, self.dim)
        self.disk = DiskVectorStore(_store_path(cache_dir), namespace, self.dim) if cache_dir else None
        self.stats = {"texts": 0, "memory_hits": 0, "disk_hits": 0, "encoded": 0}

    def __getattr__(self, name: str):
        if name == "encoder":  # not set yet (during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.encoder, name)

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        texts = clean_texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        where: dict[bytes, list[int]] = {}
        for i, t in enumerate(texts):
            where.setdefault(text_key(t), []).append(i)
        keys = list(where)
        found = self.memory.get_many(keys)
        self.stats["memory_hits"] += sum(len(where[k]) for k in found)
        missing = [k for k in keys if k not in found]
        if missing and self.disk is not None:
            from_disk = self.disk.get_many(missing)
            if from_disk:
                self.memory.put_many(from_disk.items())
                found.update(from_disk)
                self.stats["disk_hits"] += sum(len(where[k]) for k in from_disk)
                missing = [k for k in missing if k not in from_disk]
        if missing:
            vecs = np.asarray(self.encoder.encode([texts[where[k][0]] for k in missing], batch_size),
                              dtype=np.float32)
            new = list(zip(missing, vecs))
            self.memory.put_many(new)
            if self.disk is not None:
                self.disk.put_many(new)
            found.update(new)
            self.stats["encoded"] += len(missing)
        for k, rows in where.items():
            out[rows] = found[k]
        self.stats["texts"] += len(texts)
        return out


