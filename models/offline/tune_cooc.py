"""Choosing the co-engagement parameters offline: a validation-only coordinate search of at most
``MAX_PASSES`` passes (a seconds cap is an opt-in safety, recorded as ``stopped_by_time``),
over a light ``Recommender`` on ``models.cooc.CoocModel`` alone (no attention, no sequence
model), so that a point costs at most one replay of the counts: the values of a scoring parameter
(``hist_len``, ``decay``, ``k``, ``alpha``, ``shrink``) are scored together in one replay
(``CoocRecommender.variants``), each value of a count parameter gets its own counts and replay.

``CoocRecommender`` keeps, per user, the items exactly as ``UserState.seen`` keeps them (a
``models.seen.SeenItems``), so its scores equal the engine's ``co-engagement`` component (a test
checks it). Training events replayed by the protocol do not count twice; every other event
updates the counts, as the stream does.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Sequence

import numpy as np

from models.cooc import CoocModel, CoocParams
from models.offline.base import ItemCatalog, Recommender
from models.offline.baselines import _TrainingEvents
from models.offline.data import Interaction
from models.offline.protocol import Split, replay_evaluate_shared
from models.seen import SeenItems

log = logging.getLogger(__name__)

MAX_PASSES = 3  # passes over the grid at most (the search also ends after a pass that improves nothing)

#: Values tried per parameter by the coordinate search (the start point's values included).
COOC_GRID: dict[str, list] = {
    "hist_len": [2, 3, 5, 10, 20],
    "decay": [0.5, 0.7, 0.8, 0.9, 1.0],
    "k": [20, 50, 100, 300, 1000],
    "alpha": [0.3, 0.5, 0.7],
    "shrink": [0.0, 10.0, 50.0],
    "window": [5, 20, 50],
    "beta": [0.0, 1.0, 3.0],
    "trans_window": [1, 3],
}


def user_sequences(events: Sequence[Interaction], catalog: ItemCatalog) -> list[list[int]]:
    """Per user, the catalogue rows of all its events (time order, every type)."""
    seqs: dict[str, list[int]] = {}
    for ev in events:
        j = catalog.get(ev.item_id)
        if j is not None:
            seqs.setdefault(ev.user_id, []).append(j)
    return list(seqs.values())


def fit_cooc(train: Sequence[Interaction], catalog: ItemCatalog, params: CoocParams) -> CoocModel:
    """Counts of the training log, item rows in catalogue order."""
    model = CoocModel(params)
    for iid in catalog.ids:
        model.add_item(iid)
    return model.fit(user_sequences(train, catalog))


class CoocRecommender(Recommender):
    """``only:cooc`` without the rest of the engine (tuning); ``fitted``: counts to start from
    (copied, so a replay never changes them)."""

    def __init__(self, params: CoocParams = CoocParams(), fitted: CoocModel | None = None):
        self.name = "cooc"
        self.params = params
        self.fitted = fitted

    def fit(self, train: Sequence[Interaction], items: ItemCatalog) -> None:
        self.catalog = items
        if self.fitted is None or self.fitted.params.count_key() != self.params.count_key():
            self.fitted = fit_cooc(train, items, self.params)
        self.model = self.fitted.with_params(self.params, copy=True)
        self._train = _TrainingEvents(train)
        self._seen: dict[str, SeenItems] = {}

    def learn_one(self, ev: Interaction) -> None:
        is_train = self._train.consume(ev)
        i = self.catalog.get(ev.item_id)
        if i is None:
            return
        seen = self._seen.setdefault(ev.user_id, SeenItems())
        if not is_train and ev.item_id not in seen:
            self.model.update_many([(self._rows(seen, self.params.span), i)])
        seen.add(ev.item_id)

    def _rows(self, seen: SeenItems, n: int) -> list[int]:
        return [self.catalog.get(i) for i in seen.newest(n)]

    def score(self, user_id: str):
        seen = self._seen.get(user_id)
        return self.model.scores(self._rows(seen, self.params.hist_len) if seen else [])

    def variants(self, params: Sequence[CoocParams]) -> list[Recommender]:
        """For ``replay_evaluate_shared``: one recommender per ``params`` (scoring parameters only
        may differ from this one's), scoring from this one's counts what a ``CoocRecommender`` of
        those parameters would; the first learns through this one (which itself scores nothing).
        The scores of all of them for a user are computed together (``CoocModel.scores_variants``)
        when the first asks."""
        memo: dict = {}

        def scores(user_id: str, k: int) -> np.ndarray:
            at = (user_id, self.model.counts.version, self.model.online.version)
            if memo.get("at") != at:
                seen = self._seen.get(user_id)
                rows = self._rows(seen, max(p.hist_len for p in params)) if seen else []
                memo.update(at=at, scores=self.model.scores_variants(rows, params))
            return memo["scores"][k]

        return [_Variant(k, scores, self.learn_one if k == 0 else None) for k in range(len(params))]


class _Variant(Recommender):
    """One of ``CoocRecommender.variants``: its scores, and for the first, the learning."""

    def __init__(self, k: int, scores, learn=None):
        self.name, self._k, self._scores, self._learn = f"cooc#{k}", k, scores, learn

    def fit(self, train, items) -> None:
        raise RuntimeError("a variant scores from the counts of the recommender that made it")

    def learn_one(self, ev: Interaction) -> None:
        if self._learn is None:
            raise RuntimeError("only the first variant learns (replay_evaluate_shared's models[0])")
        self._learn(ev)

    def score(self, user_id: str):
        return self._scores(user_id, self._k)


def tune_cooc(split: Split, catalog: ItemCatalog, budget_s: float | None = None,
              start: CoocParams = CoocParams(), grid: dict[str, list] | None = None,
              max_passes: int = MAX_PASSES) -> tuple[CoocParams, dict]:
    """Coordinate search on the validation targets (valid NDCG@10) from ``start``, one parameter
    at a time over ``grid``, passes until one improves nothing or ``max_passes`` are done: the same
    points on any machine. ``budget_s``: an opt-in seconds cap (the best point so far is kept;
    ``stopped_by_time`` in the report, the result then depends on the machine's speed). Test
    targets are never ranked."""
    grid = grid or COOC_GRID
    t0 = time.perf_counter()
    fitted: dict[tuple, CoocModel] = {}

    def valid_ndcg(points: list[CoocParams]) -> list[float]:  # points: the same count parameters
        key = points[0].count_key()
        if key not in fitted:
            fitted.clear()  # keep one set of counts in memory (380 MB at 10k items)
            fitted[key] = fit_cooc(split.train, catalog, points[0])
        rec = CoocRecommender(points[0], fitted[key])
        rec.fit(split.train, catalog)
        out = replay_evaluate_shared(rec.variants(points), split, catalog, progress=False, measure=("valid",))
        return [m["valid_ndcg@10"] for m in out]

    best, best_score = start, valid_ndcg([start])[0]
    history = [{"params": start.__dict__, "valid_ndcg@10": best_score}]
    improved, passes, out_of_time = True, 0, False
    while improved and not out_of_time and passes < max_passes:
        improved, passes = False, passes + 1
        for name, values in grid.items():
            if budget_s is not None and time.perf_counter() - t0 > budget_s:
                out_of_time = True
                break
            points = [replace(best, **{name: v}) for v in values if getattr(best, name) != v]
            scores: dict[CoocParams, float] = {}
            for group in _same_counts(points):  # the values that only change scoring: one replay
                scores.update(zip(group, valid_ndcg(group)))
            for cand in points:  # in grid order, so the first of equally good values wins
                score = scores[cand]
                history.append({"params": cand.__dict__, "valid_ndcg@10": score})
                if score > best_score:
                    best, best_score, improved = cand, score, True
    report = {"best": best.__dict__, "valid_ndcg@10": best_score, "tried": len(history), "passes": passes,
              "max_passes": max_passes, "converged": not improved, "seconds": round(time.perf_counter() - t0, 1),
              "budget_s": budget_s, "stopped_by_time": out_of_time}
    if out_of_time:
        log.warning("co-engagement search stopped by time after %d points (results depend on the machine)",
                    len(history))
    log.info("cooc tuning: %s", report)
    return best, {**report, "history": history}


def _same_counts(points: list[CoocParams]) -> list[list[CoocParams]]:
    """``points`` in groups that share their count parameters (one replay each), in order."""
    groups: dict[tuple, list[CoocParams]] = {}
    for p in points:
        groups.setdefault(p.count_key(), []).append(p)
    return list(groups.values())
