"""The blend: never below its best component on validation; the served (numpy, checkpoint) model
scores exactly what the offline model scores; reasons add up; the co-engagement recommender equals
the engine's component."""
from __future__ import annotations

import numpy as np
import pytest

from models.engine import Event, InterestModel
from models.state import UserState
from models.offline.base import ItemCatalog
from models.offline.choose_blend import (grid_ndcg, neighbourhood_mean, ndcg_of, record_validation, select_weights,
                                         simplex_grid)
from models.offline.tune_cooc import CoocRecommender, tune_cooc
from models.offline.data import Dataset, Interaction, Item
from models.offline.fused import FusedRecommender
from models.offline.protocol import replay_evaluate, replay_evaluate_shared, split_leave_one_out
from models.offline.train_sequence import SequenceConfig
from models.offline.train_attention import TrainConfig
from models.cooc import CoocParams


def small_dataset(seed: int = 0, n_users: int = 40) -> Dataset:
    """Items in 3 unrelated categories (a third without text), ratings, reviews with text, tied
    timestamps."""
    rng = np.random.default_rng(seed)
    items = {}
    for c, cat in enumerate(("garden", "books", "audio")):
        for j in range(8):
            iid = f"{cat}-{j}"
            items[iid] = Item(iid, iid, "" if j % 3 == 0 else f"a {cat} thing number {j}", (cat,), {}, None)
    ids = list(items)
    events = []
    for u in range(n_users):
        home = u % 3
        for t in range(12):
            j = int(rng.integers(8)) + 8 * (home if rng.random() < 0.8 else int(rng.integers(3)))
            ts = 1000 * (u + 10 * (t // 2))  # pairs of events share a timestamp
            events.append(Interaction(f"u{u}", ids[j], ts, "rating", float(rng.integers(1, 6))))
            if rng.random() < 0.2:
                events.append(Interaction(f"u{u}", ids[j], ts, "review", None, "great, loved it"))
    return Dataset("small", items, sorted(events, key=lambda e: e.ts))


@pytest.fixture(scope="module")
def fitted():
    ds = small_dataset()
    catalog = ItemCatalog.from_dataset(ds)
    split = split_leave_one_out(ds)
    vecs = np.random.default_rng(1).normal(size=(len(catalog), 8)).astype(np.float32)
    rec = FusedRecommender("fused", item_vectors=vecs, progress=False, cf_dim=4,
                           config=TrainConfig(epochs=2, d_model=8, d_attn=4, batch_size=64),
                           sequence=SequenceConfig(dim=8, hidden=8, window=10, epochs=3), gate=False)  # the fixed blend
    rec.fit(split.train, catalog)
    report = rec.select(split, budget_s=3.0)
    return ds, catalog, split, rec, report


def test_simplex_grid_contains_every_single_component():
    g = simplex_grid(3, 0.05)
    assert len(g) == 231 and np.allclose(g.sum(1), 1.0)
    for c in range(3):
        assert (g == np.eye(3)[c]).all(1).any()


@pytest.mark.parametrize("chunks", [False, True])
def test_grid_scores_equal_point_by_point_scores_ties_included(chunks, monkeypatch):
    if chunks:  # items scored a few at a time, points leaving as they reach k (the path of large catalogues)
        from models.offline import choose_blend

        monkeypatch.setattr(choose_blend, "FIRST_PER_KEY", 2)
        monkeypatch.setattr(choose_blend, "CHUNK", 5)
    rng = np.random.default_rng(3)
    V, C, N = 50, 4, 60
    Z = rng.integers(-2, 3, size=(V, C, N)).astype(np.float32)  # small integers: many exact ties
    T = rng.integers(N, size=V)
    Z[:5] = Z[np.arange(5), :, T[:5]][:, :, None]  # every item equal to the target
    M = rng.random((V, N)) < 0.2
    M[np.arange(V), T] = False
    M[5] = True  # all seen but the target
    M[5, T[5]] = False
    grid = simplex_grid(C, 0.25)
    expected = np.array([ndcg_of(Z, M, T, w).mean() for w in grid])
    assert np.allclose(grid_ndcg(Z, M, T, grid), expected, rtol=0, atol=1e-12)
    assert grid_ndcg(Z[:0], M[:0], T[:0], grid).tolist() == [0.0] * len(grid)


def test_blend_never_below_best_component_on_validation():
    rng = np.random.default_rng(0)
    V, C, N = 60, 3, 40
    Z = rng.normal(size=(V, C, N)).astype(np.float32)
    T = rng.integers(N, size=V)
    Z[np.arange(V)[:30], 1, T[:30]] += 2.5  # component 1 knows half the targets
    Z[np.arange(V)[30:], 2, T[30:]] += 2.5  # component 2 the other half
    M = rng.random((V, N)) < 0.1
    M[np.arange(V), T] = False
    w, rep = select_weights(Z, M, T, ["a", "b", "c"])
    assert rep["valid_ndcg@10"] >= max(rep["single_valid_ndcg@10"].values())
    assert rep["valid_ndcg@10"] == pytest.approx(ndcg_of(Z, M, T, np.array(list(w.values()))).mean())
    assert sum(w.values()) == pytest.approx(1.0)


def test_neighbourhood_is_one_step_of_weight_between_two_components():
    for n_comp in (2, 3, 4):
        g = simplex_grid(n_comp, 0.1)
        s = np.random.default_rng(n_comp).random(len(g))
        near = np.abs(g[:, None, :] - g[None, :, :]).sum(-1) <= 0.2 + 1e-9  # L1 distance of one step
        assert np.allclose(neighbourhood_mean(g, s, 0.1), (near @ s) / near.sum(1))


def test_blend_prefers_the_best_neighbourhood_among_points_above_every_single_component():
    rng = np.random.default_rng(1)
    V, C, N = 80, 3, 30
    Z = rng.normal(size=(V, C, N)).astype(np.float32)
    T = rng.integers(N, size=V)
    Z[np.arange(V)[:40], 0, T[:40]] += 1.5
    Z[np.arange(V)[40:], 1, T[40:]] += 1.5
    M = np.zeros((V, N), dtype=bool)
    w, rep = select_weights(Z, M, T, ["a", "b", "c"])
    grid = simplex_grid(3, 0.05)
    scores = np.array([ndcg_of(Z, M, T, p).mean() for p in grid])
    smooth = neighbourhood_mean(grid, scores, 0.05)
    ok = scores >= max(rep["single_valid_ndcg@10"].values())
    assert rep["neighbourhood_valid_ndcg@10"] == pytest.approx(smooth[ok].max())
    assert rep["valid_ndcg@10"] >= max(rep["single_valid_ndcg@10"].values())
    assert rep["max_point"]["valid_ndcg@10"] == pytest.approx(scores.max())


def test_recorded_validation_equals_the_replay(fitted):
    _, catalog, split, rec, report = fitted
    blend = report["blend"]
    assert blend["valid_ndcg@10"] >= max(blend["single_valid_ndcg@10"].values())
    m = replay_evaluate(rec.variant("fused", "fused"), split, catalog, progress=False, measure=("valid",))
    assert m["valid_ndcg@10"] == pytest.approx(blend["valid_ndcg@10"], abs=1e-6)


def test_variants_sharing_one_state_replay_as_each_alone(fitted):
    ds, catalog, split, rec, _ = fitted
    modes = ["attention", "only:content", "only:category"]
    shared = replay_evaluate_shared(rec.sharing_state(modes), split, catalog, progress=False)
    for mode, m in zip(modes, shared):
        alone = replay_evaluate(rec.variant(mode, mode), split, catalog, progress=False)
        assert {k: v for k, v in m.items() if k != "eval_seconds"} == \
            pytest.approx({k: v for k, v in alone.items() if k != "eval_seconds"}, nan_ok=True)
    assert shared[0]["ndcg@10"] != shared[1]["ndcg@10"]  # the modes do score differently
    with pytest.raises(ValueError):
        rec.sharing_state(["attention", "only:cooc"])


def test_cooc_recommender_equals_the_engine_component(fitted):
    _, catalog, split, rec, _ = fitted
    light = CoocRecommender(rec.cooc_params)
    light.fit(split.train, catalog)
    full = rec.variant("only:cooc", "only:cooc")
    for ev in split.events:
        light.learn_one(ev)
        full.learn_one(ev)
    for user in list(split.test)[:10]:
        np.testing.assert_allclose(light.score(user), full.score(user), rtol=1e-6, atol=1e-9)


def test_checkpoint_serves_exactly_the_offline_scores(fitted, tmp_path):
    ds, catalog, split, rec, _ = fitted
    live = rec.variant("fused", "fused")
    for ev in split.events:  # the stream after training, as the worker would see it
        live.learn_one(ev)
    live.attention.version = "v-test"
    path = live.save(tmp_path / "ck")
    served = InterestModel.load(path)
    for i, iid in enumerate(catalog.ids):
        it = catalog.item(i)
        served.add_item(iid, rec.item_vectors[i], it.categories, it.attributes)
    assert served.blend == pytest.approx(rec.blend)
    assert served.cooc.params == rec.cooc_params
    user = next(iter(split.test))
    st = live.state(user)
    np.testing.assert_allclose(served.scores(st), live.score(user), rtol=1e-5, atol=1e-6)
    out = served.recommend(st, k=5)
    assert [r.item_id for r in out.items] == [r.item_id for r in live.model.recommend(st, k=5).items]
    for r in out.items:
        assert sum(r.reasons.values()) == pytest.approx(r.score, abs=1e-4)
        assert "co-engagement" in r.reasons and "recency" in r.reasons
    assert all(0.0 <= w <= 1.0 for w in out.dimension_weights.values())
    assert sum(out.dimension_weights.values()) == pytest.approx(1.0, abs=1e-4)
    # the stream keeps updating the served counts exactly as offline (wire-format state too)
    unseen = next(i for i in catalog.ids if i not in st.seen)
    ev = Event(user, unseen, "click", None, 10**12, "next-event")
    a, b = UserState.from_bytes(st.to_bytes()), UserState.from_bytes(st.to_bytes())
    served.apply(a, ev)
    live.model.apply(b, ev)
    np.testing.assert_allclose(served.scores(a), live.model.scores(b), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(served.cooc.counts.n[: len(catalog)], live.model.cooc.counts.n[: len(catalog)])


def test_record_validation_skips_seen_targets():
    items = {i: Item(i, i, i, (), {}, None) for i in "abcd"}
    log = [Interaction("u", i, t, "click") for t, i in enumerate("abab")]
    split = split_leave_one_out(Dataset("toy", items, log))
    catalog = ItemCatalog(items)
    rec = CoocRecommender(CoocParams())
    rec.fit(split.train, catalog)
    Z, M, T = record_validation(rec.learn_one, lambda u: {"x": rec.score(u)}, ["x"], split, catalog)
    assert len(T) == 0  # the validation target "a" was already consumed


def test_the_cooc_search_stops_after_its_passes_and_a_seconds_cap_is_recorded(fitted):
    ds, catalog, split, rec, report = fitted
    grid = {"hist_len": [2, 5], "k": [20, 50]}
    params, one = tune_cooc(split, catalog, grid=grid, max_passes=1)
    assert one["passes"] == 1 and one["tried"] == 1 + 3 and one["stopped_by_time"] is False  # start + 3 new points
    again, same = tune_cooc(split, catalog, grid=grid, max_passes=1)
    assert again == params and same["history"] == one["history"]  # the same points, the same scores
    _, capped = tune_cooc(split, catalog, grid=grid, budget_s=0.0)
    assert capped["stopped_by_time"] is True and capped["tried"] == 1
