"""The catalogue indexer without Kafka: each item's changelog record goes to the partition of its
item id whatever partition its message came from, and a follower that applies the changelog in
order ends where the indexer did; a deleted item's rows are taken by the next new item."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import orjson

from models.engine import InterestModel
from stream_app.catalog import CatalogIndexer, apply_catalog_changes, item_partition
from stream_app.codec import Codec
from stream_app.processor import Processor
from tests.stream_app.test_processor import TinyEncoder


def processor() -> Processor:
    return Processor(InterestModel.untrained(text_dim=4, cf_dim=2), TinyEncoder(), lambda text: 0.0, Codec.load())


class Outbox:
    def __init__(self):
        self.sent: list[tuple[str, bytes, bytes | None, int]] = []

    async def send(self, topic, key=None, value=None, partition=None):
        self.sent.append((topic, key, value, partition))


class Follower:
    async def sync(self, run_model, processor):
        pass


def indexer(proc: Processor) -> CatalogIndexer:
    async def run_model(fn, *args):
        return fn(*args)

    ctx = SimpleNamespace(processor=proc, catalog=Follower(), run_model=run_model, settings=SimpleNamespace(partitions=4),
                          topics=SimpleNamespace(catalog_items_changelog="items-changelog"))
    ix = CatalogIndexer.__new__(CatalogIndexer)  # no consumer: only ``handle``
    ix.ctx, ix.outbox = ctx, Outbox()
    return ix


def record(item: dict, partition: int, offset: int = 0):
    return SimpleNamespace(topic="catalog", partition=partition, offset=offset, key=None, value=orjson.dumps(item))


def test_item_partition_is_the_keyed_murmur2_partition():
    from aiokafka.partitioner import DefaultPartitioner  # a port of the Java client's murmur2 partitioner

    keyed = DefaultPartitioner()
    for i in range(200):
        for n in (4, 1, 3):
            assert item_partition(f"item-{i}", n) == keyed(f"item-{i}".encode(), list(range(n)), list(range(n)))


def test_records_go_to_the_items_partition_and_a_later_deletion_wins():
    proc = processor()
    ix = indexer(proc)
    ids = [f"it{k}" for k in range(8)]
    asyncio.run(ix.handle([record({"item_id": i, "title": f"Item {i}"}, partition=k % 4) for k, i in enumerate(ids)]))
    asyncio.run(ix.handle([record({"item_id": "it3", "title": "Item it3", "deleted": True}, partition=1)]))  # it3: 3
    sent = ix.outbox.sent
    assert all(topic == "items-changelog" and part == item_partition(key.decode(), 4) for topic, key, _, part in sent)
    assert [(k, v is None) for _, k, v, _ in sent if k == b"it3"] == [(b"it3", False), (b"it3", True)]
    assert "it3" not in proc.model.items

    follower = processor()  # another worker, or a restart: the changelog applied in order
    apply_catalog_changes(follower, [(k, v) for _, k, v, _ in sent])
    assert follower.model.items.index == proc.model.items.index and "it3" not in follower.model.items
    row = proc.model.items.deleted.nonzero()[0].tolist()
    asyncio.run(ix.handle([record({"item_id": "new", "title": "New"}, partition=0)]))
    assert [proc.model.items.index["new"]] == row and not proc.model.items.deleted.any()


class FakeChangelog:
    """A consumer without a group over one partition of catalogue records, ``per_fetch`` at a time."""

    def __init__(self, records: list, per_fetch: int):
        self.records, self.per_fetch, self.at = records, per_fetch, 0

    async def end_offsets(self, tps):
        return {tp: len(self.records) for tp in tps}

    async def seek_to_beginning(self, *tps):
        self.at = 0

    async def position(self, tp):
        return self.at

    async def getmany(self, *tps, timeout_ms=0):
        await asyncio.sleep(0)
        batch, self.at = self.records[self.at:self.at + self.per_fetch], min(len(self.records), self.at + self.per_fetch)
        return {"tp": batch} if batch else {}


def test_records_read_ahead_of_the_model_are_bounded_and_applied_in_order(monkeypatch):
    import stream_app.catalog as catalog
    from stream_app.catalog import CatalogFollower
    from stream_app.store import read_to_end

    monkeypatch.setattr(catalog, "PENDING_MAX", 50)
    proc, applied, most = processor(), [], [0]
    records = [SimpleNamespace(key=f"it{k % 170}".encode(), value=None if k % 97 == 96 else orjson.dumps(
        {"item_id": f"it{k % 170}", "title": f"v{k}", "_vec": "AAAAAAAAAAAAAAAAAAAAAA=="})) for k in range(600)]

    async def main():
        async def run_model(fn, *args):  # the model thread: slower than the reader
            for _ in range(3):
                await asyncio.sleep(0)
            return fn(*args)

        async def drain():
            most[0] = max(most[0], len(follower.pending))
            applied.extend(follower.pending)
            await follower.sync(run_model, proc)

        follower = CatalogFollower("unused:9092", "items-changelog", drain=drain)
        follower._reader = FakeChangelog(records[:400], per_fetch=7)
        await read_to_end(follower._reader, ["tp"], follower._apply, follower._bound)  # a restore
        await follower._drained()
        follower._reader.records += records[400:]
        while follower._reader.at < len(records):  # then followed, as ``_follow`` reads
            await follower._read(0)
        await follower._drained()
        most[0] = max(most[0], len(follower.pending))
        applied.extend(follower.pending)
        await follower.sync(run_model, proc)

    asyncio.run(main())
    assert [(k, v) for k, v in applied] == [(r.key, r.value) for r in records]  # each once, in changelog order
    assert most[0] < 50 + 7  # never more than one fetch past the bound
    whole = processor()
    apply_catalog_changes(whole, [(r.key, r.value) for r in records])
    assert proc.model.items.index == whole.model.items.index


def test_the_worker_freezes_the_catalogue_once_all_of_it_is_in_the_model(monkeypatch):
    import gc

    import stream_app.catalog as catalog
    from stream_app.catalog import CatalogFollower

    monkeypatch.setattr(catalog, "PENDING_MAX", 50)
    monkeypatch.setattr(catalog, "FREEZE_AFTER_READ", True)
    frozen = []  # what the model held when the worker's objects were frozen (not this test process's)
    proc = processor()
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(dict(proc.model.items.index)))
    records = [SimpleNamespace(key=f"it{k}".encode(), value=orjson.dumps(
        {"item_id": f"it{k}", "title": f"v{k}", "_vec": "AAAAAAAAAAAAAAAAAAAAAA=="})) for k in range(120)]

    async def main():
        async def run_model(fn, *args):
            await asyncio.sleep(0)
            return fn(*args)

        follower = CatalogFollower("unused:9092", "items-changelog", drain=lambda: follower.sync(run_model, proc))
        follower._reader = FakeChangelog(records, per_fetch=7)
        await follower._restore(["tp"])
        return follower

    follower = asyncio.run(main())
    assert len(frozen) == 1 and sorted(frozen[0]) == sorted(f"it{k}" for k in range(120))  # the tail under the bound too
    assert not follower.pending
