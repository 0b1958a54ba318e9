"""The agents: ``index_catalog`` (catalog -> catalogue table) and ``score_interactions``
(interactions -> user-state table + recommendations). Both take micro-batches with
``stream.take_events`` and hand the heavy work to the ``Processor`` in the model thread.

Follow one event: ``score_interactions`` parses it (bad -> dead letter, wrong key -> re-published
keyed by user_id), reads the touched users' stored states, calls ``Processor.apply_batch`` (fold
events into states, rank once per user), writes the new states to the table and sends one
recommendation per touched user.
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

from stream_app.codec import Rejected, dead_letter
from stream_app.live import Subscribers
from stream_app.metrics import Metrics
from stream_app.processor import Misrouted, Processor, Source
from stream_app.settings import Settings
from stream_app.tables import Tables
from stream_app.topics import Declared

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What the agents and views share: settings, topics, tables, the processor, one model thread."""

    settings: Settings
    topics: Declared
    tables: Tables
    processor: Processor
    # One thread for all model work: it keeps the loop free and the catalogue single-writer.
    model_thread: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="model"))
    stats: dict = field(default_factory=lambda: {"events": 0, "batches": 0, "recommendations": 0,
                                                 "dead_letters": 0, "rerouted": 0, "started_at": time.time()})
    metrics: Metrics = field(default_factory=Metrics)
    subscribers: Subscribers = field(default_factory=Subscribers)

    async def run_model(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.model_thread, fn, *args)

    async def reject(self, src: Source, reason: Rejected) -> None:
        log.warning("dead letter %s[%d]@%d: %s: %s", src.topic, src.partition, src.offset,
                    reason.error_type, reason.error)
        sent = await self.topics.dead_letters.send(key=src.key, value=orjson.dumps(
            dead_letter(src.value, reason, src.topic, src.partition, src.offset, src.key)))
        await sent  # counted once the broker has it
        self.stats["dead_letters"] += 1
        self.metrics.dead_letter(reason.error_type)
        if src.topic == self.topics.names.interactions:
            self.metrics.event("dead_lettered")

    async def sync_catalog(self) -> None:
        """Bring the in-memory catalogue up to the global table (after recovery or when another
        worker indexed items)."""
        items, model = self.tables.items, self.processor.model
        if len(items) > len(model.items):
            missing = [v for k, v in items.items() if k.decode() not in model.items]
            await self.run_model(lambda: [self.processor.restore_item(v) for v in missing])


@contextmanager
def event_context(event):
    """Make ``event`` the current event while writing a table inside ``take_events``.

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
    async for batch in stream.take_events(s.encoder_batch * 4, within=s.batch_within_s):
        good, last = [], {}
        for event in batch:
            src = source(event)
            parsed = ctx.processor.parse_item(src)
            if isinstance(parsed, Rejected):
                await ctx.reject(src, parsed)
                continue
            good.append(parsed)
            last[parsed["item_id"]] = event
        try:
            records = await ctx.run_model(ctx.processor.index_items, good)
        except Exception as exc:  # keep serving: the batch goes to the dead-letter topic
            log.exception("catalog batch failed")
            for event in last.values():
                await ctx.reject(source(event), Rejected("processing_error", repr(exc)))
            continue
        for item_id, record in records:
            with event_context(last[item_id]):
                if record is None:
                    ctx.tables.items.pop(item_id.encode(), None)
                else:
                    ctx.tables.items[item_id.encode()] = record


async def score_interactions(ctx: Context, stream) -> None:
    """Interaction micro-batches -> user states updated -> one recommendation per touched user."""
    s, users = ctx.settings, ctx.tables.users
    async for batch in stream.take_events(s.batch_max, within=s.batch_within_s):
        t0 = time.perf_counter()
        await ctx.sync_catalog()
        good, good_events, last = [], [], {}
        for event in batch:
            src = source(event)
            parsed = ctx.processor.parse_event(src)
            if isinstance(parsed, Rejected):
                await ctx.reject(src, parsed)
            elif isinstance(parsed, Misrouted):
                ctx.stats["rerouted"] += 1
                ctx.metrics.event("rerouted")
                await ctx.topics.interactions.send(key=parsed.event["user_id"].encode(), value=src.value)
            else:
                good.append(parsed)
                good_events.append(event)
                last[parsed["user_id"]] = event
        ctx.stats["events"] += len(batch)
        ctx.stats["batches"] += 1
        if not good:
            continue
        stored = {u: users.get(u.encode()) for u in last}
        try:
            result = await ctx.run_model(ctx.processor.apply_batch, good, stored)
        except Exception as exc:
            log.exception("interaction batch failed")
            for event in good_events:  # the others were already dead-lettered or re-routed
                await ctx.reject(source(event), Rejected("processing_error", repr(exc)))
            continue
        for user, st in result.states.items():
            with event_context(last[user]):
                users[user.encode()] = st.to_bytes()
        await publish(ctx, result.messages)
        ctx.metrics.event("applied", result.applied)
        ctx.metrics.event("duplicate", len(good) - result.applied)
        ctx.metrics.published(len(result.messages), [int(e.message.timestamp * 1000) for e in good_events])
        ctx.metrics.batch(len(batch), time.perf_counter() - t0)


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
