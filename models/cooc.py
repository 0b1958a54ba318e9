"""The co-engagement dimension: item-to-item co-occurrence counts, updated one event at a time
(numpy only; serving core).

Global counts, keyed by item id (rows in the order items were first added here):

* ``M[j, i]``: pair weight. When a user engages with an item ``i`` it has not engaged with before,
  while its recent distinct items are ``r_1`` (newest) .. ``r_L``::

      M[r_d, i] += 1 and M[i, r_d] += 1                   for d <= window        (co-occurrence)
      M[r_d, i] += beta * trans_decay ** (d - 1)           for d <= trans_window  (follow-on bonus)
      n[i] += 1

  A re-engagement with an item the user already has (``UserState.seen``) changes no count.
  ``update(prev_rows, row)`` is that rule for one event (O(window)); ``fit`` applies the very same
  rule to whole training sequences (each user's items are kept in a ``models.seen.SeenItems``,
  as ``UserState.seen`` keeps them, so "already has" is decided alike, a rare false positive
  included), so fitting on a log equals streaming it event by event.

Scores for a user whose recent distinct items are ``r_1`` (newest) .. ``r_H`` (``H = hist_len``)::

    S[j, i] = M[j, i] / (n[j] ** alpha * n[i] ** (1 - alpha) + shrink),  S[j, j] = 0,
              only the k largest entries of row j kept
    score(i) = sum_d decay ** (d - 1) * S[r_d, i]

A score is a pure function of the counts and the user's recent items, so the worker and the
offline replay agree exactly whatever the timing of their requests. Rows of ``S`` are computed
from the counts when asked for (O(N) each) and kept only until the counts next change: every
change bumps ``CoocCounts.version``, and a row computed at another version is never used (change
the counts through ``CoocCounts`` / ``CoocModel`` methods only).

Memory: ``M`` is a dense float32 matrix up to ``DENSE_MAX_ITEMS`` items (12,288: 600 MB at the
limit, 380 MB at 9,742 items, 11 MB at 1,682); beyond that the counts move to one dict per row,
whose size is bounded by the number of distinct pairs the windows produced (not by N^2).

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
from itertools import chain
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from models.seen import SeenItems, item_key

DENSE_MAX_ITEMS = 12_288
ROW_CACHE_MAX = 4096  # similarity rows kept per counts version


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


class CoocCounts:
    """Pair weights ``M`` and engagement counts ``n`` over item rows; dense or per-row dicts."""

    def __init__(self, dense_max: int = DENSE_MAX_ITEMS):
        self.dense_max = int(dense_max)
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self.n = np.zeros(0, dtype=np.float64)
        self._dense: np.ndarray | None = np.zeros((0, 0), dtype=np.float32)
        self._rows: list[dict[int, float]] | None = None
        self.version = 0  # bumped on every change of M, n or the item rows

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dense(self) -> bool:
        return self._dense is not None

    def add_item(self, item_id: str) -> int:
        row = self.index.get(item_id)
        if row is not None:
            return row
        row = len(self.ids)
        self.ids.append(item_id)
        self.index[item_id] = row
        self._reserve(row + 1)
        self.version += 1
        return row

    def _reserve(self, n: int) -> None:
        if self.n.size < n:
            self.n = np.concatenate([self.n, np.zeros(max(n - self.n.size, 64, self.n.size // 4))])
        if self._dense is not None and n > self._dense.shape[0]:
            cap = min(max(n, self._dense.shape[0] + max(64, self._dense.shape[0] // 4)), self.dense_max)
            if n > self.dense_max:
                self._to_sparse()
            else:
                grown = np.zeros((cap, cap), dtype=np.float32)
                k = self._dense.shape[0]
                grown[:k, :k] = self._dense
                self._dense = grown
        if self._rows is not None:
            self._rows.extend({} for _ in range(n - len(self._rows)))

    def _to_sparse(self) -> None:
        d = self._dense
        self._rows = [{int(c): float(d[r, c]) for c in np.flatnonzero(d[r])} for r in range(d.shape[0])]
        self._dense = None

    def add(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> None:
        """M[rows, cols] += vals (repeated coordinates add up)."""
        if self._dense is not None:
            np.add.at(self._dense, (rows, cols), vals.astype(np.float32))
        else:
            for r, c, v in zip(rows.tolist(), cols.tolist(), vals.tolist()):
                row = self._rows[r]
                row[c] = float(np.float32(row.get(c, 0.0) + v))
        self.version += 1

    def add_engagement(self, recent: Sequence[int], row: int, near: int, bonus: tuple) -> bool:
        """The dense fast path of one event's pairs, ``recent`` newest first: ``M[r, row] += 1``
        and ``M[row, r] += 1`` for ``r`` in ``recent[:near]``, then the follow-on bonus
        ``M[recent[keep], row] += vals`` (``bonus = (keep, vals)``, float32). That is exactly what
        ``add`` does with those triplets in that order when ``recent`` holds distinct rows other
        than ``row``; False (nothing changed) where that does not hold or M is stored per row."""
        d = self._dense
        if d is None or row in recent or len(set(recent)) != len(recent):
            return False
        r = np.array(recent, dtype=np.intp)
        col = d[:, row]  # 1-d views: fancy indexing on them is cheaper than on the matrix
        col[r[:near]] += np.float32(1.0)
        d[row][r[:near]] += np.float32(1.0)
        keep, vals = bonus
        if vals.size:
            col[r[keep]] += vals
        self.version += 1
        return True

    def add_engaged(self, row: int, times: float = 1.0) -> None:
        """n[row] += times."""
        self.n[row] += times
        self.version += 1

    def off_diagonal(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Row ``j`` of M as (columns ascending, float32 values): its non-zero entries but ``M[j, j]``."""
        if self._dense is not None:
            r = self._dense[j, : len(self.ids)]
            nz = r != 0
            nz[j] = False
            idx = nz.nonzero()[0]
            return idx, r[idx]
        d = self._rows[j]
        cols = sorted(c for c, v in d.items() if v != 0 and c != j)
        return np.array(cols, dtype=np.int64), np.array([d[c] for c in cols], dtype=np.float32)

    def row(self, j: int) -> np.ndarray:
        """Row ``j`` of M over all items, float32 (a copy)."""
        n = len(self.ids)
        if self._dense is not None:
            return self._dense[j, :n].copy()
        out = np.zeros(n, dtype=np.float32)
        r = self._rows[j]
        if r:
            out[np.fromiter(r.keys(), np.int64, len(r))] = np.fromiter(r.values(), np.float32, len(r))
        return out

    def triplets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Non-zero entries (rows, cols, vals) of M, for saving."""
        n = len(self.ids)
        if self._dense is not None:
            r, c = np.nonzero(self._dense[:n, :n])
            return r, c, self._dense[r, c]
        rs = [(r, c, v) for r, d in enumerate(self._rows[:n]) for c, v in d.items()]
        arr = np.array(rs, dtype=np.float64).reshape(-1, 3)
        return arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2].astype(np.float32)

    def copy(self) -> "CoocCounts":
        out = CoocCounts(self.dense_max)
        out.ids, out.index, out.n = list(self.ids), dict(self.index), self.n.copy()
        out._dense = None if self._dense is None else self._dense.copy()
        out._rows = None if self._rows is None else [dict(r) for r in self._rows]
        out.version = self.version
        return out


class CoocModel:
    """Counts + parameters: the update rule and the scores of the module doc."""

    def __init__(self, params: CoocParams = CoocParams(), counts: CoocCounts | None = None):
        self.params = params
        self.counts = counts if counts is not None else CoocCounts()
        self._at: tuple | None = None  # (counts, version, params) the cached rows were computed from
        self._bonuses: tuple = (None, [])  # (params, _bonus(params, size) by size)
        self._cached_rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._col_pow = self._popularity = np.zeros(0)

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def index(self) -> dict[str, int]:
        return self.counts.index

    def add_item(self, item_id: str) -> int:
        return self.counts.add_item(item_id)

    def with_params(self, params: CoocParams, copy: bool = True) -> "CoocModel":
        """Same counts (copied), other parameters; only scoring parameters may differ."""
        if params.count_key() != self.params.count_key():
            raise ValueError("count parameters differ: refit instead")
        return CoocModel(params, self.counts.copy() if copy else self.counts)

    # -- the update rule ---------------------------------------------------------------------
    def pairs(self, prev_rows: Sequence[int], row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, cols, vals) that one new engagement with ``row`` adds; ``prev_rows`` newest first."""
        p = self.params
        r = np.asarray(list(prev_rows)[: p.span], dtype=np.int64)
        rc, rt = r[: p.window], r[: p.trans_window]
        rows = np.concatenate([rc, np.full(rc.size, row), rt])
        cols = np.concatenate([np.full(rc.size, row), rc, np.full(rt.size, row)])
        vals = np.concatenate([np.ones(2 * rc.size), p.beta * p.trans_decay ** np.arange(rt.size)])
        return rows, cols, vals

    def update(self, prev_rows: Sequence[int], row: int) -> None:
        """One event: a user engages with ``row`` for the first time; ``prev_rows`` are its recent
        distinct items, newest first (``UserState.seen.newest``)."""
        p = self.params
        prev = list(prev_rows)[: p.span]
        if self._bonuses[0] is not p:
            self._bonuses = (p, [_bonus(p, size) for size in range(p.trans_window + 1)])
        if not self.counts.add_engagement(prev, row, p.window, self._bonuses[1][min(len(prev), p.trans_window)]):
            rows, cols, vals = self.pairs(prev, row)
            keep = vals != 0
            self.counts.add(rows[keep], cols[keep], vals[keep])
        self.counts.add_engaged(row)

    def update_many(self, engagements: Sequence[tuple[Sequence[int], int]]) -> None:
        """``update`` for each (prev_rows, row), in that order, to the same bits: one
        ``np.add.at`` over every event's pairs, which adds to a cell repeated among them in the
        order given, so each float32 count receives the same additions in the same order."""
        c, p = self.counts, self.params
        if not c.dense or not engagements:
            for prev, row in engagements:
                self.update(prev, row)
            return
        span, tw = p.span, p.trans_window
        prev = [r[:span] for r, _ in engagements]
        size = np.fromiter(map(len, prev), np.intp, len(prev))  # (E,)
        rows = np.fromiter((row for _, row in engagements), np.intp, len(prev))[:, None]  # (E, 1)
        have = np.arange(span) < size[:, None]  # (E, span)
        recent = np.zeros(have.shape, dtype=np.intp)
        recent[have] = np.fromiter(chain.from_iterable(prev), np.intp, int(size.sum()))
        bonus = np.zeros((tw + 1, span), dtype=np.float32)  # the follow-on bonus by how many items precede
        for n in range(tw + 1):
            bonus[n, :n] = (p.beta * p.trans_decay ** np.arange(n)).astype(np.float32)  # as _bonus
        vals = bonus[np.minimum(size, tw)]  # (E, span)
        near = have & (np.arange(span) < p.window)
        width = c._dense.shape[1]
        to_row, from_row = recent * width + rows, rows * width + recent  # M[r, row], M[row, r]
        # per event, in update's order: M[r, row] += 1, M[row, r] += 1 (r in the window), M[r, row] += bonus
        cells = np.stack([to_row, from_row, to_row], axis=1)  # (E, 3, span)
        add = np.stack(np.broadcast_arrays(np.float32(1.0), np.float32(1.0), vals), axis=1)
        take = np.stack([near, near, have & (vals != 0)], axis=1)
        np.add.at(np.reshape(c._dense, -1, copy=False), cells[take], add[take])
        np.add.at(c.n, rows[:, 0], 1.0)
        c.version += 1

    def fit(self, sequences: Iterable[Sequence[int]]) -> "CoocModel":
        """Apply the update rule to per-user sequences of item rows (time order, every engagement,
        re-engagements included), keeping each user's items as the state does."""
        span = self.params.span
        ids, index = self.counts.ids, self.counts.index
        keys = [item_key(i) for i in ids]
        chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        firsts: list[int] = []
        for seq in sequences:
            seen = SeenItems()
            for row in seq:
                if not seen.has(ids[row], keys[row]):
                    chunks.append(self.pairs([index[i] for i in seen.newest(span)], row))
                    firsts.append(row)
                seen.add(ids[row], keys[row])
        if chunks:
            rows, cols, vals = (np.concatenate(x) for x in zip(*chunks))
            keep = vals != 0
            self.counts.add(rows[keep], cols[keep], vals[keep])
        n = len(self.counts)
        self.counts.n[:n] += np.bincount(np.asarray(firsts, dtype=np.int64), minlength=n)
        self.counts.version += 1
        return self

    # -- scoring -----------------------------------------------------------------------------
    def _current(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """The row cache, emptied (with the per-column terms recomputed) if the counts changed."""
        c = self.counts
        if self._at is None or self._at[0] is not c or self._at[1] != c.version or self._at[2] is not self.params:
            cnt = c.n[: len(c)]
            self._col_pow = cnt ** (1.0 - self.params.alpha)
            self._popularity = np.log1p(cnt)
            self._popularity.flags.writeable = False
            self._cached_rows = {}
            self._at = (c, c.version, self.params)
        return self._cached_rows

    def similarity_row(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Pruned row ``j`` of S as (columns, values) (read-only arrays). Computed on the non-zero
        entries of M's row only: each value is the same float operation as on the whole row."""
        cache = self._current()
        hit = cache.get(j)
        if hit is not None:
            return hit
        p, c = self.params, self.counts
        idx, num = c.off_diagonal(j)
        den = (c.n[j] ** p.alpha) * self._col_pow[idx] + p.shrink
        den[den <= 0] = 1.0
        vals = (num / den).astype(np.float32)
        if not vals.all():  # a quotient that rounds to zero is no neighbour
            keep = vals != 0
            idx, vals = idx[keep], vals[keep]
        if idx.size > p.k:
            top = np.argpartition(-vals, p.k - 1)[: p.k]
            idx, vals = idx[top], vals[top]
        idx.flags.writeable = vals.flags.writeable = False
        if len(cache) >= ROW_CACHE_MAX:
            cache.clear()
        cache[j] = (idx, vals)
        return idx, vals

    def scores(self, recent_rows: Sequence[int]) -> np.ndarray:
        """(N,) scores in this model's row order; ``recent_rows`` newest first (only the first
        ``hist_len`` vote, with weights ``decay ** rank``)."""
        return self.scores_many([recent_rows])[0]

    def scores_many(self, recent_rows: Sequence[Sequence[int]]) -> np.ndarray:
        """(B, N) ``scores`` of several users: each user's sum over its rows in order."""
        p, n = self.params, len(self.counts)
        at, add, decay = [np.zeros(0, np.intp)], [np.zeros(0)], p.decay ** np.arange(p.hist_len)
        for b, rows in enumerate(recent_rows):
            for wd, j in zip(decay, list(rows)[: p.hist_len]):
                idx, vals = self.similarity_row(j)
                at.append(idx + b * n)
                add.append(wd * vals)
        return np.bincount(np.concatenate(at), np.concatenate(add), minlength=len(recent_rows) * n).reshape(-1, n)

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
            counts = CoocCounts(dense_max)
            for iid in z["ids"].tolist():
                counts.add_item(iid)
            counts.add(z["rows"].astype(np.int64), z["cols"].astype(np.int64), z["vals"])
            counts.n[: len(counts)] = z["n"]
            counts.version += 1
        return cls(params, counts)


def _bonus(p: CoocParams, size: int) -> tuple[slice | np.ndarray, np.ndarray]:
    """The follow-on bonus of the ``size`` newest items as ``pairs`` computes it, float32: (which
    of them get one, their values) (zeros are left out, as ``update`` leaves them out)."""
    vals = (p.beta * p.trans_decay ** np.arange(size)).astype(np.float32)
    keep = slice(0, size) if vals.all() else np.flatnonzero(vals)
    vals = vals[keep]
    vals.flags.writeable = False
    return keep, vals
