"""``UserStore`` against a real broker: what a worker restores for a newly assigned partition is
the last write per user in that partition's changelog, deletions (tombstones) included."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from stream_app.store import UserStore
from stream_app.topics import ensure_topics_async

pytestmark = pytest.mark.broker


async def _scenario(bootstrap: str) -> None:
    topic = f"store-{uuid.uuid4().hex[:8]}-changelog"
    await ensure_topics_async(bootstrap, [], [topic], partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value, p in [(b"a", b"a1", 0), (b"b", b"b1", 0), (b"a", b"a2", 0), (b"b", None, 0),
                              (b"c", b"c1", 1)]:
            await producer.send_and_wait(topic, value=value, key=key, partition=p)

        store = UserStore(bootstrap, topic)
        await store.start()
        try:
            await store.restore([0])
            assert store.owns(0) and not store.owns(1)
            assert store.parts[0] == {b"a": b"a2"}  # the last write; b was deleted
            await store.restore([1])
            assert store.get(1, "c") == b"c1" and store.find("a") == b"a2" and len(store) == 2

            async def send(t, key, value, partition):
                return await producer.send(t, value=value, key=key, partition=partition)

            await (await store.put(send, 1, "d", b"d1"))
            await (await store.put(send, 0, "a", None))
            assert store.find("a") is None and store.get(1, "d") == b"d1"
            store.drop([0])
            assert not store.owns(0) and store.owns(1)
        finally:
            await store.stop()

        again = UserStore(bootstrap, topic)  # another worker taking both partitions over
        await again.start()
        try:
            await again.restore([0, 1])
            assert again.parts == {0: {}, 1: {b"c": b"c1", b"d": b"d1"}}
        finally:
            await again.stop()
    finally:
        await producer.stop()


def test_restore_reads_the_last_write_per_user_and_honours_tombstones(kafka_bootstrap):
    asyncio.run(_scenario(kafka_bootstrap))
