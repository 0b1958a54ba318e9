"""Computed similarity rows of the co-engagement counts, kept until what they were computed from
changes (numpy only; serving core).

Pruned row ``j`` of ``S`` (``models.cooc.model``) is a function of row ``j`` of the counts (with
the followed online row ``j``: together its *raw row*, columns and numerators), of ``n[j]``, and
of ``n[c]`` for every column ``c`` of the raw row, the pruned ones included (a column's count
decides whether it makes the cut). So the cache keeps, per row, its raw row and its pruned row,
and a change of the counts (``evict``) drops

* the whole entry of a row whose raw row changed, and
* only the pruned row of a row with a changed ``n`` among itself and its columns: the next ask
  prunes the kept raw row again (the same float operations on the same numbers, so the same bits)
  without reading the counts' row again.

Everything else stays, so a worker whose online rows change every batch keeps the rows of the
items its batch did not reach, and re-prunes those whose columns' counts moved. At ``limit`` rows
the older half is dropped (rows in the order they were computed).
"""
from __future__ import annotations

import numpy as np


class RowCache:
    """Row -> raw row (columns, numerators) and pruned row (columns, values) or None."""

    def __init__(self, limit: int):
        self.limit = limit
        self.raw: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.pruned: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.evicted = 0  # entries or pruned rows dropped by ``evict`` (for tests and benchmarks)

    def __len__(self) -> int:
        return len(self.raw)

    def get(self, j: int) -> tuple[np.ndarray, np.ndarray] | None:
        return self.pruned.get(j)

    def put(self, j: int, raw: tuple[np.ndarray, np.ndarray], pruned: tuple[np.ndarray, np.ndarray]) -> None:
        if j not in self.raw and len(self.raw) >= self.limit:
            for k in list(self.raw)[: len(self.raw) // 2 + 1]:
                del self.raw[k]
                self.pruned.pop(k, None)
        self.raw[j], self.pruned[j] = raw, pruned

    def clear(self) -> None:
        self.raw.clear()
        self.pruned.clear()

    def evict(self, rows: np.ndarray, counts: np.ndarray) -> None:
        """``rows``: counts rows whose raw row changed; ``counts``: rows whose ``n`` changed (both
        int64). Drops what they reach (module doc)."""
        for k in set(rows.tolist()).intersection(self.raw):
            del self.raw[k]
            self.pruned.pop(k, None)
            self.evicted += 1
        if not self.pruned or not counts.size:
            return
        keys = np.fromiter(self.pruned, np.int64, len(self.pruned))
        size = max(int(counts.max()), int(keys.max())) + 1
        hit = np.zeros(size, dtype=bool)
        hit[counts] = True
        deps = [self.raw[k][0] for k in keys.tolist()]
        cols = np.concatenate(deps)
        owner = np.repeat(np.arange(keys.size), [d.size for d in deps])
        reached = hit[keys].copy()
        reached[owner[hit[np.minimum(cols, size - 1)] & (cols < size)]] = True
        for k in keys[reached].tolist():
            del self.pruned[k]
        self.evicted += int(reached.sum())
