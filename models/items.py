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


class ItemVectors:
    def __init__(self, text_dim: int = 384, cf_dim: int = 64, category_dim: int = 256,
                 cf_factors: Mapping[str, np.ndarray] | None = None, capacity: int = 1024):
        self.dims = {"text": text_dim, "cf": cf_dim, "category": category_dim, "hybrid": text_dim + cf_dim}
        self._rows = {s: np.zeros((capacity, d), dtype=np.float32) for s, d in self.dims.items()}
        self.ids: list[str] = []  # row -> item id (FREE: a free row)
        self.index: dict[str, int] = {}  # live item id -> row
        self.cf_factors = dict(cf_factors or {})
        self._deleted = np.zeros(capacity, dtype=bool)
        self._free: list[int] = []  # heap of free rows
        self._keys = np.zeros(0, dtype=np.int64)  # row -> item_key(ids[row]), filled on demand
        self.version = 0  # bumped on every change; scorers cache item embeddings by it
        self.layout = 0  # bumped whenever a row gets another item (appended, freed, reused)

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
            if row == self._rows["text"].shape[0]:
                self._rows = {s: np.concatenate([a, np.zeros_like(a)]) for s, a in self._rows.items()}
                self._deleted = np.concatenate([self._deleted, np.zeros_like(self._deleted)])
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
        self._rows["text"][row] = text
        self._rows["category"][row] = category
        self._rows["cf"][row] = 0.0 if cf is None else cf
        self._rows["hybrid"][row] = np.concatenate([self._rows["text"][row], self._rows["cf"][row]])
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

    def space(self, name: str) -> np.ndarray:
        """All rows of one space. ``(N, dim)`` (a view: do not keep across upserts)."""
        return self._rows[name][: len(self.ids)]

    def vectors(self, row: int) -> dict[str, np.ndarray]:
        """One item's vector in every space (views: do not keep across upserts)."""
        return {s: a[row] for s, a in self._rows.items()}

    def nbytes(self) -> int:
        """Bytes held by the per-row arrays (their capacity)."""
        return sum(a.nbytes for a in self._rows.values()) + self._deleted.nbytes + self._keys.nbytes
