"""``BulkConsumer._top_up`` against a real broker: a batch takes what the next fetches bring, every
record once and in order per partition; after a rebalance during a top-up only what came after
it is kept (what came before is read again from the committed offsets); a fetch that fails
during a top-up leaves what was fetched before it to be handled."""
from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream_app.bulk import BulkConsumer
from stream_app.topics import ensure_topics_async

pytestmark = pytest.mark.broker

PARTITIONS, PER_PARTITION = 4, 200


async def _filled_topic(bootstrap: str) -> str:
    topic = f"topup-{uuid.uuid4().hex[:8]}"
    await ensure_topics_async(bootstrap, [topic], [], partitions=PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sends = [await producer.send(topic, value=f"{p}-{k}".encode(), partition=p)
                 for k in range(PER_PARTITION) for p in range(PARTITIONS)]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
    return topic


async def _reader(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    return consumer


def test_a_batch_takes_what_the_next_fetches_bring_every_record_once_in_order(kafka_bootstrap):
    async def go():
        topic = await _filled_topic(kafka_bootstrap)
        consumer = await _reader(kafka_bootstrap, topic)
        owner = SimpleNamespace(max_records=300, generation=0, topic=topic)
        seen: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
        sizes = []
        try:
            while sum(map(len, seen.values())) < PARTITIONS * PER_PARTITION:
                fetched = await consumer.getmany(timeout_ms=1000, max_records=50)
                if not fetched:
                    continue
                fetched, generation = await BulkConsumer._top_up(owner, consumer, fetched, 0)
                assert generation == 0
                sizes.append(sum(len(rs) for rs in fetched.values()))
                for tp, rs in fetched.items():
                    seen[tp.partition] += [r.offset for r in rs]
        finally:
            await consumer.stop()
        assert seen == {p: list(range(PER_PARTITION)) for p in range(PARTITIONS)}
        assert max(sizes) > 50 and all(s <= 300 for s in sizes)  # topped up, never past max_records

    asyncio.run(go())


async def _first_then_top_up(bootstrap: str, top_up_reader) -> tuple[dict, dict, int]:
    """(what a first fetch of 50 brought, what ``_top_up`` made of it, its generation), the top-up
    reading through ``top_up_reader(consumer, owner)``."""
    topic = await _filled_topic(bootstrap)
    consumer = await _reader(bootstrap, topic)
    owner = SimpleNamespace(max_records=300, generation=0, topic=topic)
    try:
        first = await consumer.getmany(timeout_ms=1000, max_records=50)
        fetched, generation = await BulkConsumer._top_up(owner, top_up_reader(consumer, owner), dict(first), 0)
    finally:
        await consumer.stop()
    return first, fetched, generation


def test_after_a_rebalance_during_a_top_up_only_what_came_after_it_is_kept(kafka_bootstrap):
    class Rebalancing:  # the real consumer; the group moves on while the top-up fetches
        def __init__(self, consumer, owner):
            self.consumer, self.owner = consumer, owner

        async def getmany(self, **kwargs):
            self.owner.generation += 1
            return await self.consumer.getmany(**kwargs)

    first, fetched, generation = asyncio.run(_first_then_top_up(kafka_bootstrap, Rebalancing))
    assert generation == 1
    before = {(tp.partition, r.offset) for tp, rs in first.items() for r in rs}
    after = {(tp.partition, r.offset) for tp, rs in fetched.items() for r in rs}
    assert before and not before & after


def test_a_fetch_that_fails_while_topping_up_keeps_what_was_fetched(kafka_bootstrap):
    from aiokafka.errors import KafkaError

    class Failing:  # the broker answers the first fetch, then fails
        def __init__(self, consumer, owner):
            pass

        async def getmany(self, **kwargs):
            raise KafkaError("the broker went away")

    first, fetched, generation = asyncio.run(_first_then_top_up(kafka_bootstrap, Failing))
    assert first and fetched == first and generation == 0  # its positions are past them: handled, not dropped
