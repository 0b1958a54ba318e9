"""Many users' events folded into their norms and means at once, to the bits of
``UserState.fold`` one event at a time (numpy only; serving core).

``UserState.fold`` applies the update rule of ``models.dimensions`` one dimension at a time::

    old = norm * decay                                   # float64 (Python floats)
    new = old + |w|                                      # <= 0: no evidence: norm 0, mean unchanged
    mean = float16((float32(mean) * old + w * x) / new)  # numpy takes old, w and new as float32
    norm = float32(new)

``step`` does these very operations for R states at once: a state's dimensions side by side in
one float32 row of L elements (the item's vector of each dimension's space likewise), the
per-dimension scalars repeated along each part as float32, the norms as float64 arrays.
Element-wise IEEE operations do not depend on the elements next to them, so every element gets
the bits it gets one event at a time. The float16 rounding is ``half_round``: numpy's own round
trip through float16 (checked on every float32 value) without its element-at-a-time conversion
(2.5 ns an element here, most of the cost). ``fold`` runs a batch in rounds: round r folds the
r-th event of every state that has one, so a batch of 5,000 events of 90 users takes as many
``step`` calls as its busiest user has events (332 in the serving benchmark), instead of 30
numpy calls per event. With numba (a dependency), ``models.fold_jit`` runs the same operations
event by event, compiled (~5x less time for the update); the rounds stay the reference that the
tests hold it to, and the path taken without numba.

>>> from models.dimensions import default_dimensions
>>> from models.state import UserState
>>> dims, sizes = default_dimensions(), {"text": 2, "category": 2, "cf": 2}
>>> spaces = {"text": np.float32([[1, 0], [0.3, 0.7]]), "category": np.float32([[0, 1], [1, 0]]),
...           "cf": np.zeros((2, 2), np.float32)}
>>> a, b, one = (UserState.empty(dims, sizes) for _ in range(3))
>>> fold(dims, [Pending(a, 0, 2.0, 1.0, 0.0), Pending(b, 1, 0.5, -1.0, 0.0), Pending(a, 1, 1.0, 0.25, 9e5)], spaces)
>>> for row, s, v, dt in [(0, 2.0, 1.0, 0.0), (1, 1.0, 0.25, 9e5)]:  # a's events, one at a time
...     one.fold(dims, {k: t[row] for k, t in spaces.items()}, s, v, dt)
>>> a.mean["recency"].tolist(), a.to_bytes() == one.to_bytes()
([0.70703125, 0.29296875], True)
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from models import fold_jit
from models.dimensions import Dimension

TEXT_SPACES = ("text", "hybrid")  # spaces whose first part is the text encoder's


def event_vectors(dims: Sequence[Dimension], vectors: Mapping[str, np.ndarray],
                  text_vector: np.ndarray | None) -> Mapping[str, np.ndarray]:
    """The item's vector per space as one event sees it: with the event's review text
    (``text_vector``), if any, blended into the text part (which comes first) of the text spaces
    the dimensions use."""
    if text_vector is None:
        return vectors
    out = dict(vectors)
    n = text_vector.shape[0]
    for space in dict.fromkeys(d.space for d in dims if d.space in TEXT_SPACES):
        x = np.array(vectors[space], dtype=np.float32, copy=True)
        x[:n] = 0.5 * (x[:n] + text_vector)
        out[space] = x
    return out


def step(norm: np.ndarray, mean: np.ndarray, s: np.ndarray, decay: np.ndarray, w: np.ndarray, x: np.ndarray,
         sizes: np.ndarray) -> None:
    """One event for each of the rows ``s`` of ``norm`` (S, n dimensions) and ``mean`` (S, L)
    float32, in place: the rule of the module doc. ``decay`` and ``w``: (R, n) float64, ``x``:
    (R, L) float32 item vectors; ``sizes``: each dimension's part of L."""
    old = norm[s] * decay  # (R, n)
    new = old + np.abs(w)
    empty = new <= 0.0  # no evidence in that dimension: norm 0, mean unchanged
    some = empty.any()
    norm[s] = np.where(empty, 0.0, new.astype(np.float32)) if some else new.astype(np.float32)
    scal = np.repeat(np.array([old, w, np.where(empty, 1.0, new) if some else new], dtype=np.float32),
                     sizes, axis=2)  # (3, R, L): old, w, new of each element's dimension (no 0 / 0)
    acc = mean[s] * scal[0]  # (R, L)
    acc += scal[1] * x
    acc /= scal[2]
    out = half_round(acc)
    mean[s] = np.where(np.repeat(empty, sizes, axis=1), mean[s], out) if some else out


