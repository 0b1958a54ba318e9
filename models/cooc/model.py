"""The co-engagement dimension: items that other users engaged with next to the user's last
items, from counts that every new event updates (numpy only; serving core).

Global counts (``models.cooc.counts.CoocCounts``), keyed by item id (rows in the order items
were first added here):

* ``M[j, i]``: pair weight. When a user engages with an item ``i`` it has not engaged with before,
  while its recent distinct items are ``r_1`` (newest) .. ``r_L``::

      M[r_d, i] += 1 and M[i, r_d] += 1                   for d <= window        (co-occurrence)
      M[r_d, i] += beta * trans_decay ** (d - 1)           for d <= trans_window  (follow-on bonus)
      n[i] += 1

  A re-engagement with an item the user already has (``UserState.seen``) changes no count.
  ``additions`` is the one place the rule is written: a batch of first engagements (prev rows,
  row) in event order -> the additions, in order. ``update_many`` applies them to the counts (the
  offline replay, one event at a time; ``fit`` on whole training sequences, each user's items
  kept in a ``models.seen.SeenItems`` as ``UserState.seen`` keeps them, so "already has" is
  decided alike, a rare false positive included), so fitting on a log equals streaming it event
  by event. ``deltas`` sums the same additions per target row instead (a worker's batch: one pair
  message per touched item, ``models.cooc.online``); added to zero counts they give the bits
  ``update_many`` gives.

Served counts are the checkpoint's ``counts`` plus ``online`` (``models.cooc.rows.OnlineRows``):
the neighbour rows the worker follows, learned from every worker's events. Offline they are
empty.

Scores for a user whose recent distinct items are ``r_1`` (newest) .. ``r_H`` (``H = hist_len``)::

    S[j, i] = M[j, i] / (n[j] ** alpha * n[i] ** (1 - alpha) + shrink),  S[j, j] = 0,
              only the k largest non-zero entries of row j kept (ties: the smaller column)
    score(i) = sum_d decay ** (d - 1) * S[r_d, i]

A score is a pure function of the counts and the user's recent items, so the worker and the
offline replay agree exactly whatever the timing of their requests, once they hold the same
counts. Rows of ``S`` are computed from the counts (and the online rows) when asked for and kept
until what they depend on changes (``models.cooc.row_cache``): a change made through
``update_many`` or ``set_online_rows`` evicts only the rows it reached; any other change (every
change bumps ``CoocCounts.version`` or ``OnlineRows.version``), or a new reference time of
decayed online rows, empties the cache.

>>> m = CoocModel(CoocParams(window=2, trans_window=1, beta=1.0, shrink=0.0, hist_len=2, k=10))
>>> for i in "abcd":
...     _ = m.add_item(i)
>>> _ = m.fit([[0, 1, 2], [0, 1]])      # two users: a b c and a b
>>> m.counts.row(0).tolist()             # a: with b twice (+1 follow-on each time), with c once
[0.0, 4.0, 1.0, 0.0]
>>> s = m.scores([0]); int(s.argmax())   # a user who just had "a" gets "b" first
1
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import chain, repeat
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from models.cooc.counts import DENSE_MAX_ITEMS, CoocCounts
from models.cooc.row_cache import FollowedCache, RowCache, prune_rows
from models.cooc.deltas import NO_DELTAS, Deltas, RowDelta, sum_per_row  # noqa: F401 (RowDelta: re-exported)
from models.cooc.rows import OnlineRows
from models.seen import SeenItems, item_key

ROW_CACHE_MAX = 16_384  # similarity rows kept (the older half dropped when full)
UPDATE_BLOCK = 1 << 15  # first engagements whose pairs are built at once (bounded arrays)


@dataclass(frozen=True)
class CoocParams:
    window: int = 20  # co-occurrence pairs within this many recent distinct items
    trans_window: int = 3  # follow-on (directed) pairs within this many
    trans_decay: float = 0.5
    beta: float = 1.0  # follow-on bonus
    shrink: float = 10.0
    alpha: float = 0.5  # 0.5: shrunk cosine; > 0.5 favours popular candidates
    k: int = 100  # neighbours kept per similarity row
    hist_len: int = 5  # the user's last-N items that vote
    decay: float = 0.8  # vote weight decay by recency rank

    @property
    def span(self) -> int:
        """How many of the user's recent items the update rule reads."""
        return max(self.window, self.trans_window)

    def count_key(self) -> tuple:
        """The parameters that change the counts (the rest only change scoring)."""
        return self.window, self.trans_window, self.trans_decay, self.beta


