"""A model change never erases a user: 50 users with 20 events each on the untrained default
model, the worker restarted on a trained checkpoint (other dimensions and space sizes), one more
event each: every user's ``events_applied`` is 21, nothing is dead-lettered, and the user-state
changelog never holds a tombstone for them."""
from __future__ import annotations

import time

import pytest

from models.engine import InterestModel
from models.offline.data import write_jsonl_dataset
from models.offline.fused import train_checkpoint
from stream_app.dev.messages import catalog_message
from tests.integration.test_equivalence import synthetic_dataset
from tests.support.reliability.clients import TopicReader, by_key, fold_table, produce_all
from tests.support.reliability.ledger import latest_counts
from tests.support.reliability.outcome import all_exited, count_dead_letters, wait_items

pytestmark = pytest.mark.broker

USERS, EVENTS = 50, 20


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    ds = synthetic_dataset()
    folder = write_jsonl_dataset(ds, tmp_path_factory.mktemp("data") / "synthetic")
    path = train_checkpoint(folder, tmp_path_factory.mktemp("ck"), budget_s=3.0, progress=False, sequence_budget_s=3.0)
    return ds, path


def event(user: str, n: int, items: list[str]) -> dict:
    kind = ("click", "rating", "favorite", "review")[n % 4]
    e = {"event_id": f"{user}-{n}", "type": kind, "user_id": user, "item_id": items[(7 * n + len(user)) % len(items)],
         "ts": 1_700_000_000_000 + 1000 * n}
    if kind == "rating":
        e["value"] = 1 + n % 5
    if kind == "review":
        e["text"] = "loved it" if n % 8 == 3 else "dull and slow"
    return e


def wait_counts(reader: TopicReader, want: dict[str, int], worker, timeout: float = 180.0) -> dict[str, int]:
    reader.until(lambda ms: all(latest_counts(by_key(ms)).get(u) == n for u, n in want.items()),
                 timeout=timeout, give_up=all_exited(worker))
    got = latest_counts(by_key(reader.messages))
    return {u: got.get(u) for u in want}


@pytest.mark.timeout(600)
def test_users_survive_a_change_to_a_trained_checkpoint(trained, worker_factory, kafka_bootstrap):
    import orjson

    ds, path = trained
    default, checkpoint = InterestModel.untrained(), InterestModel.load(path)
    assert (default.items.dims, [(d.name, d.space) for d in default.dims]) != \
        (checkpoint.items.dims, [(d.name, d.space) for d in checkpoint.dims])  # a state of one does not fit the other
    items = sorted(ds.items)
    users = [f"mc-{i}" for i in range(USERS)]
    since = int(time.time() * 1000)
    w = worker_factory().start()
    produce_all(kafka_bootstrap, w.topic("catalog"),
                [(it.item_id.encode(), orjson.dumps(catalog_message(it))) for it in ds.items.values()])
    wait_items(w, len(items))
    recs = TopicReader(kafka_bootstrap, w.topic("recommendations"))
    changelog = TopicReader(kafka_bootstrap, f"{w.settings.app_id}-user-state-changelog")
    try:
        produce_all(kafka_bootstrap, w.topic("interactions"),
                    [(u.encode(), orjson.dumps(event(u, n, items))) for n in range(EVENTS) for u in users])
        assert wait_counts(recs, {u: EVENTS for u in users}, w) == {u: EVENTS for u in users}, w.log()[-3000:]
        assert {m["model_version"] for ms in by_key(recs.messages).values() for m in ms if m} == {default.version}
        assert w.stop() in (0, -15)

        w2 = worker_factory(w.prefix, extra_env={"STREAM_RECO_CHECKPOINT": str(path)}).start()
        wait_items(w2, len(items), timeout=60, strict=False)
        produce_all(kafka_bootstrap, w.topic("interactions"),
                    [(u.encode(), orjson.dumps(event(u, EVENTS, items))) for u in users])
        got = wait_counts(recs, {u: EVENTS + 1 for u in users}, w2)
        assert got == {u: EVENTS + 1 for u in users}, f"events_applied after the model change: {got}\n{w2.log()[-3000:]}"
        last = {u: by_key(recs.messages)[u][-1] for u in users}
        assert {m["model_version"] for m in last.values()} == {path.name}
        assert all(f"{u}-{EVENTS}" in last[u]["based_on_event_ids"] for u in users)
        dead = count_dead_letters(kafka_bootstrap, w2, since)
        assert dead == [], f"{len(dead)} dead letters: {[d.get('error') for d in dead[:3]]}"
        changelog.to_end()
        tombstones = [m for m in changelog.messages if m.key in set(users) and m.value is None]
        assert not tombstones, f"{len(tombstones)} user-state tombstones for users that were never forgotten"
        assert all(fold_table(changelog.messages).get(u) for u in users)
    finally:
        recs.close()
        changelog.close()
