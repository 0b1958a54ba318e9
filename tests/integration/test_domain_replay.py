"""A generated e-commerce data set replayed into a worker started with STREAM_RECO_DOMAIN=ecommerce:
the worker serves with the domain's preset and every user gets recommendations."""
from __future__ import annotations

import io
import json

import pytest

from models.domains import DOMAINS
from models.offline.synthetic import generate
from stream_app.dev.replay import replay_dataset

pytestmark = [pytest.mark.broker, pytest.mark.timeout(600)]

N_USERS, N_ITEMS, N_EVENTS = 200, 150, 3000  # the generator's default size


def test_ecommerce_replay_into_an_ecommerce_worker(worker_factory, tmp_path):
    folder = generate("ecommerce", tmp_path / "ecommerce", seed=0, n_users=N_USERS, n_items=N_ITEMS,
                      n_events=N_EVENTS)
    users = {json.loads(line)["user_id"] for line in (folder / "interactions.jsonl").read_text().splitlines()}
    assert len(users) == N_USERS
    worker = worker_factory(extra_env={"STREAM_RECO_DOMAIN": "ecommerce"}).start()
    assert worker.stats()["domain"] == "ecommerce"
    weights = DOMAINS["ecommerce"].event_weights
    assert f"domain ecommerce (event weights {weights}" in worker.log()

    out = io.StringIO()
    result = replay_dataset(worker.settings, folder, show_users=1, progress=False, idle_timeout=30, out=out)
    assert result.complete, (out.getvalue(), worker.log()[-3000:])
    assert result.events_produced == N_EVENTS and result.events_covered == N_EVENTS
    assert result.dead_letters == 0
    assert result.users == N_USERS  # a recommendation for every user
    stats = worker.stats()
    assert stats["items"] == N_ITEMS and stats["users"] == N_USERS and stats["events"] == N_EVENTS


def test_replay_placed_as_librdkafka_clients_place_keys(worker_factory, tmp_path):
    """Events placed by CRC32 (librdkafka's default partitioner, kcat's) into two workers: one
    that lands off its user's partition is applied where it landed when that worker also owns the
    user's partition, else re-routed there; every event is applied once, in order per user."""
    import asyncio
    import time
    import zlib

    from stream_app.dev.replay import load_catalog, prepare, replay_events
    from stream_app.processor import owner_partition

    folder = generate("ecommerce", tmp_path / "crc", seed=1, n_users=40, n_items=30, n_events=400)
    _, catalog, events = prepare(folder)
    a = worker_factory(prefix="crc-").start()
    b = worker_factory(prefix="crc-").start()  # same group: the partitions are split
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        owned = [set(w.stats()["partitions"]) for w in (a, b)]
        if all(owned) and owned[0] | owned[1] == set(range(a.settings.partitions)):
            break
        time.sleep(0.5)
    assert all(owned), owned
    parts = a.settings.partitions
    off = sum(zlib.crc32(e["user_id"].encode()) % parts != owner_partition(e["user_id"], parts) for e in events)
    assert 0 < off < len(events)

    async def go():
        await load_catalog(a.settings, catalog)
        return await replay_events(a.settings, events, progress=False, idle_timeout=30, partitioner="crc32")

    result = asyncio.run(go())
    assert result.complete and result.events_covered == len(events) and result.dead_letters == 0
    assert result.regressions == 0
    stats = [w.stats() for w in (a, b)]
    rerouted = sum(st["rerouted"] for st in stats)
    direct = sum(st["off_partition"] for st in stats)
    assert rerouted > 0 and direct > 0 and rerouted + direct == off
    assert sum(st["events"] for st in stats) == len(events) + rerouted  # a re-routed event is read twice
    with pytest.raises(ValueError, match="partitioner"):
        asyncio.run(replay_events(a.settings, events[:1], partitioner="random"))
