"""Ranking many users at once (``InterestModel.recommend_many``, what the worker does for every
user a batch touched) gives each user the list ``recommend`` gives it alone: the same items,
scores and reasons to float32 rounding, the same dimension weights."""
from __future__ import annotations

import numpy as np
import pytest

from models.cooc import CoocModel, CoocParams
from models.sequence import AttentionSequence, GRUSequence
from tests.models.test_fold import features, stream, trained_like


def random_attention(rng, vocabulary: list[str], dim: int = 8, window: int = 5) -> AttentionSequence:
    """A random two-block self-attention model over ``vocabulary``."""
    V = len(vocabulary)
    blocks = [{k: rng.normal(size=sh) * 0.5 for k, sh in AttentionSequence.block_shapes(dim, 2 * dim).items()}
              for _ in range(2)]
    return AttentionSequence(vocabulary, rng.normal(size=(V, dim)), rng.normal(size=(window, dim)),
                             np.ones(dim), np.zeros(dim), blocks, rng.normal(size=V), heads=2, window=window)


def with_sequence(model, rng, vocabulary: list[str], hidden: int = 6, kind: str = "gru"):
    """A random GRU (or self-attention model) over part of the catalogue (the other items are
    unknown to it)."""
    V, H = len(vocabulary), hidden
    if kind == "attention":
        model.sequence = random_attention(rng, vocabulary)
    else:
        model.sequence = GRUSequence(vocabulary, rng.normal(size=(V, 3 * H)), rng.normal(size=(3 * H, H)) * 0.5,
                                       rng.normal(size=3 * H), rng.normal(size=(V, H)), rng.normal(size=V), window=5)
    model.blend = {"attention": 0.4, "co-engagement": 0.2, "popularity": 0.1, "sequence": 0.3}
    return model


def assert_same_lists(many, alone) -> None:
    for a, b in zip(many, alone, strict=True):
        ids_a, ids_b = [r.item_id for r in a.items], [r.item_id for r in b.items]
        scores_b = {r.item_id: r.score for r in b.items}
        if ids_a != ids_b:  # only items whose scores tie to rounding may trade places
            swapped = [i for i, j in zip(ids_a, ids_b) if i != j]
            assert all(i in scores_b for i in swapped), (ids_a, ids_b)
            assert all(abs(r.score - scores_b[r.item_id]) < 1e-6 for r in a.items if r.item_id in swapped)
            continue
        np.testing.assert_allclose([r.score for r in a.items], [r.score for r in b.items], rtol=1e-5, atol=1e-6)
        for ra, rb in zip(a.items, b.items):
            assert ra.reasons.keys() == rb.reasons.keys()
            np.testing.assert_allclose(list(ra.reasons.values()), list(rb.reasons.values()), rtol=1e-5, atol=2e-6)
        assert a.dimension_weights.keys() == b.dimension_weights.keys()
        np.testing.assert_allclose(list(a.dimension_weights.values()), list(b.dimension_weights.values()), atol=2e-6)
        assert a.model_version == b.model_version


@pytest.mark.parametrize("kind", ["attention only", "blend", "blend with sequence", "blend with self-attention"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_many_users_at_once_get_the_lists_they_get_alone(kind, seed):
    rng = np.random.default_rng(seed)
    cooc = None if kind == "attention only" else CoocModel(CoocParams(window=4, trans_window=2, trans_decay=0.3))
    model = trained_like(seed, cooc)
    if kind.startswith("blend with"):
        with_sequence(model, rng, [f"i{i}" for i in range(0, 70, 3)] + ["gone"],
                      kind="attention" if kind.endswith("self-attention") else "gru")
    states: dict = {}
    model.fold(stream(rng, 800, n_users=12), states, features(rng, 8), on_error=lambda ev, exc: None)
    users = sorted(states) + ["empty"]
    states["empty"] = model.new_state()  # no evidence anywhere: the priors alone
    many = model.recommend_many([states[u] for u in users], k=7)
    alone = [model.recommend(states[u], k=7) for u in users]
    assert sum(len(r.items) for r in many) > 7 * (len(users) - 2)
    assert_same_lists(many, alone)
    assert model.recommend_many([], k=7) == []


@pytest.mark.parametrize("kind", ["gru", "attention"])
def test_sequence_states_of_many_users_equal_each_alone(kind):
    rng = np.random.default_rng(5)
    ids = [f"i{j}" for j in range(12)]
    H = 7
    m = GRUSequence(ids, rng.normal(size=(12, 3 * H)), rng.normal(size=(3 * H, H)), rng.normal(size=3 * H),
                      rng.normal(size=(12, H)), rng.normal(size=12), window=4)
    if kind == "attention":  # windows of 0-4 known items: run in different length groups
        m = random_attention(rng, ids, window=4)
    windows = [[], ["i3"], ["i1", "zz", "i2"], ["i0", "i1", "i2", "i3", "i4", "i5"], ["zz"], ["i9", "i9"]]
    many = m.states(windows)
    if kind == "attention":
        many, known = many
        assert known.tolist() == [False, True, True, True, False, True]
    for w, h in zip(windows, many):
        alone = m.states([w])[0]
        np.testing.assert_allclose(h, alone[0] if kind == "attention" else alone, rtol=1e-5, atol=1e-5)
    assert not many[0].any() and not many[4].any()  # nothing known: the zero state
    np.testing.assert_allclose(m.scores_many(windows)[1], m.scores(["i3"]), rtol=1e-5, atol=1e-5)


def test_many_users_are_ranked_in_passes_of_bounded_size(monkeypatch):
    """A batch with many users and a large catalogue is ranked in passes of at most RANK_CELLS
    (user, item) cells; the lists are those of one pass."""
    import models.engine as engine

    rng = np.random.default_rng(7)
    model = with_sequence(trained_like(7, CoocModel(CoocParams(window=4))), rng, [f"i{i}" for i in range(0, 70, 2)])
    states: dict = {}
    model.fold(stream(rng, 600, n_users=12), states, features(rng, 8), on_error=lambda ev, exc: None)
    users = sorted(states)
    whole = model.recommend_many([states[u] for u in users], k=5)
    calls = []
    exact = model._exact

    def spy(sts, k=10):
        calls.append(len(sts))
        return exact(sts, k)

    monkeypatch.setattr(model, "_exact", spy)
    monkeypatch.setattr(engine, "RANK_CELLS", 3 * len(model.items.ids))  # 3 users a pass
    passes = model.recommend_many([states[u] for u in users], k=5)
    assert calls[0] == len(users) and max(calls[1:]) == 3 and sum(calls[1:]) == len(users)
    assert_same_lists(passes, whole)
