"""The user states of the partitions this worker owns, kept in a map per partition and backed by a
compacted changelog topic (``<app_id>-user-state-changelog``, partitioned like ``interactions``).

The maps come from a backend (``stream_app.state_backends``, setting ``STREAM_RECO_STATE_STORE``):
a dict in memory (default), or an on-disk RocksDB database per partition with an LRU cache of
states in front, for states beyond RAM. Either way the changelog is the only source of truth: a
map is created empty on assignment and given back (an on-disk one deleted) on revocation.

A write goes to the partition's map and, keyed by user id, to the changelog partition with the same
number as the interactions partition the user belongs to; a deletion writes a tombstone. When a
partition is assigned to this worker its map is rebuilt by reading that changelog partition from
its first offset to its end (``restore``); when it is revoked the map is dropped. The changelog's
records are ``UserState.to_bytes()`` values under user-id keys.

Every record it writes carries its writer's epoch (``stream_app.fencing``): on assignment the
restore fixes this owner's epoch for the partition, above every epoch already there, and appends an
epoch marker before any record of the partition is handled; a restore ignores a record whose epoch
is lower than one seen before it in the partition (a late write of a former owner, cut off from the
group while it still wrote), and the user keeps the state of the record before it. Such a record
that is the last one of its user is written over again, with the restoring owner's epoch and the
state it keeps, so that compaction does not keep the stale record in place of that state.

The store does not decide when a write is durable: its writes go through the batch's outbox, and
the batch is committed by the rule of ``stream_app.checkpoint``.
"""
from __future__ import annotations

import logging
import time
from typing import Awaitable, Callable, Iterable, MutableMapping

from stream_app import fencing
from stream_app.state_backends import MemoryBackend, RocksBackend

log = logging.getLogger(__name__)

Send = Callable[..., Awaitable]  # send(topic, key=..., value=..., partition=...) -> delivery future


class UserStore:
    def __init__(self, bootstrap_servers: str, changelog: str, security: dict | None = None,
                 backend: MemoryBackend | RocksBackend | None = None):
        self.bootstrap_servers = bootstrap_servers
        self.security = security or {}  # stream_app.kafka_clients.security_options
        self.changelog = changelog
        self.backend = backend or MemoryBackend()  # stream_app.state_backends.backend_for(settings, changelog)
        self.parts: dict[int, MutableMapping[bytes, bytes]] = {}  # partition -> user id -> state bytes
        self.epochs: dict[int, int] = {}  # partition -> this owner's writer epoch (see stream_app.fencing)
        self._headers: dict[int, list] = {}  # partition -> the epoch headers of its writes
        self._reader = None

    # -- ownership ---------------------------------------------------------------------------
    def owns(self, partition: int) -> bool:
        return partition in self.parts

    def drop(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            states = self.parts.pop(p, None)
            if states is not None:
                self.backend.release(states)
            self.epochs.pop(p, None)
            self._headers.pop(p, None)

    def __len__(self) -> int:
        return sum(len(d) for d in self.parts.values())

    # -- reads and writes --------------------------------------------------------------------
    def get(self, partition: int, user: str) -> bytes | None:
        return self.parts[partition].get(user.encode())

    def find(self, user: str) -> bytes | None:
        """The user's state in whichever owned partition holds it (for the web views)."""
        key = user.encode()
        for d in self.parts.values():
            value = d.get(key)
            if value is not None:
                return value
        return None

    async def put(self, send: Send, partition: int, user: str, value: bytes | None):
        """Write (``value``) or delete (None: a tombstone) one user's state; returns the
        changelog delivery future."""
        key = user.encode()
        if value is None:
            self.parts[partition].pop(key, None)
        else:
            self.parts[partition][key] = value
        headers = self._headers.get(partition)
        if headers is None:  # restored without an assignment (no writer epoch): plain records
            return await send(self.changelog, key=key, value=value, partition=partition)
        return await send(self.changelog, key=key, value=value, partition=partition, headers=headers)

    # -- recovery ----------------------------------------------------------------------------
    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        self._reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap_servers, **self.security, group_id=None,
                                        enable_auto_commit=False, auto_offset_reset="earliest",
                                        max_partition_fetch_bytes=4 * 2**20)
        await self._reader.start()

    async def stop(self) -> None:
        """Stop reading the changelog and give every map back (an on-disk one is deleted)."""
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None
        self.drop(list(self.parts))
        self.backend.close()

    async def restore(self, partitions: Iterable[int]) -> None:
        """Rebuild the maps of ``partitions`` from their changelog, first offset to end, refusing
        stale writes (``Restored``). Called in an assignment callback (``fencing.assignment``
        set), it then fixes this owner's epoch per partition and appends its marker (plus the
        repairs) and waits for them: only then may the partition's records be handled."""
        from aiokafka import TopicPartition

        t0 = time.monotonic()
        tps = [TopicPartition(self.changelog, p) for p in sorted(set(partitions))]
        if not tps:
            return
        self.drop(tp.partition for tp in tps)  # restored again: from the start, into an empty map
        data = {tp.partition: Restored(self.backend.open(tp.partition)) for tp in tps}
        try:
            self._reader.assign(tps)
            records = await read_to_end(self._reader, tps, lambda r: data[r.partition].apply(r))
            self._reader.unsubscribe()  # no background fetching until the next restore
            writer = fencing.assignment.get()
            if writer is not None:
                await self._fence(writer, data)
        except BaseException:
            for d in data.values():
                self.backend.release(d.states)
            raise
        self.parts.update({p: d.states for p, d in data.items()})
        log.info("restored %d user states of partitions %s from %d changelog records in %.2f s (%s)%s",
                 sum(len(d.states) for d in data.values()), sorted(data), records, time.monotonic() - t0,
                 self.backend.name,
                 "".join(f"; partition {p}: {d.stale} stale records ignored, epoch {self.epochs.get(p)}"
                         for p, d in sorted(data.items()) if d.stale))

    async def _fence(self, writer: fencing.Writer, data: dict[int, "Restored"]) -> None:
        """This owner's epoch per partition, its marker, and the repair of users whose last
        record was stale; returns once the broker has acknowledged all of them."""
        import orjson

        sends = []
        for p, d in data.items():
            epoch = fencing.owner_epoch(writer.generation, d.highest)
            headers = fencing.headers(epoch, writer.member)
            marker = orjson.dumps({"epoch": epoch, "generation": writer.generation, "writer": writer.member})
            sends.append(await writer.send(self.changelog, key=fencing.MARKER_KEY, value=marker,
                                           partition=p, headers=headers))
            for key in d.overwritten:  # the state kept, again, after the stale record
                sends.append(await writer.send(self.changelog, key=key, value=d.states.get(key),
                                               partition=p, headers=headers))
            self.epochs[p], self._headers[p] = epoch, headers
        for fut in sends:
            await fut


