"""Two workers in one group: ``GET /users/{id}`` answers for any user, whichever worker is asked."""
from __future__ import annotations

import json
import time
import urllib.request

import pytest

from stream_app.processor import owner_partition
from tests.integration.kafka_io import produce_json
from tests.integration.test_worker import ev, load_catalog

pytestmark = pytest.mark.broker


def get_json(port: int, path: str):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


def test_any_worker_answers_for_any_user(worker_factory, kafka_bootstrap):
    a = worker_factory(prefix="route-").start()
    load_catalog(a, kafka_bootstrap)
    b = worker_factory(prefix="route-").start()  # same group and topics: the partitions are split
    users = [f"r{i}" for i in range(16)]
    assert len({owner_partition(u, 4) for u in users}) == 4
    produce_json(kafka_bootstrap, a.topic("interactions"),
                 [ev(f"route-{u}", u, "sw4", 1000, value=5) for u in users], "user_id")
    deadline = time.monotonic() + 90
    pending = set(users)
    while pending and time.monotonic() < deadline:
        for u in sorted(pending):
            if get_json(a.port, f"/users/{u}")[0] == 200:
                pending.discard(u)
        time.sleep(0.5)
    assert not pending, (f"worker A could not answer for {sorted(pending)}: statuses on B "
                         f"{[get_json(b.port, f'/users/{u}')[0] for u in sorted(pending)]}; B stats {b.stats()}\n"
                         f"B log:\n{b.log()[-3000:]}")
    for u in users:  # both workers answer for every user, the same list
        (sa, la), (sb, lb) = get_json(a.port, f"/users/{u}"), get_json(b.port, f"/users/{u}")
        assert sa == sb == 200 and la["events_applied"] == lb["events_applied"] == 1
        assert [i["item_id"] for i in la["items"]] == [i["item_id"] for i in lb["items"]]
