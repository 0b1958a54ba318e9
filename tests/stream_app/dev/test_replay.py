"""Data set -> Kafka messages, coverage tracking and the live view, without a broker."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from models.offline.data import Dataset, Interaction, Item
from stream_app.dev.messages import catalog_message, dataset_messages, interaction_message, most_active_users
from stream_app.dev.results import Coverage, LiveView, ReplayResult, format_summary

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"


def validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((SCHEMAS / f"{name}.v1.json").read_text()))


@pytest.fixture
def tiny() -> Dataset:
    items = {
        "1": Item("1", "Alpha", "Alpha (1995). Genres: Drama", ("Drama", "Drama", "Comedy"), {"year": 1995},
                  788918400000),
        "2": Item("2", "Beta", "Beta", (), {"price": 12.5, "brand": 7}, None),
        "3": Item("3", "Gamma", "", ("Sci-Fi",), {"price": -1}, None),
    }
    events = [  # deliberately not in time order: the messages must be
        Interaction("u1", "1", 3_000, "rating", 4.0),
        Interaction("u2", "2", 1_000, "click"),
        Interaction("u1", "2", 2_000, "review", 4.5, "Great fun"),
        Interaction("u1", "3", 2_000, "rating", 0.5),  # MovieLens half star below the schema's 1..5
        Interaction("u2", "3", 5_000, "rating", None),  # a rating without value
        Interaction("u3", "1", 4_000, "review", None, None),  # a review without text
        Interaction("u2", "1", 6_000, "favorite"),
    ]
    return Dataset("tiny", items, events)


def test_messages_validate_against_the_schemas(tiny):
    catalog, events = dataset_messages(tiny)
    cv, iv = validator("catalog_item"), validator("interaction")
    for msg in catalog:
        cv.validate(msg)
    for msg in events:
        iv.validate(msg)
    assert len(catalog) == 3 and len(events) == 7


def test_catalog_fields(tiny):
    catalog = {m["item_id"]: m for m in dataset_messages(tiny)[0]}
    assert catalog["1"] == {"item_id": "1", "title": "Alpha", "text": "Alpha (1995). Genres: Drama",
                            "categories": ["Drama", "Comedy"], "attributes": {"year": 1995},
                            "published_ts": 788918400000}
    assert catalog["2"]["attributes"] == {"price": 12.5, "brand": "7"}
    assert "published_ts" not in catalog["2"] and "categories" not in catalog["2"]
    assert "text" not in catalog["3"] and "attributes" not in catalog["3"]  # negative price dropped


def test_events_in_time_order_with_unique_ids(tiny):
    _, events = dataset_messages(tiny)
    ts = [e["ts"] for e in events]
    assert ts == sorted(ts)
    ids = [e["event_id"] for e in events]
    assert len(set(ids)) == len(ids) and all(i.startswith("tiny-") for i in ids)
    # equal timestamps keep the data set's order
    at_2000 = [e["item_id"] for e in events if e["ts"] == 2_000]
    assert at_2000 == ["2", "3"]
    assert dataset_messages(tiny)[1] == events  # deterministic


def test_event_fields(tiny):
    by_id = {e["event_id"]: e for e in dataset_messages(tiny)[1]}
    assert by_id["tiny-0"] == {"event_id": "tiny-0", "type": "rating", "user_id": "u1", "item_id": "1",
                               "ts": 3_000, "value": 4}
    assert by_id["tiny-2"]["text"] == "Great fun" and by_id["tiny-2"]["value"] == 4.5
    assert by_id["tiny-3"]["value"] == 1  # clamped into 1..5
    assert by_id["tiny-4"]["type"] == "click" and "value" not in by_id["tiny-4"]
    assert by_id["tiny-5"]["type"] == "click"
    assert by_id["tiny-6"]["type"] == "favorite"


def test_single_message_helpers_truncate_to_schema_limits():
    item = catalog_message(Item("x", "t" * 900, "d" * 20_000, tuple(f"c{i}" for i in range(100)), {}, None))
    validator("catalog_item").validate(item)
    ev = interaction_message(Interaction("u", "x", -5, "review", 9.0, "w" * 9000), "e1")
    validator("interaction").validate(ev)
    assert ev["ts"] == 0 and ev["value"] == 5 and len(ev["text"]) == 4000


def test_most_active_users(tiny):
    _, events = dataset_messages(tiny)
    assert most_active_users(events, 2) == ["u2", "u1"]  # 3 events each: the first seen first
    assert most_active_users(events, 1) == ["u2"]
    assert most_active_users(events, 0) == []


def test_coverage_comes_from_events_applied_per_user():
    events = [{"event_id": f"e{i}", "user_id": u} for i, u in enumerate(["a", "b", "a", "a", "b"])]
    cov = Coverage(events)
    assert cov.applied("a", 2) == ["e0", "e2"]  # a's first two events, in send order
    assert cov.covered == 2 and not cov.complete
    assert cov.applied("a", 1) == [] and cov.regressions == 1  # a list that went backwards
    assert cov.applied("a", 3) == ["e3"] and cov.applied("b", 2) == ["e1", "e4"]
    assert cov.covered == 5 and cov.complete
    assert cov.applied("zz", 4) == []  # a user this replay never sent


def test_live_view_and_summary_render():
    lines: list[str] = []
    view = LiveView(["u1"], {"i1": "Alpha"}, milestones=(0.5,), write=lines.append)
    msg = {"user_id": "u1", "events_applied": 3, "dimension_weights": {"content": 0.7, "recency": 0.3},
           "items": [{"item_id": "i1", "score": 0.5, "rank": 1, "reasons": {"content": 0.4, "recency": 0.1}}]}
    view.update("u1", msg)
    view.update("u2", msg)  # not shown
    view.progress(0.2)
    assert not lines
    view.progress(0.6)
    view.progress(0.9)
    assert len(lines) == 1
    assert "Alpha" in lines[0] and "top reason: content" in lines[0] and "content 0.70" in lines[0]
    import numpy as np

    r = ReplayResult(events_produced=10, events_covered=10, recommendations=4, users=2, first_produce=100.0,
                     last_produce=100.5, last_recommendation=102.0, complete=True,
                     latencies_ms=np.array([10.0, 20.0, 30.0, 40.0]))
    assert r.events_per_s == pytest.approx(5.0)
    text = format_summary(r)
    assert "sustained events/s" in text and "latency p50" in text
    assert r.summary()["latency_p50_ms"] == 25.0


def test_tail_windows_tell_one_stall_from_a_spread_tail():
    import numpy as np

    sent = np.arange(1000) / 100.0  # 10 s of events, 100 per second
    stall = np.where((sent >= 3.0) & (sent < 3.2), 500.0, 20.0 + (np.arange(1000) % 7))  # 20 events stalled
    r = ReplayResult(latencies_ms=stall, sent_s=sent)
    windows = r.tail_windows(q=98.0)
    assert windows[0] == [3.0, 20, 500.0] and len(windows) == 1  # one window holds every slow event
    spread = ReplayResult(latencies_ms=20.0 + (np.arange(1000) * 37 % 101), sent_s=sent)
    assert len(spread.tail_windows(q=98.0)) == 5  # slow events in many windows: the top 5 reported
    assert ReplayResult().tail_windows() == [] and "latency_tail_windows" in r.summary()


def test_demo_settings_isolate_each_run_on_a_given_cluster():
    from stream_app.dev.demo import demo_settings
    from stream_app.settings import Settings

    base = Settings(bootstrap_servers="k:9092", topic_prefix="x-")
    a, b = demo_settings(base), demo_settings(base)
    assert a.topic_prefix != b.topic_prefix and a.app_id != b.app_id
    assert a.topic_prefix.startswith("x-demo-") and a.topic("interactions").endswith("-interactions")
    assert a.bootstrap_servers == "k:9092"
    local = demo_settings(Settings(), "127.0.0.1:1234")
    assert local.bootstrap_servers == "127.0.0.1:1234" and local.topic_prefix == ""
