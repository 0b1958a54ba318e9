"""The catalogue as vectors: one row per item in each space (text, cf, category), growing as
catalog upserts arrive. Row order is arrival order; ``index[item_id]`` finds a row.

>>> import numpy as np
>>> items = ItemVectors(text_dim=2, cf_dim=2, category_dim=2)
>>> items.upsert("a", text=np.array([1.0, 0.0]), category=np.array([0.0, 1.0]))
0
>>> items.upsert("b", text=np.array([0.0, 1.0]), category=np.array([1.0, 0.0]))
1
>>> len(items), items.space("text").shape, items.space("hybrid").shape, items.index["b"]
(2, (2, 2), (2, 4), 1)
"""
from __future__ import annotations

from typing import Mapping

import numpy as np


class ItemVectors:
    def __init__(self, text_dim: int = 384, cf_dim: int = 64, category_dim: int = 256,
                 cf_factors: Mapping[str, np.ndarray] | None = None, capacity: int = 1024):
        self.dims = {"text": text_dim, "cf": cf_dim, "category": category_dim, "hybrid": text_dim + cf_dim}
        self._rows = {s: np.zeros((capacity, d), dtype=np.float32) for s, d in self.dims.items()}
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self.cf_factors = dict(cf_factors or {})
        self._deleted = np.zeros(capacity, dtype=bool)
        self.version = 0  # bumped on every change; scorers cache item embeddings by it

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item_id: str) -> bool:
        row = self.index.get(item_id)
        return row is not None and not self._deleted[row]

    def delete(self, item_id: str) -> bool:
        """Retire an item: it keeps its row (states stay valid) but is never recommended again."""
        row = self.index.get(item_id)
        if row is None or self._deleted[row]:
            return False
        self._deleted[row] = True
        self.version += 1
        return True

    @property
    def deleted(self) -> np.ndarray:
        """(N,) True for retired items."""
        return self._deleted[: len(self.ids)]

    def upsert(self, item_id: str, text: np.ndarray, category: np.ndarray,
               cf: np.ndarray | None = None) -> int:
        row = self.index.get(item_id)
        if row is None:
            row = len(self.ids)
            if row == self._rows["text"].shape[0]:
                self._rows = {s: np.concatenate([a, np.zeros_like(a)]) for s, a in self._rows.items()}
                self._deleted = np.concatenate([self._deleted, np.zeros_like(self._deleted)])
            self.ids.append(item_id)
            self.index[item_id] = row
        if cf is None:
            cf = self.cf_factors.get(item_id)
        self._rows["text"][row] = text
        self._rows["category"][row] = category
        self._rows["cf"][row] = 0.0 if cf is None else cf
        self._rows["hybrid"][row] = np.concatenate([self._rows["text"][row], self._rows["cf"][row]])
        self._deleted[row] = False
        self.version += 1
        return row

    def space(self, name: str) -> np.ndarray:
        """All rows of one space. ``(N, dim)`` (a view: do not keep across upserts)."""
        return self._rows[name][: len(self.ids)]

    def vectors(self, row: int) -> dict[str, np.ndarray]:
        """One item's vector in every space (views: do not keep across upserts)."""
        return {s: a[row] for s, a in self._rows.items()}
