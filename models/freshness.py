"""Item freshness: how recently each item was published, a blend component for domains where
items go stale (a domain with ``freshness_half_life_days``, e.g. news).

An item published at ``p`` (the catalogue event's ``published_ts``, ``ItemVectors.published``)
scores

    f = 2 ** -((now - p) / half_life)        (0 for an item without a publishing time)

where ``now`` is the latest event time the model has folded, or that the co-engagement rows it
follows are valued at (``stream_app.cooc_stream.apply_followed``: every worker's events) (event
time, not the clock: the same events give the same scores wherever and whenever they are
replayed; only a time more than a day past the clock is ignored). An item published after
``now`` is not out yet: it scores 0 and is left out of the moments, so a catalogue announced ahead
of its events (a replay of history) neither lifts unpublished items nor moves the scale of the
others. The score is the same for every user, so the catalogue's copy and its moments are kept
until the catalogue changes or ``now`` passes another publishing time; the blend z-scores it, and
a later ``now`` scales every published item's score alike, which changes no z-score. So the copy
stays at the ``now`` it was made at and is updated row by row: the rows the catalogue changed
and those that came out are scored again, and the moments summed again (``_moments``); it is
made afresh only after ``REBASE_HALF_LIVES``.

>>> from models.items import ItemVectors
>>> items = ItemVectors(2, 1, 4)
>>> for i, p in zip("abc", (0, 10, 100)):
...     _ = items.upsert(i, text=np.ones(2), category=np.zeros(4), published_ts=p)
>>> f = Freshness(items, half_life_ms=10.0)
>>> f.observe(20)
>>> f.catalogue_scores().tolist()  # c is published after now = 20: not out yet
[0.25, 0.5, 0.0]
>>> f.moments()  # over a and b only
(0.375, 0.125)
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from models.components import Component
from models.items import ItemVectors
from models.state import UserState

DAY_MS = 86_400_000.0
MAX_AHEAD_MS = DAY_MS  # an event time further past the clock does not move ``now``
REBASE_HALF_LIVES = 64.0  # scores are taken against the ``now`` of their last rebuild; rebuilt this far on


class Freshness(Component):
    """``f`` of the module doc for every catalogue row (``items.ids`` order), (B, N) broadcast."""

    name = "freshness"
    skipped_unweighted = True  # a blend that does not weigh it does not compute it
    own_moments = True

    def __init__(self, items: ItemVectors, half_life_ms: float):
        super().__init__()
        if half_life_ms <= 0:
            raise ValueError("freshness needs a half-life > 0")
        self.items, self.half_life_ms = items, float(half_life_ms)
        self.now = -np.inf  # the latest event time folded
        self._limit = -np.inf  # the clock plus ``MAX_AHEAD_MS`` when last read
        self._checked: tuple = (None,)  # (catalogue version, rows, now) the cache was last checked at
        self._cache: tuple = (None, -np.inf, None, None, None)  # (key, the now of the scores, scores, moments, out)

    def observe(self, ts: float) -> None:
        """An event of time ``ts`` was folded. A time more than ``MAX_AHEAD_MS`` past the clock
        is a wrong one (a producer's bad clock, a forged event): it does not move ``now``, which
        never goes back and would otherwise age every item out for the life of the process. The
        clock is read only when an event passes the limit last read."""
        if ts > self.now:
            if ts > self._limit:
                self._limit = time.time() * 1000.0 + MAX_AHEAD_MS
                if ts > self._limit:
                    return
            self.now = float(ts)

    def known(self) -> bool:
        """Whether any catalogue item has a publishing time (else the scores are all 0)."""
        return bool(np.isfinite(self.items.published).any())

    def _catalogue(self) -> tuple[np.ndarray, tuple[float, float]]:
        p = self.items.published  # (N,)
        checked = (self.items.version, p.size, self.now)
        if checked == self._checked:  # nothing moved since the last look (a ranking asks several times)
            return self._cache[2], self._cache[3]
        self._checked = checked
        out = p <= self.now  # NaN: False
        key = (self.items.version, p.size, int(np.count_nonzero(out)))
        cached, base, scores, moments, was_out = self._cache
        stale = self.now - base > REBASE_HALF_LIVES * self.half_life_ms
        if cached == key and not stale:
            return scores, moments
        if cached is None or stale or p.size < scores.size:  # every row, at today's ``now``
            base, redo = self.now, None
        else:  # the rows the catalogue changed since, and those that came out since
            redo = np.union1d(self.items.changed_since(cached[0]), np.flatnonzero(out[:was_out.size] & ~was_out))
        scores = _scored(p, out, base, self.half_life_ms, scores, redo)
        moments = _moments(scores, ~(p > self.now))  # the items out and those without a time
        scores.flags.writeable = False
        self._cache = (key, base, scores, moments, out)
        return scores, moments

    def catalogue_scores(self) -> np.ndarray:
        """(N,) every catalogue row's score (read-only; a new array when they change)."""
        return self._catalogue()[0]

    def scores_many(self, states: Sequence[UserState]) -> np.ndarray:
        f = self._catalogue()[0]
        return np.broadcast_to(f, (len(states), f.size))  # (B, N), read-only

    def moments(self) -> tuple[float, float]:
        return self._catalogue()[1]


def _scored(published: np.ndarray, out: np.ndarray, base: float, half_life_ms: float, old: np.ndarray | None,
            redo: np.ndarray | None) -> np.ndarray:
    """(N,) ``2 ** ((p - base) / half_life)`` for the items ``out``, 0 for the others: every row
    (``redo`` None), or ``old`` (the scores of fewer or as many rows at the same ``base``) with the
    rows ``redo`` scored again; any rows past ``old`` are among them. Scores at an earlier
    ``base`` than ``now`` differ from today's by one factor for every item, which no z-score sees."""
    scores = np.zeros(published.size)
    if redo is None:
        scores[out] = np.exp2((published[out] - base) / half_life_ms)
        return scores
    scores[: old.size] = old
    scores[redo] = 0.0
    rows = redo[out[redo]]
    scores[rows] = np.exp2((published[rows] - base) / half_life_ms)
    return scores


def _moments(scores: np.ndarray, counted: np.ndarray) -> tuple[float, float]:
    """(mean, std) of ``scores`` (N,) over the entries ``counted`` (N,) bool, the others being 0
    (the items not out yet): ``component_moments`` of the counted ones without gathering them (a
    third of the cost of a rebuild at 10^6 items, ``stream_app.dev.freshness_cost``): the sum
    over every entry, then the squares about the mean with the others' zeroed.

    >>> _moments(np.array([0.25, 0.5, 0.0]), np.array([True, True, False]))  # the 0: not out yet
    (0.375, 0.125)
    >>> _moments(np.zeros(3), np.zeros(3, bool))
    (0.0, 0.0)
    """
    n = int(np.count_nonzero(counted))
    if n == 0:
        return 0.0, 0.0
    mean = float(scores.sum()) / n
    d = scores - mean
    d *= counted
    return mean, float(np.sqrt(np.dot(d, d) / n))
