"""The user states of the partitions this worker owns, kept in memory and backed by a compacted
changelog topic (``<app_id>-user-state-changelog``, partitioned like ``interactions``).

A write goes to the in-memory map and, keyed by user id, to the changelog partition with the same
number as the interactions partition the user belongs to; a deletion writes a tombstone. When a
partition is assigned to this worker its map is rebuilt by reading that changelog partition from
its first offset to its end (``restore``); when it is revoked the map is dropped. The changelog's
records are ``UserState.to_bytes()`` values under user-id keys.

The store does not decide when a write is durable: its writes go through the batch's outbox, and
the batch is committed by the rule of ``stream_app.checkpoint``.
"""
from __future__ import annotations

import logging
import time
from typing import Awaitable, Callable, Iterable

log = logging.getLogger(__name__)

Send = Callable[..., Awaitable]  # send(topic, key=..., value=..., partition=...) -> delivery future


class UserStore:
    def __init__(self, bootstrap_servers: str, changelog: str):
        self.bootstrap_servers = bootstrap_servers
        self.changelog = changelog
        self.parts: dict[int, dict[bytes, bytes]] = {}  # partition -> user id -> state bytes
        self._reader = None

    # -- ownership ---------------------------------------------------------------------------
    def owns(self, partition: int) -> bool:
        return partition in self.parts

    def drop(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.parts.pop(p, None)

    def __len__(self) -> int:
        return sum(len(d) for d in self.parts.values())

    # -- reads and writes --------------------------------------------------------------------
    def get(self, partition: int, user: str) -> bytes | None:
        return self.parts[partition].get(user.encode())

    def find(self, user: str) -> bytes | None:
        """The user's state in whichever owned partition holds it (for the web views)."""
        key = user.encode()
        for d in self.parts.values():
            if key in d:
                return d[key]
        return None

    async def put(self, send: Send, partition: int, user: str, value: bytes | None):
        """Write (``value``) or delete (None: a tombstone) one user's state; returns the
        changelog delivery future."""
        key = user.encode()
        if value is None:
            self.parts[partition].pop(key, None)
        else:
            self.parts[partition][key] = value
        return await send(self.changelog, key=key, value=value, partition=partition)

    # -- recovery ----------------------------------------------------------------------------
    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        self._reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap_servers, group_id=None,
                                        enable_auto_commit=False, auto_offset_reset="earliest",
                                        max_partition_fetch_bytes=4 * 2**20)
        await self._reader.start()

    async def stop(self) -> None:
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None

    async def restore(self, partitions: Iterable[int]) -> None:
        """Rebuild the maps of ``partitions`` from their changelog, first offset to end."""
        from aiokafka import TopicPartition

        t0 = time.monotonic()
        tps = [TopicPartition(self.changelog, p) for p in sorted(set(partitions))]
        if not tps:
            return
        data: dict[int, dict[bytes, bytes]] = {tp.partition: {} for tp in tps}

        def apply(r) -> None:
            if r.value is None:
                data[r.partition].pop(r.key, None)
            else:
                data[r.partition][r.key] = r.value

        self._reader.assign(tps)
        records = await read_to_end(self._reader, tps, apply)
        self._reader.unsubscribe()  # no background fetching until the next restore
        self.parts.update(data)
        log.info("restored %d user states of partitions %s from %d changelog records in %.2f s",
                 sum(len(d) for d in data.values()), sorted(data), records, time.monotonic() - t0)


async def read_to_end(reader, tps: list, apply: Callable) -> int:
    """Read ``tps`` (assigned to ``reader``, a consumer without a group) from their first offset
    until each reaches the end offset it had when this started; ``apply(record)`` for every
    record fetched on the way (the last fetch may reach past that end: nothing is dropped).
    Returns the number of records."""
    end = await reader.end_offsets(tps)
    await reader.seek_to_beginning(*tps)
    behind = {tp for tp in tps if await reader.position(tp) < end[tp]}
    records = 0
    while behind:
        for batch in (await reader.getmany(*behind, timeout_ms=200)).values():
            records += len(batch)
            for r in batch:
                apply(r)
        behind = {tp for tp in behind if await reader.position(tp) < end[tp]}
    return records