class Restored:
    """One partition's states as its changelog is read in order: a record whose writer epoch is
    lower than the highest seen before it is a former owner's late write and is ignored."""

    __slots__ = ("states", "highest", "stale", "overwritten")

    def __init__(self, states: MutableMapping[bytes, bytes] | None = None):
        self.states = {} if states is None else states  # empty: a backend's fresh map
        self.highest = 0
        self.stale = 0
        self.overwritten: set[bytes] = set()  # users whose last record so far is a stale one

    def apply(self, r) -> None:
        if r.key is None:
            raise fencing.CorruptRecord(f"changelog record at offset {r.offset} of partition {r.partition} has no key")
        epoch = fencing.epoch_of(r.headers)
        if epoch < self.highest:
            if r.key != fencing.MARKER_KEY:
                self.stale += 1
                self.overwritten.add(r.key)
            return
        self.highest = epoch
        if r.key == fencing.MARKER_KEY:
            return
        self.overwritten.discard(r.key)
        if r.value is None:
            self.states.pop(r.key, None)
        else:
            self.states[r.key] = r.value


async def read_to_end(reader, tps: list, apply: Callable, between: Callable[[], Awaitable] | None = None) -> int:
    """Read ``tps`` (assigned to ``reader``, a consumer without a group) from their first offset
    until each reaches the end offset it had when this started; ``apply(record)`` for every
    record fetched on the way (the last fetch may reach past that end: nothing is dropped), and
    ``await between()`` after each fetch when given (where a reader can wait for what it keeps
    to be used). Returns the number of records."""
    end = await reader.end_offsets(tps)
    await reader.seek_to_beginning(*tps)
    behind = {tp for tp in tps if await reader.position(tp) < end[tp]}
    records = 0
    while behind:
        for batch in (await reader.getmany(*behind, timeout_ms=200)).values():
            records += len(batch)
            for r in batch:
                apply(r)
        if between is not None:
            await between()
        behind = {tp for tp in behind if await reader.position(tp) < end[tp]}
    return records
