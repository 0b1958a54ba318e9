"""The one way events change users' norms and means, for the stream worker and the offline
replay alike (numpy and numba; serving core).

``InterestModel.fold`` (a worker's batch) and ``InterestModel.replay`` (the offline evaluation
and training, one event at a time) both do an event's bookkeeping (time, de-duplication, seen
items: ``UserState.advance``) and hand the rest to ``fold`` as ``Pending`` events. ``fold``
packs the states touched into arrays (a state's dimensions side by side in one float32 row, the
norms as float64), each event's per-dimension scalars (``event_weight``, ``decay``) and its item
vectors, and runs the compiled loop of ``models.fold_jit``, which applies the update rule of
``models.dimensions`` event after event; then each state gets its own rows back. A batch and the
same events one at a time give the same bits (``tests/models/test_fold.py``, against the plain
event-by-event code of ``tests/models/reference_fold.py``).

>>> from models.dimensions import default_dimensions
>>> from models.state import UserState
>>> dims, sizes = default_dimensions(), {"text": 2, "category": 2, "cf": 2}
>>> spaces = {"text": np.float32([[1, 0], [0.3, 0.7]]), "category": np.float32([[0, 1], [1, 0]]),
...           "cf": np.zeros((2, 2), np.float32)}
>>> a, b, one = (UserState.empty(dims, sizes) for _ in range(3))
>>> fold(dims, [Pending(a, 0, 2.0, 1.0, 0.0), Pending(b, 1, 0.5, -1.0, 0.0), Pending(a, 1, 1.0, 0.25, 9e5)], spaces)
>>> for p in [Pending(one, 0, 2.0, 1.0, 0.0), Pending(one, 1, 1.0, 0.25, 9e5)]:  # a's events, one at a time
...     fold(dims, [p], spaces)
>>> a.mean["recency"].tolist(), a.to_bytes() == one.to_bytes()
([0.70703125, 0.29296875], True)
"""
from __future__ import annotations

from math import copysign
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from models.dimensions import Dimension
from models.fold_jit import fold_events

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


class Pending(NamedTuple):
    """An event for ``fold``, once everything else of it is done (``UserState.advance``)."""

    state: Any  # a UserState
    x: int | Mapping[str, np.ndarray]  # the item's row in fold's ``spaces``, or its own vectors
    strength: float
    valence: float
    dt: float  # ms since the state's previous event


def fold(dims: Sequence[Dimension], pending: Sequence[Pending], spaces: Mapping[str, np.ndarray]) -> None:
    """Fold each of the ``pending`` events (in event order) into its state's norms and means;
    ``spaces``: space -> (N, D) float32 item vectors that ``Pending.x`` rows index."""
    slot, states = _slots(pending)
    w, decay = _scalars(dims, pending)  # (E, n) each
    norm, mean, sizes = _load(dims, states)  # (S, n), (S, L)
    table, row = _item_table(dims, pending, spaces)  # (T, L), (E,)
    bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    fold_events(norm, mean, slot, decay, w, table, row, bounds)
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


def _scalars(dims: Sequence[Dimension], pending: Sequence[Pending]) -> tuple[np.ndarray, np.ndarray]:
    """Each event's ``event_weight`` and ``decay`` of every dimension, (E, n) float64 each. The
    dimensions' own functions are called once per distinct argument (0.0 and -0.0 told apart)
    for the weights, and once per event for each distinct decay rule (dimensions with the same
    half-life and per-event decay share their column: most dimensions decay alike)."""
    n = len(dims)
    weights: dict[tuple, list[float]] = {}
    w = []
    for p in pending:
        s, v = float(p.strength), float(p.valence)
        key = (s, v, copysign(1.0, s), copysign(1.0, v))
        row = weights.get(key)
        if row is None:
            row = weights[key] = [d.event_weight(s, v) for d in dims]
        w.append(row)
    rules: dict[tuple, list[int]] = {}  # a decay rule -> the dimensions that follow it
    for j, d in enumerate(dims):
        rules.setdefault((type(d).decay, d.half_life_ms, d.per_event_decay), []).append(j)
    dts = [float(p.dt) for p in pending]
    decay = np.empty((len(pending), n), dtype=np.float64)
    for cols in rules.values():
        rule = dims[cols[0]].decay
        decay[:, cols] = np.array([rule(dt) for dt in dts], dtype=np.float64).reshape(-1, 1)
    return np.array(w, dtype=np.float64).reshape(-1, n), decay


def _item_table(dims: Sequence[Dimension], pending: Sequence[Pending],
                spaces: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The events' item vectors, the dimensions' spaces side by side: (T, width) float32 rows,
    and each event's row among them (an item's row once; an event with its own vectors, its own)."""
    at: dict[int, int] = {}  # catalogue row -> table row
    own: list[Pending] = []  # events with their own vectors, after the catalogue rows
    row = np.empty(len(pending), dtype=np.intp)
    for e, p in enumerate(pending):
        if isinstance(p.x, int):
            row[e] = at.setdefault(p.x, len(at))
        else:
            row[e] = -1 - len(own)
            own.append(p)
    items = np.fromiter(at, np.intp, len(at))
    taken = {space: spaces[space].take(items, axis=0) for space in dict.fromkeys(d.space for d in dims)}
    table = np.concatenate([taken[d.space] for d in dims], axis=1, dtype=np.float32)  # (items, L)
    if own:
        table = np.concatenate([table, [np.concatenate([p.x[d.space] for d in dims], dtype=np.float32) for p in own]])
        row[row < 0] = items.size - 1 - row[row < 0]
    return table, row
