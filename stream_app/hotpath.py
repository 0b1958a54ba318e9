"""The interactions hot path: a Kafka consumer of its own that takes events in bulk.

Faust hands an agent one message at a time (per message: an Event object, ack tracking, a trip
through the stream's queue), which caps a worker at a few thousand events/s. Interactions are
therefore read here, in bulk, by an aiokafka consumer in the group ``<app_id>-interactions``,
while Faust keeps the rest: the app, the catalogue agent and table, the web views, the timers.

Follow one batch (``HotPath._consume`` -> ``handle_batch``):

1. ``getmany`` returns up to ``batch_max`` records of the partitions this worker owns;
2. each is parsed (bad -> dead letter with the reason; on the wrong partition -> re-published to
   its user's owner partition, ``stream_app.processor.owner_partition``);
3. the model thread folds the events into the users' states (``Processor.apply_batch``; a failing
   event is dead-lettered alone) and ranks once per touched user;
4. the new states go to the store and its changelog, one recommendation per user to
   ``recommendations``;
5. when the broker has acknowledged every record the batch produced, its offsets are committed.

Guarantees. At least once, made exact by the per-user event-id window: a batch's offsets are
committed only after its states, recommendations, dead letters and forwarded events are on the
broker, so a crash at any point leads to a re-read of events whose effects are either absent or
already in the restored state (then skipped as duplicates). A rebalance waits for the batch in
flight: the revocation callback takes the same lock as the batch, so the next owner restores a
changelog that holds every state the previous owner published a list from (never an older one).
Records fetched before a rebalance are not handled after it; they are read again from the
committed offsets. A batch that cannot be handled (the broker refuses its output) stops the
worker with a non-zero exit rather than skipping it.
"""
from __future__ import annotations

import asyncio
import logging
import time

import mode
import orjson
from aiokafka import ConsumerRebalanceListener

from stream_app.codec import Rejected, dead_letter
from stream_app.processor import Forward, Source
from stream_app.store import UserStore

log = logging.getLogger(__name__)


def hot_group(settings) -> str:
    """The consumer group of the hot path (Faust's own group, ``app_id``, reads the catalogue)."""
    return f"{settings.app_id}-interactions"


class Outbox:
    """Sends of one batch on the hot path's producer; ``delivered`` waits for all of them."""

    def __init__(self, producer):
        self.producer = producer
        self.pending: list = []

    async def send(self, topic: str, key: bytes | None = None, value: bytes | None = None,
                   partition: int | None = None):
        fut = await self.producer.send(topic, value=value, key=key, partition=partition)
        self.pending.append(fut)
        return fut

    async def delivered(self) -> None:
        pending, self.pending = self.pending, []
        for fut in pending:
            await fut  # raises if the broker refused it: the batch is then not committed


class HotPath(mode.Service):
    """Consumes ``interactions`` in bulk; owns the user states of its partitions (``UserStore``)."""

    def __init__(self, ctx, **kwargs):
        self.ctx = ctx
        s = ctx.settings
        self.names = ctx.topics.names
        self.group_id = hot_group(s)
        self.store = UserStore(s.bootstrap_servers, self.names.user_state_changelog)
        self.lock = asyncio.Lock()
        self.generation = 0  # bumped by every revocation: records fetched before it are stale
        self.assigned = asyncio.Event()
        self.consumer = None
        self.producer = None
        self.outbox: Outbox | None = None
        self._lag_at = 0.0
        super().__init__(**kwargs)

    # -- lifecycle ---------------------------------------------------------------------------
    async def on_start(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        s = self.ctx.settings
        self.producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, acks="all",
                                         enable_idempotence=True, linger_ms=5, max_batch_size=262_144)
        await self.producer.start()
        self.outbox = Outbox(self.producer)
        await self.store.start()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers, group_id=self.group_id,
            client_id=f"{s.app_id} {self.ctx.app.conf.canonical_url}",  # the owner lookup reads it
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=s.batch_max,
            max_partition_fetch_bytes=2**20, fetch_max_wait_ms=int(s.batch_within_s * 1000),
            session_timeout_ms=int(s.session_timeout_s * 1000),
            heartbeat_interval_ms=int(max(1.0, s.session_timeout_s / 3) * 1000))
        self.consumer.subscribe([self.names.interactions], listener=_Listener(self))
        await self.consumer.start()
        self.add_future(self._consume())
        try:  # ready once the first assignment is restored (the group may give it none)
            await asyncio.wait_for(self.assigned.wait(), timeout=max(30.0, 3 * s.session_timeout_s))
        except asyncio.TimeoutError:
            log.warning("no partition assignment for group %s yet; going on", self.group_id)

    async def on_stop(self) -> None:
        async with self.lock:  # the batch in flight finishes (and commits) first
            if self.consumer is not None:
                await self.consumer.stop()  # leaves the group: the others take over at once
        if self.producer is not None:
            await self.producer.stop()
        await self.store.stop()

    async def on_revoked(self, revoked) -> None:
        async with self.lock:
            self.generation += 1
            self.store.drop(tp.partition for tp in revoked)
            log.info("partitions %s revoked", sorted(tp.partition for tp in revoked))

    async def on_assigned(self, assigned) -> None:
        async with self.lock:
            await self.store.restore(tp.partition for tp in assigned)
            log.info("partitions %s assigned", sorted(tp.partition for tp in assigned))
        self.assigned.set()

    # -- the loop ----------------------------------------------------------------------------
    async def _consume(self) -> None:
        s = self.ctx.settings
        while not self.should_stop:
            try:
                fetched = await self.consumer.getmany(timeout_ms=int(s.batch_within_s * 1000) + 100,
                                                      max_records=s.batch_max)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # ConsumerStoppedError at shutdown, or a broker error
                if self.should_stop:
                    return
                log.warning("fetch failed: %r", exc)
                await asyncio.sleep(0.5)
                continue
            generation = self.generation  # no await since getmany returned
            if not fetched:
                continue
            async with self.lock:
                if generation != self.generation or self.consumer is None:
                    continue  # fetched before a rebalance: read again from the committed offsets
                records = [r for tp, rs in fetched.items() if self.store.owns(tp.partition) for r in rs]
                try:
                    await handle_batch(self.ctx, self, records)
                except Exception as exc:
                    await self.ctx.crash(exc)
                    return
                await self._commit(fetched)
            self._measure_lag(fetched)

    async def _commit(self, fetched: dict) -> None:
        from aiokafka import TopicPartition
        from aiokafka.structs import OffsetAndMetadata

        offsets = {TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(rs[-1].offset + 1, "")
                   for tp, rs in fetched.items() if rs and self.store.owns(tp.partition)}
        try:
            await self.consumer.commit(offsets)
        except Exception as exc:  # a rebalance under way: the next owner re-reads (harmless)
            log.warning("offset commit failed (%r); these events will be read again", exc)

    def _measure_lag(self, fetched: dict) -> None:
        now = time.monotonic()
        if now - self._lag_at < 1.0:
            return
        self._lag_at = now
        for tp, rs in fetched.items():
            hw = self.consumer.highwater(tp)
            if hw is not None and rs:
                self.ctx.metrics.set_lag(tp.topic, tp.partition, max(0, hw - (rs[-1].offset + 1)))


