"""Online evaluation (stream_app.online_eval): the windows' arithmetic against a recount, and what
is judged against which list."""
from __future__ import annotations

import random

import pytest

from models.offline.protocol import TARGET_TYPES
from stream_app.metrics import Metrics
from stream_app.online_eval import CONSUMPTION, OnlineEval, Window


def msg(version: str, *items: str) -> dict:
    return {"model_version": version, "items": [{"item_id": i} for i in items]}


def recount(events: list[tuple[str, int]], version: str | None = None) -> dict:
    mine = [r for v, r in events if version is None or v == version]
    hits = sum(1 for r in mine if r)
    return {"judged": len(mine), "hits": hits, "hit_rate": round(hits / len(mine), 6) if mine else 0.0,
            "mrr": round(sum(1 / r for r in mine if r) / len(mine), 6) if mine else 0.0}


def test_consumption_is_what_the_offline_protocol_ranks():
    assert CONSUMPTION == TARGET_TYPES


@pytest.mark.parametrize("size", [1, 7, 100])
def test_a_window_equals_a_recount_of_its_last_events(size):
    rng = random.Random(size)
    w, seen = Window(size, unit=2520), []
    for step in range(600):
        ev = (rng.choice("ABC"), rng.choice([0, 0, 0, *range(1, 11)]))
        w.add(*ev)
        seen.append(ev)
        if step % 37 == 0 or step == 599:
            last = seen[-size:]
            assert w.figures() == recount(last)
            assert w.versions() == sorted({v for v, _ in last})
            for v in "ABC":
                assert w.figures(v) == recount(last, v)


def test_a_window_forgets_a_version_that_left_it():
    w = Window(2, unit=2)
    w.add("A", 1)
    w.add("B", 2)
    w.add("B", 0)
    assert w.versions() == ["B"]
    assert w.figures("A") == {"judged": 0, "hits": 0, "hit_rate": 0.0, "mrr": 0.0}
    assert w.figures() == {"judged": 2, "hits": 1, "hit_rate": 0.5, "mrr": 0.25}


def test_events_are_judged_against_the_list_published_before_their_batch():
    ev = OnlineEval(top_k=3, windows=(10,))
    ev.observe([("u", "a")], {"u": msg("A", "a", "b", "c")})  # no list before: not judged
    assert ev.judged == 0
    # the batch's new list (made by B, holding "d") does not judge the batch's own events
    ev.observe([("u", "c"), ("u", "d")], {"u": msg("B", "d", "e")})
    assert (ev.judged, ev.hits) == (2, 1)
    ev.observe([("u", "e")], {})
    fig = ev.stats()["windows"]["10"]
    assert fig["by_version"]["A"] == {"judged": 2, "hits": 1, "hit_rate": 0.5, "mrr": round(1 / 3 / 2, 6)}
    assert fig["by_version"]["B"] == {"judged": 1, "hits": 1, "hit_rate": 1.0, "mrr": 0.5}
    assert (fig["judged"], fig["hits"]) == (3, 2)


def test_only_the_first_k_items_count_and_a_forgotten_user_is_not_judged():
    ev = OnlineEval(top_k=2, windows=(10,))
    ev.observe([], {"u": msg("A", "a", "b", "c"), "v": msg("A", "a")})
    ev.observe([("u", "c"), ("v", "a")], {}, forgotten=["v"])
    assert (ev.judged, ev.hits) == (1, 0)  # "c" is third: outside the top 2; v forgotten
    ev.observe([("v", "a")], {})
    assert ev.judged == 1  # v's list went with the forget


def test_the_lists_are_bounded_and_give_the_recent_users():
    ev = OnlineEval(top_k=2, windows=(10,), capacity=3)
    for u in "abcd":
        ev.observe([], {u: msg("A", "x")})
    ev.observe([], {"b": msg("A", "y")})
    assert ev.recent_users() == ["b", "d", "c"]
    ev.observe([("a", "x"), ("c", "x")], {})  # a was dropped: not judged
    assert (ev.judged, ev.hits) == (1, 1)


def test_metrics_by_version_and_window():
    m = Metrics()
    ev = OnlineEval(top_k=2, windows=(1, 10), registry=m.registry)
    ev.observe([], {"u": msg("A", "a", "b")})
    ev.observe([("u", "b")], {"u": msg("B", "c", "d")})
    ev.observe([("u", "x")], {})
    body = m.render()[0].decode()
    assert 'stream_reco_online_judged_total{outcome="hit",version="A"} 1.0' in body
    assert 'stream_reco_online_judged_total{outcome="miss",version="B"} 1.0' in body
    assert 'stream_reco_online_reciprocal_rank_total{version="A"} 0.5' in body
    assert 'stream_reco_online_hit_rate{version="all",window="10"} 0.5' in body
    assert 'stream_reco_online_mrr{version="A",window="10"} 0.5' in body
    assert 'stream_reco_online_hit_rate{version="B",window="1"} 0.0' in body
    assert 'version="A",window="1"' not in body  # A left the window of one
