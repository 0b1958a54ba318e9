"""Replay a data set through Kafka and measure what comes back.

``stream-app replay`` feeds a running worker: it publishes the data set's catalogue, waits until
the worker has indexed every item, then publishes the interactions in time order (keyed by
``user_id``) while it reads the ``recommendations`` topic. Each recommendation names the newest
events it is based on (``based_on_event_ids``); the time from publishing that event to receiving the
recommendation is the event->recommendation latency. The run ends when every published event is
reflected by some recommendation, or after ``idle_timeout`` seconds without a new one once all
events are out.

``stream-app demo`` does the same on a broker and a worker of its own, and stops both afterwards.

The measuring parts (:func:`dataset_messages`, :func:`load_catalog`, :func:`replay_events`,
:class:`ReplayResult`) are reused by ``stream_app.bench``.
"""
from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence, TextIO

import numpy as np
import orjson

from models.data import Dataset, Interaction, Item, load_dataset
from stream_app.local import fetch_stats
from stream_app.settings import Settings

log = logging.getLogger(__name__)

MAX_TITLE, MAX_ITEM_TEXT, MAX_CATEGORIES, MAX_EVENT_TEXT = 500, 10_000, 64, 4000
PRODUCER_OPTIONS = {"linger_ms": 5, "max_batch_size": 512 * 1024, "max_request_size": 1_048_576, "acks": 1}


class ReplayError(RuntimeError):
    """The replay could not run (no worker answering, catalogue not indexed in time, ...)."""


# -- data set -> messages ------------------------------------------------------------------------

def catalog_message(item: Item) -> dict:
    """One ``catalog_item/v1`` message for a data set item."""
    msg: dict = {"item_id": item.item_id, "title": (item.title or item.item_id)[:MAX_TITLE]}
    if item.text:
        msg["text"] = item.text[:MAX_ITEM_TEXT]
    categories = list(dict.fromkeys(c for c in item.categories if c))[:MAX_CATEGORIES]
    if categories:
        msg["categories"] = categories
    attributes = dict(item.attributes or {})
    price = attributes.get("price")
    if price is not None and (isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0):
        del attributes["price"]
    if "brand" in attributes and not isinstance(attributes["brand"], str):
        attributes["brand"] = str(attributes["brand"])
    if attributes:
        msg["attributes"] = attributes
    if item.published_ts is not None:
        msg["published_ts"] = int(item.published_ts)
    return msg


def interaction_message(ev: Interaction, event_id: str) -> dict:
    """One ``interaction/v1`` message. Ratings are clamped to the schema's 1..5 scale (MovieLens
    has half stars down to 0.5); a rating without a value is sent as a click, a review without
    text as its rating (or a click)."""
    msg: dict = {"event_id": event_id, "type": ev.type, "user_id": ev.user_id, "item_id": ev.item_id,
                 "ts": max(0, int(ev.ts))}
    if ev.rating is not None and math.isfinite(ev.rating):
        value = min(5.0, max(1.0, float(ev.rating)))
        msg["value"] = int(value) if value.is_integer() else value
    if ev.text:
        msg["text"] = ev.text[:MAX_EVENT_TEXT]
    if msg["type"] == "rating" and "value" not in msg:
        msg["type"] = "click"
    if msg["type"] == "review" and "text" not in msg:
        msg["type"] = "rating" if "value" in msg else "click"
    return msg


def dataset_messages(ds: Dataset) -> tuple[list[dict], list[dict]]:
    """(catalog messages, interaction messages in time order). Event ids are
    ``<data set name>-<index in the data set's log>``, so they are unique per data set."""
    catalog = [catalog_message(it) for it in ds.items.values()]
    order = sorted(range(len(ds.interactions)), key=lambda i: ds.interactions[i].ts)  # stable
    events = [interaction_message(ds.interactions[i], f"{ds.name}-{i}") for i in order]
    return catalog, events


def most_active_users(events: Sequence[dict], n: int) -> list[str]:
    """The ``n`` users with the most events (ties: first seen first)."""
    return [u for u, _ in Counter(ev["user_id"] for ev in events).most_common(n)] if n > 0 else []


# -- results -------------------------------------------------------------------------------------

