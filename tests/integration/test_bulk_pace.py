"""``BulkConsumer(every_s=...)`` against a real broker: a batch begins at most every ``every_s``,
so records produced in several bursts meanwhile come as one batch, and none is lost."""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from stream_app.bulk import BulkConsumer
from stream_app.settings import Settings
from stream_app.topics import ensure_topics_async

pytestmark = pytest.mark.broker

EVERY_S, BURSTS, PER_BURST = 1.0, 8, 25


class Recorder(BulkConsumer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.batches: list[tuple[float, list[bytes]]] = []  # (when it was handled, values)

    async def handle(self, records: list) -> None:
        self.batches.append((time.monotonic(), [r.value for r in records]))

    async def checkpoint(self, fetched: dict) -> None:
        await self.consumer.commit()


class Lags:
    def on_lag(self, topic: str, partition: int, lag: int) -> None:
        pass


def test_a_batch_begins_at_most_every_every_s_and_bursts_meanwhile_come_together(kafka_bootstrap):
    async def go():
        topic = f"pace-{uuid.uuid4().hex[:8]}"
        await ensure_topics_async(kafka_bootstrap, [topic], [], partitions=2)
        settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap})

        async def crash(exc: BaseException) -> None:
            raise AssertionError(f"the consumer failed: {exc!r}")

        consumer = Recorder(settings=settings, client_id="pace-test", topic=topic, group_id=f"g-{topic}",
                            max_records=10_000, crash=crash, sensor=Lags(), every_s=EVERY_S)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        await consumer.start()
        try:
            sent = []
            for b in range(BURSTS):  # a burst every 0.1 s: several within one every_s
                for k in range(PER_BURST):
                    sent.append(f"{b}-{k}".encode())
                    await producer.send(topic, value=sent[-1], partition=k % 2)
                await producer.flush()
                await asyncio.sleep(0.1)
            deadline = time.monotonic() + 60
            while sum(len(v) for _, v in consumer.batches) < len(sent) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        finally:
            await consumer.stop()
            await producer.stop()
        got = [v for _, values in consumer.batches for v in values]
        assert sorted(got) == sorted(sent)  # every record once
        starts = [t for t, _ in consumer.batches]
        # never sooner; the margin: a batch is handled a few µs after the fetch the pause counts
        # from, later if the machine stalls the process in between (without the pause: ~0.1 s)
        assert all(b - a >= EVERY_S * 0.75 for a, b in zip(starts, starts[1:]))
        assert len(consumer.batches) < BURSTS  # bursts 0.1 s apart came together

    asyncio.run(go())
