"""The catalogue as vectors: one row per item in each space (text, cf, category). ``index[item_id]``
finds a live item's row; ``ids[row]`` names it.

A deleted item frees its row: it leaves ``index``, its row is masked (``deleted``) and its id in
``ids`` becomes ``FREE`` until a new item takes the row (the lowest free row first; its vectors
are overwritten). So a catalogue with churn keeps as many rows as it ever had live items at once,
not one per item it ever saw. Whatever caches something per row keys it by ``layout`` (bumped
whenever a row changes hands) or ``version`` (bumped on every change).

Storage: text and cf side by side in one float32 array, which is the hybrid space (text and cf
are its column ranges), so no space is held twice. The category space (hashed multi-hot, a few
non-zero buckets per item) is held sparse: up to ``CATEGORY_NNZ`` (bucket, value) pairs a row,
the rare fuller row dense in a side table; ``space("category")`` is a ``SparseRows``, which
``take``s, slices and multiplies as the dense (N, buckets) array would, with the same values.

>>> import numpy as np
>>> items = ItemVectors(text_dim=2, cf_dim=2, category_dim=2)
>>> items.upsert("a", text=np.array([1.0, 0.0]), category=np.array([0.0, 1.0]))
0
>>> items.upsert("b", text=np.array([0.0, 1.0]), category=np.array([1.0, 0.0]))
1
>>> len(items), items.space("text").shape, items.space("hybrid").shape, items.index["b"]
(2, (2, 2), (2, 4), 1)
>>> items.delete("a"), "a" in items, items.ids, items.live
(True, False, ['', 'b'], 1)
>>> items.upsert("c", text=np.array([1.0, 1.0]), category=np.array([1.0, 1.0]))  # takes the free row
0
>>> items.space("category").take([1, 0], axis=0).tolist(), items.vectors(1)["category"].tolist()
([[1.0, 0.0], [1.0, 1.0]], [1.0, 0.0])
>>> v = items.version; items.upsert("b", text=np.array([0.5, 0.5]), category=np.array([1.0, 0.0]))
1
>>> items.changed_since(v).tolist(), items.changed_since(0).tolist()
([1], [0, 1])
"""
from __future__ import annotations

import heapq
from typing import Mapping

import numpy as np

from models.seen import item_key

FREE = ""  # ``ids[row]`` of a free row (item ids are never empty)
GROWTH = 1.25  # the per-row arrays grow by this factor when full
CATEGORY_NNZ = 8  # non-zero category buckets a row holds in place (a fuller row: the side table)
_FULL = 255  # ``_cat_n`` of a row held in the side table
MATMUL_ROWS = 8192  # rows per step of ``SparseRows @ W`` (at least 4096 each: see there)


class SparseRows:
    """The first ``n`` category rows of an ``ItemVectors``, read as a dense (n, buckets) float32
    array: ``take``, ``[rows]``, ``@``, ``np.asarray``. Valid until the catalogue changes."""

    dtype = np.dtype(np.float32)
    ndim = 2

    def __init__(self, items: "ItemVectors", n: int):
        self._items, self._n = items, n
        self.shape = (n, items.dims["category"])

    def __len__(self) -> int:
        return self._n

    def take(self, rows, axis: int = 0) -> np.ndarray:
        if axis != 0:
            raise ValueError("SparseRows.take: rows only (axis=0)")
        rows = np.asarray(rows, dtype=np.intp)
        if rows.size == 1:  # one event's item (an offline replay folds one at a time)
            r = int(rows.reshape(-1)[0])
            if not -self._n <= r < self._n:
                raise IndexError("row out of range")
            return self._items._category_dense_row(r + self._n if r < 0 else r).reshape(*rows.shape, -1)
        if rows.size and (rows.min() < -self._n or rows.max() >= self._n):
            raise IndexError("row out of range")
        return self._items._category_dense(np.where(rows < 0, rows + self._n, rows))

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):
            return self[key[0]][(slice(None), *key[1:])]
        if isinstance(key, (int, np.integer)):
            return self.take([key])[0]
        return self.take(np.arange(self._n)[key])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.take(np.arange(self._n))
        return out if dtype is None else out.astype(dtype, copy=False)

    def __matmul__(self, W) -> np.ndarray:
        """``dense @ W``, a block of rows at a time, to float32 rounding. Every block has at least
        4096 rows (or is all of them), so the BLAS runs its large-matrix kernel on each (bit-equal
        to the whole array's with an AVX-512 kernel; a few rows would take another kernel)."""
        W = np.asarray(W)
        n = self._n
        if n <= 2 * MATMUL_ROWS:
            return np.asarray(self) @ W
        out = np.empty((n, W.shape[1]), dtype=np.result_type(np.float32, W.dtype))
        starts = list(range(0, n - MATMUL_ROWS, MATMUL_ROWS))  # the last block: MATMUL_ROWS..2x rows
        for a, b in zip(starts, starts[1:] + [n]):
            out[a:b] = self.take(np.arange(a, b)) @ W
        return out


