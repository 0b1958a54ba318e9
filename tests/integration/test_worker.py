"""Events through a real broker and a real worker process to recommendations."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import jsonschema
import orjson
import pytest

from tests.integration.kafka_io import consume_until, produce, produce_json

pytestmark = pytest.mark.broker

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"

CATALOG = [
    {"item_id": "sw4", "title": "Star Wars: A New Hope", "text": "Space opera: rebels fight the Galactic Empire with starships and lightsabers.", "categories": ["Sci-Fi", "Action"]},
    {"item_id": "sw5", "title": "Star Wars: The Empire Strikes Back", "text": "Space opera sequel: the Empire hunts the rebels across the galaxy; lightsaber duel.", "categories": ["Sci-Fi", "Action"]},
    {"item_id": "sw6", "title": "Star Wars: Return of the Jedi", "text": "Space opera finale: rebels attack the Death Star, Jedi confront the Emperor.", "categories": ["Sci-Fi", "Action"]},
    {"item_id": "trek", "title": "Star Trek: First Contact", "text": "Starship Enterprise crew battles the Borg in space.", "categories": ["Sci-Fi"]},
    {"item_id": "sense", "title": "Sense and Sensibility", "text": "Period romance: two sisters, love and marriage in Regency England.", "categories": ["Romance", "Drama"]},
    {"item_id": "pride", "title": "Pride and Prejudice", "text": "Period romance: Elizabeth Bennet and Mr Darcy, manners and marriage in England.", "categories": ["Romance", "Drama"]},
    {"item_id": "emma", "title": "Emma", "text": "Period comedy of manners: a young matchmaker meddles in romance in an English village.", "categories": ["Romance", "Comedy"]},
    {"item_id": "notting", "title": "Notting Hill", "text": "Romantic comedy: a London bookseller falls in love with a film star.", "categories": ["Romance", "Comedy"]},
    {"item_id": "heat", "title": "Heat", "text": "Crime thriller: a detective hunts a crew of professional bank robbers in Los Angeles.", "categories": ["Crime", "Thriller"]},
    {"item_id": "fargo", "title": "Fargo", "text": "Crime thriller: a kidnapping scheme goes wrong in snowy Minnesota.", "categories": ["Crime", "Thriller"]},
]


def schema(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.v1.json").read_text())


def ev(eid, user, item, ts, type_="rating", value=None, **kw):
    e = {"event_id": eid, "type": type_, "user_id": user, "item_id": item, "ts": ts, **kw}
    if value is not None:
        e["value"] = value
    return e


def recs_for(msgs, user):
    return [v for k, v, _ in msgs if k == user]


def load_catalog(w, kafka_bootstrap):
    produce_json(kafka_bootstrap, w.topic("catalog"), CATALOG, "item_id")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (w.stats() or {}).get("items", 0) < len(CATALOG):
        time.sleep(0.2)
    assert w.stats()["items"] == len(CATALOG), w.log()[-3000:]


@pytest.fixture(scope="module")
def worker(worker_factory, kafka_bootstrap):
    w = worker_factory().start()
    load_catalog(w, kafka_bootstrap)
    return w


def test_events_lead_to_schema_valid_recommendation_without_seen_items(worker, kafka_bootstrap):
    produce_json(kafka_bootstrap, worker.topic("interactions"), [
        ev("a1", "alice", "sw4", 1_000, value=5), ev("a2", "alice", "trek", 2_000, "click"),
    ], "user_id")
    msgs = consume_until(kafka_bootstrap, worker.topic("recommendations"),
                         lambda got: any(v["events_applied"] >= 2 for v in recs_for(got, "alice")), timeout=30)
    recs = recs_for(msgs, "alice")
    assert recs, worker.log()[-3000:]
    last = recs[-1]
    jsonschema.Draft202012Validator(schema("recommendation")).validate(last)
    ids = [i["item_id"] for i in last["items"]]
    assert len(ids) == 8  # 10 items, 2 seen, top_k 10
    assert "sw4" not in ids and "trek" not in ids
    assert ids[0] in {"sw5", "sw6"}, ids  # the closest items to what she engaged with
    assert set(last["dimension_weights"]) >= {"content", "sentiment", "recency"}
    assert abs(sum(last["dimension_weights"].values()) - 1.0) < 1e-3
    assert set(last["items"][0]["reasons"]) == set(last["dimension_weights"]) | {"bias"}
    assert abs(sum(last["items"][0]["reasons"].values()) - last["items"][0]["score"]) < 1e-3


def get_json(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_users_view_answers_the_published_user_view_schema(worker, kafka_bootstrap):
    produce_json(kafka_bootstrap, worker.topic("interactions"), [
        ev("v1", "viewer", "pride", 1_000, value=5), ev("v2", "viewer", "heat", 2_000, "click"),
    ], "user_id")
    consume_until(kafka_bootstrap, worker.topic("recommendations"),
                  lambda got: any(v["events_applied"] >= 2 for v in recs_for(got, "viewer")), timeout=30)
    status, view = get_json(worker.port, "/users/viewer")
    assert status == 200, view
    jsonschema.Draft202012Validator(schema("user_view")).validate(view)
    assert view["schema"] == "user_view/v1" and view["events_applied"] == 2
    titles = {it["item_id"]: it["title"] for it in CATALOG}
    assert view["item_titles"] == {i["item_id"]: titles[i["item_id"]] for i in view["items"]}
    status, missing = get_json(worker.port, "/users/nobody-at-all")
    assert status == 404 and "error" in missing


def test_one_star_pushes_similar_items_down_five_stars_pull_them_up(worker, kafka_bootstrap):
    produce_json(kafka_bootstrap, worker.topic("interactions"), [
        ev("l1", "lover", "sense", 1_000, value=3), ev("l2", "lover", "sw4", 2_000, value=5),
        ev("h1", "hater", "sense", 1_000, value=3), ev("h2", "hater", "sw4", 2_000, value=1),
    ], "user_id")
    msgs = consume_until(kafka_bootstrap, worker.topic("recommendations"),
                         lambda got: all(any(v["events_applied"] >= 2 for v in recs_for(got, u))
                                         for u in ("lover", "hater")), timeout=30)
    rank = {}
    for u in ("lover", "hater"):
        final = [v for v in recs_for(msgs, u) if v["events_applied"] >= 2][-1]
        rank[u] = {i["item_id"]: i["rank"] for i in final["items"]}
    for similar in ("sw5", "sw6"):
        assert rank["lover"][similar] < rank["hater"][similar], rank
    assert rank["lover"]["sw5"] <= 2 and rank["hater"]["sw5"] > 4, rank


def test_bad_messages_go_to_dead_letters_and_later_events_still_served(worker, kafka_bootstrap):
    topic = worker.topic("interactions")
    big = orjson.dumps(ev("big", "bob", "sw4", 5, "review", text="x" * 3000, context={"pad": "y" * 70_000}))
    produce(kafka_bootstrap, topic, [
        (b"bob", b"{this is not json"),
        (b"bob", orjson.dumps({"event_id": "s1", "type": "rating", "user_id": "bob", "item_id": "sw4", "ts": 1})),
        (b"bob", orjson.dumps(ev("u1", "bob", "no-such-item", 2, "click"))),
        (b"bob", big),
        (b"bob", b"\xff\xfe\x00binary"),
        (b"bob", orjson.dumps(ev("g1", "bob", "heat", 10, value=5))),
    ])
    dl = consume_until(kafka_bootstrap, worker.topic("dead_letters"), lambda got: len(got) >= 5, timeout=30)
    validator = jsonschema.Draft202012Validator(schema("dead_letter"))
    for _, v, _ in dl:
        validator.validate(v)
    kinds = sorted(v["error_type"] for _, v, _ in dl)
    assert kinds == ["malformed_json", "malformed_json", "oversized", "schema_violation", "unknown_item"], kinds
    sv = next(v for _, v, _ in dl if v["error_type"] == "schema_violation")
    assert "value" in sv["error"] and sv["topic"] == topic and sv["original"].startswith("{")
    assert next(v for _, v, _ in dl if v["original_encoding"] == "base64")
    recs = consume_until(kafka_bootstrap, worker.topic("recommendations"),
                         lambda got: bool(recs_for(got, "bob")), timeout=30)
    bob = recs_for(recs, "bob")[-1]
    assert bob["based_on_event_ids"] == ["g1"] and bob["events_applied"] == 1
    assert worker.proc.poll() is None  # still serving


def test_unkeyed_events_are_rerouted_by_user(worker, kafka_bootstrap):
    produce(kafka_bootstrap, worker.topic("interactions"),
            [(None, orjson.dumps(ev("k1", "carol", "fargo", 1, value=4)))])
    recs = consume_until(kafka_bootstrap, worker.topic("recommendations"),
                         lambda got: bool(recs_for(got, "carol")), timeout=30)
    assert recs_for(recs, "carol")[-1]["based_on_event_ids"] == ["k1"]


def test_state_is_recovered_from_the_changelog_after_restart(worker_factory, kafka_bootstrap):
    w = worker_factory().start()
    load_catalog(w, kafka_bootstrap)
    produce_json(kafka_bootstrap, w.topic("interactions"),
                 [ev(f"r{i}", "dave", it, 1000 * i, value=5) for i, it in enumerate(["sense", "pride", "emma"])],
                 "user_id")
    first = consume_until(kafka_bootstrap, w.topic("recommendations"),
                          lambda got: any(v["events_applied"] >= 3 for v in recs_for(got, "dave")), timeout=60)
    assert any(v["events_applied"] == 3 for v in recs_for(first, "dave")), w.log()[-3000:]
    w.stop()

    w2 = worker_factory(prefix=w.prefix).start()  # same app id and topics: recovers from changelogs
    deadline = time.monotonic() + 120  # the catalogue comes back from its changelog, not re-encoded
    while time.monotonic() < deadline and (w2.stats() or {}).get("items", 0) < len(CATALOG):
        time.sleep(0.2)
    produce_json(kafka_bootstrap, w2.topic("interactions"), [ev("r9", "dave", "heat", 9_000, "click")], "user_id")
    after = consume_until(kafka_bootstrap, w2.topic("recommendations"),
                          lambda got: any("r9" in v["based_on_event_ids"] for v in recs_for(got, "dave")),
                          timeout=60)
    final = [v for v in recs_for(after, "dave") if "r9" in v["based_on_event_ids"]][-1]
    assert final["events_applied"] == 4, w2.log()[-3000:]  # 3 recovered + 1 new
    ids = [i["item_id"] for i in final["items"]]
    assert not {"sense", "pride", "emma", "heat"} & set(ids)  # seen set recovered too
    assert ids[0] == "notting", ids  # the romance profile survived the restart
