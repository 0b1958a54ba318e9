"""The co-engagement stream without Kafka: a worker batch becomes one pair message per touched
item and leaves the served counts alone; the follower applies rows in changelog order and passes
over epoch markers and a former aggregator's late writes."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np

from models.cooc.online import NeighbourRow
from models.cooc.table import RowTable
from stream_app import fencing
from stream_app.codec import Codec
from stream_app.cooc_stream import CoocFollower
from stream_app.processor import Processor
from stream_app.sensor import Sensor
from tests.models.test_cooc import engine
from tests.stream_app.test_processor import TinyEncoder, ev


def processor(half_life_ms: float | None) -> Processor:
    p = Processor(engine(8), TinyEncoder(), lambda text: 0.5, Codec.load(), top_k=3)
    p.pairs_half_life_ms = half_life_ms
    return p


def batch() -> list[dict]:
    items = ["i0", "i1", "i2", "i3", "i1", "i4", "i5", "i2", "i6", "i0", "i7"]
    return [ev(f"e{n}", f"u{n % 3}", i, ts=1000 + n) for n, i in enumerate(items)]


def test_a_worker_batch_becomes_one_pair_message_per_touched_item():
    local, worker = processor(None), processor(0.0)
    local.apply_batch(batch(), {})
    result = worker.apply_batch(batch(), {})
    assert not worker.model.cooc.counts.n.any()  # served counts: the checkpoint's, unchanged
    items = [item for item, _ in result.pairs]
    assert result.engagements == 9  # u0's i0 and u1's i1 again: re-engagements add nothing
    assert sorted(items) == [f"i{k}" for k in range(8)]  # one message per touched item, 8 for 9 engagements
    table = RowTable()
    table.fold([(item, k, value) for k, (item, value) in enumerate(result.pairs)])
    rows = {i: table.row(i) for i in table.rows}
    counts = local.model.cooc.counts
    for item, row in rows.items():
        j = counts.index[item]
        assert row.n == counts.n[j]
        got = {counts.index[i]: w for i, w in row.nb.items()}
        want = counts.row(j)
        assert got == {int(c): float(want[c]) for c in np.flatnonzero(want)}
    assert sum(r.n for r in rows.values()) == counts.n.sum()


def record(partition, offset, key, value, epoch=None):
    headers = [] if epoch is None else fencing.headers(epoch, "m")
    return SimpleNamespace(partition=partition, offset=offset, key=key, value=value, headers=headers)


def test_the_follower_applies_rows_in_order_and_passes_over_stale_epochs():
    sensor = Sensor()
    f = CoocFollower("unused:9092", "rows", sensor=sensor)
    p = processor(0.0)
    row = lambda n: NeighbourRow(n, 5, 1, {"i1": float(n)}).to_bytes()  # noqa: E731
    f._take(record(0, 0, fencing.MARKER_KEY, b"{}", epoch=2))
    f._take(record(0, 1, b"i0", row(1.0), epoch=2))
    f._take(record(0, 2, b"i0", row(9.0), epoch=1))  # a former owner's late write: passed over
    f._take(record(1, 0, b"i2", row(3.0)))
    f._take(record(1, 1, b"i2", None))  # a tombstone empties the row

    async def run_model(fn, *args):
        return fn(*args)

    asyncio.run(f.sync(run_model, p))
    cooc = p.model.cooc
    assert cooc.online.snapshot(cooc.index["i0"], cooc.counts.ids)["neighbours"] == {"i1": 1.0}
    assert cooc.online.snapshot(cooc.index["i2"], cooc.counts.ids) == {"n": 0.0, "ts": 0, "neighbours": {}}
    assert f.applied == {0: 3, 1: 2} and sensor.stats()["cooc"]["applied_offsets"] == {"0": 3, "1": 2}
    assert sensor.stats()["cooc"]["rows_followed"] == 3


def test_the_follower_applies_rows_at_most_every_interval_and_says_where_the_model_stands():
    sensor = Sensor()
    f = CoocFollower("unused:9092", "rows", sensor=sensor, apply_every_s=3600.0)
    p = processor(0.0)
    row = lambda n: NeighbourRow(n, 5, 1, {"i1": float(n)}).to_bytes()  # noqa: E731
    calls = []

    async def run_model(fn, *args):
        calls.append(fn)
        return fn(*args)

    cooc = p.model.cooc
    f._take(record(0, 0, b"i0", row(1.0)))
    asyncio.run(f.sync(run_model, p))  # the first call applies
    f._take(record(0, 1, b"i0", row(2.0)))
    f._take(record(0, 2, b"i2", row(3.0)))
    asyncio.run(f.sync(run_model, p))  # within the interval: waits
    assert len(calls) == 1 and f.applied == {0: 1} and sensor.stats()["cooc"]["applied_offsets"] == {"0": 1}
    assert cooc.online.snapshot(cooc.index["i0"], cooc.counts.ids)["n"] == 1.0
    f._applied_at -= 3600.0  # the interval has passed
    asyncio.run(f.sync(run_model, p))
    assert len(calls) == 2 and f.applied == {0: 3} and sensor.stats()["cooc"]["applied_offsets"] == {"0": 3}
    assert cooc.online.snapshot(cooc.index["i0"], cooc.counts.ids)["n"] == 2.0  # the item's last record
    assert cooc.online.snapshot(cooc.index["i2"], cooc.counts.ids)["n"] == 3.0


def test_the_follower_applies_a_round_in_slices_between_batches(monkeypatch):
    from stream_app import cooc_stream

    monkeypatch.setattr(cooc_stream, "APPLY_SLICE", 2)
    sensor = Sensor()
    f = CoocFollower("unused:9092", "rows", sensor=sensor, apply_every_s=3600.0)
    f._restored = True  # serving: the changelog read at start was applied
    p = processor(0.0)
    row = lambda n: NeighbourRow(n, 5, 1, {"i1": float(n)}).to_bytes()  # noqa: E731
    applied = []

    async def run_model(fn, processor, rows):
        applied.append([item for item, _ in rows])
        return fn(processor, rows)

    for k, item in enumerate(["i0", "i2", "i0", "i3", "i4", "i5"]):  # i0 twice: its last record stands
        f._take(record(0, k, item.encode(), row(float(k))))
    asyncio.run(f.sync(run_model, p, between_batches=True))
    f._take(record(0, 6, b"i6", row(6.0)))  # read meanwhile: a later round
    asyncio.run(f.sync(run_model, p, between_batches=True))
    assert applied == [["i0", "i2"], ["i3", "i4"]]
    assert f.applied == {} and sensor.stats()["cooc"]["rows_followed"] == 0  # the round is not complete
    asyncio.run(f.sync(run_model, p))  # the timer, after a batch: a slice too
    assert applied[-1] == ["i5"] and f.applied == {0: 6} and sensor.stats()["cooc"]["rows_followed"] == 6
    cooc = p.model.cooc
    assert cooc.online.snapshot(cooc.index["i0"], cooc.counts.ids)["n"] == 2.0
    f._applied_at -= 3600.0
    for k, item in enumerate(["i7", "i8", "i9"], start=7):
        f._take(record(0, k, item.encode(), row(float(k))))
    asyncio.run(f.sync(run_model, p))  # the timer with no batch since its last call: the whole round
    assert applied[-1] == ["i6", "i7", "i8", "i9"] and f.applied == {0: 10}


def test_the_follower_applies_what_it_read_at_start_whole(monkeypatch):
    from stream_app import cooc_stream

    monkeypatch.setattr(cooc_stream, "APPLY_SLICE", 1)
    f = CoocFollower("unused:9092", "rows", sensor=Sensor())
    p = processor(0.0)
    row = lambda n: NeighbourRow(n, 5, 1, {"i1": float(n)}).to_bytes()  # noqa: E731
    for k in range(3):
        f._take(record(0, k, f"i{k}".encode(), row(1.0)))

    async def run_model(fn, *args):
        return fn(*args)

    asyncio.run(f.sync(run_model, p, between_batches=True))
    assert f.applied == {0: 3} and f._restored


def test_rounds_come_less_often_when_they_take_more_than_their_share_of_the_model_thread(monkeypatch):
    import time

    from stream_app import cooc_stream

    sensor = Sensor()
    f = CoocFollower("unused:9092", "rows", sensor=sensor, apply_every_s=0.0)
    f._restored = True
    p = processor(0.0)
    row = lambda n: NeighbourRow(n, 5, 1, {"i1": float(n)}).to_bytes()  # noqa: E731
    slow = [0.2]

    async def run_model(fn, *args):
        time.sleep(slow[0])  # the round's cost in the model thread
        return fn(*args)

    f._take(record(0, 0, b"i0", row(1.0)))
    asyncio.run(f.sync(run_model, p, between_batches=True))
    assert f.applied == {0: 1} and f.gap_s >= 0.2 / cooc_stream.FOLLOW_SHARE
    assert sensor.stats()["cooc"]["apply_gap_s"] == round(f.gap_s, 3)
    f._take(record(0, 1, b"i2", row(2.0)))
    asyncio.run(f.sync(run_model, p, between_batches=True))  # within the gap: the record waits
    assert f.applied == {0: 1} and f.pending
    slow[0] = 0.0
    f._applied_at -= f.gap_s
    asyncio.run(f.sync(run_model, p, between_batches=True))
    assert f.applied == {0: 2} and f.gap_s < 0.2 / cooc_stream.FOLLOW_SHARE  # a cheap round: back to short gaps
    monkeypatch.setattr(cooc_stream, "FOLLOW_SHARE", 1e-12)
    f._take(record(0, 2, b"i3", row(3.0)))
    f._applied_at -= f.gap_s
    asyncio.run(f.sync(run_model, p, between_batches=True))
    assert f.applied == {0: 3} and f.gap_s == cooc_stream.MAX_GAP_S
    f._take(record(0, 3, b"i4", row(4.0)))
    asyncio.run(f.sync(run_model, p, between_batches=True))  # busy: the record waits for the gap
    asyncio.run(f.sync(run_model, p))  # the timer, a batch since its last call: still busy
    assert f.applied == {0: 3}
    asyncio.run(f.sync(run_model, p))  # the timer again, no batch since: idle, the gap does not hold
    assert f.applied == {0: 4}


def test_a_batch_in_flight_longer_than_the_timer_keeps_the_worker_busy(monkeypatch):
    from stream_app import cooc_stream

    monkeypatch.setattr(cooc_stream, "FOLLOW_SHARE", 1e-12)  # any round: the longest gap
    f = CoocFollower("unused:9092", "rows", sensor=Sensor(), apply_every_s=0.0)
    f._restored = True
    p = processor(0.0)
    row = lambda n: NeighbourRow(n, 5, 1, {"i1": float(n)}).to_bytes()  # noqa: E731

    async def run_model(fn, *args):
        return fn(*args)

    f._take(record(0, 0, b"i0", row(1.0)))
    asyncio.run(f.sync(run_model, p, between_batches=True))  # a batch of a backlog begins
    assert f.applied == {0: 1} and f.gap_s == cooc_stream.MAX_GAP_S
    f._take(record(0, 1, b"i2", row(2.0)))
    for _ in range(3):  # timer calls while that batch runs on: no batch began since, but one is in flight
        asyncio.run(f.sync(run_model, p, batch_in_flight=True))
    assert f.applied == {0: 1} and f.pending  # busy: the record waits for the gap
    asyncio.run(f.sync(run_model, p))  # the batch is done and no other began: idle
    assert f.applied == {0: 2}


def test_followed_rows_move_the_freshness_clock_to_the_clusters_event_time():
    from models.engine import InterestModel

    base = processor(0.0)
    news = InterestModel(base.model.attention, base.model.items, base.model.cooc, domain="news")
    p = Processor(news, TinyEncoder(), lambda text: 0.5, Codec.load(), top_k=3)
    f = CoocFollower("unused:9092", "rows", sensor=Sensor())
    f._take(record(0, 0, b"i0", NeighbourRow(1.0, 86_400_000, 1, {"i1": 1.0}).to_bytes()))
    f._take(record(1, 0, b"i2", NeighbourRow(1.0, 2 * 86_400_000, 1, {"i1": 1.0}).to_bytes()))  # another worker's

    async def run_model(fn, *args):
        return fn(*args)

    assert news.freshness.now == -np.inf  # no event folded yet: a restarted worker
    asyncio.run(f.sync(run_model, p, between_batches=True))
    assert news.freshness.now == 2 * 86_400_000
    assert base.model.freshness is None  # the default domain has no freshness: rows apply as before
