"""Replay a data set through Kafka and measure what comes back.

``stream-app replay`` feeds a running worker: it publishes the data set's catalogue, waits until
the worker has indexed every item, then publishes the interactions in time order (keyed by
``user_id``) while it reads the ``recommendations`` topic. Each recommendation names the newest
events it is based on (``based_on_event_ids``); the time from publishing that event to receiving the
recommendation is the event->recommendation latency. The run ends when every published event is
reflected by some recommendation, or after ``idle_timeout`` seconds without a new one once all
events are out.

``stream-app demo`` (``stream_app.dev.demo``) does the same on a broker and a worker of its own.
The measuring parts (:func:`load_catalog`, :func:`replay_events`) are reused by
``stream_app.dev.bench``; messages come from ``stream_app.dev.messages``, results and the live
view from ``stream_app.dev.results``.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
import zlib
from pathlib import Path
from typing import Callable, Sequence, TextIO

import numpy as np
import orjson

from models.offline.data import Dataset
from models.offline.loaders import load_dataset
from stream_app.dev.local import fetch_stats
from stream_app.dev.messages import dataset_messages, most_active_users
from stream_app.dev.results import Coverage, LiveView, ReplayResult, format_summary
from stream_app.settings import Settings
from stream_app.kafka_clients import client_options, security_options
from stream_app.topics import ensure_topics_async

log = logging.getLogger(__name__)

PRODUCER_OPTIONS = {"linger_ms": 5, "max_batch_size": 512 * 1024, "max_request_size": 1_048_576, "acks": 1}


class ReplayError(RuntimeError):
    """The replay could not run (no worker answering, catalogue not indexed in time, ...)."""


# -- the replay itself ---------------------------------------------------------------------------

async def _wait_for_stats(settings: Settings, check: Callable[[dict], bool], timeout: float) -> dict | None:
    deadline = time.monotonic() + timeout
    stats = None
    while time.monotonic() < deadline:
        stats = await asyncio.to_thread(fetch_stats, settings.worker_host, settings.web_port, 1.0,
                                        settings.http_token)
        if stats is not None and check(stats):
            return stats
        await asyncio.sleep(0.25)
    return stats


async def load_catalog(settings: Settings, catalog: Sequence[dict], timeout: float | None = None) -> float:
    """Publish the catalogue keyed by item_id and wait until the worker's ``/stats`` reports all of
    it indexed. Returns the seconds it took; raises :class:`ReplayError` on timeout."""
    from aiokafka import AIOKafkaProducer

    timeout = timeout if timeout is not None else 120.0 + 0.1 * len(catalog)
    url = f"http://{settings.worker_host}:{settings.web_port}/stats"
    if await asyncio.to_thread(fetch_stats, settings.worker_host, settings.web_port, 1.0,
                               settings.http_token) is None:
        raise ReplayError(f"no worker answers at {url}; start `stream-app worker` with the same settings "
                          f"(STREAM_RECO_WEB_PORT, STREAM_RECO_TOPIC_PREFIX) or use `stream-app demo`")
    t0 = time.monotonic()
    producer = AIOKafkaProducer(**client_options(settings), **PRODUCER_OPTIONS)
    await producer.start()
    try:
        topic = settings.topic("catalog")
        for it in catalog:
            await producer.send(topic, key=it["item_id"].encode(), value=orjson.dumps(it))
        await producer.flush()
    finally:
        await producer.stop()
    ids = {it["item_id"] for it in catalog}
    stats = await _wait_for_stats(settings, lambda s: s.get("items", 0) >= len(ids), timeout)
    if stats is None or stats.get("items", 0) < len(ids):
        have = "no answer" if stats is None else f"{stats.get('items', 0)} items"
        raise ReplayError(f"the worker at {url} did not index the catalogue of {len(ids)} items within "
                          f"{timeout:.0f}s ({have}); does it read topic {settings.topic('catalog')!r}?")
    return time.monotonic() - t0


async def _start_consumer(settings: Settings):
    """A group-less consumer of recommendations + dead letters, positioned at their ends."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topics = [settings.topic("recommendations"), settings.topic("dead_letters")]
    parts = await ensure_topics_async(settings.bootstrap_servers, topics, partitions=settings.partitions,
                                      replication=settings.replication_factor, security=security_options(settings))
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None,
                                auto_offset_reset="latest", enable_auto_commit=False, fetch_max_wait_ms=100,
                                max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    tps = [TopicPartition(t, p) for t in topics for p in parts[t]]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)  # resolve the end now, before anything is produced
    return consumer


