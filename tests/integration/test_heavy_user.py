"""A heavy user through repeated kill -9: 5,200 distinct events of one user (plus 200 retries of
earlier event ids at new offsets), a worker killed mid-stream twice, and then, twice more, the
group's committed offsets moved back to the start (as a lost commit leaves them) so that every
one of those events, already in the user's restored state, is read again by a worker that is
killed while it reads them. The last worker reads them a third time. Every list counts each
distinct event once: the final ``events_applied`` is 5,200 and no list ever counted more.

No step waits on time alone: each waits for a condition (a list, a group with no member, a
committed offset) with a generous timeout."""
from __future__ import annotations

import time
import uuid

import orjson
import pytest

from tests.support.reliability.clients import TopicReader, by_key, committed_offsets, produce_all
from tests.support.reliability.outcome import ITEM_IDS, all_exited, count_dead_letters, start_worker

pytestmark = pytest.mark.broker

DISTINCT, RETRIES = 5200, 200


def heavy_events(user: str) -> list[dict]:
    """DISTINCT events, and after every 26th a retry of one of the previous 100 (same bytes)."""
    kinds = ("click", "rating", "favorite", "click", "review")
    out, sent = [], []
    for n in range(DISTINCT):
        kind = kinds[n % len(kinds)]
        e = {"event_id": f"{user}-{n}", "type": kind, "user_id": user, "item_id": ITEM_IDS[(n * 7) % len(ITEM_IDS)],
             "ts": 1_700_000_000_000 + 100 * n}
        if kind == "rating":
            e["value"] = 1 + n % 5
        if kind == "review":
            e["text"] = "great" if n % 2 else "awful"
        out.append(e)
        sent.append(e)
        if n % 26 == 25 and len(out) - DISTINCT < RETRIES:
            out.append(sent[max(0, n - 1 - (n * 13) % 90)])
    assert len(out) == DISTINCT + RETRIES
    return out


def counts(reader: TopicReader, user: str) -> list[int]:
    return [m["events_applied"] for m in by_key(reader.messages).get(user, []) if m]


def wait_for(reader: TopicReader, user: str, done, worker, timeout: float = 240.0) -> bool:
    return reader.until(lambda ms: done(counts(reader, user)), timeout=timeout, give_up=all_exited(worker))


def kill(worker) -> None:
    worker.proc.kill()
    worker.proc.wait()


def rewind(bootstrap: str, group: str, topic: str, timeout: float = 120.0) -> None:
    """Move ``group``'s committed offsets of ``topic`` back to 0, once the killed member has left
    the group (a group with members refuses it)."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p, 0) for p in range(4)])]
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            admin.alter_consumer_group_offsets(request)[group].result(timeout=30)
            if all(done == 0 for done, _ in committed_offsets(bootstrap, group, topic, range(4)).values()):
                return
        except Exception as exc:  # the group still has the killed member: wait for its session to end
            last = exc
        time.sleep(1.0)
    raise AssertionError(f"could not move the offsets of {group} back: {last!r}")


@pytest.mark.timeout(900)
def test_a_heavy_user_survives_repeated_kill_9_exactly(worker_factory, kafka_bootstrap):
    user = f"heavy-{uuid.uuid4().hex[:6]}"
    events = heavy_events(user)
    since = int(time.time() * 1000)
    w = start_worker(worker_factory, kafka_bootstrap)
    prefix, topic, group = w.prefix, w.topic("interactions"), f"{w.settings.app_id}-interactions"
    recs = TopicReader(kafka_bootstrap, w.topic("recommendations"))
    workers = [w]
    try:
        produce_all(kafka_bootstrap, topic, [(user.encode(), orjson.dumps(e)) for e in events])
        for progress in (1500, 3500):  # killed mid-stream, twice
            assert wait_for(recs, user, lambda c, p=progress: c and max(c) >= p, w), w.log()[-3000:]
            kill(w)
            w = start_worker(worker_factory, kafka_bootstrap, prefix=prefix, load=False)
            workers.append(w)
        assert wait_for(recs, user, lambda c: DISTINCT in c, w), f"{counts(recs, user)[-5:]}\n{w.log()[-3000:]}"
        for _ in range(2):  # everything read again from offset 0, and killed while it is read
            kill(w)
            rewind(kafka_bootstrap, group, topic)
            seen = len(counts(recs, user))
            w = start_worker(worker_factory, kafka_bootstrap, prefix=prefix, load=False)
            workers.append(w)
            assert wait_for(recs, user, lambda c: len(c) > seen, w), w.log()[-3000:]
        kill(w)
        rewind(kafka_bootstrap, group, topic)
        w = start_worker(worker_factory, kafka_bootstrap, prefix=prefix, load=False)
        workers.append(w)
        end = {p: hw for p, (_, hw) in committed_offsets(kafka_bootstrap, group, topic, range(4)).items()}
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and w.running():  # the whole range read and committed again
            if all(done == end[p] for p, (done, _) in committed_offsets(kafka_bootstrap, group, topic, range(4)).items()):
                break
            time.sleep(1.0)
        recs.to_end()
        got = counts(recs, user)
        assert w.running(), w.log()[-3000:]
        assert got and got[-1] == DISTINCT and max(got) == DISTINCT, \
            f"events_applied: last {got[-5:]}, max {max(got)}, expected {DISTINCT}"
        produce_all(kafka_bootstrap, topic, [(user.encode(), orjson.dumps({**events[0], "event_id": f"{user}-last"}))])
        assert wait_for(recs, user, lambda c: c[-1] == DISTINCT + 1, w, timeout=120), counts(recs, user)[-5:]
        assert max(counts(recs, user)) == DISTINCT + 1
        assert count_dead_letters(kafka_bootstrap, w, since) == []
    finally:
        recs.close()
        for x in workers:
            if x.running():
                x.stop()