@dataclass
class ReplayResult:
    """What one replay measured. Times are wall-clock seconds (``time.time()``)."""

    events_produced: int = 0
    events_covered: int = 0  # produced events reflected by a recommendation (or dead-lettered)
    recommendations: int = 0
    dead_letters: int = 0
    users: int = 0
    rate: float = 0.0  # requested events/s; 0 = as fast as possible
    first_produce: float = 0.0
    last_produce: float = 0.0
    last_recommendation: float = 0.0
    complete: bool = False  # every produced event was covered before the timeout
    latencies_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def produce_s(self) -> float:
        return max(0.0, self.last_produce - self.first_produce)

    @property
    def duration_s(self) -> float:
        """First produce -> last recommendation."""
        return max(0.0, self.last_recommendation - self.first_produce)

    @property
    def events_per_s(self) -> float:
        """Sustained throughput: covered events over first produce -> last recommendation."""
        return self.events_covered / self.duration_s if self.duration_s > 0 else 0.0

    def latency_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms.size else float("nan")

    def summary(self) -> dict:
        """JSON-friendly numbers."""
        return {"events_produced": self.events_produced, "events_covered": self.events_covered,
                "recommendations": self.recommendations, "dead_letters": self.dead_letters,
                "users": self.users, "rate": self.rate, "complete": self.complete,
                "produce_s": round(self.produce_s, 3), "duration_s": round(self.duration_s, 3),
                "events_per_s": round(self.events_per_s, 1),
                **{f"latency_p{q}_ms": round(self.latency_ms(q), 1) for q in (50, 95, 99)},
                "latency_max_ms": round(float(self.latencies_ms.max()), 1) if self.latencies_ms.size else None}


def format_summary(r: ReplayResult) -> str:
    rows = [
        ("events produced", f"{r.events_produced}"
                            + (f" at {r.rate:g}/s" if r.rate else " as fast as possible")
                            + f" in {r.produce_s:.1f} s"),
        ("events recommended on", f"{r.events_covered} of {r.events_produced}"
                                  + ("" if r.complete else " (stopped by the timeout)")),
        ("recommendations received", f"{r.recommendations} for {r.users} users"),
        ("dead letters seen", f"{r.dead_letters}"),
        ("sustained events/s", f"{r.events_per_s:.0f} (first produce -> last recommendation, {r.duration_s:.1f} s)"),
        ("latency p50 / p95 / p99", " / ".join(f"{r.latency_ms(q):.0f}" for q in (50, 95, 99))
                                    + " ms (event produced -> recommendation received)"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(["== replay summary =="] + [f"{k:<{width}}  {v}" for k, v in rows])


# -- coverage: which events have been answered ---------------------------------------------------

class Coverage:
    """Tracks which produced events some recommendation reflects.

    A recommendation lists at most the newest 50 event ids of its micro-batch, but a user's events
    are applied in order, so it also reflects every earlier event of that user. An event that was
    dead-lettered counts as answered too (no recommendation will ever name it)."""

    def __init__(self, events: Sequence[dict]):
        self.where: dict[str, tuple[str, int]] = {}  # event_id -> (user, position among the user's events)
        self.per_user: Counter[str] = Counter()
        for ev in events:
            u = ev["user_id"]
            self.where[ev["event_id"]] = (u, self.per_user[u])
            self.per_user[u] += 1
        self.total = len(events)
        self.done_upto: dict[str, int] = {}  # user -> events answered (a prefix of the user's events)
        self.covered = 0

    def answer(self, event_ids: Sequence[str]) -> None:
        for eid in event_ids:
            pos = self.where.get(eid)
            if pos is None:
                continue
            user, seq = pos
            before = self.done_upto.get(user, 0)
            if seq + 1 > before:
                self.done_upto[user] = seq + 1
                self.covered += seq + 1 - before

    @property
    def complete(self) -> bool:
        return self.covered >= self.total


# -- live view -----------------------------------------------------------------------------------

class LiveView:
    """Prints the latest recommendations of a few users at a few points of the run."""

    def __init__(self, users: Sequence[str], titles: dict[str, str], items: int = 5,
                 milestones: Sequence[float] = (0.25, 0.5, 0.75), write: Callable[[str], None] | None = None):
        self.users = list(users)
        self.titles = titles
        self.items = items
        self.milestones = sorted(milestones)
        self.latest: dict[str, dict] = {}
        self.write = write or (lambda s: print(s, flush=True))

    def update(self, user: str, msg: dict) -> None:
        if user in self.users:
            self.latest[user] = msg

    def progress(self, fraction: float) -> None:
        """Print once per milestone passed (fraction of events answered)."""
        shown = False
        while self.milestones and fraction >= self.milestones[0]:
            passed = self.milestones.pop(0)
            if not shown:
                self.show(f"{passed:.0%} of the events answered")
                shown = True

    def show(self, when: str) -> None:
        if not self.latest:
            return
        lines = [f"-- live recommendations, {when} --"]
        for user in self.users:
            msg = self.latest.get(user)
            if msg is not None:
                lines.extend(self.render(user, msg))
        self.write("\n".join(lines))

    def render(self, user: str, msg: dict) -> list[str]:
        weights = " ".join(f"{k} {v:.2f}" for k, v in sorted(msg.get("dimension_weights", {}).items(),
                                                              key=lambda kv: -kv[1]))
        out = [f"user {user} after {msg.get('events_applied', '?')} events; dimension weights: {weights}"]
        for it in msg.get("items", [])[: self.items]:
            reasons = it.get("reasons") or {}
            top = max(reasons, key=reasons.get) if reasons else "-"
            title = self.titles.get(it["item_id"], it["item_id"])
            out.append(f"  {it['rank']:>2}. {title[:48]:<48} score {it['score']:+.4f}  top reason: {top}")
        return out


# -- the replay itself ---------------------------------------------------------------------------

async def _wait_for_stats(settings: Settings, check: Callable[[dict], bool], timeout: float) -> dict | None:
    deadline = time.monotonic() + timeout
    stats = None
    while time.monotonic() < deadline:
        stats = await asyncio.to_thread(fetch_stats, settings.worker_host, settings.web_port)
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
    if await asyncio.to_thread(fetch_stats, settings.worker_host, settings.web_port) is None:
        raise ReplayError(f"no worker answers at {url}; start `stream-app worker` with the same settings "
                          f"(STREAM_RECO_WEB_PORT, STREAM_RECO_TOPIC_PREFIX) or use `stream-app demo`")
    t0 = time.monotonic()
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, **PRODUCER_OPTIONS)
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


async def ensure_topics(bootstrap: str, names: Sequence[str], partitions: int, replicas: int,
                        timeout: float = 30.0) -> dict[str, list[int]]:
    """Create the topics that do not exist yet (as the worker would declare them) and wait until
    every partition has a leader. Returns each topic's partition ids."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        missing = [n for n in names if n not in set(await admin.list_topics())]
        if missing:
            await admin.create_topics([NewTopic(n, partitions, replicas) for n in missing])
        deadline = time.monotonic() + timeout
        while True:
            described = {t["topic"]: t for t in await admin.describe_topics(list(names))}
            ready = {n: sorted(p["partition"] for p in t["partitions"]) for n, t in described.items()
                     if t["error_code"] == 0 and t["partitions"]
                     and all(p["error_code"] == 0 and p["leader"] >= 0 for p in t["partitions"])}
            if len(ready) == len(set(names)):
                if missing:
                    await asyncio.sleep(0.5)  # new partitions: let their leaders start serving
                return ready
            if time.monotonic() > deadline:
                raise ReplayError(f"topics {sorted(set(names) - set(ready))} have no leaders after {timeout:.0f}s")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def _start_consumer(settings: Settings):
    """A group-less consumer of recommendations + dead letters, positioned at their ends."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topics = [settings.topic("recommendations"), settings.topic("dead_letters")]
    parts = await ensure_topics(settings.bootstrap_servers, topics, settings.partitions, settings.replication_factor)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                                auto_offset_reset="latest", enable_auto_commit=False, fetch_max_wait_ms=100,
                                max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    tps = [TopicPartition(t, p) for t in topics for p in parts[t]]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)  # resolve the end now, before anything is produced
    return consumer


