"""A consumer-group member that handles records in batches and commits only what it delivered.

Faust hands an agent one message at a time (per message: an Event object, ack tracking, a trip
through the stream's queue), which caps a worker at a few thousand events/s, and its ack/seek
bookkeeping around rebalances is where messages went missing in our tests. Both input topics are
therefore read by this small loop over aiokafka, run as a Faust service (``app.service``): Faust
keeps the worker's lifecycle, the web views and the timers.

One batch (``BulkConsumer._consume``):

1. ``getmany`` returns up to ``max_records`` records of the partitions this member owns;
2. ``handle(records)`` (the subclass) produces what the batch causes through ``self.outbox``;
3. the batch's sends are handed to a settling task, and the loop goes on to the next batch while
   the broker acknowledges them (``acks=all``, idempotent producer): the task waits for every
   acknowledgement, and only then commits the batch's offsets;
4. up to ``MAX_UNSETTLED`` batches may be settling at once, their acknowledgements awaited side
   by side (one slow acknowledgement does not hold up the loop); each task commits only after
   the task of the batch before it has committed (offsets go to the broker in order, and never
   past a batch whose records were not all acknowledged). A refusal or any other delivery
   failure stops the worker with a non-zero exit, and neither that batch nor any after it is
   committed, so they are read again after a restart and nothing is skipped (the event-id
   windows skip what was already applied). The settling tasks are also awaited before a
   revocation hands the partitions over and before the consumer stops. A commit that fails only
   means its records are read again.

Rebalances: the revocation callback takes the same lock as a batch, so the batch in flight
finishes and commits before the partitions go; ``revoked``/``assigned`` (the subclass) drop and
restore per-partition state under that lock. Records fetched before a rebalance are never handled
after it (a generation counter); they are read again from the committed offsets.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time

import mode
import orjson
from aiokafka import ConsumerRebalanceListener

from stream_app.codec import Rejected, dead_letter
from stream_app.processor import Source

log = logging.getLogger(__name__)

MAX_UNSETTLED = 4  # batches whose delivery and commit may be in flight while the loop goes on


class Outbox:
    """Sends of one batch, taken by the batch's settling task, which waits for all of them."""

    def __init__(self, producer):
        self.producer = producer
        self.pending: list = []

    async def send(self, topic: str, key: bytes | None = None, value: bytes | None = None,
                   partition: int | None = None):
        fut = await self.producer.send(topic, value=value, key=key, partition=partition)
        self.pending.append(fut)
        return fut

    def take(self) -> list:
        """The sends so far (one batch's) for its settling task; the outbox starts empty again."""
        pending, self.pending = self.pending, []
        return pending


