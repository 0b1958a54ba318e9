"""Two-stage ranking: a few hundred candidates per user, then the blend ranks only those.

Exact ranking scores every catalogue item for every user ((B, N) arrays per component), which
stops scaling past a small catalogue. The two-stage path (``TwoStage``) instead gathers, per user:

* **attention neighbours**: the ``ann`` items with the largest attention score ``u . e_i + b_i``,
  from an approximate inner-product index over ``[e_i, b_i]`` (``models.ann``), kept in step with
  the catalogue row by row (a deleted item's row leaves the index, a reused row is re-added);
* **co-engagement neighbours**: every item with a non-zero co-engagement score, i.e. the pruned
  similarity rows (``CoocModel.similarity_rows``) of the user's recent items;
* **sequence**: the sequence model's ``sequence`` best items (it scores its own vocabulary, a
  fixed size, so that is cheap);
* **popular** (``popular`` most engaged-with) and **fresh** (``fresh`` most recently added) items,
  and, where the blend weighs freshness (``models.freshness``), the ``popular`` most recently
  published;

drops the user's seen items and deleted rows, and blends the components' scores at those items
only. The z-scores use each component's **exact** per-user mean and std over the whole catalogue,
computed without the full row: the attention score's from the running sum and outer-product sum
of the indexed vectors (``ItemIndex.score_moments``), the co-engagement score's from its sparse
non-zeros (each weighted by how many catalogue rows map to its counts row), the sequence score's
from its vocabulary scores (weighted the same way, unknown items at the user's mean), popularity's
and freshness's as the exact path takes them. So a candidate's score and reasons are the exact
path's, to rounding, and two-stage top-k differs from exact only where an exact top item is not
among the candidates.

``mode``: ``"exact"``, ``"two-stage"`` or ``"auto"`` (two-stage from ``exact_max`` live items on,
where it is measured to be faster: ``models.offline.two_stage``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from models.ann import ItemIndex, gathered_products
from models.blend import combine_many, normalise_weights, rows_of
from models.components import AttentionScores, CoEngagement, Popularity, SequenceScores
from models.freshness import Freshness
from models.seen import HASH_BITS
from models.topk import round6, top_k

MODES = ("auto", "exact", "two-stage")
EXACT_MAX_ITEMS = 50_000  # "auto": exact ranking below this many live items
USERS_PER_PASS = 256


@dataclass
class CandidateSizes:
    ann: int = 200  # recall@10 vs exact: ml-100k 1.0, ml-latest-small 0.999, 10^5 synthetic 0.989 (150: 0.982)
    sequence: int = 100
    popular: int = 50
    fresh: int = 50


class TwoStage:
    """The two-stage ranking of an ``InterestModel`` (module doc); ``model.ranking``."""

    def __init__(self, model, mode: str = "auto", exact_max: int = EXACT_MAX_ITEMS,
                 sizes: CandidateSizes | None = None, nprobe: int | None = None):
        if mode not in MODES:
            raise ValueError(f"ranking mode {mode!r}: one of {MODES}")
        self.model, self.mode, self.exact_max = model, mode, exact_max
        self.sizes = sizes or CandidateSizes()
        self.index = ItemIndex(nprobe=nprobe)
        self._version = -1  # the catalogue version the index follows
        self._of = None  # the catalogue (``ItemVectors``) it follows
        self._ids: list[str] = []  # row -> id at the last sync (to tell new items)
        self._fresh = np.zeros(0, dtype=np.int64)  # newest added rows, newest last
        self._cache: dict[str, tuple] = {}

    def active(self) -> bool:
        """Whether ``recommend_many`` ranks in two stages now."""
        return self.mode == "two-stage" or (self.mode == "auto" and self.model.items.live >= self.exact_max)

    # -- the catalogue side ----------------------------------------------------------------
    def sync(self) -> None:
        """The index (and the fresh items) brought to the catalogue, if it changed."""
        items = self.model.items
        if self._version == items.version:
            return
        E, b = self.model.attention.item_matrix(items)
        live = ~items.deleted
        ids = items.ids
        if not self._ids or self._of is not items:  # first sync: the last rows are the latest appended
            self.index.sync(E, live, bias=b)
            new = np.flatnonzero(live)[-self.sizes.fresh:]
            self._ids = list(ids)
        else:  # only the rows the catalogue changed since (O(changes), not O(rows), but the item matrix)
            changed = items.changed_since(self._version)
            self.index.sync(E, live, changed, bias=b)
            old = self._ids
            new = np.array([r for r in changed.tolist() if r >= len(old) or old[r] != ids[r]], dtype=np.int64)
            old.extend(ids[len(old):])
            for r in changed.tolist():
                old[r] = ids[r]
        fresh = np.concatenate([self._fresh, new])
        self._fresh = fresh[live[fresh]][-self.sizes.fresh:]
        self._of, self._version = items, items.version

    def _cached(self, key: str, token: tuple, make):
        hit = self._cache.get(key)
        if hit is None or hit[0] != token:
            hit = self._cache[key] = (token, make())
        return hit[1]

    def _live_rows_of(self, catalogue_rows: np.ndarray, size: int) -> np.ndarray:
        """(size,) other row -> its live catalogue row, -1 for none (``catalogue_rows``: (N,)
        catalogue row -> other row, -1 for none)."""
        live = np.flatnonzero(~self.model.items.deleted)
        live = live[catalogue_rows[live] >= 0]
        inv = np.full(size, -1, dtype=np.int64)
        inv[catalogue_rows[live]] = live
        return inv

    # -- ranking ---------------------------------------------------------------------------
    def recommend_many(self, states: Sequence, k: int = 10) -> list[tuple[list, dict]]:
        """``InterestModel.recommend_many`` in two stages, as ``ranked_lists``."""
        if len(states) > USERS_PER_PASS:
            return [r for i in range(0, len(states), USERS_PER_PASS)
                    for r in self.recommend_many(states[i:i + USERS_PER_PASS], k)]
        if not states:
            return []
        self.sync()
        ranked = self.model._ranked()
        parts = [self._part(c, states) for c in ranked]
        cols, valid = self._candidates(states, [p.candidates for p in parts])
        raw = {c.name: p.at(cols, valid) for c, p in zip(ranked, parts)}
        blend = self.model.blend
        if blend is None:
            S = raw["attention"].astype(np.float64)
            scale, offset = {"attention": np.ones(len(S))}, {"attention": np.zeros(len(S))}
        else:
            moments = {c.name: p.moments() for c, p in zip(ranked, parts) if blend.get(c.name)}
            untrained = self.model.gated_untrained()
            S, scale, offset = combine_many(raw, blend, moments, None if untrained is None else untrained[cols])
        S[~valid] = -np.inf
        tops = [top_k(s, k) for s in S]
        return ranked_lists(self.model, states, ranked, raw, S, scale, offset, tops, cols)

    def _part(self, component, states):
        if isinstance(component, AttentionScores):
            return _AttentionPart(self, component, states)
        if isinstance(component, CoEngagement):
            return _CoocPart(self, component, states)
        if isinstance(component, (Popularity, Freshness)):
            return _SharedPart(self, component, states)
        if isinstance(component, SequenceScores):
            return _SequencePart(self, component, states)
        return _FullPart(component, states)

    def _candidates(self, states, found: list[list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """-> cols (B, C) catalogue rows, valid (B, C): each user's candidates (the union of what
        the components found, and the fresh items), seen items and deleted rows dropped, ascending
        and padded. One sort of (user, row) keys for the whole batch, not one per user."""
        items = self.model.items
        deleted, keys, index = items.deleted, items.keys(), items.index
        B, n = len(states), max(1, len(deleted))
        users = np.arange(B, dtype=np.int64)
        user = np.concatenate([np.repeat(users, [len(r) for r in f]) for f in found] + [np.zeros(0, np.int64)])
        rows = np.concatenate([r for f in found for r in f] + [np.zeros(0, np.int64)]).astype(np.int64, copy=False)
        if self._fresh.size:
            user = np.concatenate([user, np.repeat(users, self._fresh.size)])
            rows = np.concatenate([rows, np.tile(self._fresh, B)])
        ok = (rows >= 0) & (rows < n)
        user, rows = user[ok], rows[ok]
        ok = ~deleted[rows]
        pair = _sorted_unique(user[ok] * n + rows[ok])  # (user, row) ascending, each once
        user, rows = pair // n, pair % n
        # seen: a recent item's row, or an older item's key (``SeenItems.hashed_mask``), per user
        space = 1 << HASH_BITS
        hashed = [(b, g) for b, st in enumerate(states) if st.seen.older or st.seen.newer
                  for g in st.seen.generations() if g.size]
        known = np.concatenate([np.zeros(0, np.int64)] + [b * space + g for b, g in hashed])
        seen = np.isin(user * space + keys[rows], known)
        recent = [(b, index[i]) for b, st in enumerate(states) for i in st.seen.recent if i in index]
        if recent:
            seen |= np.isin(pair, np.array([b * n + r for b, r in recent], dtype=np.int64))
        user, rows = user[~seen], rows[~seen]
        counts = np.bincount(user, minlength=B)
        C = max(1, int(counts.max(initial=0)))
        at = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)  # place within its user
        cols = np.zeros((B, C), dtype=np.int64)
        valid = np.zeros((B, C), dtype=bool)
        cols[user, at], valid[user, at] = rows, True
        return cols, valid


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """``np.unique`` of int64 keys by one sort (numpy's hashing variant is slower on these)."""
    a = np.sort(a)
    return a[np.concatenate([[True], a[1:] != a[:-1]])] if a.size else a


class _FullPart:
    """A component without a cheaper form: the full row, gathered (correct, no saving)."""

    def __init__(self, component, states):
        self.full = np.asarray(component.scores_many(states), dtype=np.float64)
        self.candidates: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(states)

    def at(self, cols, valid=None):
        return np.take_along_axis(self.full, cols, axis=1)

    def moments(self):
        return self.full.mean(axis=1), self.full.std(axis=1)


class _AttentionPart:
    def __init__(self, stage: TwoStage, component: AttentionScores, states):
        U = component._users(states)[0]  # (B, D)
        self.E, self.b = component.fusion.item_matrix(component.items)
        self.U, self.stage = U, stage
        self.Q = np.concatenate([U, np.ones((len(U), 1), U.dtype)], axis=1)
        # the index's best by its codes (twice as many re-ranked by exact scores gave recall@10
        # 0.988 against 0.989 at 1.2x the cost: ``stream_app.dev.list_cost``'s 10^5 catalogue);
        # their exact scores are kept, by (user, row) key, for ``at``
        n = max(1, len(self.b))
        found = stage.index.search(self.Q, stage.sizes.ann)  # (B, ann), -1 padded
        valid = found >= 0
        s = np.full(found.shape, -np.inf, dtype=np.float32)
        if valid.any():  # the whole batch at once (a padded place scores row 0, then -inf)
            s = np.where(valid, self._exact(np.where(valid, found, 0)), s)
        self.candidates = [r[v] for r, v in zip(found, valid)]
        key = (np.arange(len(found))[:, None] * n + found)[valid]
        order = np.argsort(key, kind="stable")
        self._key, self._score, self._n = key[order], s[valid][order].astype(np.float32), n

    def _exact(self, rows: np.ndarray) -> np.ndarray:
        """(B, K) exact attention scores of each user's ``rows`` (B, K) (``gathered_products``)."""
        return gathered_products(self.E, self.U, rows) + self.b[rows]

    def at(self, cols, valid=None):
        """(B, C) attention scores at ``cols``: those of the neighbours kept, the others
        computed (the whole batch in one call); 0 where ``valid`` (B, C) is False (padding)."""
        out = np.zeros(cols.shape, dtype=np.float32)
        key = np.arange(len(cols))[:, None] * self._n + cols
        hit = np.zeros(cols.shape, dtype=bool)
        if self._key.size:
            pos = np.minimum(np.searchsorted(self._key, key), self._key.size - 1)
            hit = self._key[pos] == key
            out[hit] = self._score[pos[hit]]
        done = hit if valid is None else hit | ~valid
        m = (~done).sum(axis=1)  # each user's misses, put first by a stable sort, scored in one call
        if m.any():
            pos = np.argsort(done, axis=1, kind="stable")[:, : m.max()]  # (B, M)
            take = np.arange(pos.shape[1]) < m[:, None]
            out[np.nonzero(take)[0], pos[take]] = self._exact(np.take_along_axis(cols, pos, axis=1))[take]
        return out

    def moments(self):
        return self.stage.index.score_moments(self.Q)


class _CoocPart:
    """Each user's co-engagement scores as sparse (counts row, value) pairs, as ``CoocModel.scores_many``
    sums them: the whole batch's pairs in one array sorted by (user, counts row)."""

    def __init__(self, stage: TwoStage, component: CoEngagement, states):
        cooc = component.cooc
        p, n = cooc.params, len(cooc.counts)
        decay = p.decay ** np.arange(p.hist_len)
        self.map = component.rows.array()  # catalogue row -> counts row
        token = (id(self.map), stage.model.items.layout, n)
        self.mult = stage._cached("cooc-mult", token, lambda: np.bincount(self.map, minlength=n))
        inv = stage._cached("cooc-inv", token, lambda: stage._live_rows_of(self.map, n))
        user, at, add = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
        asked = [component.recent(st, p.hist_len) for st in states]
        found = iter(cooc.similarity_rows([j for rows in asked for j in rows]))  # the batch's rows at once
        for b, rows in enumerate(asked):
            for wd, _ in zip(decay, rows):
                idx, vals = next(found)
                user.append(np.full(idx.size, b, dtype=np.int64))
                at.append(idx)
                add.append(wd * vals)
        at = np.concatenate(at).astype(np.int64, copy=False)
        self.span = max(n, int(at.max(initial=-1)) + 1, 1)
        key, pos = np.unique(np.concatenate(user) * self.span + at, return_inverse=True)
        self.key, self.val = key, np.bincount(pos.reshape(-1), np.concatenate(add), minlength=key.size)
        self.user, self.idx = key // self.span, key % self.span
        bounds = np.searchsorted(self.user, np.arange(len(states) + 1))
        found = inv[self.idx]
        self.candidates = [found[bounds[b]:bounds[b + 1]] for b in range(len(states))]
        self.B, self.n = len(states), len(self.map)

    def at(self, cols, valid=None):
        if not self.key.size:
            return np.zeros(cols.shape)
        key = np.arange(len(cols))[:, None] * self.span + self.map[cols]
        pos = np.minimum(np.searchsorted(self.key, key), self.key.size - 1)
        return np.where(self.key[pos] == key, self.val[pos], 0.0)

    def moments(self):
        m = self.mult[self.idx]
        mean = np.bincount(self.user, self.val * m, minlength=self.B) / self.n
        ex2 = np.bincount(self.user, self.val * self.val * m, minlength=self.B) / self.n
        return mean, np.sqrt(np.maximum(ex2 - mean ** 2, 0.0))


class _SharedPart:
    """A component with one score vector for every user (popularity, freshness): its best
    items are everyone's candidates."""

    def __init__(self, stage: TwoStage, component: Popularity | Freshness, states):
        self.component = component
        self.pop = component.scores_many(states[:1])[0]  # (N,), the same for every user
        deleted = stage.model.items.deleted

        def best():
            s = np.where(deleted, -np.inf, self.pop)
            return top_k(s, stage.sizes.popular)
        top = stage._cached(component.name, (id(self.pop), stage.model.items.layout), best)
        self.candidates = [top] * len(states)

    def at(self, cols, valid=None):
        return self.pop[cols].astype(np.float64)

    def moments(self):
        return self.component.moments()


class _SequencePart:
    def __init__(self, stage: TwoStage, component: SequenceScores, states):
        self.rows = component.catalogue_rows()  # catalogue row -> vocabulary row
        self.s = component.vocabulary_scores(states).astype(np.float64)  # (B, V)
        V = self.s.shape[1]
        token = (id(self.rows), stage.model.items.layout, V)
        self.known = self.rows >= 0
        self.mult = stage._cached("seq-mult", token, lambda: np.bincount(self.rows[self.known], minlength=V))
        inv = stage._cached("seq-inv", token, lambda: stage._live_rows_of(self.rows, V))
        self.mean_v = self.s.mean(axis=1)
        masked = np.where(inv >= 0, self.s, -np.inf)
        self.candidates = [inv[top_k(m, stage.sizes.sequence)] for m in masked]

    def at(self, cols, valid=None):
        v = self.rows[cols]
        out = np.take_along_axis(self.s, np.maximum(v, 0), axis=1)
        return np.where(v >= 0, out, self.mean_v[:, None])

    def moments(self):
        n, unknown = len(self.rows), int((~self.known).sum())
        mean = (self.s @ self.mult + unknown * self.mean_v) / n
        ex2 = ((self.s * self.s) @ self.mult + unknown * self.mean_v ** 2) / n
        return mean, np.sqrt(np.maximum(ex2 - mean * mean, 0.0))


def ranked_lists(model, states, ranked, raw, S, scale, offset, tops, cols=None) -> list[tuple[list, dict]]:
    """Each user's list as (items: [(item id, score, reasons)], dimension/component weights):
    its ``tops`` (rows of ``S``, best first) with their scores and reasons (every component's
    ``explain_many`` scaled and centred as the blend did). ``raw``, ``S``: (B, N) over the
    catalogue, or (B, C) at the catalogue rows ``cols`` (two-stage)."""
    T = np.zeros((len(states), max(map(len, tops))), dtype=np.int64)  # (B, k) each user's top rows (padded)
    for i, top in enumerate(tops):
        T[i, :len(top)] = top
    names, why, shares = [], [], [{} for _ in states]  # reasons; dimension/component -> weight, per user
    for c in ranked:
        parts, share = c.explain_many(states, raw[c.name], T, cols)  # (B, k, m), (B, s)
        parts *= rows_of(scale[c.name], T)[..., None]  # per user, or per item (a gated blend)
        parts[..., -1] -= rows_of(offset[c.name], T)
        names += c.reasons
        why.append(parts)
        w = 1.0 if model.blend is None else model.blend.get(c.name, 0.0)
        for d, row in zip(shares, share.tolist()):
            d.update((n, w * a) for n, a in zip(c.shares, row))
    reasons = round6(np.concatenate(why, axis=2)).tolist()  # (B, k, reasons)
    scores = S[np.arange(len(states))[:, None], T].tolist()
    rows = (T if cols is None else np.take_along_axis(cols, T, axis=1)).tolist()
    ids, out = model.items.ids, []
    for i, top in enumerate(tops):
        items = [(ids[t], score, dict(zip(names, w)))
                 for t, score, w in zip(rows[i][:len(top)], scores[i], reasons[i])]
        out.append((items, {n: round(v, 6) for n, v in normalise_weights(shares[i]).items()}))
    return out
