"""The catalogue changelog read and written directly, for benchmarks of large catalogues: every
item's vector as the changelog holds it now, item records written as the indexer writes them
(vectors computed elsewhere), and stand-in vectors for items that were not encoded."""
from __future__ import annotations

import asyncio
import time
from typing import Sequence

import numpy as np

from stream_app.settings import Settings

TEXT_DIM = 384


async def read_catalog_vectors(settings: Settings, timeout_s: float = 300.0) -> dict[str, np.ndarray]:
    """item id -> vector, as the catalogue changelog holds them now (its last record per item)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from stream_app.codec import decode_item_record
    from stream_app.kafka_clients import client_options
    from stream_app.topics import TopicNames

    topic = TopicNames.from_settings(settings).catalog_items_changelog
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=16 << 20)
    await consumer.start()
    out: dict[str, np.ndarray] = {}
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            await consumer._client.force_metadata_update()
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        async def behind() -> bool:
            for tp in tps:
                if await consumer.position(tp) < ends[tp]:
                    return True
            return False

        while await behind():
            if time.monotonic() > deadline:
                raise TimeoutError(f"catalogue changelog not read within {timeout_s:.0f}s")
            for records in (await consumer.getmany(timeout_ms=500, max_records=50_000)).values():
                for r in records:
                    if r.value is None:
                        out.pop(r.key.decode(), None)
                    else:
                        item, vec = decode_item_record(r.value)
                        out[item["item_id"]] = vec
    finally:
        await consumer.stop()
    return out


async def write_catalog_records(settings: Settings, messages: Sequence[dict], vectors: np.ndarray) -> None:
    """Catalogue records (item + vector) straight to the catalogue changelog, on each item's
    partition, as the indexer writes them: items whose vectors were computed elsewhere."""
    from aiokafka import AIOKafkaProducer

    from stream_app.catalog import item_partition
    from stream_app.codec import encode_item_record
    from stream_app.dev.replay import PRODUCER_OPTIONS
    from stream_app.kafka_clients import client_options
    from stream_app.topics import TopicNames

    topic = TopicNames.from_settings(settings).catalog_items_changelog
    producer = AIOKafkaProducer(**client_options(settings), **PRODUCER_OPTIONS)
    await producer.start()
    try:
        for i, (m, v) in enumerate(zip(messages, vectors)):
            await producer.send(topic, key=m["item_id"].encode(), value=encode_item_record(m, v),
                                partition=item_partition(m["item_id"], settings.partitions))
            if i % 1024 == 1023:
                await asyncio.sleep(0)
        await producer.flush()
    finally:
        await producer.stop()


def vectors_beyond(encoded: dict[str, np.ndarray], items, first: int, seed: int) -> np.ndarray:
    """Vectors of items ``first..N-1`` without the encoder: a random encoded item of the same topic
    plus gaussian noise (0.05 per coordinate), renormalised; an item of a topic with no encoded
    item gets a random encoded one."""
    rng = np.random.default_rng([seed, 7])
    ids = items.ids
    enc_rows = np.array([i for i in range(first) if ids[i] in encoded])
    by_topic: dict[int, np.ndarray] = {}
    for t in np.unique(items.topic[enc_rows]):
        by_topic[int(t)] = enc_rows[items.topic[enc_rows] == t]
    out = np.empty((len(ids) - first, TEXT_DIM), dtype=np.float32)
    for k, i in enumerate(range(first, len(ids))):
        pool = by_topic.get(int(items.topic[i]), enc_rows)
        v = encoded[ids[int(pool[rng.integers(0, pool.size)])]] + rng.normal(0, 0.05, TEXT_DIM)
        out[k] = v / np.linalg.norm(v)
    return out
