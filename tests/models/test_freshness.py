"""Item freshness (``models.freshness``): in a domain whose items go stale, a blend that weighs it
ranks the recently published first; an item not out yet is neither lifted nor counted; two-stage
ranking gives the exact lists; a model hand-over and the worker's catalogue keep the times."""
from __future__ import annotations

import time

import numpy as np
import pytest

from models.attention import AttentionFusion
from models.candidates import CandidateSizes
from models.cooc import CoocModel, CoocParams
from models.domains import get_domain
from models.engine import Event, InterestModel
from models.freshness import DAY_MS
from models.handover import adopt, hand_over, snapshot
from models.items import ItemVectors
from tests.models.test_recommend_many import assert_same_lists
from tests.stream_app.test_processor import TinyEncoder

T0 = 1_700_000_000_000


def news_model(n_items: int, blend, seed: int = 0, published=None) -> InterestModel:
    rng = np.random.default_rng(seed)
    space = {"text": 8, "cf": 4, "category": 16, "hybrid": 12}
    scorer = AttentionFusion.default(get_domain("news").dims(), space)
    scorer.w = {k: rng.normal(size=v.shape).astype(np.float32) if v.size else v for k, v in scorer.w.items()}
    model = InterestModel(scorer, ItemVectors(8, 4, 16, capacity=8), CoocModel(CoocParams(window=4)), blend,
                          domain="news")
    for i in range(n_items):
        p = published[i] if published is not None else T0 + int(rng.integers(0, 20 * DAY_MS))
        model.add_item(f"i{i}", rng.normal(size=8).astype(np.float32), [f"g{i % 3}"], None, p)
    return model


def click(k: int, user: str, item: str, ts: int) -> Event:
    return Event(user, item, "click", None, int(ts), f"e{k}")


def test_the_recently_published_first_and_an_item_not_out_yet_not_lifted():
    days = [0, 10, 20, None, 30]  # i3 has no time; i4 comes out after the event below
    model = news_model(5, {"freshness": 1.0}, published=[None if d is None else T0 + d * DAY_MS for d in days])
    states: dict = {}
    model.fold([click(0, "u", "i0", T0 + 21 * DAY_MS)], states)
    f = model.freshness.catalogue_scores()
    assert f[[1, 2]].tolist() == [2.0 ** -11, 0.5] and f[3] == f[4] == 0.0
    assert model.freshness.moments() == (f[:4].mean(), f[:4].std())  # i4 not counted
    top = [r.item_id for r in model.recommend(states["u"], k=4).items]
    assert top[:2] == ["i2", "i1"] and top[-1] in ("i3", "i4")
    model.fold([click(1, "u", "i1", T0 + 31 * DAY_MS)], states)  # now i4 is out, and the freshest
    assert [r.item_id for r in model.recommend(states["u"], k=1).items] == ["i4"]


def test_an_event_dated_past_the_clock_does_not_age_every_item():
    model = news_model(3, {"freshness": 1.0}, published=[T0, T0 + DAY_MS, T0 + 2 * DAY_MS])
    states: dict = {}
    model.fold([click(0, "u", "i0", T0 + 3 * DAY_MS)], states)
    before = model.freshness.catalogue_scores().tolist()
    far = int(time.time() * 1000 + 365 * DAY_MS)  # a forged or badly clocked event, a year ahead
    model.fold([click(1, "v", "i1", far)], states)
    assert model.freshness.now == T0 + 3 * DAY_MS and model.freshness.catalogue_scores().tolist() == before
    assert states["v"].recent  # the event itself is applied to its user as any other


def test_freshness_is_left_out_of_a_blend_that_does_not_weigh_it():
    model = news_model(6, {"attention": 0.5, "co-engagement": 0.3, "popularity": 0.2})
    assert "freshness" in [c.name for c in model.components]
    assert "freshness" not in [c.name for c in model._ranked()]
    default = InterestModel.untrained(text_dim=8, cf_dim=4)  # a domain without a half-life: no component
    assert default.freshness is None and "freshness" not in [c.name for c in default.components]


