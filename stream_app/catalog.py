"""The catalogue: item upserts and deletions, encoded once, held by every worker (the hot path
can only rank items every worker knows).

- ``CatalogIndexer`` (group ``stream_app.topics.catalog_group``, a
  ``stream_app.checkpoint.CheckpointedConsumer``) reads the ``catalog`` topic in batches, checks
  each message (bad -> dead letter), encodes the new item texts in one pass and writes each item's
  record (the item message plus its vector, ``stream_app.codec.encode_item_record``; a tombstone
  for a deletion) to the compacted ``<app_id>-catalog-items-changelog``, on the partition of its
  item id (``item_partition``: murmur2 of the id, as a producer keyed by item_id places it),
  whichever partition of ``catalog`` the message came from; then commits
  (``stream_app.checkpoint``). All records of an item are thus on one changelog partition, in
  the order the indexers handled them, and compaction keeps the last one: a deletion is never
  outlived by an earlier upsert that a producer put on another partition.
- ``CatalogFollower`` (every worker) reads that changelog, all partitions, from its first record
  and for as long as the worker runs: upserts and deletions made by any worker reach every
  worker's model, in changelog order, without re-encoding. The hot path applies what arrived
  (``sync``) before each batch, in the model thread, and starts only after the follower has read
  the changelog to its end once, so a restarted worker never sees its catalogue half-loaded.
  Records read but not yet applied are bounded: past ``PENDING_MAX`` the follower hands them to
  the model thread (``drain``) and reads on while they are applied, waiting for that apply
  before it hands over the next ones, so a catalogue of 10^6 items is not held twice, as raw
  records and as vectors, while a worker restores it.

Order, per item: every worker (and a restarted one) ends in the state of the item's last
changelog record, and its records are in the order the indexers handled the messages. For the
messages of one ``catalog`` partition that is the producer's order, so a producer that keeps an
item on one partition (keyed by item_id, with any partitioner) gets its order. Messages of one
item on different partitions have no order between them until one has been handled: an upsert
and a deletion produced close together on two partitions may be handled either way round; a
deletion produced after its upsert was indexed (the item is served) always wins.
"""
from __future__ import annotations

import asyncio
import gc
import logging
from functools import lru_cache
from typing import Awaitable, Callable

import mode
import orjson

from stream_app.checkpoint import CheckpointedConsumer
from stream_app.codec import Rejected
from stream_app.context import Context, RunModel
from stream_app.dead_letters import reject, source
from stream_app.processor import Processor, owner_partition
from stream_app.store import read_to_end
from stream_app.topics import catalog_group

log = logging.getLogger(__name__)

PENDING_MAX = 16_384  # catalogue records read ahead of the model at most (about 40 MB at 384-d)
# Set by the worker process (``stream_app.worker``): once the catalogue read at start is in the
# model, every object alive then is moved out of the collector's sight (``gc.freeze``), as the
# worker does with what it built before starting. A catalogue of 10^5 items leaves some 10^5
# container objects that live as long as the worker, and each full collection walked them all.
FREEZE_AFTER_READ = False


@lru_cache(maxsize=1 << 14)
def item_partition(item_id: str, partitions: int) -> int:
    """The catalogue changelog partition of an item: murmur2 of its id (as ``owner_partition``
    places a user), the answers for the 16,384 items asked last kept apart from the users'.

    >>> item_partition("sw4", 4) == owner_partition("sw4", 4)
    True
    """
    return owner_partition.__wrapped__(item_id, partitions)


class CatalogIndexer(CheckpointedConsumer):
    def __init__(self, ctx: Context, **kwargs):
        self.ctx = ctx
        super().__init__(topic=ctx.topics.catalog, group_id=catalog_group(ctx.settings),
                         max_records=ctx.settings.encoder_batch * 4, **ctx.consumer_options(), **kwargs)

    async def handle(self, records: list) -> None:
        ctx, good = self.ctx, []
        for record in records:
            src = source(record)
            parsed = ctx.processor.parse_item(src)
            if isinstance(parsed, Rejected):
                await reject(ctx, self.outbox, src, parsed, event=False)
                continue
            good.append(parsed)
        await ctx.catalog.sync(ctx.run_model, ctx.processor)  # other workers' changes first, in order
        written = await ctx.run_model(ctx.processor.index_items, good) if good else []
        for item_id, value in written:  # on the item's partition, whichever the message came from
            await self.outbox.send(ctx.topics.catalog_items_changelog, key=item_id.encode(),
                                   value=value, partition=item_partition(item_id, ctx.settings.partitions))


