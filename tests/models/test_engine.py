"""Dimensions, incremental user state, fusion scorer and the engine (no Kafka)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.dimensions import DAY_MS, Dimension, default_dimensions
from models.engine import Event, InterestModel, top_k
from models.features import category_tokens, category_vector, strength, valence
from models.offline.train_attention import AttentionFusionModule, to_serving
from models.attention import AttentionFusion, FusionConfig
from models.items import ItemVectors
from models.state import UserState
from tests.models.reference_fold import plain_state_apply

SPACE = {"text": 4, "cf": 3, "category": 8}


def ev(item: str, type_: str, value, ts: int, event_id) -> Event:
    return Event("u", item, type_, value, ts, str(event_id))


def items4() -> ItemVectors:
    items = ItemVectors(SPACE["text"], SPACE["cf"], SPACE["category"],
                        cf_factors={"a": np.array([1.0, 0, 0]), "b": np.array([0, 1.0, 0])})
    eye = np.eye(4, dtype=np.float32)
    for i, iid in enumerate("abcd"):
        items.upsert(iid, text=eye[i], category=category_vector([f"cat:{iid}"], 8))
    return items


def test_action_strength_orders_actions_and_valence_signs_ratings():
    assert strength("click", None) < strength("favorite", None) < strength("rating", 5)
    assert strength("rating", 1) < strength("rating", 5)
    assert valence("rating", 1) == -1.0 and valence("rating", 3) == 0.0 and valence("rating", 5) == 1.0
    assert valence("review", None, text_sentiment=-0.8) == -0.8
    assert category_tokens(["A"], {"price": 250.0}) == ["cat:a", "price:200-500"]


def test_dimension_decay_by_event_time_and_count():
    short = Dimension("recency", "text", half_life_ms=DAY_MS, per_event_decay=0.5)
    assert short.decay(0) == 0.5
    assert short.decay(DAY_MS) == pytest.approx(0.25)
    assert Dimension("content", "text").decay(10 * DAY_MS) == 1.0


def test_state_update_is_incremental_weighted_mean_and_sentiment_is_signed():
    items, dims = items4(), default_dimensions()
    st = UserState.empty(dims, SPACE)
    plain_state_apply(st, dims, items.vectors(0), "a", strength=2.0, valence=1.0, ts=0, event_id=str(1))
    plain_state_apply(st, dims, items.vectors(1), "b", strength=0.5, valence=-1.0, ts=0, event_id=str(2))
    content = st.mean["content"].astype(np.float32)
    np.testing.assert_allclose(content, [0.8, 0.2, 0, 0], atol=1e-3)  # (2*a + 0.5*b) / 2.5
    senti = st.mean["sentiment"].astype(np.float32)
    np.testing.assert_allclose(senti, [0.5, -0.5, 0, 0], atol=1e-3)  # liked a, disliked b
    recency = st.mean["recency"].astype(np.float32)
    assert recency[1] / recency[0] > content[1] / content[0]  # short-term leans to the newest
    np.testing.assert_allclose(st.mean["collaborative"].astype(np.float32), [0.8, 0.2, 0], atol=1e-3)
    assert st.seen.recent == ["a", "b"] and st.events == 2


def test_state_ignores_replayed_event_ids_and_roundtrips_bytes():
    items, dims = items4(), default_dimensions()
    st = UserState.empty(dims, SPACE)
    assert plain_state_apply(st, dims, items.vectors(0), "a", 1.0, 1.0, ts=5, event_id=str(7))
    before = st.to_bytes()
    assert not plain_state_apply(st, dims, items.vectors(1), "b", 1.0, 1.0, ts=6, event_id=str(7))  # same event id: a duplicate
    assert st.to_bytes() == before
    back = UserState.from_bytes(before)
    assert back.seen == st.seen and back.seen.recent == ["a"] and back.recent == st.recent and back.norm == st.norm
    for name in st.mean:
        np.testing.assert_array_equal(back.mean[name], st.mean[name])


def test_state_bytes_stay_small_for_the_real_dimension_sizes():
    dims = default_dimensions()
    space = {"text": 384, "cf": 64, "category": 256}
    items = ItemVectors(384, 64, 256)
    rng = np.random.default_rng(0)
    for i in range(200):
        items.upsert(str(i), text=rng.normal(size=384), category=rng.normal(size=256), cf=rng.normal(size=64))
    st = UserState.empty(dims, space)
    for i in range(100):
        plain_state_apply(st, dims, items.vectors(i), str(i), 1.0, 0.5, ts=i, event_id=str(i))
    assert len(st.to_bytes()) < 8192


def test_untrained_default_attends_uniformly_over_text_dimensions():
    items, dims = items4(), default_dimensions()
    model = InterestModel(AttentionFusion.default(dims, SPACE), items)
    st = model.new_state()
    model.apply(st, ev("a", "rating", 5.0, 0, 1))
    rec = model.recommend(st, k=3)
    w = rec.dimension_weights
    assert w["content"] == pytest.approx(1 / 3) and w["category"] == 0.0 and w["collaborative"] == 0.0
    assert "a" not in [r.item_id for r in rec.items]
    for r in rec.items:  # reasons add up to the score (no item bias in the default)
        assert sum(r.reasons.values()) == pytest.approx(r.score, abs=1e-5)


def test_disliking_an_item_pushes_its_neighbours_down():
    items = ItemVectors(2, 3, 8)
    for iid, v in {"x": [1, 0], "x2": [0.9, 0.44], "y": [0, 1], "y2": [0.44, 0.9]}.items():
        items.upsert(iid, text=np.array(v, np.float32), category=np.zeros(8))
    space = {"text": 2, "cf": 3, "category": 8}
    model = InterestModel(AttentionFusion.default(default_dimensions(), space), items)
    liked, hated = model.new_state(), model.new_state()
    model.apply(liked, ev("x", "rating", 5.0, 0, 1))
    model.apply(hated, ev("x", "rating", 1.0, 0, 1))
    s_liked, s_hated = model.scores(liked), model.scores(hated)
    x2 = items.index["x2"]
    assert s_liked[x2] > s_hated[x2]


def test_numpy_scorer_equals_torch_module():
    torch.manual_seed(0)
    items, dims = items4(), default_dimensions()
    cfg = FusionConfig(dims=dims, space_dims=SPACE, d_model=5, d_attn=3, item_ids=tuple(items.ids[:3]))
    module = AttentionFusionModule(cfg)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
    scorer = to_serving(module, "t")
    st = UserState.empty(dims, SPACE)
    model = InterestModel(scorer, items)
    model.apply(st, ev("a", "rating", 4.0, 0, 1))
    model.apply(st, ev("b", "click", None, 1000, 2))
    x = {n: torch.from_numpy(st.mean[n].astype(np.float32))[None] for n in st.mean}
    mask = torch.tensor([[st.norm[d.name] > 0 for d in dims]])
    feats = {s: torch.from_numpy(items.space(s)[:3].copy()) for s in cfg.item_spaces}
    with torch.no_grad():
        expected = module(x, mask, feats)[0].numpy()
    got = model.scores(st)
    np.testing.assert_allclose(got[:3], expected, rtol=1e-4, atol=1e-4)
    assert np.isfinite(got[3])  # an item the module never saw still gets a score


def test_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(1)
    dims = default_dimensions()
    cfg = FusionConfig(dims=dims, space_dims=SPACE, d_model=5, d_attn=3, item_ids=("a", "b"))
    scorer = to_serving(AttentionFusionModule(cfg), "v1")
    scorer.save(tmp_path / "ck")
    back = AttentionFusion.load(tmp_path / "ck")
    assert back.version == "v1" and back.cfg == scorer.cfg
    for k in scorer.w:
        np.testing.assert_array_equal(back.w[k], scorer.w[k])


def test_deleted_items_are_never_recommended():
    items, dims = items4(), default_dimensions()
    model = InterestModel(AttentionFusion.default(dims, SPACE), items)
    st = model.new_state()
    model.apply(st, ev("a", "click", None, 0, 1))
    assert items.delete("b")
    assert "b" not in items and "b" not in [r.item_id for r in model.recommend(st, 4).items]
    with pytest.raises(KeyError):
        model.apply(st, ev("b", "click", None, 1, 2))


def test_top_k_breaks_ties_by_index_and_skips_minus_inf():
    assert top_k(np.array([1.0, 1.0, -np.inf, 2.0]), 3).tolist() == [3, 0, 1]
    assert top_k(np.array([-np.inf]), 5).tolist() == []