PARTITIONERS = ("murmur2", "crc32")


class _Run:
    """One replay: a producer of the events and a consumer of what answers them."""

    def __init__(self, settings: Settings, events: Sequence[dict], rate: float, view: LiveView | None,
                 progress: bool, partitioner: str = "murmur2"):
        from tqdm import tqdm

        if partitioner not in PARTITIONERS:
            raise ValueError(f"partitioner must be one of {', '.join(PARTITIONERS)}, not {partitioner!r}")
        self.settings, self.events, self.rate, self.view = settings, events, rate, view
        self.partitioner = partitioner
        self.result = ReplayResult(events_produced=0, rate=rate)
        self.coverage = Coverage(events)
        self.sent_at: dict[str, float] = {}
        self.latencies: list[float] = []
        self.sent_times: list[float] = []  # the produce time of each latency's event
        self.users_seen: set[str] = set()
        self.rec_topic = settings.topic("recommendations")
        self.answered = asyncio.Event()
        self.last_heard = time.time()
        self.bar = tqdm(total=len(events), desc="events answered", unit="ev", disable=not progress,
                        mininterval=0.5, file=sys.stderr)

    def on_record(self, topic: str, value: bytes | None, now: float) -> None:
        if topic != self.rec_topic:
            self.result.dead_letters += 1
            return
        if value is None:  # a forgotten user's tombstone
            return
        msg = orjson.loads(value)
        self.result.recommendations += 1
        self.result.last_recommendation = now
        self.users_seen.add(msg["user_id"])
        for eid in self.coverage.applied(msg["user_id"], msg["events_applied"]):
            sent = self.sent_at.get(eid)
            if sent is not None:
                self.latencies.append((now - sent) * 1000.0)
                self.sent_times.append(sent)
        if self.view is not None:
            self.view.update(msg["user_id"], msg)

    async def consume(self, consumer) -> None:
        cov = self.coverage
        while True:
            batch = await consumer.getmany(timeout_ms=100, max_records=20_000)
            now = time.time()
            before = cov.covered
            for tp, records in batch.items():
                for m in records:
                    self.on_record(tp.topic, m.value, now)
            if batch:
                self.last_heard = now
            if cov.covered != before:
                self.bar.update(cov.covered - before)
                self.bar.set_postfix_str(f"produced={self.result.events_produced} "
                                         f"recs={self.result.recommendations}", refresh=False)
                if self.view is not None:
                    self.view.progress(cov.covered / max(1, cov.total))
            if cov.complete and self.result.events_produced == len(self.events):
                self.answered.set()

    async def produce(self, producer) -> None:
        values = [(ev["event_id"], ev["user_id"].encode(), orjson.dumps(ev)) for ev in self.events]
        topic, rate, result = self.settings.topic("interactions"), self.rate, self.result
        n_parts = len(await producer.partitions_for(topic))
        place = (lambda key: zlib.crc32(key) % n_parts) if self.partitioner == "crc32" else (lambda key: None)
        pending = []
        start = time.monotonic()
        result.first_produce = time.time()
        for i, (eid, key, value) in enumerate(values):
            if rate > 0:
                delay = start + i / rate - time.monotonic()
                if delay > 0.002:
                    await asyncio.sleep(delay)
            self.sent_at[eid] = time.time()
            pending.append(await producer.send(topic, key=key, value=value, partition=place(key)))
            result.events_produced += 1
            if i % 256 == 255:
                await asyncio.sleep(0)  # let the sender and the consumer run
        await producer.flush()
        result.last_produce = max(self.sent_at.values(), default=result.first_produce)
        failed = [f.exception() for f in pending if f.done() and f.exception() is not None]
        if failed:
            raise ReplayError(f"{len(failed)} events could not be published: {failed[0]!r}")

    async def wait_answered(self, consumer_task: asyncio.Task, idle_timeout: float) -> None:
        self.last_heard = max(self.last_heard, time.time())
        if self.coverage.complete:
            self.answered.set()
        while not self.answered.is_set():
            if consumer_task.done():
                consumer_task.result()  # raise what stopped it
            if time.time() - self.last_heard > idle_timeout:
                log.warning("no recommendation for %.0fs; %d of %d events answered", idle_timeout,
                            self.coverage.covered, self.coverage.total)
                return
            try:
                await asyncio.wait_for(self.answered.wait(), timeout=0.5)
            except asyncio.TimeoutError:
                pass


