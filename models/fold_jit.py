"""The state update's arithmetic, compiled: the one loop that folds events into user states.

``models.fold`` packs a batch (one event for the offline replay, thousands for the worker) into
arrays and calls ``fold_events``, which runs the events one after another, each dimension's
rule of ``models.dimensions``::

    old = norm * decay                                   # float64
    new = old + |w|                                      # <= 0: no evidence: norm 0, mean unchanged
    mean = float16((float32(mean) * old + w * x) / new)  # old, w and new taken as float32
    norm = float32(new)

Compiled with numba (a dependency), the loop costs its arithmetic, whatever the batch's shape:
a batch where one user has 300 events is 300 events, not 300 rounds of numpy calls. The
precision is the one of the plain numpy code, operation for operation (float64 norms; float32
products, sums and quotients, no fused multiply-add, as numba does not contract without
``fastmath``), and the float16 rounding is numpy's ``astype(np.float16)``, bit for bit, by
arithmetic on the float32 bits (see ``_fold_events``). ``tests/models/reference_fold.py`` keeps
the plain event-by-event code that the tests hold this loop to.
"""
from __future__ import annotations

import numpy as np
from numba import njit

available = True  # numba is a dependency (pyproject.toml); the update is always compiled


@njit(cache=True, nogil=True)
def fold_events(norm, mean, slot, decay, w, table, row, bounds):  # pragma: no cover - compiled
    """norm (S, n) float64 and mean (S, L) float32 in place; event e: state slot[e], scalars
    decay[e], w[e] (n,) float64, item vector table[row[e]] (L,) float32; dimension d's part of
    L is bounds[d]:bounds[d + 1]. The means hold float16 values (as float32).

    The float16 rounding of a finite ``|a| < 65520``: adding and taking back ``c``, 1.5 * 2**13
    times the value's binade (at least 0.75), rounds to float16's spacing there (2**-24 below
    2**-14) with float32's round-half-to-even; larger magnitudes round to infinity; a NaN keeps
    its sign and top 10 payload bits (a payload cut to nothing stays a NaN), as numpy keeps them."""
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
                if mag < np.uint32(0x477FF000):  # a finite float16
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


def warm_up() -> None:
    """Compile (or load from numba's cache) ``fold_events`` for the argument types ``models.fold``
    passes, so the first batch does not wait for it."""
    f32, f64, i = np.float32, np.float64, np.intp
    fold_events(np.zeros((1, 1), f64), np.zeros((1, 2), f32), np.zeros(1, i), np.ones((1, 1), f64),
                np.ones((1, 1), f64), np.ones((1, 2), f32), np.zeros(1, i), np.array([0, 2], np.int64))
