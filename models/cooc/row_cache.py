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

from typing import Sequence

import numpy as np


def prune_rows(raws: Sequence[tuple[np.ndarray, np.ndarray]], scale: Sequence[float], col_pow: np.ndarray,
               shrink: float, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pruned similarity rows from raw rows (columns ascending, numerators), all in one pass of
    array operations: row ``r``'s values are ``num / (scale[r] * col_pow[col] + shrink)`` in
    float32 (a denominator <= 0 counts as 1; ``scale[r]`` is ``n[j] ** alpha``), zeros dropped,
    and of more than ``k`` the ``k`` largest kept, ties to the smaller column; columns ascending,
    read-only. Each value is the same float operations as the row alone would get."""
    sizes = np.fromiter((r[0].size for r in raws), np.int64, len(raws))
    seg = np.repeat(np.arange(len(raws)), sizes)  # (T,) each entry's row
    idx = np.concatenate([r[0] for r in raws] + [_NO_COLS]).astype(np.int64, copy=False)
    num = np.concatenate([np.asarray(r[1], dtype=np.float64) for r in raws] + [_NO_NUMS])  # float32 ones exactly
    den = np.asarray(scale, dtype=np.float64)[seg] * col_pow[idx] + shrink
    den[den <= 0] = 1.0
    vals = (num / den).astype(np.float32)
    keep = vals != 0  # a quotient that rounds to zero is no neighbour
    seg, idx, vals = seg[keep], idx[keep], vals[keep]
    sizes = np.bincount(seg, minlength=len(raws))
    if sizes.max(initial=0) > k:  # seg is ascending, and so are the columns within a row
        ends = np.cumsum(sizes).tolist()
        top = np.ones(seg.size, dtype=bool)
        for r in np.flatnonzero(sizes > k).tolist():
            a, b = ends[r] - int(sizes[r]), ends[r]
            top[a:b] = top_k(vals[a:b], k)
        seg, idx, vals = seg[top], idx[top], vals[top]
    bounds = np.searchsorted(seg, np.arange(len(raws) + 1)).tolist()
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        i, v = idx[a:b].copy(), vals[a:b].copy()  # copies: a kept row holds no batch-wide array
        i.flags.writeable = v.flags.writeable = False
        out.append((i, v))
    return out


def top_k(vals: np.ndarray, k: int) -> np.ndarray:
    """(n,) bool: the ``k`` largest of ``vals`` (a row whose columns ascend), ties to the earlier
    position (the smaller column), in linear time (a partition, not a sort).

    >>> top_k(np.array([3.0, 1.0, 3.0, 2.0, 3.0]), 2).tolist()
    [True, False, True, False, False]
    """
    if k <= 0:
        return np.zeros(vals.size, dtype=bool)
    if vals.size <= k:
        return np.ones(vals.size, dtype=bool)
    kth = np.partition(vals, vals.size - k)[vals.size - k]  # the k-th largest value
    keep = vals > kth
    ties = np.flatnonzero(vals == kth)
    keep[ties[: k - int(np.count_nonzero(keep))]] = True
    return keep


_NO_COLS, _NO_NUMS = np.zeros(0, dtype=np.int64), np.zeros(0)


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


class FollowedCache:
    """A ``RowCache`` and what it was computed from (``CoocModel``): ``at`` = (the counts, their
    version, the online rows' version, the parameters, the decay reference time), and the changes
    told since, each a (rows whose raw row changed, rows whose ``n`` changed). ``bring(at)``
    evicts what those changes reach when they are every change since (the same counts object,
    parameters and reference time, and the versions they were told at), else empties the cache."""

    def __init__(self, limit: int):
        self.rows = RowCache(limit)
        self.at: tuple | None = None
        self._seen: tuple = ()  # (counts version, online version) the changes told bring the cache to
        self._changed: list[tuple[np.ndarray, np.ndarray]] = []

    def telling(self, versions: tuple) -> bool:
        """Whether the cache knows every change up to ``versions``: the next one can be told."""
        return self.at is not None and versions == self._seen

    def told(self, telling: bool, rows: np.ndarray, n: np.ndarray, versions: tuple) -> None:
        """``rows`` (raw rows) and the ``n`` of rows ``n`` just changed, nothing else, bringing
        the counts to ``versions`` (``telling``: what ``telling`` said before the change)."""
        if telling:
            self._changed.append((np.asarray(rows, dtype=np.int64), np.asarray(n, dtype=np.int64)))
            self._seen = versions

    def follows(self, at: tuple) -> bool:
        return self.at is not None and all(a is b or a == b for a, b in zip(self.at, at))

    def bring(self, at: tuple) -> RowCache:
        """The cache brought to ``at`` (class doc)."""
        versions = (at[1], at[2])
        old = self.at
        if old is not None and old[0] is at[0] and old[3] == at[3] and old[4] == at[4] and versions == self._seen:
            none = np.zeros(0, np.int64)
            self.rows.evict(np.concatenate([r for r, _ in self._changed] + [none]),
                            np.unique(np.concatenate([n for _, n in self._changed] + [none])))
        else:
            self.rows.clear()
        self.at, self._seen, self._changed = at, versions, []
        return self.rows