class BulkConsumer(mode.Service):
    """Subclasses set ``topic``/``group_id`` and implement ``handle``; ``assigned``/``revoked``
    are optional. ``ctx``: the ``stream_app.agents.Context``."""

    def __init__(self, ctx, topic: str, group_id: str, max_records: int, **kwargs):
        self.ctx, self.topic, self.group_id, self.max_records = ctx, topic, group_id, max_records
        self.lock = asyncio.Lock()
        self.generation = 0  # bumped by every revocation: records fetched before it are stale
        self.owned: set[int] = set()
        self.ready = asyncio.Event()  # set once the first assignment is in place
        self.consumer = None
        self.producer = None
        self.outbox: Outbox | None = None
        self._lag_at = 0.0
        self._unsettled: collections.deque = collections.deque()  # settling tasks in flight, oldest first
        # seconds spent in each step of the loop, summed (``/stats``: where a batch's time goes)
        self.seconds = {"fetch": 0.0, "handle": 0.0, "deliver": 0.0, "commit": 0.0}
        super().__init__(**kwargs)

    # -- to implement ------------------------------------------------------------------------
    async def handle(self, records: list) -> None:
        """One fetched batch; each subclass defines it (``HotPath``, ``CatalogIndexer``)."""
        raise NotImplementedError

    async def assigned(self, partitions: list[int]) -> None:
        """Called under the batch lock before any record of ``partitions`` is handled."""

    async def revoked(self, partitions: list[int]) -> None:
        """Called under the batch lock, after the batch in flight committed."""

    async def before_start(self) -> None:
        """Called before the consumer subscribes."""

    def spent(self, step: str, seconds: float) -> None:
        """Time of one step of the loop (``seconds``; the hot path also counts it in its metrics)."""
        self.seconds[step] += seconds

    # -- lifecycle ---------------------------------------------------------------------------
    async def on_start(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        s = self.ctx.settings
        # No linger: a batch's sends are appended without yielding to the loop, so they are grouped
        # into the same requests anyway, and ``delivered`` waits for them at once; lingering only
        # left both threads idle for up to 5 ms per batch before the produce request went out.
        self.producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, acks="all",
                                         enable_idempotence=True, linger_ms=0, max_batch_size=262_144)
        await self.producer.start()
        names = self.ctx.topics
        for topic in (*names.plain, *names.changelogs):  # so that the first batch's sends do not wait for it
            await self.producer.partitions_for(topic)
        self.outbox = Outbox(self.producer)
        await self.before_start()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers, group_id=self.group_id,
            client_id=f"{s.app_id} {self.ctx.app.conf.canonical_url}",  # stream_app.owners reads it
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=self.max_records,
            max_partition_fetch_bytes=2**20, fetch_max_wait_ms=int(s.batch_within_s * 1000),
            session_timeout_ms=int(s.session_timeout_s * 1000),
            heartbeat_interval_ms=int(max(1.0, s.session_timeout_s / 3) * 1000))
        self.consumer.subscribe([self.topic], listener=_Listener(self))
        await self.consumer.start()
        self.add_future(self._consume())
        try:  # ready once the first assignment is in place (the group may give this member none)
            await asyncio.wait_for(self.ready.wait(), timeout=max(30.0, 3 * s.session_timeout_s))
        except asyncio.TimeoutError:
            log.warning("no partition assignment for group %s yet; going on", self.group_id)

    async def on_stop(self) -> None:
        async with self.lock:  # the batch in flight finishes (and commits) first
            await self._settle_or_crash()
            if self.consumer is not None:
                await self.consumer.stop()  # leaves the group: the others take over at once
                self.consumer = None
        if self.producer is not None:
            await self.producer.stop()

    async def _on_revoked(self, revoked) -> None:
        async with self.lock:
            await self._settle_or_crash()  # the next owner starts from the offsets of the last batch
            self.generation += 1
            parts = sorted(tp.partition for tp in revoked)
            self.owned.difference_update(parts)
            await self.revoked(parts)
            log.info("%s: partitions %s revoked", self.topic, parts)

    async def _on_assigned(self, assigned) -> None:
        async with self.lock:
            parts = sorted(tp.partition for tp in assigned)
            await self.assigned(parts)
            self.owned.update(parts)
            log.info("%s: partitions %s assigned", self.topic, parts)
        self.ready.set()

    # -- the loop ----------------------------------------------------------------------------
    async def _consume(self) -> None:
        wait_ms = int(self.ctx.settings.batch_within_s * 1000) + 100
        while not self.should_stop:
            consumer = self.consumer
            if consumer is None:
                return
            t0 = time.perf_counter()
            try:
                fetched = await consumer.getmany(timeout_ms=wait_ms, max_records=self.max_records)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # ConsumerStoppedError at shutdown, or a broker error
                if self.should_stop:
                    return
                log.warning("%s: fetch failed: %r", self.topic, exc)
                await asyncio.sleep(0.5)
                continue
            generation = self.generation  # no await since getmany returned
            t1 = time.perf_counter()
            self.spent("fetch", t1 - t0)
            if not fetched:
                continue
            async with self.lock:
                if generation != self.generation or self.consumer is None:
                    continue  # fetched before a rebalance: read again from the committed offsets
                fetched = {tp: rs for tp, rs in fetched.items() if rs and tp.partition in self.owned}
                try:
                    t1 = time.perf_counter()
                    await self.handle([r for rs in fetched.values() for r in rs])
                    t2 = time.perf_counter()
                    await self._make_room()  # at most MAX_UNSETTLED batches in flight
                except Exception as exc:
                    log.exception("%s: a batch could not be handled or delivered", self.topic)
                    await self.ctx.crash(exc)
                    return
                previous = self._unsettled[-1] if self._unsettled else None
                self._unsettled.append(asyncio.ensure_future(
                    self._deliver_and_commit(self.outbox.take(), fetched, previous)))
                self.spent("handle", t2 - t1)
                self.spent("deliver", time.perf_counter() - t2)
            self._measure_lag(fetched)

    async def _deliver_and_commit(self, sends: list, fetched: dict, previous: asyncio.Future | None) -> None:
        """Wait for the broker's acknowledgement of every send of a batch, and for the previous
        batch's settling task (offsets go in order), then commit the batch's offsets. A refusal
        here or in an earlier batch raises, and nothing more is committed."""
        from aiokafka.structs import OffsetAndMetadata

        failure = None
        try:
            for fut in sends:
                await fut
        except Exception as exc:
            failure = exc
        if previous is not None:
            await previous  # offsets in order; raises an earlier batch's failure (reported by its task)
        if failure is not None:  # the first batch that failed reports it and stops the worker
            log.error("%s: a batch could not be delivered", self.topic, exc_info=failure)
            await self.ctx.crash(failure)
            raise failure
        offsets = {tp: OffsetAndMetadata(rs[-1].offset + 1, "") for tp, rs in fetched.items()}
        if offsets and self.consumer is not None:
            t0 = time.perf_counter()
            await self._send_commit(self.consumer, offsets)
            self.spent("commit", time.perf_counter() - t0)

    async def _make_room(self) -> None:
        """Wait for the oldest settling tasks until fewer than ``MAX_UNSETTLED`` are in flight;
        raises what made a delivery fail."""
        while self._unsettled and (self._unsettled[0].done() or len(self._unsettled) >= MAX_UNSETTLED):
            await self._unsettled.popleft()

    async def _settle(self) -> None:
        """Wait for every batch's delivery and commit still in flight (the last settling task
        waits for the ones before it); raises what made a delivery fail."""
        last = self._unsettled[-1] if self._unsettled else None
        self._unsettled.clear()
        if last is not None:
            await last

    async def _settle_or_crash(self) -> None:
        """``_settle``; a failed delivery was already logged, and the worker stopped, by the
        settling task itself (``_deliver_and_commit``)."""
        try:
            await self._settle()
        except Exception:
            pass

    async def _send_commit(self, consumer, offsets: dict) -> None:
        try:
            await consumer.commit(offsets)
        except Exception as exc:  # a rebalance under way: the next owner re-reads (harmless)
            log.warning("%s: offset commit failed (%r); these records will be read again", self.topic, exc)

    def _measure_lag(self, fetched: dict) -> None:
        now = time.monotonic()
        if now - self._lag_at < 1.0 or self.consumer is None:
            return
        self._lag_at = now
        for tp, rs in fetched.items():
            hw = self.consumer.highwater(tp)
            if hw is not None:
                self.ctx.metrics.set_lag(tp.topic, tp.partition, max(0, hw - (rs[-1].offset + 1)))


class _Listener(ConsumerRebalanceListener):
    """aiokafka's rebalance callbacks, forwarded to the consumer."""

    def __init__(self, owner: BulkConsumer):
        self.owner = owner

    async def on_partitions_revoked(self, revoked) -> None:
        await self.owner._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned) -> None:
        await self.owner._on_assigned(assigned)


def source(record) -> Source:
    return Source(record.topic, record.partition, record.offset, record.key, record.value)


async def reject(ctx, out: Outbox, src: Source, reason: Rejected, event: bool = True) -> None:
    """Send ``src`` to the dead-letter topic with ``reason`` (``event``: an interaction, counted
    as a dead-lettered event)."""
    log.warning("dead letter %s[%d]@%d: %s: %s", src.topic, src.partition, src.offset,
                reason.error_type, reason.error[:500])
    await out.send(ctx.topics.dead_letters, key=src.key, value=orjson.dumps(
        dead_letter(src.value, reason, src.topic, src.partition, src.offset, src.key)))
    ctx.stats["dead_letters"] += 1
    ctx.metrics.dead_letter(reason.error_type)
    if event:
        ctx.metrics.event("dead_lettered")
