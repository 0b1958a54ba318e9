"""When a batch's offsets are committed: the one rule that keeps every event applied exactly once.

This is the module that enforces it; the other modules link here rather than restate it.

The rule. A batch's offsets are committed only after everything the batch caused (new user
states on their changelog, recommendations, dead letters, re-routed events, catalogue records)
has been acknowledged by the broker (``acks=all``, idempotent producer), and only after the
batch before it was committed: offsets go to the broker in order, and never past a batch whose
sends were not all acknowledged.

One batch (``CheckpointedConsumer``, on top of the fetch loop of ``stream_app.bulk``):

1. ``handle(records)`` (the subclass) sends what the batch causes through ``self.outbox``;
2. ``checkpoint`` hands the batch's sends to a settling task, and the loop goes on to the next
   batch while the broker acknowledges them: the task waits for every acknowledgement, then for
   the task of the batch before it, and only then commits the batch's offsets;
3. up to ``MAX_UNSETTLED`` batches may be settling at once, their acknowledgements awaited side
   by side (one slow acknowledgement does not hold up the loop).

Why that is exactly once. A refusal or any other delivery failure stops the worker with a
non-zero exit, and neither that batch nor any after it is committed, so they are read again after
a restart and nothing is skipped. What is read again either had no effect, or its effect is in
the restored state, which records per source partition the offset of the last event applied
to it: a re-read at or below that offset is skipped, however long the re-read range
(``models.state``; the per-user event-id window catches producer retries of an id at a new
offset). At least once delivery, made exact by the state. The settling tasks are also awaited before a revocation hands
the partitions over and before the consumer stops, so the next owner restores states that hold
every committed batch, and never publishes a list older than one already published. A commit
that fails only means its records are read again.

Fencing. A member that lost its assignment (evicted from the group, or a commit refused because
the group moved on) must not write for partitions that are now another member's: the outbox
checks, before it hands each record to the producer, that the assignment the batch runs under is
still this member's (``BulkConsumer.fenced``), and raises ``fencing.Fenced`` otherwise; the
batch's unsent writes are dropped and it is not committed. What reached the producer before that
carries the writer's epoch and is refused by the next owner's restore (``stream_app.fencing``).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time

from stream_app import fencing
from stream_app.bulk import BulkConsumer

log = logging.getLogger(__name__)

MAX_UNSETTLED = 4  # batches whose delivery and commit may be in flight while the loop goes on


class Outbox:
    """Sends of one batch, taken by the batch's settling task, which waits for all of them.
    ``fenced()``: whether this member lost its assignment; then ``send`` raises ``Fenced``."""

    def __init__(self, producer, fenced=lambda: False):
        self.producer = producer
        self.fenced = fenced
        self.pending: list = []

    async def send(self, topic: str, key: bytes | None = None, value: bytes | None = None,
                   partition: int | None = None, headers: list | None = None):
        if self.fenced():
            raise fencing.Fenced(f"this member lost its assignment; not sent to {topic}")
        fut = await self.producer.send(topic, value=value, key=key, partition=partition, headers=headers)
        self.pending.append(fut)
        return fut

    def take(self) -> list:
        """The sends so far (one batch's) for its settling task; the outbox starts empty again."""
        pending, self.pending = self.pending, []
        return pending


class CheckpointedConsumer(BulkConsumer):
    """A ``BulkConsumer`` whose batches send through an ``Outbox`` and commit by the rule above.
    ``warm_topics``: topics whose metadata is fetched at start, so the first batch's sends do not
    wait for it."""

    def __init__(self, *args, warm_topics: tuple[str, ...] = (), **kwargs):
        self.warm_topics = warm_topics
        self.producer = None
        self.outbox: Outbox | None = None
        self._unsettled: collections.deque = collections.deque()  # settling tasks in flight, oldest first
        super().__init__(*args, **kwargs)

    async def before_start(self) -> None:
        from aiokafka import AIOKafkaProducer

        from stream_app.kafka_clients import client_options

        # No linger: a batch's sends are appended without yielding to the loop, so they are grouped
        # into the same requests anyway, and the settling task waits for them at once; lingering
        # only left both threads idle for up to 5 ms per batch before the produce request went out.
        self.producer = AIOKafkaProducer(**client_options(self.settings), acks="all",
                                         enable_idempotence=True, linger_ms=0, max_batch_size=262_144)
        await self.producer.start()
        for topic in self.warm_topics:
            await self.producer.partitions_for(topic)
        self.outbox = Outbox(self.producer, self.fenced)

    def writer(self, identity: tuple[int, str]) -> fencing.Writer:
        """Who writes under an assignment: the epoch markers go through this producer."""
        producer = self.producer

        async def send(topic, key=None, value=None, partition=None, headers=None):
            return await producer.send(topic, value=value, key=key, partition=partition, headers=headers)

        return fencing.Writer(generation=identity[0], member=identity[1], send=send)

    def abandon(self) -> None:
        self.outbox.take()  # handed to the producer before the fence was seen: the restore refuses them

    async def on_stop(self) -> None:
        await super().on_stop()
        if self.producer is not None:
            await self.producer.stop()

    async def checkpoint(self, fetched: dict) -> None:
        """Hand the batch's sends and offsets to a settling task, once fewer than
        ``MAX_UNSETTLED`` are in flight; raises what made an earlier delivery fail."""
        await self._make_room()
        previous = self._unsettled[-1] if self._unsettled else None
        self._unsettled.append(asyncio.ensure_future(
            _deliver_and_commit(self, self.outbox.take(), fetched, previous)))

    async def settle(self) -> None:
        """Wait for every batch's delivery and commit still in flight (the last settling task
        waits for the ones before it). A failed delivery was already logged, and the worker
        stopped, by the settling task itself (``_deliver_and_commit``)."""
        try:
            await self._settle()
        except Exception:
            pass

    async def _make_room(self) -> None:
        """Wait for the oldest settling tasks until fewer than ``MAX_UNSETTLED`` are in flight;
        raises what made a delivery fail."""
        while self._unsettled and (self._unsettled[0].done() or len(self._unsettled) >= MAX_UNSETTLED):
            await self._unsettled.popleft()

    async def _settle(self) -> None:
        last = self._unsettled[-1] if self._unsettled else None
        self._unsettled.clear()
        if last is not None:
            await last


async def _deliver_and_commit(owner: CheckpointedConsumer, sends: list, fetched: dict,
                              previous: asyncio.Future | None) -> None:
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
        log.error("%s: a batch could not be delivered", owner.topic, exc_info=failure)
        await owner.fail(failure)
        raise failure
    offsets = {tp: OffsetAndMetadata(rs[-1].offset + 1, "") for tp, rs in fetched.items()}
    if offsets and owner.consumer is not None:
        t0 = time.perf_counter()
        await _send_commit(owner, owner.consumer, offsets)
        owner.spent("commit", time.perf_counter() - t0)


async def _send_commit(owner: CheckpointedConsumer, consumer, offsets: dict) -> None:
    from aiokafka.errors import CommitFailedError, IllegalGenerationError, UnknownMemberIdError

    try:
        await consumer.commit(offsets)
    except Exception as exc:  # a rebalance under way: the next owner re-reads (harmless)
        log.warning("%s: offset commit failed (%r); these records will be read again", owner.topic, exc)
        if isinstance(exc, (CommitFailedError, IllegalGenerationError, UnknownMemberIdError)):
            owner.lose_assignment()  # the group moved on: no more writes under this assignment
