"""``models.fold.step`` compiled: a batch's events folded one after another, to the same bits.

In ``models.fold`` a batch runs in rounds (the r-th event of every state at once), and a round
costs ~30 numpy calls whatever its size: a user with 300 events in a batch means 300 rounds, most
of them for that user alone. Compiled with numba, the loop runs event by event at the cost of its
arithmetic. Each operation is the one ``step`` does, in the same order and precision (float64
norms, float32 products, sums and quotients: no fused multiply-add, as numba does not contract
without ``fastmath``), and the float16 rounding is ``half_round``'s, element by element, so the
states are bit for bit those of ``step`` (``tests/models/test_fold.py`` runs both).

Optional: without numba (``pip install numba``), ``available`` is False and ``models.fold`` runs
its rounds.
"""
from __future__ import annotations

import numpy as np

try:
    from numba import njit
except ImportError:  # pragma: no cover - exercised where numba is absent
    njit = None

available = njit is not None


def _fold_events(norm, mean, slot, decay, w, table, row, bounds):  # pragma: no cover - compiled
    """norm (S, n) float64 and mean (S, L) float32 in place; event e: state slot[e], scalars
    decay[e], w[e] (n,) float64, item vector table[row[e]] (L,) float32; dimension d's part of
    L is bounds[d]:bounds[d + 1]."""
    n = norm.shape[1]
    buf = np.empty(mean.shape[1], dtype=np.float32)
    bits = buf.view(np.uint32)
    one = np.empty(1, dtype=np.uint32)  # a scalar's bits as float32
    one_f = one.view(np.float32)
    for e in range(slot.shape[0]):
        s, x = slot[e], table[row[e]]
        for d in range(n):
            old = norm[s, d] * decay[e, d]
            new = old + abs(w[e, d])
            if new <= 0.0:  # no evidence in that dimension: norm 0, mean unchanged
                norm[s, d] = 0.0
                continue
            o32, w32, n32 = np.float32(old), np.float32(w[e, d]), np.float32(new)
            norm[s, d] = n32
            for j in range(bounds[d], bounds[d + 1]):
                acc = mean[s, j] * o32
                acc += w32 * x[j]
                buf[j] = acc / n32
                u = bits[j]
                mag = u & np.uint32(0x7FFFFFFF)
                if mag < np.uint32(0x477FF000):  # a finite float16: half_round's fast path
                    one[0] = (max(mag, np.uint32(0x38800000)) & np.uint32(0x7F800000)) + np.uint32(0x06C00000)
                    c = one_f[0]
                    one[0] = mag
                    r = one_f[0] + c
                    r -= c
                    one_f[0] = r
                    one[0] |= u & np.uint32(0x80000000)
                    mean[s, j] = one_f[0]
                elif mag <= np.uint32(0x7F800000):  # rounds to float16's infinity
                    one[0] = (u & np.uint32(0x80000000)) | np.uint32(0x7F800000)
                    mean[s, j] = one_f[0]
                else:  # NaN: sign and top 10 payload bits kept; a payload cut to nothing stays NaN
                    cut = u & np.uint32(0xFFFFE000)
                    one[0] = cut if cut & np.uint32(0x7FFFFF) else cut | np.uint32(0x2000)
                    mean[s, j] = one_f[0]


fold_events = njit(cache=True, nogil=True)(_fold_events) if available else None


def warm_up() -> None:
    """Compile (or load from numba's cache) ``fold_events`` for the argument types ``models.fold``
    passes, so the first batch does not wait for it. Nothing without numba."""
    if not available:
        return
    f32, f64, i = np.float32, np.float64, np.intp
    fold_events(np.zeros((1, 1), f64), np.zeros((1, 2), f32), np.zeros(1, i), np.ones((1, 1), f64),
                np.ones((1, 1), f64), np.ones((1, 2), f32), np.zeros(1, i), np.array([0, 2], np.int64))
