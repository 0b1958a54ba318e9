"""Co-engagement learned online: a batch's per-item deltas are the additions ``update_many``
makes; neighbour rows fold them by offset, bounded and decayed by event time; the followed rows
are added to the checkpoint's counts when scoring, compactly."""
from __future__ import annotations

import numpy as np
import orjson
import pytest

from models.cooc import CoocModel, CoocParams
from models.cooc.online import NeighbourRow, apply_rows, decode_delta, encode_delta
from models.cooc.table import RowTable, fold_records
from models.engine import Event
from tests.models.reference_cooc_fold import fold_each, largest
from tests.models.test_cooc import PARAMS, engine, random_log


def folded(messages, half_life_ms: float = 0.0, top_m: int = 64, table: RowTable | None = None) -> RowTable:
    """``messages`` (item id, offset, pair message) folded as one aggregator batch."""
    table = RowTable() if table is None else table
    fold_records(table, messages, {}, half_life_ms, top_m)
    return table


def records(table: RowTable) -> list[tuple[str, bytes]]:
    """Every row of ``table`` as its changelog record."""
    items = sorted(table.rows)
    return list(zip(items, table.to_bytes(items)))


def engagements(n_items=12, n=300, seed=0, span=4):
    rng = np.random.default_rng(seed)
    return [(rng.choice(n_items, size=int(rng.integers(0, span + 1)), replace=False).tolist(), int(rng.integers(n_items)))
            for _ in range(n)]


def fresh(params=PARAMS, n_items=12) -> CoocModel:
    m = CoocModel(params)
    for i in range(n_items):
        m.add_item(f"i{i}")
    return m


@pytest.mark.parametrize("params", [PARAMS, CoocParams(window=3, trans_window=4, beta=0.7, trans_decay=0.3)],
                         ids=["dyadic weights", "trans window past the window, other weights"])
def test_batch_deltas_are_what_update_many_adds_bit_for_bit(params):
    eng = engagements()
    direct, summed = fresh(params), fresh(params)
    deltas = direct.deltas(eng)
    direct.update_many(eng)
    for row, d in deltas.items():  # one message per touched row, added to zero counts
        assert np.all(np.diff(d.cols) > 0) and d.vals.dtype == np.float32
        summed.counts.add(np.full(d.cols.size, row), d.cols, d.vals)
        summed.counts.n[row] += d.n
    for j in range(12):
        assert direct.counts.row(j).tobytes() == summed.counts.row(j).tobytes()
    assert direct.counts.n.tobytes() == summed.counts.n.tobytes()
    touched = {int(r) for r in np.nonzero(direct.counts.n)[0]} | \
        {j for j in range(12) if direct.counts.row(j).any()}
    assert set(deltas) == touched  # one per touched item, none for an untouched one


def test_the_engine_hands_the_same_engagements_to_the_worker():
    log = random_log(n_users=6, n_items=10, n_events=120)
    events = [Event(u, f"i{i}", "click", None, 1000 * n, f"e{n}") for n, (u, i) in enumerate(log)]
    local, worker = engine(10), engine(10)
    local.fold(events, {})
    pairs: list = []
    worker.fold(events, {}, pairs=pairs)
    assert not worker.cooc.counts.n.any()  # the worker's counts are not touched
    assert [t for _, t in pairs] == sorted(t for _, t in pairs)
    ids = worker.cooc.counts.ids
    msgs = [(ids[r], k, encode_delta(d, ids)) for k, (r, d) in
            enumerate(worker.cooc.deltas([e for e, _ in pairs], [t for _, t in pairs]).items())]
    apply_rows(worker.cooc, records(folded(msgs)))
    for j in range(10):
        np.testing.assert_array_equal(local.cooc.similarity_row(j)[1], worker.cooc.similarity_row(j)[1])
        np.testing.assert_array_equal(local.cooc.similarity_row(j)[0], worker.cooc.similarity_row(j)[0])
    np.testing.assert_array_equal(local.cooc.popularity(), worker.cooc.popularity())
    st = local.new_state()
    for e in events[:5]:
        local.apply(st, e, learn=False)
    np.testing.assert_allclose(local.cooc.scores(local.recent_rows(st, 5)),
                               worker.cooc.scores(worker.recent_rows(st, 5)), rtol=1e-6)


