"""The catalogue as vectors: one row per item in each space (text, cf, category). ``index[item_id]``
finds a live item's row; ``ids[row]`` names it.

A deleted item frees its row: it leaves ``index``, its row is masked (``deleted``) and its id in
``ids`` becomes ``FREE`` until a new item takes the row (the lowest free row first; its vectors
are overwritten). So a catalogue with churn keeps as many rows as it ever had live items at once,
not one per item it ever saw. Whatever caches something per row keys it by ``layout`` (bumped
whenever a row changes hands) or ``version`` (bumped on every change).

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
"""
from __future__ import annotations

import heapq
from typing import Mapping

import numpy as np

from models.seen import item_key

FREE = ""  # ``ids[row]`` of a free row (item ids are never empty)
GROWTH = 1.25  # the per-row arrays grow by this factor when full


class ItemVectors:
    def __init__(self, text_dim: int = 384, cf_dim: int = 64, category_dim: int = 256,
                 cf_factors: Mapping[str, np.ndarray] | None = None, capacity: int = 1024):
        self.dims = {"text": text_dim, "cf": cf_dim, "category": category_dim, "hybrid": text_dim + cf_dim}
        # text and cf side by side in one array: the hybrid space is that array, text and cf are
        # its column ranges (views), so no space is stored twice
        self._hybrid = np.zeros((capacity, text_dim + cf_dim), dtype=np.float32)
        self._category = np.zeros((capacity, category_dim), dtype=np.float32)
        self.ids: list[str] = []  # row -> item id (FREE: a free row)
        self.index: dict[str, int] = {}  # live item id -> row
        self.cf_factors = dict(cf_factors or {})
        self._deleted = np.zeros(capacity, dtype=bool)
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
        maps only once written, so unused capacity costs address space, not memory."""
        cap = max(self.capacity + 1, int(self.capacity * GROWTH))
        for name in ("_hybrid", "_category", "_deleted"):
            old = getattr(self, name)
            new = np.zeros((cap, *old.shape[1:]), dtype=old.dtype)
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
        self.ids[row] = FREE
        if row < self._keys.size:
            self._keys[row] = item_key(FREE)
        heapq.heappush(self._free, row)
        self.version += 1
        self.layout += 1
        return True

    @property
    def deleted(self) -> np.ndarray:
        """(N,) True for free rows (retired items)."""
        return self._deleted[: len(self.ids)]

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
               cf: np.ndarray | None = None) -> int:
        row = self.index.get(item_id)
        if row is None:
            row = self._take_row(item_id)
        if cf is None:
            cf = self.cf_factors.get(item_id)
        t = self.dims["text"]
        self._hybrid[row, :t] = text
        self._hybrid[row, t:] = 0.0 if cf is None else cf
        self._category[row] = category
        self._deleted[row] = False
        self.version += 1
        return row

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
        if name == "category":
            return self._category
        raise KeyError(name)

    def space(self, name: str) -> np.ndarray:
        """All rows of one space. ``(N, dim)`` (a view: do not keep across upserts; text and cf
        are column ranges of hybrid, so not contiguous)."""
        return self._space(name)[: len(self.ids)]

    def vectors(self, row: int) -> dict[str, np.ndarray]:
        """One item's vector in every space (views: do not keep across upserts)."""
        return {s: self._space(s)[row] for s in self.dims}

    def nbytes(self) -> int:
        """Bytes held by the per-row arrays (their capacity)."""
        return self._hybrid.nbytes + self._category.nbytes + self._deleted.nbytes + self._keys.nbytes
