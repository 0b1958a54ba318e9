"""The live topics as a data set: ``interactions`` and ``catalog`` read up to now (the end offsets
seen when the read starts) into the same ``models.offline.data.Dataset`` the folder loaders give,
for ``stream-app train --from-kafka`` and ``stream-app retrain``.

Every record is checked as the worker checks it (``stream_app.codec``, the schemas of
``settings.schemas_dir``, ``settings.max_message_bytes``); a record that fails is skipped and
counted by reason, never a failed run. What the worker would do with the rest, this does too:

* catalogue: records in Kafka timestamp order (then partition, offset); the last record of an
  item wins, ``deleted: true`` removes it. Items keep their message's text fields as they are,
  and the encoder reads the worker's item text (``models.features.item_text``), so a model
  trained here sees the items as a worker serving it does;
* interactions: a repeated ``event_id`` is used once (producer retries); a ``forget/v1`` request
  removes the user's events read before it, so a forgotten user's history is never trained on;
  events about items not in the catalogue are dropped (counted); a ``value`` is the rating.
* ``since_ms``/``until_ms`` keep events with ``since_ms <= ts < until_ms`` (event time); the
  catalogue is always read whole (an item of the window may be older than it).

>>> from stream_app.codec import Codec
>>> cat = [Record(b'{"item_id":"a","title":"Alpha"}', 0, 0, 1), Record(b'{bad', 0, 1, 2)]
>>> inter = [Record(b'{"event_id":"e1","type":"click","user_id":"u","item_id":"a","ts":5}', 0, 0, 3),
...          Record(b'{"event_id":"e1","type":"click","user_id":"u","item_id":"a","ts":5}', 0, 1, 4),
...          Record(b'{"event_id":"e2","type":"click","user_id":"u","item_id":"zz","ts":6}', 0, 2, 5)]
>>> ds, stats = records_to_dataset(cat, inter, Codec.load())
>>> [(e.user_id, e.item_id, e.ts) for e in ds.interactions], stats.bad, stats.duplicates, stats.unknown_items
([('u', 'a', 5)], {'catalog/malformed_json': 1}, 1, 1)
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass, field
from typing import Iterable, NamedTuple

from models.offline.data import Dataset, Interaction, Item, finish
from stream_app.codec import Codec, Rejected
from stream_app.settings import Settings

log = logging.getLogger(__name__)


class Record(NamedTuple):
    """One consumed message: its value, partition, offset and Kafka timestamp (ms)."""

    value: bytes | None
    partition: int
    offset: int
    timestamp: int


@dataclass
class ReadStats:
    """What a read found: records per topic, the ones skipped and why, the window it kept."""

    records: dict[str, int] = field(default_factory=dict)
    bad: dict[str, int] = field(default_factory=dict)  # "<topic kind>/<reason>" -> count
    duplicates: int = 0
    forgets: int = 0
    forgotten_events: int = 0
    unknown_items: int = 0
    outside_window: int = 0
    deleted_items: int = 0
    end_offsets: dict[str, dict[int, int]] = field(default_factory=dict)  # topic -> partition -> end

    def to_dict(self) -> dict:
        out = asdict(self)
        out["end_offsets"] = {t: {str(p): o for p, o in parts.items()} for t, parts in self.end_offsets.items()}
        return out


def _bad(stats: ReadStats, kind: str, reason: str) -> None:
    key = f"{kind}/{reason}"
    stats.bad[key] = stats.bad.get(key, 0) + 1


def catalog_items(records: Iterable[Record], codec: Codec, stats: ReadStats) -> dict[str, Item]:
    """The live catalogue after the records, in Kafka timestamp order."""
    items: dict[str, Item] = {}
    for rec in sorted(records, key=lambda r: (r.timestamp, r.partition, r.offset)):
        msg = codec.decode("catalog_item", rec.value)
        if isinstance(msg, Rejected):
            _bad(stats, "catalog", msg.error_type)
            continue
        item_id = msg["item_id"]
        if msg.get("deleted"):
            stats.deleted_items += item_id in items
            items.pop(item_id, None)
            continue
        items.pop(item_id, None)  # an update moves the item to the end, as the worker's row order does
        items[item_id] = Item(item_id=item_id, title=msg["title"], text=msg.get("text") or "",
                              categories=tuple(msg.get("categories") or ()), attributes=dict(msg.get("attributes") or {}),
                              published_ts=msg.get("published_ts"))
    return items


def interaction_events(records: Iterable[Record], codec: Codec, stats: ReadStats, since_ms: int | None = None,
                       until_ms: int | None = None) -> list[Interaction]:
    """The usable events, in the order read (the caller sorts by time)."""
    kept: dict[str, list[tuple[int, Interaction]]] = {}  # user -> (read order, event)
    seen_ids: set[str] = set()
    for n, rec in enumerate(records):
        msg = codec.decode("interaction", rec.value)
        if isinstance(msg, Rejected):
            _bad(stats, "interactions", msg.error_type)
            continue
        if msg["type"] == "forget":
            stats.forgets += 1
            stats.forgotten_events += len(kept.pop(msg["user_id"], ()))
            continue
        if msg["event_id"] in seen_ids:
            stats.duplicates += 1
            continue
        seen_ids.add(msg["event_id"])
        ts = int(msg["ts"])
        if (since_ms is not None and ts < since_ms) or (until_ms is not None and ts >= until_ms):
            stats.outside_window += 1
            continue
        value = msg.get("value")
        ev = Interaction(msg["user_id"], msg["item_id"], ts, msg["type"], None if value is None else float(value),
                         msg.get("text"))
        kept.setdefault(ev.user_id, []).append((n, ev))
    return [ev for _, ev in sorted((p for evs in kept.values() for p in evs), key=lambda p: p[0])]


def records_to_dataset(catalog: Iterable[Record], interactions: Iterable[Record], codec: Codec,
                       since_ms: int | None = None, until_ms: int | None = None, name: str = "kafka",
                       stats: ReadStats | None = None) -> tuple[Dataset, ReadStats]:
    """The data set the records describe (see the module doc) and what was skipped."""
    stats = stats or ReadStats()
    items = catalog_items(catalog, codec, stats)
    events = interaction_events(interactions, codec, stats, since_ms, until_ms)
    stats.unknown_items = sum(ev.item_id not in items for ev in events)
    ds = finish(name, items, (ev for ev in events if ev.item_id in items))
    return ds, stats


async def read_topic(settings: Settings, topic: str, idle_s: float = 10.0) -> tuple[list[Record], dict[int, int]]:
    """Every record of ``topic`` from the first offset up to the end offsets it had when the read
    started, partition by partition in offset order; and those end offsets."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from stream_app.kafka_clients import client_options

    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 1024 * 1024)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if parts is None:
            await consumer._client.force_metadata_update()  # a topic not in the first metadata
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return [], {}
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        todo = {tp for tp in tps if ends[tp] > await consumer.position(tp)}
        out: dict[int, list[Record]] = {tp.partition: [] for tp in tps}
        loop = asyncio.get_running_loop()
        last = loop.time()
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=500, max_records=50_000)
            for tp, msgs in batch.items():
                out[tp.partition] += [Record(m.value, tp.partition, m.offset, m.timestamp)
                                      for m in msgs if m.offset < ends[tp]]
                if msgs and msgs[-1].offset + 1 >= ends[tp]:
                    todo.discard(tp)
            for tp in list(todo):  # compacted or transactional gaps: the position passes the end
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
            if batch:
                last = loop.time()
            elif loop.time() - last > idle_s:
                raise TimeoutError(f"{topic}: no records for {idle_s:.0f}s before the end offsets {ends}")
        return [r for p in sorted(out) for r in out[p]], {tp.partition: ends[tp] for tp in tps}
    finally:
        await consumer.stop()