def split_messages(model: CoocModel, eng, times, parts: int, half_life_ms: float, seed: int):
    """The engagements cut into ``parts`` batches (as several workers would), each batch's
    deltas as messages, all shuffled, at consecutive offsets per item."""
    rng = np.random.default_rng(seed)
    cut = np.sort(rng.choice(np.arange(1, len(eng)), size=parts - 1, replace=False)).tolist()
    msgs = []
    for a, b in zip([0] + cut, cut + [len(eng)]):
        ids = model.counts.ids
        msgs += [(ids[r], encode_delta(d, ids)) for r, d in model.deltas(eng[a:b], times[a:b], half_life_ms).items()]
    order = rng.permutation(len(msgs))
    return [(msgs[k][0], n, msgs[k][1]) for n, k in enumerate(order)]


@pytest.mark.parametrize("half_life_ms", [0.0, 5_000.0], ids=["no decay", "decay"])
def test_folding_does_not_depend_on_batches_or_order(half_life_ms):
    m = fresh()
    eng = engagements(n=400, seed=3)
    times = (1_000_000 + 100 * np.arange(len(eng))).tolist()
    rows = []
    for parts, seed in ((1, 0), (5, 1), (17, 2)):
        msgs = split_messages(m, eng, times, parts, half_life_ms, seed)
        table = RowTable()
        for a in range(0, len(msgs), 7):  # in aggregator batches of 7 messages
            fold_records(table, msgs[a:a + 7], {}, half_life_ms, 64)
        rows.append({i: table.row(i) for i in table.rows})
    for other in rows[1:]:
        assert set(other) == set(rows[0])
        for item, r in rows[0].items():
            assert other[item].ts == r.ts and set(other[item].nb) == set(r.nb)
            if half_life_ms == 0:  # sums of the rule's dyadic weights: exact
                assert other[item].n == r.n and other[item].nb == r.nb
            else:
                assert other[item].n == pytest.approx(r.n, rel=1e-9)
                for k, v in r.nb.items():
                    assert other[item].nb[k] == pytest.approx(v, rel=1e-6)
    if half_life_ms:  # decayed: the oldest engagements count less than in plain sums
        table = folded(split_messages(m, eng, times, 1, 0.0, 0))
        plain = {i: table.row(i) for i in table.rows}
        assert all(rows[0][i].n < plain[i].n for i in plain)
        expected = sum(0.5 ** ((rows[0]["i3"].ts - t) / half_life_ms) for (_, r), t in zip(eng, times) if r == 3)
        assert rows[0]["i3"].n == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("half_life_ms", [0.0, 5_000.0], ids=["no decay", "decay"])
def test_the_batch_fold_is_the_message_by_message_rule(half_life_ms):
    m = fresh()
    eng = engagements(n=400, seed=7)
    times = (1_000_000 + 100 * np.arange(len(eng))).tolist()
    msgs = split_messages(m, eng, times, 9, half_life_ms, 4)
    msgs += msgs[:20]  # read again: skipped by offset
    reference: dict[str, NeighbourRow] = {}
    table = RowTable()
    for a in range(0, len(msgs), 25):
        batch = msgs[a:a + 25]
        written = fold_records(table, batch, {}, half_life_ms, 64)
        assert [i for i, _ in written] == sorted(fold_each(reference, batch, half_life_ms))  # the rows that changed
        assert all(NeighbourRow.from_bytes(v) == table.row(i) for i, v in written)
    assert set(table.rows) == set(reference)
    for item, want in reference.items():
        got = table.row(item)
        assert (got.ts, got.offset, set(got.nb)) == (want.ts, want.offset, set(want.nb))
        if half_life_ms == 0:  # the rule's dyadic weights: exact
            assert got.n == want.n and got.nb == want.nb
        else:
            assert got.n == pytest.approx(want.n, rel=1e-9)
            assert got.nb == pytest.approx(want.nb, rel=1e-9)


