"""Two-stage ranking (``models.candidates``, ``models.ann``): candidates first, the blend on those
only. With every item a candidate it gives the exact lists (the z-scores use exact component
moments); with the default candidate sizes its top-10 keeps nearly all of the exact top-10; it
never returns a deleted row or a seen item, follows catalogue changes without a rebuild, and its
reasons still sum to the score."""
from __future__ import annotations

import numpy as np
import pytest

from models.candidates import CandidateSizes
from models.cooc import CoocModel, CoocParams
from models.offline.two_stage import synthetic
from tests.models.test_fold import features, stream, trained_like
from tests.models.test_recommend_many import assert_same_lists, with_sequence


def ranked(model, states, mode, k=10):
    model.ranking.mode = mode
    try:
        return model.recommend_many(states, k)
    finally:
        model.ranking.mode = "auto"


@pytest.mark.parametrize("kind", ["attention only", "blend", "blend with sequence", "blend with self-attention"])
@pytest.mark.parametrize("seed", [0, 1])
def test_every_item_a_candidate_gives_the_exact_lists(kind, seed):
    rng = np.random.default_rng(seed)
    cooc = None if kind == "attention only" else CoocModel(CoocParams(window=4, trans_window=2, trans_decay=0.3))
    model = trained_like(seed, cooc)
    if kind.startswith("blend with"):
        with_sequence(model, rng, [f"i{i}" for i in range(0, 70, 3)], kind="attention" if "self" in kind else "gru")
    states: dict = {}
    model.fold(stream(rng, 400), states, features(rng, 8), on_error=lambda ev, exc: None)
    model.ranking.sizes = CandidateSizes(ann=1000, sequence=1000, popular=1000, fresh=1000)
    users = [states[u] for u in sorted(states)]
    assert_same_lists(ranked(model, users, "two-stage"), ranked(model, users, "exact"))


@pytest.fixture(scope="module")
def catalogue():
    return synthetic(6000, n_users=300, dim=32, seed=3)


def test_two_stage_top10_keeps_the_exact_top10(catalogue):
    model, states = catalogue
    users = [states[u] for u in sorted(states)]
    exact, two = ranked(model, users, "exact"), ranked(model, users, "two-stage")
    recall = np.mean([len({r.item_id for r in a.items} & {r.item_id for r in b.items}) / 10
                      for a, b in zip(two, exact)])
    assert recall >= 0.9  # measured 1.0
    assert model.ranking.index.cells > 1 and model.ranking.index.default_nprobe() < model.ranking.index.cells


def test_deleted_rows_never_and_new_items_soon_after(catalogue):
    model, states = catalogue
    users = [states[u] for u in sorted(states)[:60]]
    before = ranked(model, users, "two-stage")
    rebuilds = model.ranking.index.rebuilds
    gone = {r.item_id for rec in before for r in rec.items[:3]}  # the best items of many users
    rng = np.random.default_rng(5)
    gone |= {f"i{i}" for i in rng.choice(6000, 600, replace=False)}
    for item in gone:
        model.delete_item(item)
    after = ranked(model, users, "two-stage")
    assert not gone & {r.item_id for rec in after for r in rec.items}
    assert all(len(rec.items) == 10 for rec in after)
    # new items take the freed rows; one made to be a user's best item is found in its row
    u = model.attention.users([users[0].mean], [users[0].norm])[0][0]
    for n in range(len(gone) - 1):
        model.add_item(f"new{n}", rng.normal(size=32).astype(np.float32) * 1e-3)
    model.add_item("best", (10 * u / np.linalg.norm(u)).astype(np.float32))
    assert model.items.index["best"] < 6000  # a reused row
    top = ranked(model, users[:1], "two-stage")[0]
    assert top.items[0].item_id == "best"
    assert not gone & {r.item_id for r in top.items}
    assert model.ranking.index.rebuilds == rebuilds and model.ranking.index.updates >= 2 * len(gone)


def test_seen_items_excluded_and_reasons_sum_to_the_score(catalogue):
    model, states = catalogue
    for user in sorted(states)[:40]:
        rec = ranked(model, [states[user]], "two-stage")[0]
        seen = set(states[user].seen.recent)
        assert rec.items and not seen & {r.item_id for r in rec.items}
        for r in rec.items:
            assert sum(r.reasons.values()) == pytest.approx(r.score, abs=1e-5)
        assert set(rec.dimension_weights) >= {"co-engagement", "popularity"}
        assert sum(rec.dimension_weights.values()) == pytest.approx(1.0, abs=1e-5)


def test_auto_ranks_in_two_stages_from_the_size_it_is_given(catalogue):
    model, _ = catalogue
    assert not model.ranking.active()  # 6,000 items: exact
    model.ranking.exact_max = 1000
    try:
        assert model.ranking.active()
        model.ranking.mode = "exact"
        assert not model.ranking.active()
    finally:
        model.ranking.mode, model.ranking.exact_max = "auto", 50_000
    with pytest.raises(ValueError):
        type(model.ranking)(model, mode="fast")


def test_the_index_follows_only_the_changed_rows_as_a_fresh_one_would(catalogue):
    from models.ann import ItemIndex

    model, states = catalogue
    users = [states[u] for u in sorted(states)[:20]]
    ranked(model, users, "two-stage")
    rng = np.random.default_rng(7)
    for step in range(3):
        for i in rng.choice(sorted(model.items.index), 40, replace=False):
            if rng.random() < 0.5:
                model.delete_item(i)
            else:
                model.add_item(i, rng.normal(size=32).astype(np.float32))  # an update
        for n in range(30):
            model.add_item(f"s{step}-{n}", rng.normal(size=32).astype(np.float32))
        ranked(model, users, "two-stage")
        E, b = model.attention.item_matrix(model.items)
        fresh = ItemIndex()
        fresh.sync(E, ~model.items.deleted, bias=b)
        index = model.ranking.index
        np.testing.assert_array_equal(index._in, fresh._in)
        np.testing.assert_array_equal(index._hash, fresh._hash)
        Q = rng.normal(size=(3, E.shape[1] + 1))
        np.testing.assert_allclose(index.score_moments(Q), fresh.score_moments(Q), rtol=1e-9)
        np.testing.assert_array_equal(index._vecs[:], fresh._vecs[:])
