"""The synthetic catalogue and its events (``stream_app.dev.synth_catalog``) and the memory-per-item
measure (``stream_app.dev.item_memory``), at a tiny size, without a broker."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import jsonschema
import numpy as np

from stream_app.dev.item_memory import main as item_memory_main, measure
from stream_app.dev.synth_catalog import synth_catalog, synth_events

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"


def validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((SCHEMAS / f"{name}.v1.json").read_text()))


def test_catalogue_and_events_are_valid_deterministic_and_skewed():
    items = synth_catalog(600, seed=3)
    again = synth_catalog(600, seed=3)
    assert items.messages == again.messages  # deterministic by seed
    assert synth_catalog(600, seed=4).messages != items.messages
    check = validator("catalog_item")
    for m in items.messages:
        check.validate(m)
        assert len(m["title"].split()) >= 3 and len(m["text"].split()) >= 10  # words for the encoder
        assert len(m["categories"]) == 2
    assert len(set(items.ids)) == 600

    events = synth_events(items, 3000, seed=3)
    assert events == synth_events(items, 3000, seed=3)
    assert len(events) == 3000 and len({e["event_id"] for e in events}) == 3000
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)  # time order
    check = validator("interaction")
    known = set(items.ids)
    for e in events:
        check.validate(e)
        assert e["item_id"] in known
    assert {e["type"] for e in events} == {"click", "favorite", "rating"}

    # popularity skew: the top 10% of items take far more than 10% of the events
    counts = np.array(sorted(Counter(e["item_id"] for e in events).values(), reverse=True))
    assert counts[: 60].sum() > 0.3 * counts.sum()
    # sessions stay on a topic: consecutive events of a user share a topic far more often than chance
    topic = {i: int(t) for i, t in zip(items.ids, items.topic)}
    last: dict[str, int] = {}
    same = pairs = 0
    for e in events:
        t = topic[e["item_id"]]
        if e["user_id"] in last:
            pairs += 1
            same += last[e["user_id"]] == t
        last[e["user_id"]] = t
    assert same / pairs > 0.5  # 12 topics: chance is ~0.08
    # other prefixes give other users and event ids
    other = synth_events(items, 50, seed=3, user_prefix="h")
    assert all(e["user_id"].startswith("h") for e in other)
    assert not {e["event_id"] for e in other} & {e["event_id"] for e in events}


def test_item_memory_reports_every_structure(tmp_path, capsys):
    report = measure(400, n_events=2000, users=8)
    assert report["items"] == 400 and len(report["rows"]) == 3
    for row in report["rows"]:  # (a dense count matrix is sized by the items, not by the events)
        assert row["nbytes"] >= 0 and row["nbytes_per_item"] == row["nbytes"] / 400
        assert "rss_bytes_per_item" in row and row["seconds"] >= 0
    assert report["rows"][0]["nbytes"] > 0 and report["rows"][2]["nbytes"] > 0
    vectors = report["rows"][0]
    # the catalogue rows hold at least the text vector of every item
    assert vectors["detail"]["item_vectors_nbytes"] >= 400 * report["text_vector_bytes_per_item"]
    assert report["rows"][1]["detail"]["pairs"] > 0
    assert report["rows"][2]["detail"]["index_cells"] >= 1
    out = tmp_path / "mem.json"
    item_memory_main(["--items", "300", "--events", "1000", "--out", str(out)])
    assert "| structure |" in capsys.readouterr().out
    assert json.loads(out.read_text())["items"] == 300
