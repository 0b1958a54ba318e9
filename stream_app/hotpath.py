"""The interactions hot path: why a worker exists. Interactions are read in bulk (a
``stream_app.checkpoint.CheckpointedConsumer``, group ``stream_app.topics.hot_group``), the user
states of the owned partitions are kept in ``stream_app.store``, and each batch ends as
recommendations.

Follow one batch (``handle_batch``):

1. up to ``batch_max`` records of the partitions this worker owns;
2. each is parsed (bad -> dead letter with the reason). One on the wrong partition (a producer
   with another partitioner: librdkafka's CRC32, kcat's) is applied here when this worker also
   owns its user's partition and nothing re-routed of its user is unread there
   (``stream_app.routing``), else re-published to that partition;
3. the model thread folds the events into the users' states (``Processor.apply_batch``, with
   each record's partition and offset: a record read again is skipped by offset; a failing event
   is dead-lettered alone) and ranks once per touched user;
4. the new states go to the store and its changelog (a forgotten user's as the record
   ``models.state.UserState.forget`` leaves, never a tombstone: it keeps the offsets and event
   ids that make the user's old events harmless), a tombstone on ``recommendations`` per
   forgotten user, one recommendation per user to ``recommendations``, all through the batch's
   outbox, and once those are acknowledged the batch's co-engagement pair messages, one per
   touched item (``stream_app.cooc_stream``); the batch is then committed by the rule
   of ``stream_app.checkpoint`` (while the next batch is handled);
5. the batch's applied clicks, favorites and ratings are judged against their users' lists
   published before it, and its lists become the ones the next events are judged against
   (``stream_app.online_eval``).

Exactly once, and never a list older than one already published: ``stream_app.checkpoint``.
"""
from __future__ import annotations

import logging
import time

import orjson
from aiokafka import TopicPartition

from stream_app.checkpoint import CheckpointedConsumer
from stream_app.codec import Rejected
from stream_app.context import Context
from stream_app.cooc_stream import send_pairs
from stream_app.dead_letters import reject, source
from stream_app.processor import Forward
from stream_app.routing import OffPartition
from stream_app.kafka_clients import security_options
from stream_app.state_backends import backend_for
from stream_app.store import UserStore
from stream_app.topics import hot_group

log = logging.getLogger(__name__)


class HotPath(CheckpointedConsumer):
    """Consumes ``interactions`` in bulk; owns the user states of its partitions (``UserStore``)."""

    def __init__(self, ctx: Context, **kwargs):
        s = ctx.settings
        self.ctx = ctx
        super().__init__(topic=ctx.topics.interactions, group_id=hot_group(s), max_records=s.batch_max,
                         **ctx.consumer_options(), **kwargs)
        self.store = UserStore(s.bootstrap_servers, ctx.topics.user_state_changelog, security_options(s),
                               backend=backend_for(s, ctx.topics.user_state_changelog))
        self.routing = OffPartition()  # events on the wrong partition: here, or to their owner

    async def before_start(self) -> None:
        await super().before_start()
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
        self.ctx.sensor.on_step_seconds(step, seconds)


async def handle_batch(ctx: Context, hot: HotPath, records: list) -> None:
    """Parse, apply, publish one batch of interaction records (then delivered and committed by
    ``stream_app.checkpoint``)."""
    t0 = time.perf_counter()
    out, names = hot.outbox, ctx.topics
    await ctx.catalog.sync(ctx.run_model, ctx.processor)  # catalogue changes first, in order
    if ctx.cooc is not None:  # then the co-engagement rows followed so far
        await ctx.cooc.sync(ctx.run_model, ctx.processor, between_batches=True)
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
                ctx.sensor.on_event("rerouted")
                continue
            ctx.sensor.on_off_partition()  # its user's state is here too: applied in this batch
        good.append(event)
        owners.append(owner)
        good_records.append(record)
    if good:
        await apply_and_publish(ctx, hot, good, good_records, owners)
    if route.backlog:  # after the batch: nothing in it overtook what was there at assignment
        for record in records:
            route.read(record.partition, record.offset)
    ctx.sensor.on_batch(len(records), time.perf_counter() - t0)


async def apply_and_publish(ctx: Context, hot: HotPath, good: list[dict], good_records: list, owners: list[int]) -> None:
    out, names, store = hot.outbox, ctx.topics, hot.store
    partition = {msg["user_id"]: p for msg, p in zip(good, owners)}  # where each user's state lives
    stored = {u: store.get(p, u) for u, p in partition.items()}
    t0 = time.perf_counter()
    positions = [(r.partition, r.offset) for r in good_records]  # re-read ones are skipped by offset
    result = await ctx.run_model(ctx.processor.apply_batch, good, stored, positions)
    hot.spent("model", time.perf_counter() - t0)
    sid = ctx.processor.codec.ids["interaction"]
    for i, reason in result.failed:
        await reject(ctx, out, source(good_records[i]), Rejected("processing_error", reason, sid))
    for user, st in result.states.items():  # never a tombstone: a forget leaves UserState.forget's record
        await store.put(out.send, partition[user], user, st.to_bytes())
    for user in result.forgotten:
        await out.send(names.recommendations, key=user.encode(), value=None)
        ctx.subscribers.forget(user)
    for user, msg in result.messages.items():
        if ctx.settings.check_output:
            ctx.processor.codec.check("recommendation", msg)
        value = orjson.dumps(msg)
        await out.send(names.recommendations, key=user.encode(), value=value)
        ctx.subscribers.publish(user, value)
    if result.pairs:  # after the states are acknowledged: never doubled (stream_app.cooc_stream)
        send_pairs(ctx, hot, result.pairs)
        ctx.sensor.on_pairs_sent(len(result.pairs), result.engagements)
    if ctx.evaluator is not None:  # the batch's clicks, favorites, ratings against the lists before it
        ctx.evaluator.observe(result.consumed, result.messages, result.forgotten)
    ctx.sensor.on_event("applied", result.applied)
    ctx.sensor.on_event("duplicate", result.duplicates)
    ctx.sensor.on_published(len(result.messages), [r.timestamp for r in good_records])
