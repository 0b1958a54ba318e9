"""``UserStore`` against a real broker: what a worker restores for a newly assigned partition, with
either state backend, is the last write per user in that partition's changelog, deletions
(tombstones) included, except a write of a former owner that lands after the new owner's epoch
marker (``stream_app.fencing``)."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream_app import fencing
from stream_app.checkpoint import Outbox
from stream_app.store import UserStore, read_to_end
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


async def _restored(bootstrap: str, topic: str, writer: fencing.Writer | None, partitions=(0,)) -> UserStore:
    """A store restored as in an assignment callback of ``writer`` (None: outside one)."""
    store = UserStore(bootstrap, topic)
    await store.start()
    token = fencing.assignment.set(writer)
    try:
        await store.restore(partitions)
    finally:
        fencing.assignment.reset(token)
    return store


async def _last_records(bootstrap: str, topic: str) -> dict[bytes, object]:
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                              enable_auto_commit=False)
    await reader.start()
    try:
        tps = [TopicPartition(topic, 0)]
        reader.assign(tps)
        last: dict[bytes, object] = {}
        await read_to_end(reader, tps, lambda r: last.__setitem__(r.key, r))
        return last
    finally:
        await reader.stop()


async def _zombie(bootstrap: str) -> None:
    topic = f"store-{uuid.uuid4().hex[:8]}-changelog"
    await ensure_topics_async(bootstrap, [], [topic], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()

    async def send(t, key=None, value=None, partition=None, headers=None):
        return await producer.send(t, value=value, key=key, partition=partition, headers=headers)

    stores = []
    try:
        old = await _restored(bootstrap, topic, fencing.Writer(1, "member-a", send))  # generation G1
        stores.append(old)
        await (await old.put(send, 0, "u", b"u-by-G1"))
        # G2: the partition moved to another member while the G1 member, cut off, still runs
        new = await _restored(bootstrap, topic, fencing.Writer(2, "member-b", send))
        stores.append(new)
        assert new.get(0, "u") == b"u-by-G1" and new.epochs == {0: 2}
        await (await new.put(send, 0, "u", b"u-by-G2"))
        await (await new.put(send, 0, "w", b"w-by-G2"))
        # the zombie's late writes land last
        await (await old.put(send, 0, "u", b"u-stale"))
        await (await old.put(send, 0, "z", b"z-stale"))
        await (await old.put(send, 0, "w", None))

        third = await _restored(bootstrap, topic, fencing.Writer(3, "member-c", send))
        stores.append(third)
        assert third.parts[0] == {b"u": b"u-by-G2", b"w": b"w-by-G2"}  # the G2 states, no stale write
        assert third.epochs == {0: 3}
        # the users whose last record was stale are written again with the G3 epoch: compaction
        # keeps the state the restore kept, not the stale record
        last = await _last_records(bootstrap, topic)
        for key, value in [(b"u", b"u-by-G2"), (b"w", b"w-by-G2"), (b"z", None)]:
            assert last[key].value == value
            assert dict(last[key].headers) == {fencing.EPOCH_HEADER: b"3", fencing.WRITER_HEADER: b"member-c"}
        assert dict(last[fencing.MARKER_KEY].headers)[fencing.EPOCH_HEADER] == b"3"

        # the group was deleted and its generations start again: epochs still grow
        fourth = await _restored(bootstrap, topic, fencing.Writer(1, "member-d", send))
        stores.append(fourth)
        assert fourth.epochs == {0: 4} and fourth.parts[0] == {b"u": b"u-by-G2", b"w": b"w-by-G2"}
        await (await third.put(send, 0, "u", b"u-stale-G3"))  # a zombie of epoch 3, after epoch 4's marker
        plain = await _restored(bootstrap, topic, None)  # a reader outside any assignment
        stores.append(plain)
        assert plain.parts[0] == {b"u": b"u-by-G2", b"w": b"w-by-G2"}
    finally:
        for s in stores:
            await s.stop()
        await producer.stop()


def test_a_former_owners_late_writes_are_refused_by_the_restore(kafka_bootstrap):
    """Two writers of one partition, epochs G1 < G2, the G1 write landing last: the restore
    yields the G2 state."""
    asyncio.run(_zombie(kafka_bootstrap))


async def _corrupt(bootstrap: str) -> None:
    topic = f"store-{uuid.uuid4().hex[:8]}-changelog"
    await ensure_topics_async(bootstrap, [], [topic], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=b"u", value=b"x", partition=0,
                                     headers=[(fencing.EPOCH_HEADER, b"not a number")])
    finally:
        await producer.stop()
    store = UserStore(bootstrap, topic)
    await store.start()
    try:
        with pytest.raises(fencing.CorruptRecord):
            await store.restore([0])
    finally:
        await store.stop()


def test_a_record_the_store_cannot_read_fails_the_restore(kafka_bootstrap):
    asyncio.run(_corrupt(kafka_bootstrap))


async def _fenced_outbox(bootstrap: str) -> None:
    topic = f"store-{uuid.uuid4().hex[:8]}-changelog"
    await ensure_topics_async(bootstrap, [], [topic], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    lost = []
    try:
        out = Outbox(producer, fenced=lambda: bool(lost))
        await out.send(topic, key=b"a", value=b"1", partition=0)
        lost.append(True)  # the member learns it was evicted
        with pytest.raises(fencing.Fenced):
            await out.send(topic, key=b"b", value=b"2", partition=0)
        for fut in out.take():
            await fut
    finally:
        await producer.stop()
    assert set(await _last_records(bootstrap, topic)) == {b"a"}


def test_a_fenced_outbox_sends_nothing_more(kafka_bootstrap):
    asyncio.run(_fenced_outbox(kafka_bootstrap))


async def _same_states(bootstrap: str, folder) -> None:
    """Users overwritten, deleted and written by a former owner after the current one's marker, on
    two partitions: the rocksdb backend restores exactly what the memory backend restores."""
    import random

    from stream_app.state_backends import open_backend

    topic = f"store-{uuid.uuid4().hex[:8]}-changelog"
    await ensure_topics_async(bootstrap, [], [topic], partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()

    async def send(t, key=None, value=None, partition=None, headers=None):
        return await producer.send(t, value=value, key=key, partition=partition, headers=headers)

    stores = []
    try:
        rng = random.Random(7)
        old = await _restored(bootstrap, topic, fencing.Writer(1, "member-a", send), partitions=(0, 1))
        new = await _restored(bootstrap, topic, fencing.Writer(2, "member-b", send), partitions=(0, 1))
        stores += [old, new]
        sends = []
        for i in range(3000):
            writer = old if i % 10 == 0 else new  # every tenth a late write of the former owner
            user, p = f"user-{rng.randrange(500)}", rng.randrange(2)
            value = None if rng.random() < 0.1 else rng.randbytes(rng.randrange(1, 3000))
            sends.append(await writer.put(send, p, user, value))
        for fut in sends:
            await fut
        restored = {}
        for kind in ("memory", "rocksdb"):
            store = UserStore(bootstrap, topic, backend=open_backend(kind, folder, topic))
            stores.append(store)
            await store.start()
            await store.restore([0, 1])
            restored[kind] = ({p: dict(d.items()) for p, d in store.parts.items()}, len(store))
        assert restored["rocksdb"] == restored["memory"]
        assert restored["memory"][1] > 100 and all(restored["memory"][0].values())
    finally:
        for s in stores:
            await s.stop()
        await producer.stop()


def test_the_rocksdb_backend_restores_the_states_the_memory_backend_restores(kafka_bootstrap, tmp_path):
    asyncio.run(_same_states(kafka_bootstrap, tmp_path))
