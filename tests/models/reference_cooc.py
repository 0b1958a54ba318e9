"""The co-engagement rule written plainly, one formula at a time: what the tests hold
``models.cooc`` (a batch of updates at once, rows computed from the non-zero entries only and
kept until the counts change) to, bit for bit."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from models.cooc import CoocModel, CoocParams


def pairs(p: CoocParams, prev_rows: Sequence[int], row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, vals) that one new engagement with ``row`` adds; ``prev_rows`` newest first:
    ``M[r, row] += 1`` and ``M[row, r] += 1`` for the ``window`` newest, then the follow-on bonus
    ``M[r, row] += beta * trans_decay ** d`` for the ``trans_window`` newest."""
    r = np.asarray(list(prev_rows)[: p.span], dtype=np.int64)
    rc, rt = r[: p.window], r[: p.trans_window]
    rows = np.concatenate([rc, np.full(rc.size, row), rt])
    cols = np.concatenate([np.full(rc.size, row), rc, np.full(rt.size, row)])
    vals = np.concatenate([np.ones(2 * rc.size), p.beta * p.trans_decay ** np.arange(rt.size)])
    return rows, cols, vals


def plain_update(m: CoocModel, prev_rows: Sequence[int], row: int) -> None:
    """One first engagement with ``row``, its pairs added one by one (zeros left out)."""
    rows, cols, vals = pairs(m.params, prev_rows, row)
    keep = vals != 0
    m.counts.add(rows[keep], cols[keep], vals[keep])
    m.counts.add_engaged(np.array([row]))


def plain_row(m: CoocModel, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Row ``j`` of the similarity matrix from the whole row of counts, pruned to the ``k`` best
    (ties: the smaller column)."""
    p, c = m.params, m.counts
    n = len(c)
    num = c.row(j)
    cnt = c.n[:n]
    den = (cnt[j] ** p.alpha) * cnt ** (1.0 - p.alpha) + p.shrink
    den[den <= 0] = 1.0
    row = (num / den).astype(np.float32)
    row[j] = 0.0
    idx = np.flatnonzero(row)
    if idx.size > p.k:  # the k largest, ties to the smaller column
        idx = np.sort(idx[np.lexsort((idx, -row[idx]))[: p.k]])
    return idx, row[idx]


def plain_scores(m: CoocModel, recent: Sequence[int]) -> np.ndarray:
    """A user's scores: its ``hist_len`` newest rows' similarity rows, weighted by recency."""
    rows = list(recent)[: m.params.hist_len]
    out = np.zeros(len(m.counts), dtype=np.float64)
    for wd, j in zip(m.params.decay ** np.arange(len(rows)), rows):
        idx, vals = plain_row(m, j)
        out[idx] += wd * vals
    return out
