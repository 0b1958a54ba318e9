"""The replay path end to end: a tiny data set through a real broker and worker to recommendations."""
from __future__ import annotations

import io
import math
import time

import pytest

from models.offline.data import Dataset, Interaction, Item, write_jsonl_dataset
from stream_app.dev.replay import replay_dataset

pytestmark = pytest.mark.broker

ITEMS = {
    "sw4": ("Star Wars", "Space opera: rebels fight the Empire with starships.", ("Sci-Fi", "Action")),
    "trek": ("Star Trek", "A starship crew explores space and battles the Borg.", ("Sci-Fi",)),
    "pride": ("Pride and Prejudice", "Period romance: manners and marriage in England.", ("Romance", "Drama")),
    "emma": ("Emma", "Comedy of manners: a young matchmaker meddles in romance.", ("Romance", "Comedy")),
    "heat": ("Heat", "Crime thriller: a detective hunts a crew of bank robbers.", ("Crime", "Thriller")),
}
USERS = ["ann", "ben", "cat", "dan", "eve", "fay"]


def tiny_dataset() -> Dataset:
    items = {i: Item(i, t, x, c, {"year": 1990 + n}, None) for n, (i, (t, x, c)) in enumerate(ITEMS.items())}
    ids = list(ITEMS)
    events = []
    for n in range(30):  # 6 users x 5 events on 3 items each, interleaved; one review, some clicks
        user = USERS[n % len(USERS)]
        item = ids[(n // len(USERS) % 3 + USERS.index(user)) % len(ids)]
        if n == 7:
            events.append(Interaction(user, item, 1_000 * n, "review", None, "Loved every minute of it"))
        elif n % 5 == 0:
            events.append(Interaction(user, item, 1_000 * n, "click"))
        else:
            events.append(Interaction(user, item, 1_000 * n, "rating", float(1 + n % 5)))
    return Dataset("tiny", items, events)


def test_replay_answers_every_event_and_user(worker_factory, tmp_path):
    folder = write_jsonl_dataset(tiny_dataset(), tmp_path / "tiny")
    worker = worker_factory().start()
    out = io.StringIO()
    result = replay_dataset(worker.settings, folder, show_users=2, progress=False, idle_timeout=20, out=out)
    text = out.getvalue()

    assert result.complete, (text, worker.log()[-3000:])
    assert result.events_produced == 30 and result.events_covered == 30
    assert result.users == len(USERS)  # a recommendation for every user
    assert 1 <= result.recommendations <= 30
    assert result.dead_letters == 0
    assert result.latencies_ms.size == 30  # one per event: produced -> first list that counts it
    assert all(v >= 0 and math.isfinite(v) for v in result.latencies_ms)
    s = result.summary()
    assert s["latency_p50_ms"] <= s["latency_p95_ms"] <= s["latency_p99_ms"] <= s["latency_max_ms"]
    assert s["events_per_s"] > 0 and s["duration_s"] >= s["produce_s"]

    assert "== replay summary ==" in text and "30 of 30 (from each user's events_applied)" in text
    assert "live recommendations" in text and "top reason:" in text  # 2 unseen items per user
    assert any(title in text for title, _, _ in ITEMS.values())  # titles, not ids
    deadline = time.monotonic() + 60  # the last batch commits after its lists are out: wait for it
    while True:
        stats = worker.stats()
        if stats["hot_path_seconds"].get("commit", 0) > 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert stats["items"] == len(ITEMS) and stats["users"] == len(USERS) and stats["events"] == 30
    spent = stats["hot_path_seconds"]  # where the hot path's time went, by step
    assert set(spent) == {"fetch", "handle", "model", "deliver", "commit"}
    assert 0 < spent["model"] <= spent["handle"]
    assert spent["deliver"] >= 0 and spent["commit"] > 0  # deliver: the loop's wait for room among the settling batches


def test_demo_serves_a_trained_checkpoint_and_prints_its_measured_quality(kafka_bootstrap, tmp_path):
    from dataclasses import replace

    from stream_app.dev.demo import run_demo
    from stream_app.settings import Settings

    folder = write_jsonl_dataset(tiny_dataset(), tmp_path / "tiny")
    settings = replace(Settings.from_env(), bootstrap_servers=kafka_bootstrap, cache_dir=str(tmp_path / "cache"),
                       check_output=True)
    out = io.StringIO()
    assert run_demo(settings, folder, show_users=1, progress=False, idle_timeout=20, out=out) == 0
    text = out.getvalue()
    assert "training a checkpoint on tiny" in text and "test NDCG@10" in text, text
    version = text.split("model ", 1)[1].split(":", 1)[0]
    assert version.startswith("fusion-tiny-")
    assert "30 of 30" in text
    out2 = io.StringIO()  # the second demo reuses the checkpoint
    assert run_demo(settings, folder, show_users=1, progress=False, idle_timeout=20, out=out2) == 0
    assert "trained earlier" in out2.getvalue() and f"model {version}:" in out2.getvalue()
