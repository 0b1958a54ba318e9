"""The synthetic data sets of the domain presets, read back through the data loader (the
presets themselves: tests/models/test_domain_presets.py)."""
from __future__ import annotations

import dataclasses
import json
from collections import Counter, defaultdict

import pytest

from models.domains import DOMAINS, DomainConfig, get_domain
from models.offline.loaders import load_dataset
from models.offline.synthetic import GENERATED, generate

EVENT_TYPES = {"click", "favorite", "rating", "review"}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("domains")
    return {name: load_dataset(generate(name, root / name, seed=0)) for name in GENERATED}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_counts_and_layout(datasets, name):
    ds = datasets[name]
    assert len(ds.items) == 150
    assert len(ds.interactions) == 3000  # none dropped: every event names a catalogue item
    assert len(ds.users) == 200
    per_user = Counter(ev.user_id for ev in ds.interactions)
    assert min(per_user.values()) >= 3
    types = Counter(ev.type for ev in ds.interactions)
    assert set(types) == EVENT_TYPES
    assert types.most_common(1)[0][0] == "click"
    assert all(it.title and it.text and it.categories for it in ds.items.values())
    ts = [ev.ts for ev in ds.interactions]
    assert ts == sorted(ts)
    for ev in ds.interactions:
        if ev.type == "rating":
            assert 1.0 <= ev.rating <= 5.0
        if ev.type == "review":
            assert ev.text


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_deterministic_by_seed(tmp_path, name):
    kw = dict(n_users=30, n_items=40, n_events=300)
    a = generate(name, tmp_path / "a", seed=3, **kw)
    b = generate(name, tmp_path / "b", seed=3, **kw)
    c = generate(name, tmp_path / "c", seed=4, **kw)
    for f in ("items.jsonl", "interactions.jsonl", "domain.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    assert (a / "interactions.jsonl").read_bytes() != (c / "interactions.jsonl").read_bytes()
    assert json.loads((a / "domain.json").read_text())["domain"]["name"] == name


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_users_have_category_preferences(datasets, name):
    """Real structure: most of a user's events fall in a favourite category (uniform choice
    over 6-7 categories would give about 0.3)."""
    ds = datasets[name]
    top = {i: it.categories[0] for i, it in ds.items.items()}
    by_user = defaultdict(list)
    for ev in ds.interactions:
        by_user[ev.user_id].append(top[ev.item_id])
    share = sum(Counter(c).most_common(1)[0][1] / len(c) for c in by_user.values()) / len(by_user)
    assert share > 0.45


def test_ecommerce_items_have_price_and_brand(datasets):
    ds = datasets["ecommerce"]
    for it in ds.items.values():
        assert isinstance(it.attributes["price"], float) and it.attributes["price"] > 0
        assert isinstance(it.attributes["brand"], str) and it.attributes["brand"]
        assert len(it.categories) == 2
    assert len({it.attributes["brand"] for it in ds.items.values()}) > 10
    # favorites (cart/purchase) are strong signals in this preset
    cfg = DOMAINS["ecommerce"]
    assert cfg.event_weights["favorite"] > cfg.event_weights["click"]
    assert cfg.freshness_half_life_days is None


def test_news_is_about_fresh_articles(datasets):
    ds = datasets["news"]
    assert all(isinstance(it.published_ts, int) for it in ds.items.values())
    ages = sorted((ev.ts - ds.items[ev.item_id].published_ts) / 86_400_000 for ev in ds.interactions)
    assert ages[0] >= 0  # nothing is read before it is published
    assert ages[len(ages) // 2] < 3.0  # half the reads within ~3 days of publication
    types = Counter(ev.type for ev in ds.interactions)
    assert types["click"] > 0.7 * len(ds.interactions)
    cfg = DOMAINS["news"]
    assert cfg.freshness_half_life_days is not None and cfg.freshness_half_life_days <= 2
    assert max(cfg.event_weights, key=cfg.event_weights.get) in {"click", "favorite"}


def test_video_watches_carry_the_fraction_watched(datasets):
    ds = datasets["video"]
    clicks = [ev for ev in ds.interactions if ev.type == "click"]
    assert clicks and all(ev.rating is not None and 0.0 <= ev.rating <= 1.0 for ev in clicks)
    series = [it for it in ds.items.values() if it.attributes.get("series")]
    assert series and all(it.attributes["episode"] >= 1 for it in series)
    assert all(it.published_ts is not None for it in ds.items.values())
    assert all(ev.ts >= ds.items[ev.item_id].published_ts for ev in ds.interactions)  # released


def test_domain_config_is_frozen_and_validated():
    cfg = get_domain("news")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "other"  # type: ignore[misc]
    assert hash(cfg) == hash(get_domain("news"))
    with pytest.raises(ValueError, match="unknown event types"):
        DomainConfig("x", {"purchase": 1.0}, ("content",), None, "")
    with pytest.raises(ValueError, match="unknown domain"):
        generate("books", "/nonexistent")
    with pytest.raises(ValueError, match="no generator"):
        generate("default", "/nonexistent")
    assert set(GENERATED) == set(DOMAINS) - {"default"}
    for cfg in DOMAINS.values():
        assert set(cfg.event_weights) == EVENT_TYPES
        assert set(cfg.dimensions) <= {"content", "sentiment", "recency", "category", "collaborative"}
