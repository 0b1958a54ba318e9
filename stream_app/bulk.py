"""A consumer-group member that fetches records in batches and keeps them apart across rebalances.

Faust hands an agent one message at a time (per message: an Event object, ack tracking, a trip
through the stream's queue), which caps a worker at a few thousand events/s, and its ack/seek
bookkeeping around rebalances is where messages went missing in our tests. Both input topics are
therefore read by this small loop over aiokafka, run as a Faust service (``app.service``): Faust
keeps the worker's lifecycle, the web views and the timers. This module knows nothing of the app:
what a batch causes, and when its offsets are committed, belong to the subclasses.

One batch (``BulkConsumer._consume``): ``getmany`` returns up to ``max_records`` records of the
partitions this member owns (after a long batch, with what the next fetches bring: ``_top_up``);
``handle(records)`` (the subclass) does the work; ``checkpoint`` (the subclass) takes the batch's
offsets. When offsets are committed, and why nothing is lost or
applied twice: ``stream_app.checkpoint``. A member made with ``every_s`` begins a batch at most
that often (``pause_s``), so what arrives meanwhile is handled as one batch (the co-engagement
aggregator: a row touched many times within it is written once).

Rebalances: the revocation callback takes the same lock as a batch, so the batch in flight
finishes first, and ``settle`` (the subclass) runs before the partitions go; ``revoked``/``assigned``
(the subclass) drop and restore per-partition state under that lock. Records fetched before a
rebalance are never handled after it (a generation counter); they are read again from the
committed offsets.

A member must not be pushed out of its group merely because its batch in flight takes long: the
rebalance timeout (``rebalance_timeout_s``, 60 s by default, well above the longest batch) is how
long the group waits for it to finish the batch and re-join. A member that was pushed out all the
same (no heartbeat for the session timeout, a batch longer than the rebalance timeout) or whose
commit was refused by the group, is *fenced*: the writes of its batch in flight that were not
handed to the producer yet are dropped (``fencing.Fenced``), no batch is handled until the group
gives it an assignment again, and what it wrote before it noticed is refused by the next owner's
restore (``stream_app.fencing``). A failure in an assignment callback (a restore that cannot be
completed) stops the worker: its partitions would otherwise silently not be read.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Protocol

import mode
from aiokafka import ConsumerRebalanceListener

from stream_app import fatal, fencing

log = logging.getLogger(__name__)

TOP_UP_MS = 5  # a batch also takes what the next fetches bring within this each (``BulkConsumer._top_up``),
TOP_UP_SHARE = 0.2  # or within this share of the time the batch before took, when that is longer
TOP_UP_MAX_MS = 25  # (up to this: after a long batch the fetch that brings what it left waiting takes longer)
TOP_UPS = 3  # ... at most this many of them, when the batch before took at least TOP_UP_AFTER_S (a short
TOP_UP_AFTER_S = 0.01  # one left little waiting, and a top-up would only add its wait to a trickle's latency)


def top_up_within_ms(handled_s: float) -> float:
    """How long each top-up fetch may wait after a batch that took ``handled_s``. The fetch that
    brings what arrived during a long batch comes back 3-18 ms after it is sent (5,000 events/s
    on 10^5 items, broker on the same 2 cores); with ``TOP_UP_MS`` alone the next batch often
    went without those records, which then came as a tiny batch of their own, already 90-150 ms
    old, before the batch after.

    >>> top_up_within_ms(0.02), top_up_within_ms(0.1), top_up_within_ms(1.5)
    (5, 20.0, 25)
    """
    return min(TOP_UP_MAX_MS, max(TOP_UP_MS, TOP_UP_SHARE * 1000 * handled_s))


def pause_s(began: float, every_s: float, now: float) -> float:
    """How long a loop whose last batch began at ``began`` waits before it fetches the next, so
    that a batch begins at most every ``every_s`` (0: never waits).

    >>> pause_s(10.0, 1.0, 10.25), pause_s(10.0, 1.0, 11.5), pause_s(float("-inf"), 1.0, 3.0)
    (0.75, 0.0, 0.0)
    """
    return max(0.0, began + every_s - now)


class Fetching(Protocol):
    """The settings the loop reads (``stream_app.settings.Settings`` has them)."""

    bootstrap_servers: str
    batch_within_s: float
    session_timeout_s: float
    rebalance_timeout_s: float


class LagSensor(Protocol):
    def on_lag(self, topic: str, partition: int, lag: int) -> None: ...


class BulkConsumer(mode.Service):
    """Subclasses implement ``handle`` and ``checkpoint``; ``assigned``/``revoked``/``settle``/
    ``before_start``/``spent`` are optional. ``crash(exc)`` stops the worker."""

    def __init__(self, settings: Fetching, client_id: str, topic: str, group_id: str, max_records: int,
                 crash: Callable[[BaseException], Awaitable[None]], sensor: LagSensor, every_s: float = 0.0,
                 **kwargs):
        self.settings, self.client_id, self.crash, self.sensor = settings, client_id, crash, sensor
        self.topic, self.group_id, self.max_records = topic, group_id, max_records
        self.every_s = every_s  # a batch begins at most this often (what arrives meanwhile waits for it)
        self._began = float("-inf")  # when the last batch was fetched (time.monotonic)
        self.lock = asyncio.Lock()
        self.generation = 0  # bumped by every revocation: records fetched before it are stale
        self.owned: set[int] = set()
        self.identity: tuple[int, str] | None = None  # (group generation, member id) of the assignment
        self.lost = False  # the group refused a commit of this assignment: fenced until the next one
        self.stopping = False  # the consumer stops: no more batches
        self.ready = asyncio.Event()  # set once the first assignment is in place
        self.consumer = None
        self._lag_at = 0.0
        self._handled_s = 0.0  # how long the last batch took to handle
        super().__init__(**kwargs)

    # -- to implement ------------------------------------------------------------------------
    async def handle(self, records: list) -> None:
        """One fetched batch; each subclass defines it (``HotPath``, ``CatalogIndexer``)."""
        raise NotImplementedError

    async def checkpoint(self, fetched: dict) -> None:
        """Called under the batch lock after ``handle``: ``fetched`` (TopicPartition -> records)
        is done with; its offsets are the subclass's to commit."""
        raise NotImplementedError

    async def settle(self) -> None:
        """Called under the batch lock before a revocation and before the consumer stops."""

    async def assigned(self, partitions: list[int]) -> None:
        """Called under the batch lock before any record of ``partitions`` is handled."""

    async def revoked(self, partitions: list[int]) -> None:
        """Called under the batch lock, after ``settle``."""

    async def before_start(self) -> None:
        """Called before the consumer subscribes."""

    def spent(self, step: str, seconds: float) -> None:
        """Time of one step of the loop: fetch, handle, deliver (``checkpoint``)."""

    def writer(self, identity: tuple[int, str]) -> fencing.Writer | None:
        """Who writes under the assignment ``identity`` (a subclass with a producer says)."""
        return None

    def abandon(self) -> None:
        """Drop what the batch in flight has not sent yet: this member was fenced."""

    # -- fencing -----------------------------------------------------------------------------
    def _identity(self) -> tuple[int, str]:
        coordinator = getattr(self.consumer, "_coordinator", None)
        return getattr(coordinator, "generation", -1), getattr(coordinator, "member_id", "")

    def fenced(self) -> bool:
        """Whether this member lost the assignment its batches are handled under: evicted (the
        client resets its generation and member id), or a commit refused by the group."""
        return self.lost or self.identity is None or self._identity() != self.identity

    def lose_assignment(self) -> None:
        if not self.lost:
            log.warning("%s: this member lost its assignment; no more writes until the group "
                        "assigns it partitions again", self.topic)
        self.lost = True

    # -- lifecycle ---------------------------------------------------------------------------
    async def on_start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        from stream_app.kafka_clients import client_options

        s = self.settings
        await self.before_start()
        self.consumer = AIOKafkaConsumer(
            **client_options(s), group_id=self.group_id,
            client_id=self.client_id,  # stream_app.owners reads it
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=self.max_records,
            max_partition_fetch_bytes=2**20, fetch_max_wait_ms=int(s.batch_within_s * 1000),
            session_timeout_ms=int(s.session_timeout_s * 1000),
            rebalance_timeout_ms=int(s.rebalance_timeout_s * 1000),  # a long batch is not an eviction
            request_timeout_ms=int(max(40.0, s.rebalance_timeout_s + 5.0) * 1000),  # a JoinGroup waits that long
            heartbeat_interval_ms=int(max(1.0, s.session_timeout_s / 3) * 1000))
        self.consumer.subscribe([self.topic], listener=_Listener(self))
        await self.consumer.start()
        self.add_future(self._consume())
        try:  # ready once the first assignment is in place (the group may give this member none)
            await asyncio.wait_for(self.ready.wait(), timeout=max(30.0, 3 * s.session_timeout_s))
        except asyncio.TimeoutError:
            log.warning("no partition assignment for group %s yet; going on", self.group_id)

    async def on_stop(self) -> None:
        self.stopping = True
        consumer = self.consumer
        if consumer is not None and fatal.began():
            consumer.unsubscribe()  # leave the group now: no re-join from here on, whatever it does
        async with self.lock:  # the batch in flight finishes (and commits) first
            await self.settle()
            if self.consumer is not None:
                self.consumer = None
                try:  # leaves the group: the others take over at once
                    await asyncio.wait_for(consumer.stop(), timeout=self.settings.session_timeout_s)
                except Exception as exc:  # the broker is gone, or a join is stuck: the group times us out
                    log.warning("%s: consumer did not stop cleanly (%r)", self.topic, exc)

    async def fail(self, exc: BaseException) -> None:
        """Stop the worker because of ``exc`` (``crash`` begins ``stream_app.fatal``); this
        consumer handles nothing more."""
        self.stopping = True
        fatal.begin(exc)
        await self.crash(exc)

    async def _on_revoked(self, revoked) -> None:
        async with self.lock:
            await self.settle()  # the next owner starts from the offsets of the last batch
            self.generation += 1
            parts = sorted(tp.partition for tp in revoked)
            self.owned.difference_update(parts)
            await self.revoked(parts)
            log.info("%s: partitions %s revoked", self.topic, parts)

    async def _on_assigned(self, assigned) -> None:
        async with self.lock:
            if self.stopping or fatal.began():
                return
            parts = sorted(tp.partition for tp in assigned)
            self.identity, self.lost = self._identity(), False
            token = fencing.assignment.set(self.writer(self.identity))
            try:
                await self.assigned(parts)
            except Exception as exc:  # aiokafka would log it and go on without these partitions
                log.critical("%s: partitions %s could not be taken over: %r", self.topic, parts, exc)
                self.ready.set()  # the start does not wait for an assignment that will not come
                await self.fail(exc)
                return
            finally:
                fencing.assignment.reset(token)
            self.owned.update(parts)
            log.info("%s: partitions %s assigned (generation %d)", self.topic, parts, self.identity[0])
        self.ready.set()

    # -- the loop ----------------------------------------------------------------------------
    async def _consume(self) -> None:
        wait_ms = int(self.settings.batch_within_s * 1000) + 100
        while not (self.should_stop or self.stopping or fatal.began()):
            consumer = self.consumer
            if consumer is None:
                return
            rest = pause_s(self._began, self.every_s, time.monotonic())
            if rest > 0:  # the records meanwhile come as one batch
                await asyncio.sleep(rest)
                continue
            t0 = time.perf_counter()
            try:
                fetched = await consumer.getmany(timeout_ms=wait_ms, max_records=self.max_records)
                generation = self.generation  # no await since getmany returned
                if fetched and self._handled_s >= TOP_UP_AFTER_S:  # a long batch before: what it left waiting
                    within = top_up_within_ms(self._handled_s)
                    fetched, generation = await self._top_up(consumer, fetched, generation, within)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # ConsumerStoppedError at shutdown, or a broker error
                if self.should_stop:
                    return
                log.warning("%s: fetch failed: %r", self.topic, exc)
                await asyncio.sleep(0.5)
                continue
            self.spent("fetch", time.perf_counter() - t0)
            if not fetched:
                continue
            self._began = time.monotonic()
            async with self.lock:
                if generation != self.generation or self.consumer is None or fatal.began() or self.fenced():
                    continue  # fetched before a rebalance: read again from the committed offsets
                fetched = {tp: rs for tp, rs in fetched.items() if rs and tp.partition in self.owned}
                try:
                    t1 = time.perf_counter()
                    await self.handle([r for rs in fetched.values() for r in rs])
                    t2 = time.perf_counter()
                    await self.checkpoint(fetched)
                except fencing.Fenced as exc:  # not committed: the partitions' owner reads them again
                    self.abandon()
                    log.warning("%s: batch dropped, its unsent writes discarded: %s", self.topic, exc)
                    continue
                except Exception as exc:
                    log.exception("%s: a batch could not be handled or delivered", self.topic)
                    await self.fail(exc)
                    return
                self._handled_s = t2 - t1
                self.spent("handle", t2 - t1)
                self.spent("deliver", time.perf_counter() - t2)
            self._measure_lag(fetched)

    async def _top_up(self, consumer, fetched: dict, generation: int,
                      wait_ms: float = TOP_UP_MS) -> tuple[dict, int]:
        """``fetched`` (read under ``generation``) and what up to ``TOP_UPS`` more fetches bring
        within ``wait_ms`` each, and their generation. ``getmany`` returns records buffered by
        a fetch that completed early in the previous batch; the next fetch goes out only once they
        are taken, so without this, what arrived later in a long previous batch would wait for
        the batch after this one. A rebalance meanwhile: only what came after it (from the
        committed offsets, which ``fetched`` is read again from). A failed fetch ends the top-up:
        ``fetched`` is still handled."""
        room = self.max_records - sum(len(rs) for rs in fetched.values())
        for _ in range(TOP_UPS):  # a fetch may bring some partitions only: a few more
            if room <= 0:
                break
            try:
                more = await consumer.getmany(timeout_ms=int(wait_ms), max_records=room)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the positions are past ``fetched``: handle it; the loop meets the error again
                log.warning("%s: fetch failed while topping up a batch: %r", self.topic, exc)
                break
            if self.generation != generation:
                return more, self.generation
            if not more:
                break
            for tp, rs in more.items():
                fetched[tp] = fetched[tp] + rs if tp in fetched else rs
                room -= len(rs)
        return fetched, generation

    def _measure_lag(self, fetched: dict) -> None:
        now = time.monotonic()
        if now - self._lag_at < 1.0 or self.consumer is None:
            return
        self._lag_at = now
        for tp, rs in fetched.items():
            hw = self.consumer.highwater(tp)
            if hw is not None:
                self.sensor.on_lag(tp.topic, tp.partition, max(0, hw - (rs[-1].offset + 1)))


class _Listener(ConsumerRebalanceListener):
    """aiokafka's rebalance callbacks, forwarded to the consumer."""

    def __init__(self, owner: BulkConsumer):
        self.owner = owner

    async def on_partitions_revoked(self, revoked) -> None:
        await self.owner._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned) -> None:
        await self.owner._on_assigned(assigned)