def load_from_kafka(settings: Settings, since_ms: int | None = None, until_ms: int | None = None,
                    name: str | None = None) -> tuple[Dataset, ReadStats]:
    """Read the ``catalog`` and ``interactions`` topics of ``settings`` up to now (see the module
    doc); returns the data set and the read's counts."""
    async def both():
        return await asyncio.gather(read_topic(settings, settings.topic("catalog")),
                                    read_topic(settings, settings.topic("interactions")))

    (cat, cat_ends), (inter, inter_ends) = asyncio.run(both())
    stats = ReadStats(records={"catalog": len(cat), "interactions": len(inter)},
                      end_offsets={settings.topic("catalog"): cat_ends, settings.topic("interactions"): inter_ends})
    codec = Codec.load(settings.schemas_dir, max_bytes=settings.max_message_bytes)
    ds, stats = records_to_dataset(cat, inter, codec, since_ms, until_ms, name or settings.topic("interactions"),
                                   stats)
    log.info("read %d catalogue and %d interaction records: %d items, %d events kept (%s skipped as bad, "
             "%d duplicates, %d forgotten, %d about unknown items)", len(cat), len(inter), len(ds.items),
             len(ds.interactions), sum(stats.bad.values()), stats.duplicates, stats.forgotten_events,
             stats.unknown_items)
    return ds, stats