class CatalogFollower(mode.Service):
    """Every worker's reader of the catalogue changelog."""

    def __init__(self, bootstrap_servers: str, changelog: str, security: dict | None = None,
                 drain: Callable[[], Awaitable] | None = None, **kwargs):
        self.bootstrap_servers, self.changelog = bootstrap_servers, changelog
        self.security = security or {}  # stream_app.kafka_clients.security_options
        self.pending: list = []  # (item_id bytes, record bytes | None), in changelog order
        self.drain = drain  # applies ``pending`` in the model thread (the worker's ``sync``)
        self._draining: asyncio.Future | None = None
        self.titles: dict[str, str] = {}  # item_id -> title, for the web views
        self.caught_up = asyncio.Event()
        self._reader = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self._reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap_servers, **self.security, group_id=None,
                                        enable_auto_commit=False, auto_offset_reset="earliest")
        await self._reader.start()
        parts = self._reader.partitions_for_topic(self.changelog) or set()
        if not parts:
            await self._reader._client.force_metadata_update()
            parts = self._reader.partitions_for_topic(self.changelog) or set()
        tps = [TopicPartition(self.changelog, p) for p in sorted(parts)]
        self._reader.assign(tps)
        await self._restore(tps)
        log.info("catalogue changelog read: %d items", len(self.titles))
        self.caught_up.set()
        self.add_future(self._follow())

    async def _restore(self, tps) -> None:
        """The changelog read to its end once (applied up to the bound; with ``FREEZE_AFTER_READ``
        all of it, then frozen)."""
        await read_to_end(self._reader, tps, self._apply, self._bound)
        await self._drained()
        if FREEZE_AFTER_READ:
            if self.drain is not None and self.pending:  # the rest too, so that it is frozen with it
                await self.drain()
            gc.collect()
            gc.freeze()

    async def on_stop(self) -> None:
        if self._draining is not None:  # an apply under way ends before the model is let go
            try:
                await self._drained()
            except Exception as exc:
                log.warning("catalogue changes not applied at stop: %r", exc)
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None

    def _apply(self, r) -> None:
        self.pending.append((r.key, r.value))
        item_id = r.key.decode()
        if r.value is None:
            self.titles.pop(item_id, None)
        else:
            self.titles[item_id] = orjson.loads(r.value).get("title", item_id)

    async def _bound(self) -> None:
        """Past ``PENDING_MAX`` records: wait for the apply handed over last, hand over these."""
        if self.drain is None or len(self.pending) < PENDING_MAX:
            return
        await self._drained()
        self._draining = asyncio.ensure_future(self.drain())

    async def _drained(self) -> None:
        """The apply handed over last has ended (its error, if any, raised here once)."""
        draining, self._draining = self._draining, None
        if draining is not None:
            await draining

    async def _read(self, timeout_ms: int) -> None:
        for batch in (await self._reader.getmany(timeout_ms=timeout_ms)).values():
            for r in batch:
                self._apply(r)
        await self._bound()

    async def _follow(self) -> None:
        while not self.should_stop and self._reader is not None:
            try:
                await self._read(500)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.should_stop:
                    return
                log.warning("catalogue changelog: %r", exc)
                await asyncio.sleep(0.5)

    async def sync(self, run_model: RunModel, processor: Processor) -> None:
        """Apply the changes read so far to the model, in order, in the model thread."""
        if not self.pending:
            return
        changes, self.pending = self.pending, []
        await run_model(apply_catalog_changes, processor, changes)


def apply_catalog_changes(processor: Processor, changes: list) -> None:
    for key, record in changes:
        if record is None:
            processor.model.delete_item(key.decode())
        else:
            processor.restore_item(record)