class _Listener(ConsumerRebalanceListener):
    """aiokafka's rebalance callbacks, forwarded to the hot path."""

    def __init__(self, hot: HotPath):
        self.hot = hot

    async def on_partitions_revoked(self, revoked) -> None:
        await self.hot.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned) -> None:
        await self.hot.on_assigned(assigned)


def source(record) -> Source:
    return Source(record.topic, record.partition, record.offset, record.key, record.value)


async def reject(ctx, out: Outbox, src: Source, reason: Rejected) -> None:
    log.warning("dead letter %s[%d]@%d: %s: %s", src.topic, src.partition, src.offset,
                reason.error_type, reason.error[:500])
    await out.send(ctx.topics.names.dead_letters, key=src.key, value=orjson.dumps(
        dead_letter(src.value, reason, src.topic, src.partition, src.offset, src.key)))
    ctx.stats["dead_letters"] += 1
    ctx.metrics.dead_letter(reason.error_type)
    ctx.metrics.event("dead_lettered")


async def handle_batch(ctx, hot: HotPath, records: list) -> None:
    """Parse, apply, publish one batch of interaction records; returns when all it produced
    is on the broker."""
    t0 = time.perf_counter()
    out, names = hot.outbox, ctx.topics.names
    await ctx.catalog.sync(ctx.run_model, ctx.processor)  # catalogue changes first, in order
    good, good_records = [], []
    for record in records:
        src = source(record)
        parsed = ctx.processor.parse_event(src, ctx.settings.partitions)
        if isinstance(parsed, Rejected):
            await reject(ctx, out, src, parsed)
        elif isinstance(parsed, Forward):
            await out.send(names.interactions, key=parsed.event["user_id"].encode(), value=src.value,
                           partition=parsed.partition)
            ctx.stats["rerouted"] += 1
            ctx.metrics.event("rerouted")
        else:
            good.append(parsed)
            good_records.append(record)
    ctx.stats["events"] += len(records)
    ctx.stats["batches"] += 1
    if good:
        await apply_and_publish(ctx, hot, good, good_records)
    await out.delivered()
    ctx.metrics.batch(len(records), time.perf_counter() - t0)


async def apply_and_publish(ctx, hot: HotPath, good: list[dict], good_records: list) -> None:
    out, names, store = hot.outbox, ctx.topics.names, hot.store
    partition = {msg["user_id"]: r.partition for msg, r in zip(good, good_records)}
    stored = {u: store.get(p, u) for u, p in partition.items()}
    result = await ctx.run_model(ctx.processor.apply_batch, good, stored)
    sid = ctx.processor.codec.ids["interaction"]
    for i, reason in result.failed:
        await reject(ctx, out, source(good_records[i]), Rejected("processing_error", reason, sid))
    for user, st in result.states.items():  # forgotten with nothing since: a tombstone
        await store.put(out.send, partition[user], user, st.to_bytes() if user in result.messages else None)
    for user in result.forgotten:
        await out.send(names.recommendations, key=user.encode(), value=None)
        ctx.subscribers.forget(user)
    for user, msg in result.messages.items():
        if ctx.settings.check_output:
            ctx.processor.codec.check("recommendation", msg)
        value = orjson.dumps(msg)
        await out.send(names.recommendations, key=user.encode(), value=value)
        ctx.subscribers.publish(user, value)
    ctx.stats["recommendations"] += len(result.messages)
    ctx.metrics.event("applied", result.applied)
    ctx.metrics.event("duplicate", max(0, len(good) - len(result.failed) - result.applied - len(result.forgotten)))
    ctx.metrics.published(len(result.messages), [r.timestamp for r in good_records])