def test_every_item_a_candidate_gives_the_exact_lists_with_freshness():
    rng = np.random.default_rng(1)
    blend = {"attention": 0.3, "co-engagement": 0.3, "popularity": 0.1, "freshness": 0.3}
    model = news_model(60, blend, seed=1)
    states: dict = {}
    events = [click(k, f"u{rng.integers(9)}", f"i{rng.integers(60)}", T0 + k * 3_600_000) for k in range(400)]
    model.fold(events, states)
    assert model.freshness.catalogue_scores().std() > 0 and (model.items.published > model.freshness.now).any()
    model.ranking.sizes = CandidateSizes(ann=1000, sequence=1000, popular=1000, fresh=1000)
    users = [states[u] for u in sorted(states)]
    model.ranking.mode = "two-stage"
    two = model.recommend_many(users, 10)
    model.ranking.mode = "exact"
    assert_same_lists(two, model.recommend_many(users, 10))
    shares = two[0].dimension_weights
    assert abs(sum(shares.values()) - 1.0) < 1e-6
    for r in two[0].items:  # the reasons still sum to the score, freshness among them
        assert "freshness" in r.reasons and abs(sum(r.reasons.values()) - r.score) < 1e-4


def test_a_hand_over_keeps_the_publishing_times_and_the_event_time():
    old = news_model(5, {"freshness": 1.0}, published=[T0, None, T0 + DAY_MS, T0, T0])
    old.fold([click(0, "u", "i0", T0 + 2 * DAY_MS)], {})
    new = news_model(0, {"freshness": 1.0}, seed=2)
    adopt(new, snapshot(old))
    old.add_item("i1", np.ones(8, np.float32), published_ts=T0 + 2 * DAY_MS)  # changed meanwhile: a time now
    hand_over(old, new, snapshot_version=None)
    ids = list(old.items.index)
    np.testing.assert_array_equal(new.items.published[[new.items.index[i] for i in ids]],
                                  old.items.published[[old.items.index[i] for i in ids]])
    assert new.freshness.now == old.freshness.now == T0 + 2 * DAY_MS


def test_the_worker_takes_the_publishing_time_from_the_catalogue_event():
    from stream_app.codec import Codec
    from stream_app.processor import Processor

    model = InterestModel.untrained(text_dim=4, cf_dim=2, domain="news")
    p = Processor(model, TinyEncoder(), lambda text: 0.5, Codec.load(), top_k=3)
    p.index_items([{"item_id": "a", "title": "A", "published_ts": T0}, {"item_id": "b", "title": "B"}])
    assert model.items.published[model.items.index["a"]] == T0 and np.isnan(model.items.published[model.items.index["b"]])


@pytest.mark.parametrize("not_out", [0.0, 0.5, 0.95])
def test_moments_without_gathering_equal_those_of_the_counted_items(not_out):
    from models.blend import component_moments
    from models.freshness import _moments

    rng = np.random.default_rng(3)
    for half_life in (0.01, 1.0, 100.0):  # steep to nearly flat scores
        scores = np.exp2(-rng.uniform(0, 3, 20_000) / half_life)
        future = rng.random(scores.size) < not_out
        scores[future] = 0.0
        want = component_moments(scores[~future])
        got = _moments(scores, ~future)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_scores_kept_up_to_date_give_the_z_scores_of_scores_made_afresh():
    """The cache is updated row by row (changed rows, rows come out) at the ``now`` of its last
    rebuild; its z-scores stay those of a component built from scratch at every step."""
    from models.freshness import Freshness

    rng = np.random.default_rng(5)
    items = ItemVectors(2, 1, 4)

    def put(item_id, published):
        items.upsert(item_id, text=np.ones(2), category=np.zeros(4), published_ts=published)

    for j in range(300):
        put(f"i{j}", None if j % 7 == 0 else float(rng.uniform(0, 40) * DAY_MS))
    kept, now, added = Freshness(items, DAY_MS), 10 * DAY_MS, 0
    for step in range(80):  # now moves ~80 days: past the rebase too
        op = step % 4
        if op == 0:  # a new item, out now or soon
            added += 1
            put(f"new{added}", float(now + rng.uniform(-1, 2) * DAY_MS))
        elif op == 1:
            items.delete(str(rng.choice([i for i in items.ids if i in items])))
        elif op == 2:  # an item's publishing time moved
            put(str(rng.choice([i for i in items.ids if i in items])), float(now + rng.uniform(-5, 5) * DAY_MS))
        now += float(rng.uniform(0, 2) * DAY_MS)
        kept.observe(now)
        afresh = Freshness(items, DAY_MS)
        afresh.observe(now)
        (m1, s1), (m2, s2) = kept.moments(), afresh.moments()
        assert s1 > 0 and s2 > 0
        np.testing.assert_allclose((kept.catalogue_scores() - m1) / s1, (afresh.catalogue_scores() - m2) / s2,
                                   rtol=0, atol=1e-9)
