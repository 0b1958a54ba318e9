"""A broker of its own per test (not the session's): restarted on the same data folder, the worker
rides through and applies every event once; replaced by an empty broker on the same address, the
worker stops with a non-zero exit and says why."""
from __future__ import annotations

import time
import uuid

import pytest

from stream_app.dev.broker import LocalKafka, free_port
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
        deadline = time.monotonic() + 90
        while w.running() and time.monotonic() < deadline:
            time.sleep(1)
        assert not w.running(), "the worker went on against an empty cluster:\n" + w.log()[-5000:]
        assert w.proc.returncode not in (0, None)
        assert "changed (cluster id" in w.log()
    finally:
        w.stop()
        kafka.stop()
