"""A broker of its own per test (not the session's): restarted on the same data folder, the worker
rides through and applies every event once; replaced by an empty broker on the same address, the
worker stops with a non-zero exit and says why, within a bounded time; a partition whose state
cannot be restored stops the worker the same way."""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from stream_app.dev.broker import LocalKafka, free_port
from stream_app.fencing import EPOCH_HEADER
from stream_app.topics import ensure_topics
from tests.support.workers import WorkerProcess
from tests.integration.kafka_io import consume_until, produce_json
from tests.integration.test_worker import ev, load_catalog

pytestmark = pytest.mark.broker

USERS = [f"o{i}" for i in range(8)]


def last_applied(msgs) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value, _ in msgs:
        out[key] = max(out.get(key, 0), value["events_applied"])
    return out


def send_round(w, bootstrap: str, tag: str) -> None:
    produce_json(bootstrap, w.topic("interactions"),
                 [ev(f"{tag}-{u}-{i}", u, item, 1000 + i, value=4)
                  for u in USERS for i, item in enumerate(("sw4", "sw5"))], "user_id")


@pytest.mark.timeout(300)
def test_the_worker_rides_through_a_broker_restart(tmp_path):
    port = free_port()
    kafka = LocalKafka(partitions=4, port=port, workdir=tmp_path / "kafka").start()
    w = WorkerProcess(kafka.bootstrap_servers, f"out{uuid.uuid4().hex[:6]}-", tmp_path)
    try:
        w.start()
        load_catalog(w, kafka.bootstrap_servers)
        send_round(w, kafka.bootstrap_servers, "before")
        consume_until(kafka.bootstrap_servers, w.topic("recommendations"),
                      lambda ms: all(last_applied(ms).get(u) == 2 for u in USERS), timeout=60)
        kafka.stop()  # the same folder: topics, offsets and changelogs survive
        time.sleep(5)
        assert w.running(), w.log()[-3000:]
        kafka = LocalKafka(partitions=4, port=port, workdir=tmp_path / "kafka").start()
        send_round(w, kafka.bootstrap_servers, "after")
        msgs = consume_until(kafka.bootstrap_servers, w.topic("recommendations"),
                             lambda ms: all(last_applied(ms).get(u) == 4 for u in USERS), timeout=120)
        assert last_applied(msgs) == {u: 4 for u in USERS}, w.log()[-3000:]  # each event once
        assert w.running(), w.log()[-3000:]
    finally:
        w.stop()
        kafka.stop()


@pytest.mark.timeout(300)
def test_a_wiped_broker_stops_the_worker_with_a_reason(tmp_path):
    port = free_port()
    kafka = LocalKafka(partitions=4, port=port, workdir=tmp_path / "first").start()
    w = WorkerProcess(kafka.bootstrap_servers, f"wipe{uuid.uuid4().hex[:6]}-", tmp_path)
    try:
        w.start()
        kafka.stop()
        kafka = LocalKafka(partitions=4, port=port, workdir=tmp_path / "second").start()  # empty
        changed = time.monotonic()  # the cluster behind the address is another one from here on
        exited = wait_for_exit(w, 90)
        assert exited is not None, "the worker went on against an empty cluster:\n" + w.log()[-5000:]
        print(f"cluster change to worker exit: {exited - changed:.1f} s")
        assert w.proc.returncode not in (0, None), w.log()[-5000:]
        assert "changed (cluster id" in w.log()
        assert exited - changed < 60, w.log()[-5000:]  # by design within 5 s (watch) + 10 s (deadline)
    finally:
        w.stop()
        kafka.stop()


@pytest.mark.timeout(300)
def test_a_failed_restore_stops_the_worker_with_a_reason(kafka_bootstrap, tmp_path):
    """A user-state changelog record the store cannot read (an unreadable writer epoch, written
    by a plain client): the partition cannot be taken over, so the worker stops, non-zero, saying
    why, instead of leaving the partition unread."""
    w = WorkerProcess(kafka_bootstrap, f"corrupt{uuid.uuid4().hex[:6]}-", tmp_path)
    names = ensure_topics(w.settings)
    produce_corrupt(kafka_bootstrap, names.user_state_changelog)
    t0 = time.monotonic()
    try:
        w.start(timeout=120)
    except RuntimeError as exc:  # it stopped before it ever looked ready
        assert "worker exited" in str(exc)
    else:  # Faust logs Ready as its services start, the failed restore among them: it stops right after
        assert wait_for_exit(w, 60) is not None, "the worker still runs after a failed restore"
    print(f"worker start to exit on a failed restore: {time.monotonic() - t0:.1f} s")
    assert w.proc.returncode not in (0, None)
    log = w.log()
    assert "CorruptRecord" in log and "unreadable writer epoch" in log, log[-5000:]
    assert "stream-app worker stopped" in log, log[-5000:]


def produce_corrupt(bootstrap: str, topic: str) -> None:
    async def go():
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, key=b"o1", value=b"not a user state", partition=0,
                                         headers=[(EPOCH_HEADER, b"garbage")])
        finally:
            await producer.stop()

    asyncio.run(go())


def wait_for_exit(w: WorkerProcess, timeout: float) -> float | None:
    """When the worker's process ended (time.monotonic()), or None if it still runs after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not w.running():
            return time.monotonic()
        time.sleep(0.2)
    return None
