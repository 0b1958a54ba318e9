"""The two small steps that end a ranking: the k best scores, and reasons rounded as Python does."""
from __future__ import annotations

import numpy as np


def round6(values: np.ndarray) -> np.ndarray:
    """``round(v, 6)`` of every value, exactly as Python rounds a float (the nearest double to
    the correctly rounded 6-place decimal). rint(v * 1e6) / 1e6 gives that unless v * 1e6 lies
    near a half (the product's rounding could pick the other integer) or is huge: those few go
    through ``round``.

    >>> round6(np.array([0.0078125, 2.5e-7, -1.23456789, 1e300])).tolist()
    [0.007812, 0.0, -1.234568, 1e+300]
    """
    v = np.asarray(values, dtype=np.float64)
    y = v * 1e6
    out = np.rint(y) / 1e6
    with np.errstate(invalid="ignore"):  # inf and nan go to the odd ones
        odd = ~(np.abs(y) < 2.0**40) | (np.abs(y - np.floor(y) - 0.5) < 1e-3)
    for i in np.flatnonzero(odd):
        out.flat[i] = round(float(v.flat[i]), 6)
    return out


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best finite scores, best first; ties broken by lower index.

    >>> top_k(np.array([0.1, 0.9, -np.inf, 0.9, 0.5]), 3).tolist()
    [1, 3, 4]
    """
    finite = np.isfinite(scores).nonzero()[0]
    k = min(k, finite.size)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if k < finite.size:
        neg = -scores[finite]
        kth = np.partition(neg, [k - 1, k])  # two pivots: much faster than one here
        if kth[k - 1] < kth[k]:  # the k best are unambiguous: the same set as argpartition's
            cand = finite[(neg <= kth[k - 1]).nonzero()[0]]
        else:  # a tie across the cut: argpartition decides which tied items are in, as always
            cand = finite[np.argpartition(neg, k - 1)[:k]]
    else:
        cand = finite
    return cand[np.lexsort((cand, -scores[cand]))][:k]