async def replay_events(settings: Settings, events: Sequence[dict], rate: float = 0.0,
                        idle_timeout: float = 30.0, view: LiveView | None = None,
                        progress: bool = True, partitioner: str = "murmur2") -> ReplayResult:
    """Publish ``events`` (keyed by user_id, in the given order) and collect the recommendations
    that answer them. ``rate``: events/s, 0 = as fast as possible. ``partitioner``: where a keyed
    event is placed, "murmur2" (Java's and aiokafka's default, the worker's own) or "crc32"
    (librdkafka's default, as kcat and confluent-kafka place it: most events then land on a
    partition that does not own their user, and the worker re-routes them). Returns when every
    event is answered, or ``idle_timeout`` s after the last produce and the last recommendation."""
    from aiokafka import AIOKafkaProducer

    run = _Run(settings, events, rate, view, progress, partitioner)
    consumer = await _start_consumer(settings)
    producer = AIOKafkaProducer(**client_options(settings), **PRODUCER_OPTIONS)
    await producer.start()
    consumer_task = asyncio.create_task(run.consume(consumer))
    # No collector pauses in the measuring process: a full collection here (100-170 ms once the
    # events are loaded) stalled the producer and the reader's clock, and showed as the worker's latency.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        await run.produce(producer)
        await run.wait_answered(consumer_task, idle_timeout)
    finally:
        gc.enable()
        gc.unfreeze()
        consumer_task.cancel()
        try:
            await consumer_task
        except (asyncio.CancelledError, Exception):
            pass
        await asyncio.gather(producer.stop(), consumer.stop(), return_exceptions=True)
        run.bar.close()
    result = run.result
    result.events_covered = run.coverage.covered
    result.complete = run.coverage.complete
    result.users = len(run.users_seen)
    result.latencies_ms = np.asarray(run.latencies, dtype=np.float64)
    result.sent_s = np.asarray(run.sent_times, dtype=np.float64) - result.first_produce
    result.regressions = run.coverage.regressions
    return result


# -- entry points ---------------------------------------------------------------------------------

def prepare(dataset_path: str | Path, limit: int = 0) -> tuple[Dataset, list[dict], list[dict]]:
    """Load a data set and turn it into (data set, catalog messages, the first ``limit`` events)."""
    ds = load_dataset(dataset_path)
    catalog, events = dataset_messages(ds)
    return ds, catalog, events[:limit] if limit > 0 else events


async def _replay(settings: Settings, catalog: list[dict], events: list[dict], rate: float, view: LiveView | None,
                  progress: bool, idle_timeout: float, out: TextIO) -> ReplayResult:
    seconds = await load_catalog(settings, catalog)
    print(f"catalogue of {len(catalog)} items indexed in {seconds:.1f} s; replaying {len(events)} events",
          file=out, flush=True)
    return await replay_events(settings, events, rate=rate, view=view, progress=progress, idle_timeout=idle_timeout)


def replay_dataset(settings: Settings, dataset_path: str | Path, limit: int = 0, rate: float = 0.0,
                   show_users: int = 3, *, progress: bool = True, idle_timeout: float = 30.0,
                   out: TextIO | None = None) -> ReplayResult:
    """Replay a data set into a running worker, print live recommendations of the ``show_users``
    most active users and a summary to ``out``; return the measurements. Raises
    :class:`ReplayError` when it cannot run."""
    out = out or sys.stdout
    if not settings.bootstrap_servers:
        raise ReplayError("KAFKA_BOOTSTRAP_SERVERS is not set (use `stream-app demo` for a local broker)")
    ds, catalog, events = prepare(dataset_path, limit)
    titles = {it["item_id"]: it["title"] for it in catalog}
    users = most_active_users(events, show_users)

    def write(text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=out)

    view = LiveView(users, titles, write=write) if users else None
    result = asyncio.run(_replay(settings, catalog, events, rate, view, progress, idle_timeout, out))
    if view is not None:
        view.show("at the end")
    print(format_summary(result), file=out, flush=True)
    return result


def run_replay(settings: Settings, dataset_path: str | Path, limit: int = 0, rate: float = 0.0,
               show_users: int = 3, *, progress: bool = True, idle_timeout: float = 30.0,
               out: TextIO | None = None) -> int:
    """``stream-app replay``: :func:`replay_dataset` as an exit code: 0 when recommendations
    arrived, 1 when none did, 2 when the replay could not run."""
    try:
        result = replay_dataset(settings, dataset_path, limit, rate, show_users, progress=progress,
                                idle_timeout=idle_timeout, out=out)
    except ReplayError as exc:
        print(f"replay failed: {exc}", file=sys.stderr)
        return 2
    return 0 if result.recommendations else 1