async def replay_events(settings: Settings, events: Sequence[dict], rate: float = 0.0,
                        idle_timeout: float = 30.0, view: LiveView | None = None,
                        progress: bool = True) -> ReplayResult:
    """Publish ``events`` (keyed by user_id, in the given order) and collect the recommendations
    that answer them. ``rate``: events/s, 0 = as fast as possible. Returns when every event is
    answered, or ``idle_timeout`` s after the last produce and the last recommendation."""
    from aiokafka import AIOKafkaProducer
    from tqdm import tqdm

    result = ReplayResult(events_produced=0, rate=rate)
    coverage = Coverage(events)
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    users_seen: set[str] = set()
    rec_topic = settings.topic("recommendations")
    answered = asyncio.Event()
    last_heard = [time.time()]

    consumer = await _start_consumer(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, **PRODUCER_OPTIONS)
    await producer.start()
    bar = tqdm(total=len(events), desc="events answered", unit="ev", disable=not progress, mininterval=0.5,
               file=sys.stderr)

    def on_record(topic: str, value: bytes, now: float) -> None:
        if topic == rec_topic:
            msg = orjson.loads(value)
            ids = msg.get("based_on_event_ids") or []
            times = [sent_at[i] for i in ids if i in sent_at]
            if times:
                latencies.append((now - max(times)) * 1000.0)
                result.recommendations += 1
                result.last_recommendation = now
                users_seen.add(msg["user_id"])
                coverage.answer(ids)
                if view is not None:
                    view.update(msg["user_id"], msg)
        else:
            result.dead_letters += 1
            try:
                eid = orjson.loads(orjson.loads(value)["original"]).get("event_id")
            except Exception:
                eid = None
            if eid is not None:
                coverage.answer([eid])

    async def consume() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100, max_records=20_000)
            now = time.time()
            before = coverage.covered
            for tp, records in batch.items():
                for m in records:
                    on_record(tp.topic, m.value, now)
            if batch:
                last_heard[0] = now
            if coverage.covered != before:
                bar.update(coverage.covered - before)
                bar.set_postfix_str(f"produced={result.events_produced} recs={result.recommendations}", refresh=False)
                if view is not None:
                    view.progress(coverage.covered / max(1, coverage.total))
            if coverage.complete and result.events_produced == len(events):
                answered.set()

    async def produce() -> None:
        values = [(ev["event_id"], ev["user_id"].encode(), orjson.dumps(ev)) for ev in events]
        topic = settings.topic("interactions")
        pending = []
        start = time.monotonic()
        result.first_produce = time.time()
        for i, (eid, key, value) in enumerate(values):
            if rate > 0:
                delay = start + i / rate - time.monotonic()
                if delay > 0.002:
                    await asyncio.sleep(delay)
            sent_at[eid] = time.time()
            pending.append(await producer.send(topic, key=key, value=value))
            result.events_produced += 1
            if i % 256 == 255:
                await asyncio.sleep(0)  # let the sender and the consumer run
        await producer.flush()
        result.last_produce = max(sent_at.values(), default=result.first_produce)
        failed = [f.exception() for f in pending if f.done() and f.exception() is not None]
        if failed:
            raise ReplayError(f"{len(failed)} events could not be published: {failed[0]!r}")

    consumer_task = asyncio.create_task(consume())
    try:
        await produce()
        last_heard[0] = max(last_heard[0], time.time())
        if coverage.complete:
            answered.set()
        while not answered.is_set():
            if consumer_task.done():
                consumer_task.result()  # raise what stopped it
            if time.time() - last_heard[0] > idle_timeout:
                log.warning("no recommendation for %.0fs; %d of %d events answered", idle_timeout,
                            coverage.covered, coverage.total)
                break
            try:
                await asyncio.wait_for(answered.wait(), timeout=0.5)
            except asyncio.TimeoutError:
                pass
    finally:
        consumer_task.cancel()
        try:
            await consumer_task
        except (asyncio.CancelledError, Exception):
            pass
        await asyncio.gather(producer.stop(), consumer.stop(), return_exceptions=True)
        bar.close()
    result.events_covered = coverage.covered
    result.complete = coverage.complete
    result.users = len(users_seen)
    result.latencies_ms = np.asarray(latencies, dtype=np.float64)
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