class ColumnRows:
    """Text or cf rows (a column range of the hybrid array) with a ``take`` that reads only the
    rows asked for: ``ndarray.take`` of such a strided view first copies the whole array."""

    def __init__(self, view: np.ndarray):
        self._view = view
        self.shape, self.dtype, self.ndim = view.shape, view.dtype, view.ndim

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, rows, axis: int = 0) -> np.ndarray:
        if axis != 0:
            raise ValueError("ColumnRows.take: rows only (axis=0)")
        return self._view[np.asarray(rows, dtype=np.intp)]


class ItemVectors:
    def __init__(self, text_dim: int = 384, cf_dim: int = 64, category_dim: int = 256,
                 cf_factors: Mapping[str, np.ndarray] | None = None, capacity: int = 1024):
        self.dims = {"text": text_dim, "cf": cf_dim, "category": category_dim, "hybrid": text_dim + cf_dim}
        # text and cf side by side in one array: the hybrid space is that array, text and cf are
        # its column ranges (views), so no space is stored twice
        self._hybrid = np.zeros((capacity, text_dim + cf_dim), dtype=np.float32)
        self._cat_n = np.zeros(capacity, dtype=np.uint8)  # non-zero buckets of the row (_FULL: side table)
        self._cat_idx = np.zeros((capacity, CATEGORY_NNZ), dtype=np.uint16 if category_dim <= 65536 else np.int64)
        self._cat_val = np.zeros((capacity, CATEGORY_NNZ), dtype=np.float32)
        self._cat_full: dict[int, np.ndarray] = {}  # row -> its dense category vector (more non-zeros)
        self.ids: list[str] = []  # row -> item id (FREE: a free row)
        self.index: dict[str, int] = {}  # live item id -> row
        self.cf_factors = dict(cf_factors or {})
        self._deleted = np.zeros(capacity, dtype=bool)
        self._published = np.full(capacity, np.nan)  # row -> publishing time, ms (NaN: unknown)
        self._changed = np.zeros(capacity, dtype=np.int64)  # row -> ``version`` of its last change
        self._free: list[int] = []  # heap of free rows
        self._keys = np.zeros(0, dtype=np.int64)  # row -> item_key(ids[row]), filled on demand
        self.version = 0  # bumped on every change; scorers cache item embeddings by it
        self.layout = 0  # bumped whenever a row gets another item (appended, freed, reused)

    @property
    def capacity(self) -> int:
        """Rows allocated (``len`` of them in use)."""
        return self._hybrid.shape[0]

    def _grow(self) -> None:
        """Room for more rows: the arrays by ``GROWTH`` each, one at a time (so at most one
        array is held twice while it is copied). The new rows are zero pages that the system
        maps only once written, so unused capacity costs address space, not memory (but for the
        publishing times, whose new rows are written with NaN: 8 bytes a row)."""
        cap = max(self.capacity + 1, int(self.capacity * GROWTH))
        for name in ("_hybrid", "_cat_n", "_cat_idx", "_cat_val", "_deleted", "_changed", "_published"):
            old = getattr(self, name)
            new = np.zeros((cap, *old.shape[1:]), dtype=old.dtype)
            if name == "_published":
                new[old.shape[0]:] = np.nan
            new[: old.shape[0]] = old
            setattr(self, name, new)
            del old, new

    def __len__(self) -> int:
        """Rows, free ones included (the length of every per-row array)."""
        return len(self.ids)

    @property
    def live(self) -> int:
        """Live items."""
        return len(self.index)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.index

    def delete(self, item_id: str) -> bool:
        """Retire an item: never recommended again, its row free for a later item. User states
        keep item ids, not rows, so one that still lists it stays valid (the id is unknown)."""
        row = self.index.pop(item_id, None)
        if row is None:
            return False
        self._deleted[row] = True
        self._published[row] = np.nan
        self.ids[row] = FREE
        if row < self._keys.size:
            self._keys[row] = item_key(FREE)
        heapq.heappush(self._free, row)
        self.version += 1
        self._changed[row] = self.version
        self.layout += 1
        return True

    @property
    def deleted(self) -> np.ndarray:
        """(N,) True for free rows (retired items)."""
        return self._deleted[: len(self.ids)]

    @property
    def published(self) -> np.ndarray:
        """(N,) each row's publishing time in ms (the catalogue event's ``published_ts``), NaN
        where unknown or free."""
        return self._published[: len(self.ids)]

    def _take_row(self, item_id: str) -> int:
        """A row for a new item: the lowest free one, else a new one at the end."""
        if not item_id:
            raise ValueError("an item id is never empty")
        if self._free:
            row = heapq.heappop(self._free)
            self.ids[row] = item_id
            if row < self._keys.size:
                self._keys[row] = item_key(item_id)
        else:
            row = len(self.ids)
            if row == self.capacity:
                self._grow()
            self.ids.append(item_id)
        self.index[item_id] = row
        self.layout += 1
        return row

    def upsert(self, item_id: str, text: np.ndarray, category: np.ndarray,
               cf: np.ndarray | None = None, published_ts: float | None = None) -> int:
        row = self.index.get(item_id)
        if row is None:
            row = self._take_row(item_id)
        if cf is None:
            cf = self.cf_factors.get(item_id)
        t = self.dims["text"]
        self._hybrid[row, :t] = text
        self._hybrid[row, t:] = 0.0 if cf is None else cf
        self._set_category(row, category)
        self._published[row] = np.nan if published_ts is None else float(published_ts)
        self._deleted[row] = False
        self.version += 1
        self._changed[row] = self.version
        return row

    def changed_since(self, version: int) -> np.ndarray:
        """Rows written, freed or taken after ``version`` (ascending): what a cache made at that
        version must redo (rows added since are among them)."""
        return np.flatnonzero(self._changed[: len(self.ids)] > version)

    def keys(self) -> np.ndarray:
        """(N,) ``models.seen.item_key`` of each row's id (``FREE`` for a free row)."""
        n = len(self.ids)
        if self._keys.size < n:
            new = [item_key(i) for i in self.ids[self._keys.size:n]]
            self._keys = np.concatenate([self._keys, np.array(new, dtype=np.int64)])
        return self._keys[:n]

    def _space(self, name: str) -> np.ndarray:
        t = self.dims["text"]
        if name == "hybrid":
            return self._hybrid
        if name == "text":
            return self._hybrid[:, :t]
        if name == "cf":
            return self._hybrid[:, t:]
        raise KeyError(name)

    def space(self, name: str) -> np.ndarray:
        """All rows of one space. ``(N, dim)`` (a view: do not keep across upserts; text and cf
        are column ranges of hybrid, so not contiguous)."""
        if name == "category":
            return SparseRows(self, len(self.ids))
        return self._space(name)[: len(self.ids)]

    def row_spaces(self) -> dict[str, "np.ndarray | ColumnRows | SparseRows"]:
        """Every space as something whose ``take(rows, axis=0)`` gives those rows (as
        ``space(name)[rows]``), reading only them: for ``models.fold`` and the item tower."""
        return {s: ColumnRows(self.space(s)) if s in ("text", "cf") else self.space(s) for s in self.dims}

    def vectors(self, row: int) -> dict[str, np.ndarray]:
        """One item's vector in every space (views, the category one a copy: do not keep across
        upserts)."""
        return {s: self._category_dense(np.array([row]))[0] if s == "category" else self._space(s)[row]
                for s in self.dims}

    def _set_category(self, row: int, category: np.ndarray) -> None:
        v = np.asarray(category, dtype=np.float32).reshape(-1)
        if v.shape[0] != self.dims["category"]:
            raise ValueError(f"category vector of {v.shape[0]} buckets, not {self.dims['category']}")
        nz = np.flatnonzero(v)
        self._cat_full.pop(row, None)
        self._cat_idx[row] = 0
        self._cat_val[row] = 0.0
        if nz.size > CATEGORY_NNZ:
            self._cat_n[row] = _FULL
            self._cat_full[row] = v.copy()
        else:
            self._cat_n[row] = nz.size
            self._cat_idx[row, :nz.size] = nz
            self._cat_val[row, :nz.size] = v[nz]

    def _category_dense_row(self, row: int) -> np.ndarray:
        """(buckets,) float32: the category vector of one row (``_category_dense`` of one)."""
        n = int(self._cat_n[row])
        if n == _FULL:
            return self._cat_full[row].astype(np.float32, copy=True)
        out = np.zeros(self.dims["category"], dtype=np.float32)
        out[self._cat_idx[row, :n]] = self._cat_val[row, :n]
        return out

    def _category_dense(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), buckets) float32: the category vectors of ``rows``."""
        out = np.zeros((len(rows), self.dims["category"]), dtype=np.float32)
        if not len(rows):
            return out
        n = self._cat_n[rows]
        mask = np.arange(CATEGORY_NNZ) < np.where(n == _FULL, 0, n)[:, None]
        at = np.broadcast_to(np.arange(len(rows))[:, None], mask.shape)[mask]
        out[at, self._cat_idx[rows][mask]] = self._cat_val[rows][mask]
        for i in np.flatnonzero(n == _FULL).tolist():
            out[i] = self._cat_full[int(rows[i])]
        return out

    def nbytes(self) -> int:
        """Bytes held by the per-row arrays (their capacity) and the side table."""
        return int(self._hybrid.nbytes + self._cat_n.nbytes + self._cat_idx.nbytes + self._cat_val.nbytes
                   + sum(v.nbytes for v in self._cat_full.values()) + self._deleted.nbytes + self._changed.nbytes
                   + self._published.nbytes + self._keys.nbytes)
