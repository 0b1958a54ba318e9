"""What the app runs, as Faust services and timers, and the ``Context`` they share.

- ``CatalogFollower`` (``stream_app.catalog``): every worker's copy of the catalogue, read from its
  changelog; started first, so the others see a complete catalogue.
- ``CatalogIndexer`` (``stream_app.catalog``): catalog -> encoded item records -> changelog.
- ``HotPath`` (``stream_app.hotpath``): interactions -> user states + recommendations.
- timers: apply catalogue changes while no events arrive; notice a wiped or replaced cluster.

The two consumers read their topics in bulk (``stream_app.bulk``), not through Faust agents: per
message dispatch was the throughput ceiling, and ack bookkeeping around rebalances is where
messages went missing. The heavy work runs in the ``Processor``, in one model thread.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from stream_app.catalog import CatalogFollower, CatalogIndexer
from stream_app.hotpath import HotPath
from stream_app.live import Subscribers
from stream_app.metrics import Metrics
from stream_app.processor import Processor
from stream_app.settings import Settings
from stream_app.topics import ClusterChanged, ClusterWatch, TopicNames

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What the services and views share: settings, topics, the processor, one model thread."""

    app: object  # the faust.App
    settings: Settings
    topics: TopicNames
    processor: Processor
    # One thread for all model work: it keeps the loop free and the catalogue single-writer.
    model_thread: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="model"))
    stats: dict = field(default_factory=lambda: {"events": 0, "batches": 0, "recommendations": 0,
                                                 "dead_letters": 0, "rerouted": 0, "off_partition": 0,
                                                 "started_at": time.time()})
    metrics: Metrics = field(default_factory=Metrics)
    subscribers: Subscribers = field(default_factory=Subscribers)
    catalog: CatalogFollower | None = None  # set when the app starts its services
    hot: HotPath | None = None
    cluster_id: str | None = None  # of the Kafka cluster the worker started on

    async def run_model(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.model_thread, fn, *args)

    async def crash(self, exc: BaseException) -> None:
        """Stop the worker (non-zero exit) rather than go on past a batch it could not handle."""
        log.critical("stopping: a batch could not be handled (%r); it will be read again on restart", exc)
        await self.app.crash(exc)


def register(app, ctx: Context) -> None:
    """Attach the services (started in this order once the app runs, stopped in reverse) and
    the timers to ``app``."""

    @app.service
    class FollowCatalog(CatalogFollower):
        def __init__(self, **kwargs):
            super().__init__(ctx.settings.bootstrap_servers, ctx.topics.catalog_items_changelog, **kwargs)
            ctx.catalog = self

    @app.service
    class IndexCatalog(CatalogIndexer):
        def __init__(self, **kwargs):
            super().__init__(ctx, **kwargs)

    @app.service
    class ScoreInteractions(HotPath):
        def __init__(self, **kwargs):
            super().__init__(ctx, **kwargs)
            ctx.hot = self

    @app.timer(interval=1.0)
    async def follow_catalog():
        """Apply catalogue changes made by other workers even while no events arrive."""
        if ctx.catalog is not None:  # timers start just before the services
            await ctx.catalog.sync(ctx.run_model, ctx.processor)

    watch = ClusterWatch(ctx.settings.bootstrap_servers, ctx.cluster_id)

    @app.timer(interval=5.0)
    async def watch_cluster():
        try:
            await watch.check()
        except ClusterChanged as exc:
            await ctx.crash(exc)

