"""The topics' records as a data set (no broker): bad records skipped and counted, the catalogue's
last word per item, forgotten users, retries, the time window; and the retrain command's times."""
from __future__ import annotations

import argparse

import orjson
import pytest

from models.features import item_text
from stream_app.codec import Codec
from stream_app.retrain import parse_duration_ms, parse_time_ms
from stream_app.topic_data import Record, records_to_dataset


def recs(objs, start_ts=0):
    return [Record(o if isinstance(o, (bytes, type(None))) else orjson.dumps(o), 0, i, start_ts + i)
            for i, o in enumerate(objs)]


def ev(eid, user, item, ts, type_="click", **kw):
    return {"event_id": eid, "type": type_, "user_id": user, "item_id": item, "ts": ts, **kw}


CATALOG = [{"item_id": "a", "title": "Alpha", "categories": ["X"]},
           {"item_id": "b", "title": "Beta", "text": "Beta. Genres: Y", "attributes": {"price": 3.5}},
           {"item_id": "c", "title": "Gamma"},
           {"item_id": "a", "title": "Alpha 2", "categories": ["X", "Z"]},  # an update: the last word
           {"item_id": "c", "title": "Gamma", "deleted": True},
           b"{not json", None, {"item_id": "d"}]  # bad: malformed, null, no title


def test_bad_records_are_skipped_and_counted_and_the_rest_kept():
    inter = [ev("e1", "u1", "a", 10), b"\xff\xfe", {"event_id": "e2", "type": "rating", "user_id": "u1"},
             ev("e3", "u1", "b", 12, "rating", value=4), ev("e3", "u1", "b", 12, "rating", value=4),  # a retry
             ev("e4", "u2", "c", 13), ev("e5", "u2", "zz", 14),  # a deleted and an unknown item
             ev("e6", "u2", "b", 15, "review", text="great"), b'{"event_id":"x","event_id":"y"}']
    ds, stats = records_to_dataset(recs(CATALOG), recs(inter), Codec.load())
    assert stats.bad == {"catalog/malformed_json": 2, "catalog/schema_violation": 1,
                         "interactions/malformed_json": 2, "interactions/schema_violation": 1}
    assert stats.duplicates == 1 and stats.unknown_items == 2 and stats.deleted_items == 1
    assert list(ds.items) == ["b", "a"]  # "a" was updated after "b" was added
    assert ds.items["a"].title == "Alpha 2" and ds.items["a"].categories == ("X", "Z")
    assert [(e.user_id, e.item_id, e.ts, e.type, e.rating, e.text) for e in ds.interactions] == [
        ("u1", "a", 10, "click", None, None), ("u1", "b", 12, "rating", 4.0, None),
        ("u2", "b", 15, "review", None, "great")]


def test_item_text_is_what_the_worker_encodes():
    ds, _ = records_to_dataset(recs(CATALOG), [], Codec.load())
    for msg in ({"title": "Alpha 2", "categories": ["X", "Z"]}, {"title": "Beta", "text": "Beta. Genres: Y"}):
        it = ds.items["a" if msg["title"] == "Alpha 2" else "b"]
        assert item_text(it.title, it.text, it.categories) == item_text(msg["title"], msg.get("text"),
                                                                        msg.get("categories", ()))


def test_a_forget_drops_the_users_history_read_before_it():
    cat = recs([{"item_id": i, "title": i} for i in "ab"])
    inter = [ev("e1", "u1", "a", 10), ev("e2", "u2", "a", 11), ev("e3", "u1", "b", 12),
             {"schema": "forget/v1", "type": "forget", "event_id": "f1", "user_id": "u1", "ts": 13},
             ev("e4", "u1", "b", 14)]
    ds, stats = records_to_dataset(cat, recs(inter), Codec.load())
    assert stats.forgets == 1 and stats.forgotten_events == 2
    assert [(e.user_id, e.ts) for e in ds.interactions] == [("u2", 11), ("u1", 14)]


def test_the_time_window_keeps_since_up_to_until_and_the_whole_catalogue():
    cat = recs([{"item_id": i, "title": i} for i in "ab"])
    inter = [ev(f"e{t}", "u1", "ab"[t % 2], t) for t in range(10)]
    ds, stats = records_to_dataset(cat, recs(inter), Codec.load(), since_ms=3, until_ms=7)
    assert [e.ts for e in ds.interactions] == [3, 4, 5, 6] and stats.outside_window == 6
    assert set(ds.items) == {"a", "b"}


def test_catalogue_order_is_by_kafka_timestamp_across_partitions():
    upsert = Record(orjson.dumps({"item_id": "a", "title": "new"}), 1, 0, 200)
    older = Record(orjson.dumps({"item_id": "a", "title": "old"}), 0, 5, 100)
    ds, _ = records_to_dataset([upsert, older], [], Codec.load())
    assert ds.items["a"].title == "new"


def test_durations_and_times():
    assert parse_duration_ms("250ms") == 250 and parse_duration_ms("1w") == 7 * 86_400_000
    for bad in ("0s", "5", "1y", "-1h", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_duration_ms(bad)
    assert parse_time_ms("2024-01-01T01:00:00+01:00") == 1_704_067_200_000
    assert parse_time_ms("30m", now_ms=10_000_000) == 10_000_000 - 1_800_000
    with pytest.raises(argparse.ArgumentTypeError):
        parse_time_ms("yesterday")