class CoocModel:
    """Counts + parameters: the update rule and the scores of the module doc."""

    def __init__(self, params: CoocParams = CoocParams(), counts: CoocCounts | None = None):
        self.params = params
        self.counts = counts if counts is not None else CoocCounts()
        self.online = OnlineRows()  # rows learned while serving (models.cooc.online), added to the counts
        self._follow = FollowedCache(ROW_CACHE_MAX)  # similarity rows, kept while the counts allow
        self._rule: tuple = (None,)  # (params, what ``additions`` takes from them)
        self._col_pow = self._popularity = self._n = np.zeros(0)

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def index(self) -> dict[str, int]:
        return self.counts.index

    def add_item(self, item_id: str) -> int:
        return self.counts.add_item(item_id)

    def free_item(self, item_id: str) -> int | None:
        """A deleted item's counts zeroed and its row freed for the next new item
        (``CoocCounts.free``); its row, or None for an id without one."""
        row = self.counts.free(item_id, symmetric=self.params.trans_window <= self.params.window)
        if row is not None:
            self.online.free(row)
        return row

    def set_online(self, item_id: str, row) -> None:
        """Item ``item_id``'s online row becomes ``row`` (a ``models.cooc.online.NeighbourRow``;
        None: empty)."""
        if row is None:
            self.set_online_row(item_id, 0.0, 0, [], [])
        else:
            self.set_online_row(item_id, row.n, row.ts, list(row.nb), list(row.nb.values()))

    def set_online_row(self, item_id: str, n: float, ts: int, ids: Sequence[str], weights: Sequence[float]) -> None:
        """``set_online`` from its parts. Ids the counts do not know get a row (as ids known from
        training only)."""
        counts = self.counts
        j = counts.add_item(item_id)
        cols = [counts.index.get(i) for i in ids]
        if None in cols:
            cols = [counts.add_item(i) if c is None else c for i, c in zip(ids, cols)]
        self.online.set(j, n, ts, cols, weights)

    def rows_of(self, ids: Sequence[str]) -> np.ndarray:
        """The counts rows of ``ids`` (int64); ids the counts do not know get a row."""
        counts = self.counts
        rows = np.fromiter(map(counts.index.get, ids, repeat(-1)), dtype=np.int64, count=len(ids))
        for k in np.flatnonzero(rows < 0).tolist():
            rows[k] = counts.add_item(ids[k])
        return rows

    def set_online_rows(self, items: Sequence[str], n: Sequence[float], ts: Sequence[int], lengths: Sequence[int],
                        cols: np.ndarray, weights: np.ndarray) -> None:
        """``set_online_row`` for several distinct items at once: item ``items[k]`` gets the next
        ``lengths[k]`` of ``cols`` (counts rows, ``rows_of``) and ``weights``
        (``OnlineRows.set_many``)."""
        told, rows = self._follow.telling(self._versions()), self.rows_of(items)
        self.online.set_many(rows.tolist(), n, ts, lengths, cols, weights)
        self._follow.told(told, rows, rows, self._versions())

    def _versions(self) -> tuple[int, int]:
        return self.counts.version, self.online.version

    def with_params(self, params: CoocParams, copy: bool = True) -> "CoocModel":
        """Same counts (copied), other parameters; only scoring parameters may differ."""
        if params.count_key() != self.params.count_key():
            raise ValueError("count parameters differ: refit instead")
        return CoocModel(params, self.counts.copy() if copy else self.counts)

    # -- the update rule ---------------------------------------------------------------------
    def update_many(self, engagements: Sequence[tuple[Sequence[int], int]]) -> None:
        """The rule of the module doc for each first engagement (prev_rows, row) in the order
        given; ``prev_rows``: the user's recent distinct items then, newest first
        (``UserState.seen.newest``). The counts receive each event's additions in event order
        (``CoocCounts.add``), so a batch gives the bits of its events one at a time."""
        for a in range(0, len(engagements), UPDATE_BLOCK):
            rows, cols, vals, engaged, _ = self.additions(engagements[a:a + UPDATE_BLOCK])
            told = self._follow.telling(self._versions())
            self.counts.add(rows, cols, vals)
            self.counts.add_engaged(engaged)
            self._follow.told(told, rows, engaged, self._versions())

    def deltas(self, engagements: Sequence[tuple[Sequence[int], int]], times: Sequence[int] | None = None,
               half_life_ms: float = 0.0) -> dict[int, "RowDelta"]:
        """``delta_columns`` by target row: row -> ``RowDelta``."""
        return self.delta_columns(engagements, times, half_life_ms).by_row()

    def delta_columns(self, engagements: Sequence[tuple[Sequence[int], int]], times: Sequence[int] | None = None,
                      half_life_ms: float = 0.0) -> Deltas:
        """The same additions as ``update_many``, summed per target row instead of applied: what
        each row ``x`` of ``M`` and ``n[x]`` receive from the whole batch, in columns (``Deltas``).
        Without decay (``half_life_ms`` 0) each cell's sum is taken in float32 in event order,
        so adding a row's deltas to zero counts gives the bits ``update_many`` gives. With decay,
        ``times[e]`` is the event time (ms) of engagement e, and each row's deltas are valued at
        its latest contributing event time ``ts``: an addition made at ``t`` counts
        ``2 ** -((ts - t) / half_life_ms)`` (``models.cooc.online`` folds them the same way)."""
        parts = []
        for a in range(0, len(engagements), UPDATE_BLOCK):
            rows, cols, vals, engaged, event = self.additions(engagements[a:a + UPDATE_BLOCK])
            when = np.zeros(len(engaged), dtype=np.int64) if times is None else \
                np.asarray(times[a:a + UPDATE_BLOCK], dtype=np.int64)
            parts.append((rows, cols, vals, when[event], engaged, when))
        if not parts:
            return NO_DELTAS
        return sum_per_row(*(np.concatenate(k) for k in zip(*parts)), half_life_ms, len(self.counts))

    def additions(self, engagements: Sequence[tuple[Sequence[int], int]]) -> tuple[np.ndarray, ...]:
        """The rule, once for every caller (``update_many``, ``deltas``, ``fit``): (rows, cols,
        vals) of every engagement's additions in order (per event: ``M[r, row] += 1``, then
        ``M[row, r] += 1`` for its ``window`` newest items, then the non-zero follow-on bonuses
        ``M[r, row]`` for its ``trans_window`` newest), the engaged rows (``n[row] += 1``), and
        for each addition the index of its engagement."""
        p = self.params
        if self._rule[0] is not p:
            bonus = np.zeros((p.trans_window + 1, p.span))  # the follow-on bonus by how many items precede
            for k in range(p.trans_window + 1):
                bonus[k, :k] = p.beta * p.trans_decay ** np.arange(k)
            self._rule = (p, np.arange(p.span), np.arange(p.span) < p.window, bonus)
        _, ranks, window, bonus = self._rule
        prev = [list(r)[:p.span] for r, _ in engagements]
        size = np.fromiter(map(len, prev), np.intp, len(prev))  # (E,)
        row = np.fromiter((r for _, r in engagements), np.intp, len(prev))[:, None]  # (E, 1)
        have = ranks < size[:, None]  # (E, span)
        recent = np.zeros(have.shape, dtype=np.intp)
        recent[have] = np.fromiter(chain.from_iterable(prev), np.intp, int(size.sum()))
        vals = bonus[np.minimum(size, p.trans_window)]  # (E, span)
        shape = (len(prev), 3, p.span)  # per event: M[r, row] += 1, M[row, r] += 1, M[r, row] += bonus
        take, rows, cols, add = np.empty(shape, bool), np.empty(shape, np.intp), np.empty(shape, np.intp), np.ones(shape)
        take[:, 0] = take[:, 1] = have & window
        take[:, 2] = have & (vals != 0)
        rows[:, 0] = cols[:, 1] = rows[:, 2] = recent
        rows[:, 1] = cols[:, 0] = cols[:, 2] = row
        add[:, 2] = vals
        event = np.broadcast_to(np.arange(len(prev))[:, None, None], shape)
        return rows[take], cols[take], add[take], row[:, 0], event[take]

    def fit(self, sequences: Iterable[Sequence[int]]) -> "CoocModel":
        """``update_many`` of the first engagements in per-user sequences of item rows (time
        order, every engagement, re-engagements included), each user's items kept as the state
        keeps them."""
        span = self.params.span
        ids, index = self.counts.ids, self.counts.index
        keys = [item_key(i) for i in ids]
        engagements: list[tuple[list[int], int]] = []
        for seq in sequences:
            seen = SeenItems()
            for row in seq:
                if not seen.has(ids[row], keys[row]):
                    engagements.append(([index[i] for i in seen.newest(span)], row))
                seen.add(ids[row], keys[row])
        self.update_many(engagements)
        return self

    # -- scoring -----------------------------------------------------------------------------
    def _current(self) -> RowCache:
        """The row cache, brought to the counts (module doc), with the per-column terms."""
        c, o = self.counts, self.online
        at = (c, c.version, o.version, self.params, o.latest if o.half_life_ms > 0 else 0)
        if self._follow.follows(at):
            return self._follow.rows
        cnt = c.n[: len(c)]
        if o.live:  # the checkpoint's counts plus the followed rows
            cnt = cnt + o.counts_n(len(c))
        self._n = cnt
        self._col_pow = cnt ** (1.0 - self.params.alpha)
        self._popularity = np.log1p(cnt)
        self._popularity.flags.writeable = False
        return self._follow.bring(at)

    def similarity_row(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Pruned row ``j`` of S as (columns ascending, values) (read-only arrays). Computed on
        the non-zero entries of M's row only: each value is the same float operation as on the
        whole row (``models.cooc.row_cache.prune_rows``)."""
        return self.similarity_rows([j])[0]

    def similarity_rows(self, rows: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """``similarity_row`` of each of ``rows``: the kept ones from the cache, the others
        computed together (one pass of array operations for all of them) and kept."""
        cache = self._current()
        out = [cache.get(j) for j in rows]
        todo = list(dict.fromkeys(j for j, hit in zip(rows, out) if hit is None))
        if not todo:
            return out
        p = self.params
        raws = [cache.raw.get(j) or self._raw_row(j) for j in todo]
        done = dict(zip(todo, prune_rows(raws, [self._n[j] ** p.alpha for j in todo], self._col_pow, p.shrink, p.k)))
        for j, raw in zip(todo, raws):
            cache.put(j, raw, done[j])
        return [done[j] if hit is None else hit for j, hit in zip(rows, out)]

    def _raw_row(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Row ``j`` of M plus its online row: (columns ascending, numerators) but ``M[j, j]``."""
        idx, num = self.counts.off_diagonal(j)
        if j < len(self.online.rows) and self.online.rows[j].size:  # plus the followed row
            more, w = self.online.row(j)
            if not idx.size and (more[1:] > more[:-1]).all():  # what the sum below gives then
                return more, w
            idx, pos = np.unique(np.concatenate([idx, more]), return_inverse=True)
            num = np.bincount(pos.reshape(-1), np.concatenate([num.astype(np.float64), w]), minlength=idx.size)
        return idx, num

    def scores(self, recent_rows: Sequence[int]) -> np.ndarray:
        """(N,) scores in this model's row order; ``recent_rows`` newest first (only the first
        ``hist_len`` vote, with weights ``decay ** rank``)."""
        return self.scores_many([recent_rows])[0]

    def scores_many(self, recent_rows: Sequence[Sequence[int]]) -> np.ndarray:
        """(B, N) ``scores`` of several users: each user's sum over its rows in order."""
        asked = [list(rows)[: self.params.hist_len] for rows in recent_rows]
        return _votes(asked, self.similarity_rows([j for rows in asked for j in rows]), self.params.decay,
                      len(self.counts))

    def scores_variants(self, recent_rows: Sequence[int], variants: Sequence[CoocParams]) -> list[np.ndarray]:
        """``scores(recent_rows)`` of ``CoocModel(v, <these counts>)`` for each ``v`` of
        ``variants`` (count parameters equal to this model's), the same bits, with each raw row
        read once for all of them (a parameter search: ``models.offline.tune_cooc``). Nothing is
        cached: rows are computed afresh."""
        if any(v.count_key() != self.params.count_key() for v in variants):
            raise ValueError("count parameters differ: refit instead")
        self._current()
        cache, cnt, n = self._follow.rows, self._n, len(self.counts)
        rows = list(recent_rows)[: max(v.hist_len for v in variants)]
        raws = [cache.raw.get(j) or self._raw_row(j) for j in rows]
        pruned: dict[tuple, list] = {}
        out = []
        for v in variants:
            key = (v.alpha, v.shrink, v.k)
            if key not in pruned:
                col_pow = cnt ** (1.0 - v.alpha)
                pruned[key] = prune_rows(raws, [cnt[j] ** v.alpha for j in rows], col_pow, v.shrink, v.k)
            out.append(_votes([rows[: v.hist_len]], pruned[key], v.decay, n)[0])
        return out

    def popularity(self) -> np.ndarray:
        """(N,) log(1 + engagements), the counts' own popularity signal (read-only)."""
        self._current()
        return self._popularity

    # -- checkpoint --------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        r, c, v = self.counts.triplets()
        np.savez_compressed(path, ids=np.array(self.counts.ids, dtype=object).astype(str), n=self.counts.n[: len(self)],
                            rows=r.astype(np.int32), cols=c.astype(np.int32), vals=v.astype(np.float32),
                            params=np.array([repr(asdict(self.params))]))

    @classmethod
    def load(cls, path: str | Path, dense_max: int = DENSE_MAX_ITEMS) -> "CoocModel":
        import ast

        with np.load(path) as z:
            params = CoocParams(**ast.literal_eval(str(z["params"][0])))
            counts = CoocCounts.restore(z["ids"].tolist(), z["n"], z["rows"].astype(np.int64),
                                        z["cols"].astype(np.int64), z["vals"], dense_max)
        return cls(params, counts)


def _votes(asked: list[list[int]], found: Sequence[tuple[np.ndarray, np.ndarray]], decay: float, n: int) -> np.ndarray:
    """(B, N) per user ``b``, the sum over its rows ``asked[b]`` (newest first) of
    ``decay ** rank`` times the row's pruned similarity row (``found``: those rows in order)."""
    at, add, weight = [np.zeros(0, np.intp)], [np.zeros(0)], decay ** np.arange(max(map(len, asked), default=0))
    found = iter(found)
    for b, rows in enumerate(asked):
        for wd, _ in zip(weight, rows):
            idx, vals = next(found)
            at.append(idx + b * n)
            add.append(wd * vals)
    return np.bincount(np.concatenate(at), np.concatenate(add), minlength=len(asked) * n).reshape(-1, n)
