"""The blend's components behind one contract, so that the engine ranks by looping over them.

A served score is a z-score blend (``models.blend``) of several scorers, and each reads something
else and scores its own vocabulary: the attention fusion (``models.attention``) the user's
dimension means, the co-engagement counts (``models.cooc``) the user's recent co-engagement rows,
a sequence model (``models.sequence``: a GRU, self-attention or their mix) the user's recent
items. A component adapts one of them to the catalogue (as RecBole's and river's recommenders
share one interface):

* ``name``: its key in the blend weights and in the reasons;
* ``scores_many(states) -> (B, N)``: every user's raw scores over the catalogue, ``items.ids`` order;
* ``explain_many(states, scores, rows)``: the raw scores at a few rows split into parts named
  ``reasons`` that sum to them, and the component's blend weight split into shares named
  ``shares`` (what a ``Recommendation`` publishes as dimension weights);
* ``moments()``: the (mean, std) of its scores when they are the same for every user (the blend
  then need not compute them per user), else None.

Components the blend gives no weight are still ranked (their reasons are 0), except those marked
``skipped_unweighted``, which are costly: they are left out of the ranking and its reasons.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Sequence

import numpy as np

from models.attention import AttentionFusion
from models.blend import component_moments
from models.cooc import CoocModel
from models.items import ItemVectors
from models.state import UserState


class Component:
    """The contract, with the plain explanation: one part, named after the component, one share."""

    name = ""
    reasons: tuple[str, ...] = ()
    shares: tuple[str, ...] = ()
    skipped_unweighted = False
    own_moments = False  # True: the blend z-scores it with ``moments()``, not those of the whole row

    def __init__(self):
        self.reasons = self.shares = (self.name,)

    def scores_many(self, states: Sequence[UserState]) -> np.ndarray:
        """(B, N) raw scores of several users over the catalogue, in ``items.ids`` order."""
        raise NotImplementedError

    def scores(self, state: UserState) -> np.ndarray:
        """(N,) raw scores of one user."""
        return self.scores_many([state])[0]

    def moments(self) -> tuple[float, float] | None:
        return None

    def explain_many(self, states: Sequence[UserState], scores: np.ndarray, rows: np.ndarray,
                     cols: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """-> (parts (B, k, len(reasons)) float64, a new array: ``scores`` (B, N) at ``rows``
        (B, k) split into the named parts, the last one the part the blend's centring comes off;
        shares (B, len(shares)): how the component's weight splits, each row summing to 1).
        ``cols`` (B, C): the catalogue rows of ``scores``' columns when they are a candidate
        subset (``models.candidates``; ``rows`` then index those columns); None: all rows."""
        parts = scores[np.arange(len(rows))[:, None], rows].astype(np.float64)[..., None]  # (B, k, 1)
        return parts, np.ones((len(rows), 1))


class AttentionScores(Component):
    """The attention fusion of the dimensions; its reasons are its dimensions and the item prior
    (``bias``), its shares the attention weights of the dimensions."""

    name = "attention"

    def __init__(self, fusion: AttentionFusion, items: ItemVectors):
        self.fusion, self.items = fusion, items
        self._held: dict | None = None  # states' ids -> their user vectors, within ``held``
        self.shares = tuple(d.name for d in fusion.cfg.dims)
        self.reasons = (*self.shares, "bias")

    def _users(self, states: Sequence[UserState]):
        """(B, D), (B, n), (B, n, D): ``AttentionFusion.users``, once per ranking (``held``)."""
        key = tuple(map(id, states)) if self._held is not None else None
        got = None if key is None else self._held.get(key)
        if got is None:
            got = self.fusion.users([st.mean for st in states], [st.norm for st in states])
            if key is not None:
                self._held[key] = got
        return got

    @contextmanager
    def held(self):
        """Within the block, each set of users' vectors is computed once (the scores and the
        reasons of one ranking read them; the states do not change meanwhile)."""
        self._held = {}
        try:
            yield
        finally:
            self._held = None

    def scores_many(self, states: Sequence[UserState]) -> np.ndarray:
        U = self._users(states)[0]  # (B, D)
        E, b = self.fusion.item_matrix(self.items)  # (N, D), (N,)
        return U @ E.T + b  # (B, N)

    def scores(self, state: UserState) -> np.ndarray:
        return self.fusion.scores(state.mean, state.norm, self.items)  # (N,)

    def explain_many(self, states, scores, rows, cols=None):
        _, alpha, h = self._users(states)
        E, b = self.fusion.item_matrix(self.items)
        rows = rows if cols is None else np.take_along_axis(cols, rows, axis=1)
        parts = [self.fusion.explain(alpha, h, E[rows]).astype(np.float64),  # (B, k, n)
                 b[rows].astype(np.float64)[..., None]]  # (B, k, 1)
        return np.concatenate(parts, axis=2), alpha


class CoocRows:
    """Catalogue row -> co-engagement row: the counts get a row for every catalogue item
    (``InterestModel.add_item`` appends one, or sets the entry of a reused catalogue row)."""

    def __init__(self, rows: Sequence[int] = ()):
        self.rows = list(rows)
        self._array: np.ndarray | None = None

    def append(self, row: int) -> None:
        self.rows.append(row)
        self._array = None

    def set(self, row: int, cooc_row: int) -> None:
        """Catalogue row ``row`` (an existing one, or the next) now maps to ``cooc_row``."""
        if row == len(self.rows):
            self.rows.append(cooc_row)
        else:
            self.rows[row] = cooc_row
        self._array = None

    def __len__(self) -> int:
        return len(self.rows)

    def array(self) -> np.ndarray:
        """(N,) the rows as an array, rebuilt when an entry changed (a new array then)."""
        if self._array is None:
            self._array = np.asarray(self.rows, dtype=np.int64)
        return self._array


class CoEngagement(Component):
    """What users engage with after (and beside) the user's recent items (``models.cooc``)."""

    name = "co-engagement"

    def __init__(self, cooc: CoocModel, rows: CoocRows, recent: Callable[[UserState, int], list[int]]):
        super().__init__()
        self.cooc, self.rows, self.recent = cooc, rows, recent  # recent(state, n): rows, newest first

    def scores_many(self, states: Sequence[UserState]) -> np.ndarray:
        hist = self.cooc.params.hist_len
        return self.cooc.scores_many([self.recent(st, hist) for st in states])[:, self.rows.array()]  # (B, N)


