"""The agents: ``index_catalog`` (catalog -> catalogue table) and ``score_interactions``
(interactions -> user-state table + recommendations). Both take micro-batches
(``stream_app.batching.take_batches``) and hand the heavy work to the ``Processor`` in the model
thread.

Follow one event: ``handle_interactions`` parses it (bad -> dead letter; on the wrong partition ->
re-published to its user's owner partition), reads the touched users' stored states, calls
``Processor.apply_batch`` (fold events into states, rank once per user; a failing event is dead-
lettered alone), writes the new states to the table and sends one recommendation per touched user.

Guarantee: a batch is acknowledged (its offsets may be committed) only after everything it
produced (states, recommendations, dead letters, forwarded events) has been delivered to Kafka.
A batch that fails, or is interrupted by a rebalance or shutdown, stays unacknowledged and is read
again; the per-user event-id window makes the replay harmless.
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import faust.streams
import orjson

from stream_app.batching import take_batches
from stream_app.codec import Rejected, dead_letter
from stream_app.live import Subscribers
from stream_app.metrics import Metrics
from stream_app.processor import Forward, Processor, Source
from stream_app.settings import Settings
from stream_app.tables import CatalogFollower, Tables
from stream_app.topics import ClusterChanged, ClusterWatch, Declared

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What the agents and views share: settings, topics, tables, the processor, one model thread."""

    app: object  # the faust.App
    settings: Settings
    topics: Declared
    tables: Tables
    processor: Processor
    catalog: CatalogFollower
    # One thread for all model work: it keeps the loop free and the catalogue single-writer.
    model_thread: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="model"))
    stats: dict = field(default_factory=lambda: {"events": 0, "batches": 0, "recommendations": 0,
                                                 "dead_letters": 0, "rerouted": 0, "started_at": time.time()})
    metrics: Metrics = field(default_factory=Metrics)
    subscribers: Subscribers = field(default_factory=Subscribers)
    _dead: list = field(default_factory=list)  # (delivery future, reason, source topic) of this batch

    async def run_model(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.model_thread, fn, *args)

    async def reject(self, src: Source, reason: Rejected) -> None:
        log.warning("dead letter %s[%d]@%d: %s: %s", src.topic, src.partition, src.offset,
                    reason.error_type, reason.error[:500])
        sent = await self.topics.dead_letters.send(key=src.key, value=orjson.dumps(
            dead_letter(src.value, reason, src.topic, src.partition, src.offset, src.key)))
        self._dead.append((sent, reason.error_type, src.topic))

    async def finish_batch(self) -> None:
        """Wait until the broker has everything this batch produced; then count the dead letters."""
        await self.app.producer.flush()
        for sent, error_type, topic in self._dead:
            await sent  # raises if the broker refused it: the batch is then not acknowledged
            self.stats["dead_letters"] += 1
            self.metrics.dead_letter(error_type)
            if topic == self.topics.names.interactions:
                self.metrics.event("dead_lettered")
        self._dead.clear()

    async def crash(self, exc: BaseException) -> None:
        """Stop the worker (non-zero exit) rather than go on past a batch it could not handle."""
        log.critical("stopping: a batch could not be handled (%r); it will be read again on restart", exc)
        await self.app.crash(exc)


@contextmanager
def event_context(event):
    """Make ``event`` the current event while writing a table inside a micro-batch.

    Faust routes a table write to the changelog partition of the *current* event, a context
    variable that only per-event stream iteration sets (faust-streaming #497). A micro-batch
    writes after the batch is taken, so we set it for each write ourselves. This uses the
    private name ``faust.streams._current_event`` of the pinned faust-streaming version;
    tests/integration cover it (state written in a batch is recovered after a restart)."""
    token = faust.streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        faust.streams._current_event.reset(token)


def source(event) -> Source:
    m = event.message
    return Source(m.topic, m.partition, m.offset, m.key, m.value)


async def index_catalog(ctx: Context, stream) -> None:
    """Catalog upserts/deletions -> encoded in one pass per batch -> ``catalog-items`` table."""
    s = ctx.settings
    async for batch in take_batches(stream, s.encoder_batch * 4, s.batch_within_s):
        try:
            await handle_catalog(ctx, batch)
        except Exception as exc:
            await ctx.crash(exc)
            raise


