"""A batch's co-engagement additions summed per target row (``CoocModel.delta_columns``): what a
worker sends as pair messages instead of applying them (``models.cooc.online``)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from models.cooc.rows import decay_factor


class RowDelta(NamedTuple):
    """What one target row of the counts receives from a batch of first engagements: ``n``
    (its engagements), ``ts`` (the event time, ms, the values are valued at: the latest of its
    contributing events; 0 without times), ``cols`` (rows, ascending) and ``vals`` (float32)."""

    n: float
    ts: int
    cols: np.ndarray
    vals: np.ndarray


class Deltas(NamedTuple):
    """``CoocModel.deltas`` in columns: the target ``rows`` (T,) ascending, their ``n`` (T,) and
    ``ts`` (T,), and target t's cells ``cols[bounds[t]:bounds[t + 1]]`` (ascending) with their
    float32 ``vals``."""

    rows: np.ndarray
    n: np.ndarray
    ts: np.ndarray
    bounds: np.ndarray
    cols: np.ndarray
    vals: np.ndarray

    def by_row(self) -> dict[int, RowDelta]:
        b = self.bounds.tolist()
        return {t: RowDelta(nk, tk, self.cols[b[i]:b[i + 1]], self.vals[b[i]:b[i + 1]])
                for i, (t, nk, tk) in enumerate(zip(self.rows.tolist(), self.n.tolist(), self.ts.tolist()))}


NO_DELTAS = Deltas(np.zeros(0, np.intp), np.zeros(0), np.zeros(0, np.int64), np.zeros(1, np.intp),
                    np.zeros(0, np.intp), np.zeros(0, np.float32))


def sum_per_row(rows, cols, vals, at, engaged, when, half_life_ms: float, size: int) -> Deltas:
    """``CoocModel.deltas``' sums: additions (rows, cols, vals) made at event times ``at``, and
    engagements of ``engaged`` at ``when`` (rows below ``size``), summed per (row, col) in float32
    in the order given (``np.add.at``, as ``CoocCounts.add`` adds), each valued at its row's
    latest time. Cells are grouped by a stable radix sort (16-bit digits), not a comparison sort."""
    present = np.zeros(size, dtype=bool)
    present[rows], present[engaged] = True, True
    targets = np.flatnonzero(present)
    slot = np.cumsum(present) - 1  # row -> its place in ``targets``
    latest = np.full(targets.size, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(latest, slot[rows], at)
    np.maximum.at(latest, slot[engaged], when)
    if half_life_ms > 0:
        vals = vals * decay_factor(latest[slot[rows]] - at, half_life_ms)
    n = np.zeros(targets.size)
    np.add.at(n, slot[engaged], decay_factor(latest[slot[engaged]] - when, half_life_ms))
    order = _cell_order(rows, cols, size)
    r, c = rows[order], cols[order]
    new = np.ones(order.size, dtype=bool)
    new[1:] = (r[1:] != r[:-1]) | (c[1:] != c[:-1])
    inverse = np.empty(order.size, dtype=np.intp)
    inverse[order] = np.cumsum(new) - 1
    sums = np.zeros(int(new.sum()), dtype=np.float32)
    np.add.at(sums, inverse, vals.astype(np.float32))
    cell_rows, cell_cols = r[new], c[new]
    bounds = np.searchsorted(cell_rows, np.append(targets, size), "left")  # every target's cells
    return Deltas(targets, n, latest, bounds, cell_cols, sums)


def _cell_order(rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """A stable order of the cells by (row, col): least significant 16-bit digit first, each
    pass a stable (radix) sort of uint16 keys."""
    order = np.arange(rows.size)
    digits = max(1, (int(size) - 1).bit_length() + 15 >> 4)
    for key in (cols, rows):
        for d in range(digits):
            digit = ((key[order] >> (16 * d)) & 0xFFFF).astype(np.uint16)
            order = order[np.argsort(digit, kind="stable")]
    return order
