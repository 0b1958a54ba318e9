"""Domain presets select behaviour: event weights, dimensions and recency's half-life, in the
model the worker serves (no Kafka, no encoder)."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from models import features
from models.dimensions import DAY_MS, default_dimensions
from models.domains import DOMAINS, DomainConfig, get_domain
from models.engine import Event, InterestModel
from models.attention import AttentionFusion
from stream_app.settings import Settings, SettingsError, known_variables


def model_with_items(domain) -> InterestModel:
    model = InterestModel.untrained(text_dim=2, cf_dim=2, domain=domain)
    model.add_item("a", np.array([1.0, 0.0]))
    model.add_item("b", np.array([0.0, 1.0]))
    return model


def norm_after(model: InterestModel, type_: str, value=None) -> float:
    st = model.new_state()
    model.apply(st, Event("u", "a", type_, value, 1000, "e1"))
    return st.norm["content"]


def test_default_preset_is_todays_behaviour():
    cfg = get_domain("default")
    assert get_domain(None) is cfg
    assert cfg.event_weights == {"click": 0.5, "review": 1.0, "favorite": 1.5, "rating": 1.0}
    assert cfg.event_weights == features._BASE_STRENGTH
    assert cfg.dims() == default_dimensions() and cfg.dims("hybrid") == default_dimensions("hybrid")
    model = InterestModel.untrained()
    assert model.dims == default_dimensions() and model.domain is cfg
    for type_, value, expected in [("click", None, 0.5), ("favorite", None, 1.5), ("review", None, 1.0),
                                   ("rating", 1.0, 0.5), ("rating", 5.0, 2.0)]:
        assert features.strength(type_, value) == expected
        assert norm_after(model_with_items(None), type_, value) == pytest.approx(expected)


@pytest.mark.parametrize("name", ["ecommerce", "news", "video"])
def test_event_weights_reach_the_state(name):
    cfg, model = DOMAINS[name], model_with_items(name)
    assert model.event_weights == cfg.event_weights
    for type_ in ("click", "favorite", "review"):
        assert norm_after(model, type_) == pytest.approx(cfg.event_weights[type_])
    # a rating keeps its 1-5 scaling (0.5 .. 2.0), times the domain's rating weight
    assert norm_after(model, "rating", 5.0) == pytest.approx(2.0 * cfg.event_weights["rating"])
    assert norm_after(model, "rating", 1.0) == pytest.approx(0.5 * cfg.event_weights["rating"])


def test_ecommerce_purchase_outweighs_views_more_than_default():
    ecommerce, default = model_with_items("ecommerce"), model_with_items("default")
    ratio = norm_after(ecommerce, "favorite") / norm_after(ecommerce, "click")
    assert ratio > norm_after(default, "favorite") / norm_after(default, "click")
    # one purchase of b against three views of a: the list leans to b's neighbourhood
    st = ecommerce.new_state()
    for i, (item, type_) in enumerate([("a", "click"), ("a", "click"), ("a", "click"), ("b", "favorite")]):
        ecommerce.apply(st, Event("u", item, type_, None, 1000 + i, f"e{i}"))
    assert st.mean["content"][1] > st.mean["content"][0]


def test_freshness_half_life_is_recency_decay_by_event_time():
    def recency(name):
        return next(d for d in get_domain(name).dims() if d.name == "recency")

    assert recency("default").half_life_ms == DAY_MS == recency("ecommerce").half_life_ms
    assert recency("news").half_life_ms == DOMAINS["news"].freshness_half_life_days * DAY_MS
    assert recency("video").half_life_ms == 30 * DAY_MS
    fast = DomainConfig("fast-news", dict(DOMAINS["news"].event_weights), ("recency",), 0.25, "")
    assert recency("default").decay(DAY_MS) == pytest.approx(0.7 * 0.5)
    assert fast.dims()[0].decay(DAY_MS) == pytest.approx(0.7 * 0.5 ** 4)
    model = model_with_items(fast)
    st = model.new_state()
    model.apply(st, Event("u", "a", "click", None, 0, "e1"))
    model.apply(st, Event("u", "b", "click", None, int(DAY_MS), "e2"))  # a day later: a is 1/16 as fresh
    assert st.norm["recency"] == pytest.approx(1.0 + 0.7 / 16, rel=1e-3)


def test_dimension_selection():
    cfg = DomainConfig("shop-lite", {"click": 0.3, "favorite": 2.0}, ("collaborative", "content", "recency"), None, "")
    model = model_with_items(cfg)
    assert model.dim_names == ["content", "recency", "collaborative"]  # the model's order
    st = model.new_state()
    model.apply(st, Event("u", "a", "favorite", None, 0, "e1"))
    assert set(st.mean) == {"content", "recency", "collaborative"}
    rec = model.recommend(st, k=1)
    assert [r.item_id for r in rec.items] == ["b"] and set(rec.dimension_weights) == set(model.dim_names)
    assert norm_after(model, "rating", 5.0) == pytest.approx(2.0)  # no rating weight given: 1.0
    with pytest.raises(ValueError, match="dimensions"):
        DomainConfig("x", {}, ("content", "mood"), None, "")
    with pytest.raises(ValueError, match="dimensions"):
        DomainConfig("x", {}, (), None, "")


def test_checkpoint_keeps_its_dimensions_and_takes_the_domains_event_weights(tmp_path, caplog):
    space = {"text": 2, "cf": 2, "category": 256, "hybrid": 4}
    dims = get_domain("default").dims()
    AttentionFusion.default(dims, space).save(tmp_path / "ckpt")
    with caplog.at_level(logging.WARNING, logger="models.engine"):
        model = InterestModel.load(tmp_path / "ckpt", domain="video")
    assert model.dims == dims  # recency keeps the checkpoint's half-life (1 day), not video's 30
    assert model.event_weights == DOMAINS["video"].event_weights
    assert "trained with domain 'default', serving with domain 'video'" in caplog.text
    AttentionFusion.default(dims, space).save(tmp_path / "news", extra={"domain": "news"})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="models.engine"):
        assert InterestModel.load(tmp_path / "news", domain="news").domain.name == "news"
    assert caplog.text == ""


def test_domain_setting_is_validated_and_known():
    assert Settings().domain == "default"
    assert Settings.from_env({"STREAM_RECO_DOMAIN": "video"}).domain == "video"
    assert "STREAM_RECO_DOMAIN" in known_variables()
    assert Settings(domain="news").env()["STREAM_RECO_DOMAIN"] == "news"
    with pytest.raises(SettingsError, match="STREAM_RECO_DOMAIN=books: must be one of default, ecommerce"):
        Settings.from_env({"STREAM_RECO_DOMAIN": "books"})


def test_worker_builds_its_model_for_the_domain(monkeypatch):
    import models.encoder
    from stream_app.worker import build_processor

    class FakeEncoder:
        device, dim, version = "cpu", 384, "all-MiniLM-L6-v2"

        def encode(self, texts):
            return np.zeros((len(texts), 384), np.float32)

    monkeypatch.setattr(models.encoder, "build_encoder", lambda **kw: FakeEncoder())
    monkeypatch.setattr(features, "TextSentiment", lambda: (lambda text: 0.0))
    for name in DOMAINS:
        model = build_processor(Settings(domain=name)).model
        assert model.domain.name == name and model.event_weights == DOMAINS[name].event_weights
        assert model.dims == DOMAINS[name].dims()
