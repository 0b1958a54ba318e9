"""The learning-while-serving benchmark's pure parts: time cuts, the online hit@10 recomputed
from the recommendations topic (checked against the worker's own OnlineEval on the same
batches), the exactly-once count and the parsing of the worker's counters."""
from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from stream_app.dev.retrain_score import (Published, counter_delta, exactly_once, hit_rates, judge_all, judge_user,
                                          parse_judged_counters, time_cuts)
from stream_app.online_eval import OnlineEval


def test_time_cuts_split_sorted_events_by_share():
    assert time_cuts(104_519, (0.6, 0.7, 0.8, 0.9)) == [62_711, 73_163, 83_615, 94_067]
    assert time_cuts(10, (0.6, 0.7)) == [6, 7]
    with pytest.raises(ValueError):
        time_cuts(10, (0.7, 0.6))
    with pytest.raises(ValueError):
        time_cuts(10, (0.0, 0.5))


def test_an_event_is_judged_against_the_list_before_its_batch():
    lists = [Published(2, "A", ["x", "y", "z"], ["e1", "e2"]),
             Published(4, "A", ["q", "x"], ["e3", "e4"]),
             Published(5, "B", ["w"], ["e5"])]
    sent = [("e1", "x", "rating"), ("e2", "y", "rating"),  # first batch: no list before it
            ("e3", "z", "rating"), ("e4", "y", "view"),  # judged against list 1 (e4: not consumption)
            ("e5", "x", "click"),  # judged against list 2, rank 2
            ("e6", "w", "click")]  # not applied yet
    got = judge_user(sent, lists, k=10)
    assert [(j.event_id, j.version, j.rank) for j in got] == [("e3", "A", 3), ("e5", "A", 2)]
    assert [j.rank for j in judge_user(sent, lists, k=2)] == [0, 2]  # z is third: beyond k=2
    f = hit_rates(got)
    assert f["all"] == {"judged": 2, "hits": 2, "hit_rate": 1.0, "mrr": pytest.approx((1 / 3 + 1 / 2) / 2)}
    assert f["A"]["judged"] == 2 and "B" not in f


def test_the_recomputed_figures_equal_the_workers_online_eval():
    """Random batches of events for a few users: OnlineEval (as the worker runs it) and the
    reconstruction from the published lists alone count the same judged events and hits per
    version."""
    rng = random.Random(3)
    items = [f"i{n}" for n in range(30)]
    users = [f"u{n}" for n in range(6)]
    worker = OnlineEval(top_k=5, windows=(100_000,))
    events, lists, applied = [], {}, {}
    n = 0
    for batch in range(60):
        version = "A" if batch < 30 else "B"
        now = [(rng.choice(users), rng.choice(items), rng.choice(["rating", "click", "view"]))
               for _ in range(rng.randint(1, 12))]
        consumed, messages, named = [], {}, {}
        for user, item, kind in now:
            n += 1
            ev = {"event_id": f"e{n}", "user_id": user, "item_id": item, "type": kind}
            events.append(ev)
            applied[user] = applied.get(user, 0) + 1
            named.setdefault(user, []).append(ev["event_id"])
            if kind != "view":
                consumed.append((user, item))
        for user in named:
            top = rng.sample(items, 5)
            messages[user] = {"model_version": version, "items": [{"item_id": i} for i in top]}
            lists.setdefault(user, []).append(Published(applied[user], version, top, named[user]))
        worker.observe(consumed, messages)
    ours = hit_rates(judge_all(events, lists, k=5).values())
    theirs = worker.stats()["windows"]["100000"]
    assert ours["all"]["judged"] == theirs["judged"] > 100
    assert ours["all"]["hits"] == theirs["hits"] > 0
    for version in ("A", "B"):
        assert ours[version]["judged"] == theirs["by_version"][version]["judged"]
        assert ours[version]["hits"] == theirs["by_version"][version]["hits"]
        assert ours[version]["mrr"] == pytest.approx(theirs["by_version"][version]["mrr"], abs=1e-6)

    registry = CollectorRegistry()
    again = OnlineEval(top_k=5, windows=(10,), registry=registry)
    before = parse_judged_counters(generate_latest(registry).decode())
    again.observe([], {"u": {"model_version": "A", "items": [{"item_id": "x"}]}})
    again.observe([("u", "x"), ("u", "y")], {"u": {"model_version": "B", "items": [{"item_id": "y"}]}})
    again.observe([("u", "y")], {})
    after = parse_judged_counters(generate_latest(registry).decode())
    assert counter_delta(before, after) == {"A": {"judged": 2, "hits": 1, "hit_rate": 0.5},
                                            "B": {"judged": 1, "hits": 1, "hit_rate": 1.0},
                                            "all": {"judged": 3, "hits": 2, "hit_rate": 2 / 3}}


def test_exactly_once_counts_lost_doubled_and_misnamed_events():
    events = [{"event_id": f"e{i}", "user_id": "u" if i < 4 else "v", "item_id": "x", "type": "click"}
              for i in range(6)]
    good = {"u": [Published(2, "A", [], ["e0", "e1"]), Published(4, "A", [], ["e3"])],  # names the newest 1
            "v": [Published(2, "A", [], ["e4", "e5"])]}
    assert exactly_once(events, good, named_max=1) == {
        "users": 2, "events": 6, "lost": 0, "doubled": 0, "named_twice": 0, "misnamed": 2, "regressions": 0,
        "users_with_wrong_count": 0}  # v's batch of two names both, one more than the newest 1
    assert exactly_once(events, good)["misnamed"] == 1  # u's second batch leaves e2 out
    bad = {"u": [Published(2, "A", [], ["e0", "e1"]), Published(2, "B", [], ["e1"]), Published(5, "B", [], ["e2", "e3"])],
           "v": [Published(1, "A", [], ["e4"])]}
    assert exactly_once(events, bad) == {"users": 2, "events": 6, "lost": 1, "doubled": 1, "named_twice": 1,
                                         "misnamed": 1, "regressions": 1, "users_with_wrong_count": 2}