def demo_settings(settings: Settings, bootstrap_servers: str | None = None) -> Settings:
    """Settings for one demo run: a given local broker, or a unique topic prefix and app id on the
    configured cluster so the run starts from empty topics and state."""
    if bootstrap_servers:
        return replace(settings, bootstrap_servers=bootstrap_servers)
    run = uuid.uuid4().hex[:8]
    return replace(settings, topic_prefix=f"{settings.topic_prefix}demo-{run}-", app_id=f"{settings.app_id}-demo-{run}")


def run_demo(settings: Settings, dataset_path: str | Path, limit: int = 0, rate: float = 0.0,
             show_users: int = 3, *, progress: bool = True, idle_timeout: float = 30.0,
             out: TextIO | None = None) -> int:
    """``stream-app demo``: a broker (unless KAFKA_BOOTSTRAP_SERVERS is set) and one worker of its
    own, a replay, then both stopped again."""
    from stream_app.broker import LocalKafka
    from stream_app.local import LocalWorker

    out = out or sys.stdout
    t0 = time.monotonic()
    worker = None
    with ExitStack() as stack:
        if settings.bootstrap_servers:
            settings = demo_settings(settings)
            print(f"using Kafka at {settings.bootstrap_servers}, topics {settings.topic_prefix}*", file=out, flush=True)
        else:
            print("starting a local Apache Kafka broker ...", file=out, flush=True)
            kafka = LocalKafka(partitions=settings.partitions)
            stack.callback(kafka.stop)
            kafka.start()
            settings = demo_settings(settings, kafka.bootstrap_servers)
            print(f"Kafka {kafka.version} at {settings.bootstrap_servers} ({time.monotonic() - t0:.1f} s)",
                  file=out, flush=True)
        worker = LocalWorker(settings)
        stack.callback(worker.stop)
        print(f"starting a worker (log {worker.log_path}) ...", file=out, flush=True)
        worker.start()
        print(f"worker ready on port {worker.port} ({time.monotonic() - t0:.1f} s)", file=out, flush=True)
        rc = run_replay(worker.settings, dataset_path, limit, rate, show_users, progress=progress,
                        idle_timeout=idle_timeout, out=out)
        if rc != 0:
            print(f"worker log {worker.log_path}:\n{worker.log()[-3000:]}", file=sys.stderr)
    print(f"demo finished in {time.monotonic() - t0:.1f} s (broker and worker stopped)", file=out, flush=True)
    return rc
