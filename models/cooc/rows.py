"""The co-engagement rows a worker follows (``models.cooc.online``), held compactly next to the
checkpoint's counts: per counts row one structured numpy array of (int32 counts row, float32
weight) sorted by row, plus the row's engagements ``n`` and the event time ``ts`` its values are
valued at. ``models.cooc.model.CoocModel`` adds them to the counts when it scores.

With a half-life, every row is valued at ``latest``, the latest ``ts`` among the rows: a row
valued at ``ts`` counts ``2 ** -((latest - ts) / half_life)``. So the scores depend only on
which rows were followed, not on when they arrived. Memory per item: the array's header
(112 bytes) and 8 bytes per neighbour, plus 16 bytes for ``n`` and ``ts`` and the list slot.
"""
from __future__ import annotations

import sys
from typing import Sequence

import numpy as np

NEIGHBOUR = np.dtype([("row", np.int32), ("w", np.float32)])
_EMPTY = np.zeros(0, dtype=NEIGHBOUR)


def decay_factor(age_ms, half_life_ms: float):
    """``2 ** -(age / half_life)``: what a value made ``age_ms`` before the reference time counts
    now; 1 without decay (``half_life_ms`` 0)."""
    if half_life_ms <= 0:
        return np.ones_like(np.asarray(age_ms, dtype=np.float64))
    return np.exp2(-np.asarray(age_ms, dtype=np.float64) / half_life_ms)



class OnlineRows:
    """A worker's followed neighbour rows over the counts' rows (module doc). ``version`` grows
    with every change, so what is computed from them is kept only while it stands."""

    def __init__(self, half_life_ms: float = 0.0):
        self.half_life_ms = float(half_life_ms)
        self.rows: list[np.ndarray] = []  # counts row -> NEIGHBOUR array (sorted by row)
        self.n = np.zeros(0)  # counts row -> engagements, at the row's time
        self.ts = np.zeros(0, dtype=np.int64)  # counts row -> the time its values are valued at
        self.latest = 0  # the latest reference time of any row: every row is valued at it
        self.live = 0  # rows holding anything
        self.version = 0
        self._held = 0  # bytes of the per-row arrays (headers included)

    def __len__(self) -> int:
        return self.live

    def _reserve(self, size: int) -> None:
        if len(self.rows) < size:
            grow = max(size, len(self.rows) + max(64, len(self.rows) // 4))
            self.rows.extend([_EMPTY] * (grow - len(self.rows)))
            self.n = np.concatenate([self.n, np.zeros(grow - self.n.size)])
            self.ts = np.concatenate([self.ts, np.zeros(grow - self.ts.size, dtype=np.int64)])

    def set(self, row: int, n: float, ts: int, cols: Sequence[int], weights: Sequence[float]) -> None:
        """Row ``row`` becomes (n, neighbours ``cols`` with ``weights``) valued at ``ts``."""
        self.set_many([row], [n], [ts], [len(cols)], np.asarray(cols, dtype=np.int64), weights)

    def set_many(self, rows: Sequence[int], n: Sequence[float], ts: Sequence[int], lengths: Sequence[int],
                 cols: np.ndarray, weights: Sequence[float]) -> None:
        """``set`` for several distinct rows at once: row ``rows[k]`` gets the next ``lengths[k]``
        of ``cols`` and ``weights``; sorted and cut into per-row arrays in one pass."""
        if not len(rows):
            return
        targets = np.asarray(rows, dtype=np.int64)
        self._reserve(int(targets.max()) + 1)
        at = np.repeat(np.arange(targets.size), np.asarray(lengths, dtype=np.int64))
        c, w = np.asarray(cols, dtype=np.int32), np.asarray(weights, dtype=np.float32)
        keep = (c != targets[at]) & (w != 0)
        at, c, w = at[keep], c[keep], w[keep]
        order = np.argsort((at.astype(np.int64) << 32) | c, kind="stable")  # by row, then by neighbour
        arr = np.empty(c.size, dtype=NEIGHBOUR)
        arr["row"], arr["w"] = c[order], w[order]
        bounds = np.searchsorted(at[order], np.arange(targets.size + 1)).tolist()
        had = sum(1 for r in targets.tolist() if self.rows[r].size or self.n[r])
        for k, r in enumerate(targets.tolist()):
            a, b = bounds[k], bounds[k + 1]
            self._put(r, arr[a:b].copy() if b > a else _EMPTY)
        self.n[targets], self.ts[targets] = n, ts
        self.latest = max(self.latest, int(self.ts[targets].max()))
        self.live += sum(1 for r in targets.tolist() if self.rows[r].size or self.n[r]) - had
        self.version += 1

    def free(self, row: int) -> None:
        """A deleted item: its row emptied, and it taken out of every other row."""
        if row < len(self.rows):
            had = self.rows[row].size > 0 or self.n[row] != 0
            self._put(row, _EMPTY)
            self.n[row], self.ts[row] = 0.0, 0
            self.live -= int(had)
        for r, arr in enumerate(self.rows):
            if arr.size and (arr["row"] == row).any():
                self._put(r, arr[arr["row"] != row])
        self.version += 1

    def _put(self, row: int, arr: np.ndarray) -> None:
        old = self.rows[row]
        self._held += (sys.getsizeof(arr) if arr is not _EMPTY else 0) - (sys.getsizeof(old) if old is not _EMPTY else 0)
        self.rows[row] = arr

    def scale(self, size: int) -> np.ndarray:
        """(size,) what each row's values count at the latest reference time (1 without decay)."""
        self._reserve(size)
        if self.half_life_ms <= 0:
            return np.ones(size)
        return decay_factor(self.latest - self.ts[:size], self.half_life_ms)

    def counts_n(self, size: int) -> np.ndarray:
        """(size,) the engagements of the first ``size`` rows, valued at the latest time."""
        self._reserve(size)
        return self.n[:size] * self.scale(size)

    def row(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows int64, weights float64) of row ``j``, valued at the latest time."""
        arr = self.rows[j] if j < len(self.rows) else _EMPTY
        w = arr["w"].astype(np.float64)
        if self.half_life_ms > 0 and arr.size:
            w *= float(decay_factor(self.latest - self.ts[j], self.half_life_ms))
        return arr["row"].astype(np.int64), w

    def snapshot(self, j: int, ids: Sequence[str]) -> dict:
        """Row ``j`` as stored (for the web views and tests): n, ts, neighbour id -> weight."""
        arr = self.rows[j] if j < len(self.rows) else _EMPTY
        return {"n": float(self.n[j]) if j < self.n.size else 0.0, "ts": int(self.ts[j]) if j < self.ts.size else 0,
                "neighbours": {ids[r]: float(w) for r, w in zip(arr["row"].tolist(), arr["w"].tolist())}}

    def nbytes(self) -> int:
        """Memory held: the per-row arrays (data and array headers), the per-row n and ts, and
        the list's slots."""
        return self._held + self.n.nbytes + self.ts.nbytes + 8 * len(self.rows)
