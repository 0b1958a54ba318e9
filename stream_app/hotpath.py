"""The interactions hot path: interactions read in bulk (``stream_app.bulk.BulkConsumer``, group
``<app_id>-interactions``), the user states of the owned partitions in ``stream_app.store``.

Follow one batch (``handle_batch``):

1. up to ``batch_max`` records of the partitions this worker owns;
2. each is parsed (bad -> dead letter with the reason). One on the wrong partition (a producer
   with another partitioner: librdkafka's CRC32, kcat's) is applied here when this worker also
   owns its user's partition and nothing re-routed of its user is unread there
   (``stream_app.routing``), else re-published to that partition;
3. the model thread folds the events into the users' states (``Processor.apply_batch``; a failing
   event is dead-lettered alone) and ranks once per touched user;
4. the new states go to the store and its changelog, one recommendation per user to
   ``recommendations``; ``BulkConsumer`` then waits until all of it is on the broker, and commits
   (while the next batch is handled).

Guarantees. At least once, made exact by the per-user event-id window: a crash at any point leads
to a re-read of events whose effects are either absent or already in the restored state (then
skipped as duplicates). A rebalance waits for the batch in flight, and a newly assigned partition's
states are restored from the changelog before any of its records is handled, so the next owner
never publishes a list older than one already published.
"""
from __future__ import annotations

import logging
import time

import orjson
from aiokafka import TopicPartition

from stream_app.bulk import BulkConsumer, reject, source
from stream_app.codec import Rejected
from stream_app.processor import Forward
from stream_app.routing import OffPartition
from stream_app.store import UserStore

log = logging.getLogger(__name__)


def hot_group(settings) -> str:
    """The consumer group of the hot path."""
    return f"{settings.app_id}-interactions"


class HotPath(BulkConsumer):
    """Consumes ``interactions`` in bulk; owns the user states of its partitions (``UserStore``)."""

    def __init__(self, ctx, **kwargs):
        s = ctx.settings
        super().__init__(ctx, ctx.topics.interactions, hot_group(s), s.batch_max, **kwargs)
        self.store = UserStore(s.bootstrap_servers, ctx.topics.user_state_changelog)
        self.routing = OffPartition()  # events on the wrong partition: here, or to their owner
        self.seconds["model"] = 0.0  # of "handle": the model thread's part

    async def before_start(self) -> None:
        await self.store.start()

    async def on_stop(self) -> None:
        await super().on_stop()
        await self.store.stop()

    async def assigned(self, partitions: list[int]) -> None:
        await self.store.restore(partitions)
        if not partitions:
            return
        try:  # what other workers re-routed here before the rebalance ends at these offsets
            ends = await self.consumer.end_offsets([TopicPartition(self.topic, p) for p in partitions])
        except Exception as exc:  # then events off their partition are re-routed: slower, as safe
            log.warning("%s: end offsets of %s unknown (%r): events on the wrong partition are re-routed",
                        self.topic, partitions, exc)
            return
        self.routing.assigned({tp.partition: end for tp, end in ends.items()})

    async def revoked(self, partitions: list[int]) -> None:
        self.store.drop(partitions)
        self.routing.revoked(partitions)

    async def handle(self, records: list) -> None:
        await handle_batch(self.ctx, self, records)

    def spent(self, step: str, seconds: float) -> None:
        super().spent(step, seconds)
        self.ctx.metrics.hot_path_seconds.labels(step=step).inc(seconds)


async def handle_batch(ctx, hot: HotPath, records: list) -> None:
    """Parse, apply, publish one batch of interaction records (``BulkConsumer`` then waits for
    delivery and commits)."""
    t0 = time.perf_counter()
    out, names = hot.outbox, ctx.topics
    await ctx.catalog.sync(ctx.run_model, ctx.processor)  # catalogue changes first, in order
    good, good_records, owners = [], [], []
    parse, partitions, route = ctx.processor.parse_event, ctx.settings.partitions, hot.routing
    for record in records:
        parsed = parse(record, partitions)  # the record serves as its own Source
        if not isinstance(parsed, (Rejected, Forward)):  # the common case: on its user's partition
            if route.pending:
                route.read_back(parsed["user_id"], parsed.get("event_id"))
            event, owner = parsed, record.partition
        elif isinstance(parsed, Rejected):
            await reject(ctx, out, source(record), parsed)
            continue
        else:
            event, owner = parsed.event, parsed.partition
            if not route.may_apply_here(event["user_id"], owner):
                await out.send(names.interactions, key=event["user_id"].encode(), value=record.value, partition=owner)
                route.rerouted(event["user_id"], event.get("event_id"), owner)
                ctx.stats["rerouted"] += 1
                ctx.metrics.event("rerouted")
                continue
            ctx.stats["off_partition"] += 1  # its user's state is here too: applied in this batch
        good.append(event)
        owners.append(owner)
        good_records.append(record)
    ctx.stats["events"] += len(records)
    ctx.stats["batches"] += 1
    if good:
        await apply_and_publish(ctx, hot, good, good_records, owners)
    if route.backlog:  # after the batch: nothing in it overtook what was there at assignment
        for record in records:
            route.read(record.partition, record.offset)
    ctx.metrics.batch(len(records), time.perf_counter() - t0)


async def apply_and_publish(ctx, hot: HotPath, good: list[dict], good_records: list, owners: list[int]) -> None:
    out, names, store = hot.outbox, ctx.topics, hot.store
    partition = {msg["user_id"]: p for msg, p in zip(good, owners)}  # where each user's state lives
    stored = {u: store.get(p, u) for u, p in partition.items()}
    t0 = time.perf_counter()
    result = await ctx.run_model(ctx.processor.apply_batch, good, stored)
    hot.spent("model", time.perf_counter() - t0)
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