class Popularity(Component):
    """How many users engaged with each item (``models.cooc``): the same for every user, so the
    catalogue's copy and its moments are kept until the counts change (``CoocModel.popularity``
    then returns a new array)."""

    name = "popularity"

    def __init__(self, cooc: CoocModel, rows: CoocRows):
        super().__init__()
        self.cooc, self.rows = cooc, rows
        self._cache: tuple = (None, None, None, None)  # counts' popularity, row map, it in catalogue order, moments

    def _catalogue(self) -> tuple[np.ndarray, tuple[float, float]]:
        pop, rows = self.cooc.popularity(), self.rows.array()
        if self._cache[0] is not pop or self._cache[1] is not rows:
            mapped = pop[rows]
            mapped.flags.writeable = False
            self._cache = (pop, rows, mapped, component_moments(mapped))
        return self._cache[2], self._cache[3]

    def scores_many(self, states: Sequence[UserState]) -> np.ndarray:
        pop = self._catalogue()[0]
        return np.broadcast_to(pop, (len(states), pop.size))  # (B, N), read-only

    def moments(self) -> tuple[float, float]:
        return self._catalogue()[1]


class SequenceScores(Component):
    """A sequence model (``models.sequence``) over the catalogue; items it was not trained on get
    the user's mean score (neutral after the blend's z-scoring). The costliest component."""

    name = "sequence"
    skipped_unweighted = True

    def __init__(self, model, items: ItemVectors):
        super().__init__()
        self.model, self.items = model, items
        self._rows = np.zeros(0, dtype=np.int64)  # catalogue row -> vocabulary row (-1: none)
        self._layout = -1  # the catalogue's layout it was built for

    def catalogue_rows(self) -> np.ndarray:
        """(N,) catalogue row -> vocabulary row, -1 for an item the model does not know."""
        seq, items = self.model, self.items
        if self._layout != items.layout:
            self._rows = np.array([seq.index.get(i, -1) for i in items.ids], dtype=np.int64)
            self._layout = items.layout
        return self._rows

    def vocabulary_scores(self, states: Sequence[UserState]) -> np.ndarray:
        """(B, V) the model's raw scores over its own vocabulary (``catalogue_rows`` maps them)."""
        return self.model.scores_many([st.seen.newest(self.model.window) for st in states])

    def scores_many(self, states: Sequence[UserState]) -> np.ndarray:
        self.catalogue_rows()
        s = self.vocabulary_scores(states)  # (B, V)
        out = s[:, self._rows]  # (B, N)
        unknown = self._rows < 0
        if unknown.any():
            out[:, unknown] = s.mean(axis=1, keepdims=True)
        return out