def half_round(a: np.ndarray) -> np.ndarray:
    """``a.astype(np.float16).astype(np.float32)`` for float32 ``a``, bit for bit (checked on all
    2**32 float32 values: a NaN keeps its sign and top 10 payload bits, as numpy's conversion
    keeps them), in a fraction of the time. Adding and taking back ``c``, 1.5 * 2**13 times the
    value's binade (at least 0.75), rounds to float16's spacing there (2**-24 below 2**-14)
    with float32's round-half-to-even; magnitudes that round to 2**16 or more are infinite.

    >>> a = np.float32([0.1, -1e-7, 65519.0, 2049.0, 1e-30, -0.0])
    >>> half_round(a).tobytes() == a.astype(np.float16).astype(np.float32).tobytes()
    True
    """
    bits = a.view(np.uint32)
    mag = bits & 0x7FFFFFFF  # |a|
    if mag.size and mag.max() < 0x477FF000:  # |a| < 65520: a finite float16 (no infinity, no NaN)
        c = ((np.maximum(mag, 0x38800000) & 0x7F800000) + 0x06C00000).view(np.float32)  # max(binade, 2**-14) * 12288
        r = mag.view(np.float32) + c
        r -= c
        return (r.view(np.uint32) | (bits & 0x80000000)).view(np.float32)
    ax = np.abs(a)
    with np.errstate(over="ignore", invalid="ignore"):
        c = np.maximum((ax.view(np.uint32) & 0x7F800000).view(np.float32) * np.float32(12288.0), np.float32(0.75))
        out = np.copysign((ax + c) - c, a)
    big = ax >= 65520.0
    out[big] = np.copysign(np.float32(np.inf), a[big])
    nan = np.isnan(a)
    bits = a[nan].view(np.uint32) & 0xFFFFE000  # a payload cut to nothing stays a NaN: 0x7c01 in float16
    out[nan] = np.where(bits & 0x7FFFFF, bits, bits | 0x2000).view(np.float32)
    return out


class Pending(NamedTuple):
    """An event for ``fold``, once everything else of it is done (``UserState.advance``)."""

    state: Any  # a UserState
    x: int | Mapping[str, np.ndarray]  # the item's row in fold's ``spaces``, or its own vectors
    strength: float
    valence: float
    dt: float  # ms since the state's previous event


def fold(dims: Sequence[Dimension], pending: Sequence[Pending], spaces: Mapping[str, np.ndarray],
         compiled: bool | None = None) -> None:
    """``UserState.fold`` of each of the ``pending`` events (in event order; ``spaces``: space ->
    (N, D) float32 item vectors that ``Pending.x`` rows index): event by event in the compiled
    loop of ``models.fold_jit`` when numba is there (``compiled`` None) or asked for (True), else
    in rounds, the r-th event of every state at once. The same bits either way."""
    slot, states = _slots(pending)
    w, decay = _scalars(dims, pending)  # (E, n) each
    norm, mean, sizes = _load(dims, states)  # (S, n), (S, L)
    table, row = _item_table(dims, pending, spaces, mean.shape[1])  # (T, L), (E,)
    if fold_jit.available if compiled is None else compiled:
        bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        fold_jit.fold_events(norm, mean, slot, decay, w, table, row, bounds)
    else:
        for r in _rounds(slot):
            step(norm, mean, slot[r], decay[r], w[r], table[row[r]], sizes)
    _store(dims, states, norm, mean, sizes)