def test_a_table_restored_from_records_folds_on_to_the_same_rows():
    """A restarted aggregator restores the rows it lacks from their records, a batch at a time,
    and its neighbour-id codes (one id -> code map per table, grown as ids arrive) stay right."""
    m = fresh(n_items=90)
    eng = engagements(n_items=90, n=600, seed=11)
    times = (1_000_000 + 100 * np.arange(len(eng))).tolist()
    msgs = split_messages(m, eng, times, 7, 0.0, 5)
    half = len(msgs) // 2
    whole, first = RowTable(), RowTable()
    for a in range(0, len(msgs), 9):
        fold_records(whole, msgs[a:a + 9], {})
    for a in range(0, half, 9):
        fold_records(first, msgs[a:min(a + 9, half)], {})
    stored = dict(records(first))
    restored = RowTable()
    for a in range(half, len(msgs), 9):
        batch = msgs[a:a + 9]
        fold_records(restored, batch, {i: stored.get(i) for i, _, _ in batch if i not in restored})
    assert len(restored.code) > 64  # the names array grew past its first size
    assert all(restored.names[c] == i for i, c in restored.code.items())
    for item in restored.rows:
        assert restored.row(item) == whole.row(item)


@pytest.mark.parametrize("half_life_ms", [0.0, 3_600_000.0], ids=["no decay", "decay"])
def test_a_tables_records_are_the_bytes_of_its_rows_one_by_one(half_life_ms):
    """The changelog records a table writes in one pass are byte for byte those of each row as a
    ``NeighbourRow`` (the form followers and a restored aggregator read back)."""
    m = fresh(n_items=40)
    eng = engagements(n_items=40, n=400, seed=3)
    times = (1_000_000 + 977 * np.arange(len(eng))).tolist()
    msgs = split_messages(m, eng, times, 5, half_life_ms, 0)
    table = RowTable()
    for a in range(0, len(msgs), 13):
        fold_records(table, msgs[a:a + 13], {}, half_life_ms, top_m=8)
    got = records(table)
    assert len(got) > 20 and any(len(orjson.loads(v)["w"]) > 1 for _, v in got)
    for item, value in got:
        assert value == table.row(item).to_bytes()
        assert NeighbourRow.from_bytes(value) == table.row(item)


def test_rows_are_bounded_and_keep_their_largest_neighbours():
    table = RowTable()
    for k in range(100):  # one message per batch
        value = orjson.dumps({"n": 1.0, "ts": 0, "ids": [f"x{k}", "big"], "w": [1.0 + k / 1000, 50.0]})
        fold_records(table, [("a", k, value)], {}, top_m=4)
        assert len(table.row("a").nb) <= 8
    row = table.row("a")
    assert "big" in row.nb and row.nb["big"] == 5000.0
    assert row.n == 100.0


def test_a_batch_past_twice_top_m_keeps_its_top_m_largest_ties_to_the_smaller_id():
    rng = np.random.default_rng(3)
    msgs, sums = [], {}
    for k in range(30):
        ids = [f"n{j}" for j in rng.choice(40, size=6, replace=False)]
        w = rng.integers(1, 4, size=6).astype(float).tolist()  # small integers: many ties at the cut
        msgs.append(("a", k, orjson.dumps({"n": 1.0, "ts": 0, "ids": ids, "w": w})))
        for i, x in zip(ids, w):
            sums[i] = sums.get(i, 0.0) + x
    assert len(sums) > 10
    assert folded(msgs, top_m=5).row("a").nb == largest(sums, 5)
    assert folded(msgs, top_m=len(sums)).row("a").nb == sums  # within 2 * top_m: no cut


def test_online_rows_add_to_the_checkpoint_counts_and_are_freed_with_their_item():
    base = fresh()
    base.update_many(engagements(n=50, seed=5))
    served = CoocModel(PARAMS, base.counts.copy())
    more = engagements(n=80, seed=6)
    ids = base.counts.ids
    table = folded([(ids[r], 0, encode_delta(d, ids)) for r, d in base.deltas(more).items()])
    before = served.similarity_row(0)
    apply_rows(served, records(table) + [("new-item", NeighbourRow(1.0, 0, 0, {"i0": 2.0}).to_bytes())])
    assert "new-item" in served.index  # a neighbour or row the counts did not know gets a row
    base.update_many(more)
    for j in range(12):
        np.testing.assert_allclose(served.similarity_row(j)[1], base.similarity_row(j)[1], rtol=1e-6)
    assert served.similarity_row(0)[1].tobytes() != before[1].tobytes()  # the cache followed the rows
    j = served.index["i4"]
    served.free_item("i4")
    assert served.online.rows[j].size == 0 and served.online.n[j] == 0
    assert all(j not in a["row"] for a in served.online.rows)


