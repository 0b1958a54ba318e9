"""What the app runs: the ``index_catalog`` agent (catalog -> catalogue table, in micro-batches
from ``stream_app.batching.take_batches``), the interactions hot path (``stream_app.hotpath``:
interactions -> user states + recommendations, consumed in bulk outside Faust's per-message
dispatch) and two timers. The heavy work runs in the ``Processor``, in one model thread.

Guarantee of the catalogue agent: a batch is acknowledged (its offsets may be committed) only
after everything it produced has been delivered to Kafka; a batch that fails, or is interrupted by
a rebalance or shutdown, stays unacknowledged and is read again.
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
from stream_app.hotpath import HotPath
from stream_app.codec import Rejected, dead_letter
from stream_app.live import Subscribers
from stream_app.metrics import Metrics
from stream_app.processor import Processor, Source
from stream_app.settings import Settings
from stream_app.tables import CatalogFollower, Tables
from stream_app.topics import ClusterChanged, ClusterWatch, Declared

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What the agents, the hot path and the views share: settings, topics, tables, the
    processor, one model thread."""

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
    hot: HotPath | None = None  # the interactions hot path, once the app started it
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


def register(app, ctx: Context) -> None:
    """Attach both agents to ``app``; each is a thin shell over the function above."""

    @app.agent(ctx.topics.catalog, name="index_catalog")
    async def index_catalog_agent(stream):
        await index_catalog(ctx, stream)

    @app.service
    class ScoreInteractions(HotPath):
        """The interactions hot path (``stream_app.hotpath``), started once the catalogue table
        is recovered and stopped before the rest of the app."""

        def __init__(self, **kwargs):
            super().__init__(ctx, **kwargs)
            ctx.hot = self

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
