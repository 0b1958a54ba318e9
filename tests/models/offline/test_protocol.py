"""Leave-one-out split and time-ordered replay evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.offline.base import ItemCatalog, Recommender
from models.offline.baselines import Pop
from models.offline.data import Dataset, Interaction, Item
from models.offline.protocol import (
    TARGET_TYPES,
    rank_of,
    replay_evaluate,
    split_leave_one_out,
    tune,
)


def _items(ids: str) -> dict[str, Item]:
    return {i: Item(i, i.upper(), i.upper(), (), {}, None) for i in ids}


class FixedScores(Recommender):
    """Same scores for every user; records the events it is fed."""

    name = "fixed"

    def __init__(self, scores: dict[str, float]):
        self.scores = scores
        self.fed: list[Interaction] = []
        self.fit_on: list[Interaction] | None = None

    def fit(self, train, items):
        self.fit_on = list(train)
        self.vector = np.array([self.scores.get(i, 0.0) for i in items.ids])

    def learn_one(self, ev):
        self.fed.append(ev)

    def score(self, user_id):
        return self.vector


# Items a..f have catalogue indices 0..5.
SCORES = {"a": 0.9, "b": 0.5, "c": 0.5, "d": 0.1, "e": 0.7, "f": 0.3}


def _hand_log() -> list[Interaction]:
    ev = Interaction
    return [  # deliberately not in time order
        ev("u3", "b", 10, "click"),
        ev("u1", "a", 1, "click"),
        ev("u1", "b", 2, "rating", 4.0),
        ev("u2", "e", 3, "review", None, "great"),
        ev("u2", "b", 4, "click"),
        ev("u1", "c", 5, "click"),
        ev("u2", "c", 6, "favorite"),
        ev("u2", "e", 7, "click"),
        ev("u1", "d", 8, "click"),
        ev("u3", "a", 9, "click"),
    ]


@pytest.fixture
def hand_split():
    ds = Dataset("hand", _items("abcdef"), _hand_log())
    return split_leave_one_out(ds), ItemCatalog(ds.items)


def test_split_targets(hand_split) -> None:
    split, _ = hand_split
    assert [e.ts for e in split.events] == list(range(1, 11))
    assert {u: e.item_id for u, e in split.valid.items()} == {"u1": "c", "u2": "c"}
    assert {u: e.item_id for u, e in split.test.items()} == {"u1": "d", "u2": "e"}
    assert split.valid_pos == {"u1": 4, "u2": 5} and split.test_pos == {"u1": 7, "u2": 6}
    # u3 has only two target-type events: no targets, all in training.
    assert "u3" not in split.valid and "u3" not in split.test
    assert [e.ts for e in split.train] == [1, 2, 3, 4, 9, 10]
    # The review of u2 is history, never a target.
    assert all(e.type in TARGET_TYPES for e in [*split.valid.values(), *split.test.values()])


def test_split_review_only_tail_is_not_a_target() -> None:
    ev = Interaction
    log = [ev("u", "a", 1, "click"), ev("u", "b", 2, "click"), ev("u", "c", 3, "click"),
           ev("u", "d", 4, "review", None, "meh")]
    split = split_leave_one_out(Dataset("r", _items("abcd"), log))
    assert split.valid["u"].item_id == "b" and split.test["u"].item_id == "c"
    assert [e.item_id for e in split.train] == ["a", "d"]


def test_split_equal_timestamps_keep_log_order() -> None:
    ev = Interaction
    log = [ev("u", "x", 5, "click"), ev("u", "y", 5, "click"), ev("u", "z", 5, "click"), ev("u", "w", 1, "click")]
    split = split_leave_one_out(Dataset("t", _items("wxyz"), log))
    assert [e.item_id for e in split.events] == ["w", "x", "y", "z"]
    assert split.valid["u"].item_id == "y" and split.test["u"].item_id == "z"


def test_rank_ties_and_nan() -> None:
    s = np.array([0.2, 0.5, 0.5, 0.5, -np.inf])
    assert [rank_of(s, i) for i in (1, 2, 3)] == [0, 1, 2]
    assert rank_of(s, 0) == 3
    assert rank_of(np.array([1.0, np.nan, 0.0]), 1) == 2


def test_replay_hand_computed(hand_split) -> None:
    """Ranks by hand (seen items removed):
    t1 u1 a -> 0; t2 u1 b -> 1 (e); t4 u2 b -> 1 (a); t5 u1 c (valid) -> 1 (e; b is seen);
    t6 u2 c (valid) -> 1 (a); t7 u2 e (test) already seen via the review -> skipped;
    t8 u1 d (test) -> 2 (e, f); t9 u3 a -> 0; t10 u3 b -> 1 (e).
    """
    split, catalog = hand_split
    model = FixedScores(SCORES)
    model.fit(split.train, catalog)

    m = replay_evaluate(model, split, catalog, k=2, progress=False)
    assert m["n_valid"] == 2 and m["n_test"] == 1 and m["n_prequential"] == 8 and m["n_skipped_seen"] == 1
    assert m["valid_recall@2"] == 1.0
    assert m["valid_ndcg@2"] == pytest.approx(1 / math.log2(3))
    assert m["recall@2"] == 0.0 and m["ndcg@2"] == 0.0
    assert m["prequential_hit@2"] == pytest.approx(7 / 8)
    # Every event was fed once, in time order, after being scored.
    assert [e.ts for e in model.fed] == list(range(1, 11))

    model = FixedScores(SCORES)
    model.fit(split.train, catalog)
    m = replay_evaluate(model, split, catalog, k=3, progress=False)
    assert m["recall@3"] == 1.0 and m["ndcg@3"] == pytest.approx(0.5)

    model = FixedScores(SCORES)
    model.fit(split.train, catalog)
    m = replay_evaluate(model, split, catalog, progress=False)
    assert set(m) >= {"recall@10", "ndcg@10", "valid_recall@10", "valid_ndcg@10", "prequential_hit@10",
                      "n_test", "n_prequential"}
    assert m["prequential_hit@10"] == 1.0

    model = FixedScores(SCORES)
    model.fit(split.train, catalog)
    m = replay_evaluate(model, split, catalog, k=1, progress=False)
    assert m["prequential_hit@1"] == pytest.approx(2 / 8)
    assert m["valid_ndcg@1"] == 0.0


def test_constant_scores_get_no_free_hits() -> None:
    """With equal scores, an item ranks behind every unseen item with a lower index."""
    ids = [f"i{n:02d}" for n in range(30)]
    items = _items_list(ids)
    log = []
    for u in range(5):
        for t, i in enumerate(["i25", "i26", "i27", "i28", "i29"]):
            log.append(Interaction(f"u{u}", i, 100 * u + t, "click"))
    split = split_leave_one_out(Dataset("flat", items, log))
    catalog = ItemCatalog(items)
    model = FixedScores({})
    model.fit(split.train, catalog)
    m = replay_evaluate(model, split, catalog, progress=False)
    assert m["recall@10"] == 0.0 and m["valid_recall@10"] == 0.0 and m["prequential_hit@10"] == 0.0


def _items_list(ids: list[str]) -> dict[str, Item]:
    return {i: Item(i, i, i, (), {}, None) for i in ids}


def test_seen_items_are_excluded() -> None:
    """The best-scored item was seen already, so the target takes its place at rank 0."""
    ev = Interaction
    log = [ev("u", "a", 1, "click"), ev("u", "b", 2, "click"), ev("u", "c", 3, "click")]
    items = _items("abc")
    split = split_leave_one_out(Dataset("s", items, log))
    catalog = ItemCatalog(items)
    model = FixedScores({"a": 10.0, "b": 5.0, "c": 1.0})
    model.fit(split.train, catalog)
    m = replay_evaluate(model, split, catalog, k=1, progress=False)
    assert m["valid_ndcg@1"] == 1.0 and m["ndcg@1"] == 1.0


def test_replay_does_not_modify_model_scores(hand_split) -> None:
    split, catalog = hand_split
    pop = Pop()
    pop.fit(split.train, catalog)
    replay_evaluate(pop, split, catalog, progress=False)
    assert np.isfinite(pop.counts).all()
    # Training events are not counted twice; held-out targets are added by the replay.
    assert pop.counts.sum() == len(split.events)


def test_prequential_subsample_is_seeded(hand_split) -> None:
    split, catalog = hand_split
    runs = []
    for _ in range(2):
        model = FixedScores(SCORES)
        model.fit(split.train, catalog)
        runs.append(replay_evaluate(model, split, catalog, k=2, progress=False, max_prequential_events=4, seed=3))
    assert runs[0]["n_prequential"] <= 4
    assert runs[0]["prequential_hit@2"] == runs[1]["prequential_hit@2"]
    assert runs[0]["n_valid"] == 2  # targets are always ranked


def test_valid_only_measure_stops_early(hand_split) -> None:
    split, catalog = hand_split
    model = FixedScores(SCORES)
    model.fit(split.train, catalog)
    m = replay_evaluate(model, split, catalog, k=2, progress=False, measure=("valid",))
    assert m["n_valid"] == 2 and m["n_test"] == 0 and math.isnan(m["recall@2"])
    assert len(model.fed) == 6  # up to and including the last validation target (t6)


def test_wrong_score_shape_is_an_error(hand_split) -> None:
    split, catalog = hand_split

    class Broken(FixedScores):
        def score(self, user_id):
            return np.zeros(3)

    model = Broken(SCORES)
    model.fit(split.train, catalog)
    with pytest.raises(ValueError, match="shape"):
        replay_evaluate(model, split, catalog, progress=False)


def test_tune_picks_best_validation_score(hand_split) -> None:
    split, catalog = hand_split

    def make(boost: float) -> FixedScores:
        return FixedScores({**SCORES, "c": SCORES["c"] + boost})

    res = tune(make, {"boost": [0.0, 1.0]}, split, catalog, metric="valid_ndcg@10")
    assert res.best_params == {"boost": 1.0}
    assert res.best_score == 1.0
    assert [p for p, _ in res.results] == [{"boost": 0.0}, {"boost": 1.0}]
