"""The aggregator's rule one pair message at a time, plainly (``models.cooc.online``'s module
doc): the reference that ``models.cooc.table.RowTable.fold``, a batch at a time, is held to. It
prunes after every message, the table after every batch: the two agree wherever no row passes
``2 * top_m``."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from models.cooc.online import NeighbourRow, decode_delta
from models.cooc.rows import decay_factor


def fold_one(row: NeighbourRow, n: float, ts: int, ids: Sequence[str], weights: Sequence[float], offset: int,
             half_life_ms: float = 0.0, top_m: int = 64) -> bool:
    """Add one pair message read at ``offset``; False (and no change) when ``offset`` is at or
    below the last one folded in."""
    if offset <= row.offset:
        return False
    row.offset = offset
    if half_life_ms > 0 and (row.nb or row.n):
        if ts > row.ts:  # newer: the row is valued at the new time first
            f = float(decay_factor(ts - row.ts, half_life_ms))
            row.n *= f
            row.nb = {k: v * f for k, v in row.nb.items()}
        elif ts < row.ts:
            scale = float(decay_factor(row.ts - ts, half_life_ms))
            weights = [w * scale for w in weights]
            n *= scale
    row.ts = max(row.ts, ts) if (row.nb or row.n) else ts
    row.n += n
    for k, w in zip(ids, weights):
        row.nb[k] = row.nb.get(k, 0.0) + w
    if len(row.nb) > 2 * top_m:
        row.nb = largest(row.nb, top_m)
    return True


def largest(nb: dict[str, float], m: int) -> dict[str, float]:
    """The ``m`` largest entries of ``nb``; among equal weights at the cut, the smaller ids."""
    keys = list(nb)
    vals = np.fromiter(nb.values(), dtype=np.float64, count=len(keys))
    cut = np.partition(vals, vals.size - m)[vals.size - m]
    above = np.flatnonzero(vals > cut)
    tied = sorted(keys[i] for i in np.flatnonzero(vals == cut).tolist())[: m - above.size]
    out = {keys[i]: nb[keys[i]] for i in above.tolist()}
    out.update((k, nb[k]) for k in tied)
    return out


def fold_each(rows: dict[str, NeighbourRow], messages: Sequence[tuple[str, int, bytes]],
              half_life_ms: float = 0.0, top_m: int = 64) -> set[str]:
    """Each (item id, pairs offset, pair message) folded into ``rows[item]`` in turn; the ids of
    the rows that changed."""
    touched = set()
    for item, offset, value in messages:
        row = rows.setdefault(item, NeighbourRow())
        if fold_one(row, *decode_delta(value), offset, half_life_ms, top_m):
            touched.add(item)
    return touched
