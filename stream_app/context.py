"""What every part of a running worker shares, typed: the one ``Context`` the services, the hot
path, the catalogue and the views are given (``stream_app.app.create_app`` builds it).

It holds no behaviour of its own beyond running work in the model thread and stopping the worker;
the parts it refers to are described by what the views and the hot path use of them
(``CatalogView``, ``PartitionsView``), so this module depends on none of them.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

from stream_app import fatal
from stream_app.live import Subscribers
from stream_app.model_watch import ModelWatcher
from stream_app.online_eval import OnlineEval
from stream_app.processor import Processor
from stream_app.sensor import Sensor
from stream_app.settings import Settings
from stream_app.store import UserStore
from stream_app.topics import TopicNames

log = logging.getLogger(__name__)

RunModel = Callable[..., Awaitable[Any]]


class CatalogView(Protocol):
    """The catalogue follower (``stream_app.catalog.CatalogFollower``) as the others use it."""

    titles: dict[str, str]

    async def sync(self, run_model: RunModel, processor: Processor) -> None: ...


class CoocView(Protocol):
    """The co-engagement rows follower (``stream_app.cooc_stream.CoocFollower``) as the hot path
    and the timers use it."""

    async def sync(self, run_model: RunModel, processor: Processor, between_batches: bool = False,
                   batch_in_flight: bool = False) -> None: ...


class PartitionsView(Protocol):
    """The hot path (``stream_app.hotpath.HotPath``) as the views and the timers use it: the
    owned partitions, the user states they hold, and the lock a batch in flight holds."""

    owned: set[int]
    store: UserStore
    lock: asyncio.Lock


@dataclass
class Context:
    """Settings, topics, the processor, the sensor, one model thread, and the running parts."""

    app: Any  # the faust.App
    settings: Settings
    topics: TopicNames
    processor: Processor
    # One thread for all model work: it keeps the loop free and the catalogue single-writer.
    model_thread: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="model"))
    sensor: Sensor = field(default_factory=Sensor)
    subscribers: Subscribers = field(default_factory=Subscribers)
    catalog: CatalogView | None = None  # set when the app starts its services
    cooc: CoocView | None = None
    hot: PartitionsView | None = None
    evaluator: OnlineEval | None = None  # hit@K of the published lists (stream_app.online_eval)
    models: ModelWatcher | None = None  # with a models folder: takes each published version (stream_app.model_watch)
    cluster_id: str | None = None  # of the Kafka cluster the worker started on

    async def run_model(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.model_thread, fn, *args)

    async def crash(self, exc: BaseException) -> None:
        """Stop the worker (non-zero exit) rather than go on past what it could not handle: the
        consumers stop at once, and the process ends within ``fatal.EXIT_DEADLINE_S`` seconds
        whatever its parts are doing (``stream_app.fatal``); what was not committed is read
        again on restart."""
        fatal.begin(exc)
        log.critical("stopping: %r; what was not committed will be read again on restart", exc)
        await self.app.crash(exc)

    def consumer_options(self) -> dict[str, Any]:
        """What every consumer of the app is built with (``stream_app.bulk.BulkConsumer``,
        ``stream_app.checkpoint.CheckpointedConsumer``): the settings, a client id that carries
        this worker's web URL (``stream_app.owners`` reads it), how to stop the worker, the
        sensor, and the topics whose metadata the producer fetches at start."""
        return dict(settings=self.settings, client_id=f"{self.settings.app_id} {self.app.conf.canonical_url}",
                    crash=self.crash, sensor=self.sensor,
                    warm_topics=(*self.topics.plain, *self.topics.changelogs))
