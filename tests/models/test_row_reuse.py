"""Deleted items free their rows: a catalogue with churn keeps as many rows as it has live items,
a new item that takes a deleted item's rows inherits nothing from it, and the lists of live items
are those of a model that never saw the deleted ones."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from models.attention import AttentionFusion
from models.cooc import CoocCounts, CoocModel, CoocParams
from models.dimensions import default_dimensions
from models.engine import Event, InterestModel
from models.items import FREE, ItemVectors
from models.seen import item_key
from tests.models.test_recommend_many import with_sequence

TEXT, CF, CAT = 8, 3, 16
PARAMS = CoocParams(window=4, trans_window=3, trans_decay=0.3, beta=0.7, hist_len=3, k=20)


def build(dense_max: int = 12_288, params: CoocParams = PARAMS, vocabulary=()) -> InterestModel:
    rng = np.random.default_rng(3)
    space = {"text": TEXT, "cf": CF, "category": CAT, "hybrid": TEXT + CF}
    scorer = AttentionFusion.default(default_dimensions(), space)
    scorer.w = {k: rng.normal(size=v.shape).astype(np.float32) if v.size else v for k, v in scorer.w.items()}
    model = InterestModel(scorer, ItemVectors(TEXT, CF, CAT, capacity=16), CoocModel(params, CoocCounts(dense_max)),
                          blend={"attention": 0.5, "co-engagement": 0.3, "popularity": 0.2})
    if vocabulary:
        with_sequence(model, rng, list(vocabulary))
    return model


def add(model: InterestModel, ids) -> None:
    for i in ids:
        rng = np.random.default_rng(zlib.crc32(i.encode()))
        model.add_item(i, rng.normal(size=TEXT).astype(np.float32), [f"g{rng.integers(5)}"])


def events(ids: list[str], n: int, seed: int, users: int = 12) -> list[Event]:
    rng = np.random.default_rng(seed)
    return [Event(f"u{rng.integers(users)}", str(rng.choice(ids)), "rating", float(rng.integers(1, 6)),
                  1000 * k, f"e{seed}-{k}") for k in range(n)]


def test_churn_keeps_the_row_count_of_the_live_items():
    model = build()
    old = [f"a{i}" for i in range(1000)]
    add(model, old)
    for i in old[100:]:
        assert model.delete_item(i)
    assert len(model.items) == 1000 and model.items.live == 100
    add(model, [f"b{i}" for i in range(900)])
    items, counts = model.items, model.cooc.counts
    assert len(items) == items.live == 1000 and FREE not in items.ids
    assert items.space("text").shape == (1000, TEXT) and items.nbytes() <= 1024 * (4 * (2 * (TEXT + CF) + CAT) + 9)
    assert len(counts) == 1000 and counts._dense.shape[0] <= 1250 and not counts._free
    assert sorted(items.index.values()) == list(range(1000))
    assert all(counts.index[i] == items.index[i] for i in items.ids)  # the free lists went in step
    assert model._cooc_rows.rows == [counts.index[i] for i in items.ids]
    for _ in range(3):  # more churn: still 1,000 rows
        live = list(items.ids)
        for i in live[::2]:
            model.delete_item(i)
        add(model, [f"{i}-again" for i in live[::2]])
    assert len(items) == 1000 and len(counts) == 1000


def test_live_lists_equal_those_of_a_model_that_never_saw_the_deleted_items():
    kept = [f"a{i}" for i in range(0, 1000, 10)]
    vocabulary = [f"a{i}" for i in range(0, 1000, 7)] + [f"b{i}" for i in range(0, 900, 3)]
    churned = build(vocabulary=vocabulary)
    add(churned, [f"a{i}" for i in range(1000)])
    for i in range(1000):
        if i % 10:
            churned.delete_item(f"a{i}")
    add(churned, [f"b{i}" for i in range(900)])
    fresh = build(vocabulary=vocabulary)
    add(fresh, churned.items.ids)  # the same rows, without the deleted items
    assert fresh.items.ids == churned.items.ids
    evs = events(kept + [f"b{i}" for i in range(900)], 600, seed=1)
    lists = []
    for model in (churned, fresh):
        states: dict = {}
        model.fold(evs, states)
        lists.append(model.recommend_many([states[u] for u in sorted(states)], k=10))
    for a, b in zip(*lists, strict=True):
        assert [(r.item_id, r.score, r.reasons) for r in a.items] == [(r.item_id, r.score, r.reasons) for r in b.items]
        assert a.dimension_weights == b.dimension_weights
    ca, cb = churned.cooc.counts, fresh.cooc.counts
    assert ca.n[:len(ca)].tobytes() == cb.n[:len(cb)].tobytes()
    for j in range(len(ca)):
        assert ca.row(j).tobytes() == cb.row(j).tobytes()


@pytest.mark.parametrize("dense_max, params", [
    (12_288, PARAMS),
    (8, PARAMS),  # counts per row: only the partners' rows are visited
    (8, CoocParams(window=2, trans_window=4, hist_len=3)),  # follow-on pairs beyond the window: every row
], ids=["dense", "per-row", "per-row-asymmetric"])
def test_a_reused_row_inherits_nothing_and_the_deleted_item_never_comes_back(dense_max, params):
    model = build(dense_max, params, vocabulary=["d", "x1", "x3", "y"])
    xs = [f"x{i}" for i in range(12)]
    add(model, xs + ["d"] + [f"z{i}" for i in range(4)])
    states: dict = {}
    model.fold([Event(f"u{k % 3}", i, "click", None, 10 * k, f"e{k}")  # each user: x, d, x
                for k, i in enumerate(["x1", "x3", "x5", "d", "d", "d", "x2", "x4", "x1"])], states)
    row, crow = model.items.index["d"], model.cooc.index["d"]
    partners = [model.cooc.index[i] for i in ("x1", "x2", "x3", "x4", "x5")]
    assert model.cooc.counts.row(crow)[partners].any() and model.cooc.counts.n[crow] > 0
    assert model.delete_item("d") and not model.delete_item("d")
    assert "d" not in model.items and "d" not in model.cooc.index
    add(model, ["y"])
    counts = model.cooc.counts
    assert model.items.index["y"] == row and model.cooc.index["y"] == crow  # the freed rows, taken again
    assert not counts.row(crow).any() and counts.n[crow] == 0
    assert not any(counts.row(j)[crow] for j in range(len(counts)))
    assert not model.items.deleted[row] and model.items.keys()[row] == item_key("y")
    for u, st in states.items():  # states that still list "d": they work, and "y" is not taken as seen
        assert "d" in st.seen.recent
        assert crow not in model.recent_rows(st, 10) and row not in model.seen_rows(st)
        scores = model.component_scores(st)
        assert scores["co-engagement"][row] == 0.0 and scores["popularity"][row] == 0.0
        ranked = [r.item_id for r in model.recommend(st, k=len(model.items)).items]
        assert "d" not in ranked and "y" in ranked
    for u, st in states.items():  # their next events: one about "d" fails, one about "y" is applied
        with pytest.raises(KeyError):
            model.apply(st, Event(u, "d", "click", None, 10_000, f"{u}-d"))
        assert model.apply(st, Event(u, "y", "click", None, 10_001, f"{u}-y"))
    assert "d" not in [r.item_id for st in states.values() for r in model.recommend(st, k=20).items]


def test_items_keys_and_row_maps_follow_a_reused_row():
    items = ItemVectors(2, 1, 2, capacity=2)
    for i in "abc":
        items.upsert(i, np.ones(2), np.ones(2))
    assert items.keys().tolist() == [item_key(i) for i in "abc"]
    layout = items.layout
    items.delete("b")
    assert items.layout > layout and items.deleted.tolist() == [False, True, False]
    assert items.upsert("d", np.zeros(2), np.zeros(2)) == 1
    assert items.keys().tolist() == [item_key(i) for i in "adc"] and items.ids == list("adc")
    assert items.upsert("e", np.zeros(2), np.zeros(2)) == 3  # no free row: a new one
    with pytest.raises(ValueError):
        items.upsert(FREE, np.zeros(2), np.zeros(2))


@pytest.mark.parametrize("dense_max", [12_288, 2])
def test_counts_with_free_rows_survive_copy_save_and_load(dense_max, tmp_path):
    model = CoocModel(PARAMS, CoocCounts(dense_max))
    for i in "abcd":
        model.add_item(i)
    model.fit([[0, 1, 2, 3], [1, 3]])
    assert model.free_item("b") == 1 and model.free_item("b") is None
    model.save(tmp_path / "c.npz")
    for other in (CoocModel.load(tmp_path / "c.npz", dense_max), model.with_params(PARAMS)):
        c = other.counts
        assert c.ids == ["a", FREE, "c", "d"] and "b" not in c.index
        assert all(c.row(j).tobytes() == model.counts.row(j).tobytes() for j in range(4))
        assert other.add_item("e") == 1 and other.add_item("f") == 4
