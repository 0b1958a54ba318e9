"""What a worker runs besides its web views: the Faust services and timers, attached to the app
in the order they must start.

- ``CatalogFollower`` (``stream_app.catalog``): every worker's copy of the catalogue, read from its
  changelog; started first, so the others see a complete catalogue.
- ``CoocFollower`` (``stream_app.cooc_stream``): every worker's copy of the co-engagement rows
  learned online, read from their changelog to the end before the hot path starts.
- ``CatalogIndexer`` (``stream_app.catalog``): catalog -> encoded item records -> changelog.
- ``CoocAggregator`` (``stream_app.cooc_stream``): pair messages -> neighbour rows -> changelog; by
  default in a child process (``stream_app.aggregator``), so that it does not share the worker's
  interpreter lock.
- ``HotPath`` (``stream_app.hotpath``): interactions -> user states + recommendations.
- timers: apply catalogue changes and followed co-engagement rows while no events arrive;
  notice a wiped or replaced cluster; with a models folder, take each newly published model
  version (``stream_app.model_watch``).

The three consumers read their topics in bulk (``stream_app.bulk``) and commit by the rule of
``stream_app.checkpoint``, not through Faust agents: per message dispatch was the throughput
ceiling, and ack bookkeeping around rebalances is where messages went missing. What they share is
the ``stream_app.context.Context``; the heavy work runs in its ``Processor``, in one model thread.
"""
from __future__ import annotations

import faust

from stream_app.aggregator import AggregatorProcess
from stream_app.catalog import CatalogFollower, CatalogIndexer
from stream_app.context import Context
from stream_app.cooc_stream import CoocAggregator, CoocFollower
from stream_app.hotpath import HotPath
from stream_app.kafka_clients import security_options
from stream_app.topics import ClusterChanged, ClusterWatch


def register(app: faust.App, ctx: Context) -> None:
    """Attach the services (started in this order once the app runs, stopped in reverse) and
    the timers to ``app``. The worker's co-engagement counts learn through Kafka
    (``stream_app.cooc_stream``): its batches send pair messages instead of updating them."""
    half_life_ms = ctx.settings.cooc_half_life_s * 1000.0
    ctx.processor.pairs_half_life_ms = half_life_ms
    if ctx.processor.model.cooc is not None:
        ctx.processor.model.cooc.online.half_life_ms = half_life_ms

    @app.service
    class FollowCatalog(CatalogFollower):
        def __init__(self, **kwargs):
            super().__init__(ctx.settings.bootstrap_servers, ctx.topics.catalog_items_changelog,
                             security_options(ctx.settings), lambda: self.sync(ctx.run_model, ctx.processor),
                             **kwargs)
            ctx.catalog = self

    @app.service
    class FollowCoocRows(CoocFollower):
        def __init__(self, **kwargs):
            super().__init__(ctx.settings.bootstrap_servers, ctx.topics.cooc_rows_changelog,
                             security_options(ctx.settings), ctx.sensor, ctx.settings.cooc_apply_every_s, **kwargs)
            ctx.cooc = self

    @app.service
    class IndexCatalog(CatalogIndexer):
        def __init__(self, **kwargs):
            super().__init__(ctx, **kwargs)

    if ctx.settings.cooc_aggregator == "thread":
        @app.service
        class AggregateCooc(CoocAggregator):
            def __init__(self, **kwargs):
                super().__init__(ctx, **kwargs)
    elif ctx.settings.cooc_aggregator == "process":
        @app.service
        class AggregateCoocApart(AggregatorProcess):
            def __init__(self, **kwargs):
                super().__init__(ctx.settings, ctx.sensor, ctx.crash, **kwargs)

    @app.service
    class ScoreInteractions(HotPath):
        def __init__(self, **kwargs):
            super().__init__(ctx, **kwargs)
            ctx.hot = self

    @app.timer(interval=1.0)
    async def follow_catalog():
        """Apply catalogue changes made by other workers, and the co-engagement rows followed,
        even while no events arrive."""
        if ctx.catalog is not None:  # timers start just before the services
            await ctx.catalog.sync(ctx.run_model, ctx.processor)
        if ctx.cooc is not None:  # a batch in flight (the hot path holds its lock): the worker is busy
            busy = ctx.hot is not None and ctx.hot.lock.locked()
            await ctx.cooc.sync(ctx.run_model, ctx.processor, batch_in_flight=busy)

    watch = ClusterWatch(ctx.settings.bootstrap_servers, ctx.cluster_id, security_options(ctx.settings))

    if ctx.models is not None:
        @app.timer(interval=ctx.settings.model_poll_s)
        async def watch_models():
            """A newly published version loaded in the background, switched in between two batches."""
            await ctx.models.poll()

    @app.timer(interval=5.0)
    async def watch_cluster():
        try:
            await watch.check()
        except ClusterChanged as exc:
            await ctx.crash(exc)