def test_online_row_memory_per_item_is_small():
    from models.cooc.rows import OnlineRows

    online, M, items = OnlineRows(), 64, 2000
    rng = np.random.default_rng(0)
    for j in range(items):
        cols = rng.choice(items, size=M, replace=False)
        online.set(j, 3.0, 1000, cols, rng.random(M).astype(np.float32) + 0.1)
    per_item = online.nbytes() / items
    assert 8 * M < per_item < 8 * M + 300, per_item  # 8 bytes per neighbour and a small header


def test_a_model_serving_online_rows_ranks_like_one_that_learned_locally_exactly_and_in_two_stages():
    from models.candidates import CandidateSizes
    from tests.models.test_candidates import ranked
    from tests.models.test_fold import features, stream, trained_like
    from tests.models.test_recommend_many import assert_same_lists

    params = CoocParams(window=4, trans_window=2, trans_decay=0.3)
    rng_a, rng_b = np.random.default_rng(4), np.random.default_rng(4)
    local, worker = trained_like(4, CoocModel(params)), trained_like(4, CoocModel(params))
    local_states: dict = {}
    worker_states: dict = {}
    local.fold(stream(rng_a, 400), local_states, features(rng_a, 8), on_error=lambda ev, exc: None)
    pairs: list = []
    worker.fold(stream(rng_b, 400), worker_states, features(rng_b, 8), on_error=lambda ev, exc: None, pairs=pairs)
    ids = worker.cooc.counts.ids
    deltas = worker.cooc.deltas([e for e, _ in pairs], [t for _, t in pairs])
    apply_rows(worker.cooc, records(folded([(ids[r], 0, encode_delta(d, ids)) for r, d in deltas.items()])))
    users = sorted(local_states)
    a, b = [local_states[u] for u in users], [worker_states[u] for u in users]
    assert_same_lists(ranked(worker, b, "exact"), ranked(local, a, "exact"))
    worker.ranking.sizes = CandidateSizes(ann=1000, sequence=1000, popular=1000, fresh=1000)
    assert_same_lists(ranked(worker, b, "two-stage"), ranked(worker, b, "exact"))


def test_a_new_model_keeps_the_online_rows_by_item_id():
    from models.cooc.online import carry_rows, rows_by_id

    old = fresh()
    ids = old.counts.ids
    table = folded([(ids[r], 0, encode_delta(d, ids)) for r, d in old.deltas(engagements(n=60, seed=8)).items()])
    apply_rows(old, records(table))
    new = CoocModel(PARAMS)
    for i in ["x", "y", *reversed(ids)]:  # other rows for the same items, and items of its own
        new.add_item(i)
    assert carry_rows(old, new) == len(rows_by_id(old)) == len(table) > 0
    assert rows_by_id(new) == rows_by_id(old)


def test_online_row_memory_is_counted_as_rows_change():
    import sys

    from models.cooc.rows import OnlineRows

    online = OnlineRows()
    for j in range(50):
        online.set(j, 1.0, 0, [(j + k) % 50 for k in range(1, 9)], [1.0] * 8)
    online.set(3, 2.0, 0, [4], [1.0])
    online.free(7)
    held = sum(sys.getsizeof(a) for a in online.rows if a.size)
    assert online.nbytes() == held + online.n.nbytes + online.ts.nbytes + 8 * len(online.rows)


def test_applied_rows_tell_the_latest_event_time_they_are_valued_at():
    served = CoocModel(PARAMS)
    rows = [("a", NeighbourRow(1.0, 7_000, 0, {"b": 1.0}).to_bytes()), ("b", NeighbourRow(1.0, 9_000, 0, {}).to_bytes()),
            ("a", NeighbourRow(2.0, 5_000, 1, {"b": 2.0}).to_bytes())]  # a's last record stands for its first
    assert apply_rows(served, rows) == 9_000
    assert apply_rows(served, [("b", None)]) == 0  # a tombstone has no time
    assert apply_rows(served, []) == 0
