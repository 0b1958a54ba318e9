"""A worker on a broker that asks for a SASL login: every client of the worker (its consumers,
producers, admin clients, changelog readers, Faust's own) logs in with the configured mechanism,
an event goes in and its recommendation comes out; a wrong password stops the worker at once
with a message that names the setting."""
from __future__ import annotations

import asyncio
import time
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.support.broker import SASL_USERS
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.broker

CATALOG = [
    {"item_id": "sw4", "title": "Star Wars", "text": "Space opera: rebels fight the Galactic Empire.", "categories": ["Sci-Fi"]},
    {"item_id": "trek", "title": "Star Trek", "text": "Starship crew battles the Borg in space.", "categories": ["Sci-Fi"]},
    {"item_id": "emma", "title": "Emma", "text": "Period comedy of manners in an English village.", "categories": ["Romance"]},
]


def login(mechanism: str, user: str = "alice") -> dict:
    """An independent client's login (plain aiokafka keywords)."""
    return dict(security_protocol="SASL_PLAINTEXT", sasl_mechanism=mechanism, sasl_plain_username=user,
                sasl_plain_password=SASL_USERS[user])


def produce(bootstrap: str, auth: dict, topic: str, objs: list[dict], key: str) -> None:
    async def go():
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, **auth)
        await p.start()
        try:
            for o in objs:
                await p.send(topic, key=o[key].encode(), value=orjson.dumps(o))
            await p.flush()
        finally:
            await p.stop()

    asyncio.run(go())


def first_recommendation(bootstrap: str, auth: dict, topic: str, user: str, timeout: float = 60.0) -> dict | None:
    async def go():
        c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None, **auth)
        await c.start()
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for msgs in (await c.getmany(timeout_ms=200)).values():
                    for m in msgs:
                        if m.key == user.encode():
                            return orjson.loads(m.value)
        finally:
            await c.stop()
        return None

    return asyncio.run(go())


def worker_env(mechanism: str, password: str | None = None, password_file: str | None = None) -> dict:
    env = {"STREAM_RECO_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "STREAM_RECO_KAFKA_SASL_MECHANISM": mechanism,
           "STREAM_RECO_KAFKA_SASL_USERNAME": "alice"}
    if password_file:
        env["STREAM_RECO_KAFKA_SASL_PASSWORD_FILE"] = password_file
    else:
        env["STREAM_RECO_KAFKA_SASL_PASSWORD"] = password or SASL_USERS["alice"]
    return env


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_a_worker_logged_in_with_sasl_serves_an_event_end_to_end(sasl_kafka, tmp_path, mechanism):
    env = worker_env(mechanism)
    if mechanism.startswith("SCRAM"):  # the password read from a file, this time
        secret = tmp_path / "kafka-password"
        secret.write_text(SASL_USERS["alice"] + "\n")
        env = worker_env(mechanism, password_file=str(secret))
    w = WorkerProcess(sasl_kafka, f"sasl{uuid.uuid4().hex[:6]}-", tmp_path, extra_env=env)
    auth = login(mechanism, "admin")
    try:
        w.start()
        produce(sasl_kafka, auth, w.topic("catalog"), CATALOG, "item_id")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (w.stats() or {}).get("items", 0) < len(CATALOG):
            time.sleep(0.2)
        assert (w.stats() or {}).get("items") == len(CATALOG), w.log()[-3000:]
        produce(sasl_kafka, auth, w.topic("interactions"),
                [{"event_id": "s1", "type": "rating", "user_id": "bob", "item_id": "sw4", "ts": 1000, "value": 5}],
                "user_id")
        rec = first_recommendation(sasl_kafka, auth, w.topic("recommendations"), "bob")
        assert rec is not None, w.log()[-3000:]
        assert rec["events_applied"] == 1 and rec["items"][0]["item_id"] == "trek", rec
        log = w.log()
        assert f"Authenticated as alice via {mechanism}" in log, log[-3000:]
    finally:
        assert w.stop() == 0, w.log()[-3000:]


def test_a_wrong_password_stops_the_worker_with_the_setting_named(sasl_kafka, tmp_path):
    w = WorkerProcess(sasl_kafka, f"sasl{uuid.uuid4().hex[:6]}-", tmp_path,
                      extra_env=worker_env("SCRAM-SHA-256", password="not-the-password"))
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="worker exited with 1") as failed:
        w.start(timeout=90)
    assert time.monotonic() - t0 < 60, "the worker should stop at once, not retry"
    message = str(failed.value)
    assert "refused the login of STREAM_RECO_KAFKA_SASL_USERNAME=alice" in message, message
    assert "STREAM_RECO_KAFKA_SASL_PASSWORD" in message, message
    assert "not-the-password" not in message  # the password itself is never printed
