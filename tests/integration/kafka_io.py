"""Plain aiokafka helpers for tests: an independent client, not the project's code."""
from __future__ import annotations

import asyncio
import time
from typing import Callable, Iterable

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes]]) -> None:
    async def go():
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=2_000_000)
        await p.start()
        try:
            for key, value in messages:
                await p.send(topic, key=key, value=value)
            await p.flush()
        finally:
            await p.stop()

    asyncio.run(go())


def produce_json(bootstrap: str, topic: str, objs: Iterable[dict], key_field: str) -> None:
    produce(bootstrap, topic, [(o[key_field].encode(), orjson.dumps(o)) for o in objs])


def consume_until(bootstrap: str, topic: str, done: Callable[[list], bool], timeout: float = 60.0) -> list:
    """Read ``topic`` from the beginning until ``done(messages)`` or the timeout; returns
    [(key, value_obj, receive_time)]."""

    async def go():
        c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None)
        await c.start()
        got: list = []
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not done(got):
                batch = await c.getmany(timeout_ms=200)
                for msgs in batch.values():
                    for m in msgs:
                        got.append((m.key.decode() if m.key else None, orjson.loads(m.value), time.time()))
        finally:
            await c.stop()
        return got

    return asyncio.run(go())