def _load(dims: Sequence[Dimension], states: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The states' norms (S, n) and means side by side (S, L), and each dimension's part of L."""
    norm = np.array([[st.norm[d.name] for d in dims] for st in states], dtype=np.float64)
    means = [st.mean[d.name] for st in states for d in dims]
    sizes = np.array([m.size for m in means[:len(dims)]])
    return norm, np.concatenate(means, dtype=np.float32).reshape(len(states), -1), sizes


def _store(dims: Sequence[Dimension], states: Sequence[Any], norm: np.ndarray, mean: np.ndarray,
           sizes: np.ndarray) -> None:
    """Back into the states: each dimension's mean a float16 slice of the state's own row."""
    half = mean.astype(np.float16)  # exact: every value is a float16 already
    cuts = np.cumsum(sizes).tolist()
    for st, norms, row in zip(states, norm.tolist(), half):
        for d, v, a, b in zip(dims, norms, [0, *cuts], cuts):
            st.norm[d.name], st.mean[d.name] = v, row[a:b]


def _slots(pending: Sequence[Pending]) -> tuple[np.ndarray, list[Any]]:
    """(each event's state slot, the states in order of their first event)."""
    states = list({id(p.state): p.state for p in pending}.values())
    index = {id(st): k for k, st in enumerate(states)}
    return np.array([index[id(p.state)] for p in pending], dtype=np.intp), states  # (E,)


def _rounds(slot: np.ndarray) -> list[np.ndarray]:
    """The events of each round in event order: the r-th event of every state that has one."""
    count = np.bincount(slot)
    rank = np.empty(slot.size, dtype=np.intp)  # the event's position among its state's events
    rank[np.argsort(slot, kind="stable")] = np.arange(slot.size) - np.repeat(np.cumsum(count) - count, count)
    order = np.argsort(rank, kind="stable")
    return np.split(order, np.cumsum(np.bincount(rank))[:-1])


def _scalars(dims: Sequence[Dimension], pending: Sequence[Pending]) -> tuple[np.ndarray, np.ndarray]:
    """Each event's ``event_weight`` and ``decay`` of every dimension, (E, n) float64 each, the
    dimensions' own functions called once per distinct argument (told apart by their bits: 0.0
    is not -0.0 here)."""
    E = len(pending)
    codes = []
    for values in ((p.strength for p in pending), (p.valence for p in pending), (p.dt for p in pending)):
        distinct, code = np.unique(np.fromiter(values, np.float64, E).view(np.uint64), return_inverse=True)
        codes.append((distinct.view(np.float64).tolist(), code))
    (ss, s_code), (vs, v_code), (dts, dt_code) = codes
    pairs, which = np.unique(s_code * len(vs) + v_code, return_inverse=True)
    w = np.array([[d.event_weight(ss[k // len(vs)], vs[k % len(vs)]) for d in dims] for k in pairs.tolist()])
    decay = np.array([[d.decay(dt) for d in dims] for dt in dts])
    return w.reshape(-1, len(dims))[which], decay.reshape(-1, len(dims))[dt_code]


def _item_table(dims: Sequence[Dimension], pending: Sequence[Pending], spaces: Mapping[str, np.ndarray],
                width: int) -> tuple[np.ndarray, np.ndarray]:
    """The events' item vectors, the dimensions' spaces side by side: (T, width) float32 rows,
    and each event's row among them."""
    own = [i for i, p in enumerate(pending) if not isinstance(p.x, int)]  # events with their own vectors
    xs = np.fromiter((p.x if isinstance(p.x, int) else 0 for p in pending), np.intp, len(pending))  # own: row 0, unused
    items, row = np.unique(xs, return_inverse=True)
    table = np.empty((items.size, width), dtype=np.float32)
    at = 0
    for d in dims:
        n = spaces[d.space].shape[1]
        table[:, at:at + n] = spaces[d.space][items]
        at += n
    if own:
        table = np.concatenate([table, np.array([np.concatenate([pending[i].x[d.space] for d in dims])
                                                 for i in own], dtype=np.float32)])
        row[own] = items.size + np.arange(len(own))
    return table, row