async def handle_catalog(ctx: Context, batch: list) -> None:
    good, last = [], {}
    for event in batch:
        src = source(event)
        parsed = ctx.processor.parse_item(src)
        if isinstance(parsed, Rejected):
            await ctx.reject(src, parsed)
            continue
        good.append(parsed)
        last[parsed["item_id"]] = event
    await ctx.catalog.sync(ctx.run_model, ctx.processor)  # other workers' changes first, in order
    records = await ctx.run_model(ctx.processor.index_items, good) if good else []
    for item_id, record in records:
        with event_context(last[item_id]):
            if record is None:
                ctx.tables.items.pop(item_id.encode(), None)
            else:
                ctx.tables.items[item_id.encode()] = record
    await ctx.finish_batch()


async def score_interactions(ctx: Context, stream) -> None:
    """Interaction micro-batches -> user states updated -> one recommendation per touched user."""
    s = ctx.settings
    async for batch in take_batches(stream, s.batch_max, s.batch_within_s):
        try:
            await handle_interactions(ctx, batch)
        except Exception as exc:
            await ctx.crash(exc)
            raise


async def handle_interactions(ctx: Context, batch: list) -> None:
    t0 = time.perf_counter()
    await ctx.catalog.sync(ctx.run_model, ctx.processor)
    good, good_events = [], []
    for event in batch:
        src = source(event)
        parsed = ctx.processor.parse_event(src, ctx.settings.partitions)
        if isinstance(parsed, Rejected):
            await ctx.reject(src, parsed)
        elif isinstance(parsed, Forward):
            await ctx.topics.interactions.send(key=parsed.event["user_id"].encode(), value=src.value,
                                               partition=parsed.partition)
            ctx.stats["rerouted"] += 1
            ctx.metrics.event("rerouted")
        else:
            good.append(parsed)
            good_events.append(event)
    ctx.stats["events"] += len(batch)
    ctx.stats["batches"] += 1
    if good:
        await apply_and_publish(ctx, good, good_events)
    await ctx.finish_batch()
    ctx.metrics.batch(len(batch), time.perf_counter() - t0)


async def apply_and_publish(ctx: Context, good: list[dict], good_events: list) -> None:
    users = ctx.tables.users
    last = {msg["user_id"]: event for msg, event in zip(good, good_events)}
    stored = {u: users.get(u.encode()) for u in last}
    result = await ctx.run_model(ctx.processor.apply_batch, good, stored)
    sid = ctx.processor.codec.ids["interaction"]
    for i, reason in result.failed:
        await ctx.reject(source(good_events[i]), Rejected("processing_error", reason, sid))
    for user, st in result.states.items():
        with event_context(last[user]):
            if user in result.messages:
                users[user.encode()] = st.to_bytes()
            else:  # forgotten, and nothing since: a tombstone in the changelog
                users.pop(user.encode(), None)
    for user in result.forgotten:
        await ctx.topics.recommendations.send(key=user.encode(), value=None)
        ctx.subscribers.forget(user)
    await publish(ctx, result.messages)
    ctx.metrics.event("applied", result.applied)
    ctx.metrics.event("duplicate", max(0, len(good) - len(result.failed) - result.applied - len(result.forgotten)))
    ctx.metrics.published(len(result.messages), [int(e.message.timestamp * 1000) for e in good_events])


async def publish(ctx: Context, messages: dict[str, dict]) -> None:
    """Send one recommendation per user to Kafka and to this worker's open pages."""
    for user, msg in messages.items():
        if ctx.settings.check_output:
            ctx.processor.codec.check("recommendation", msg)
        value = orjson.dumps(msg)
        await ctx.topics.recommendations.send(key=user.encode(), value=value)
        ctx.subscribers.publish(user, value)
    ctx.stats["recommendations"] += len(messages)


def register(app, ctx: Context) -> None:
    """Attach both agents to ``app``; each is a thin shell over the function above."""

    @app.agent(ctx.topics.catalog, name="index_catalog")
    async def index_catalog_agent(stream):
        await index_catalog(ctx, stream)

    @app.agent(ctx.topics.interactions, name="score_interactions")
    async def score_interactions_agent(stream):
        await score_interactions(ctx, stream)

    @app.timer(interval=1.0)
    async def follow_catalog():
        """Apply catalogue changes made by other workers even while no events arrive."""
        await ctx.catalog.sync(ctx.run_model, ctx.processor)

    watch = ClusterWatch(ctx.settings.bootstrap_servers)

    @app.timer(interval=5.0)
    async def watch_cluster():
        try:
            await watch.check()
        except ClusterChanged as exc:
            await ctx.crash(exc)
