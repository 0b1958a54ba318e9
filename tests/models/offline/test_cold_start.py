"""The cold-start protocol: the time cut, the target groups, ID-only models on new items, the
content reference, and the evaluate command end to end on a tiny log (no encoder, no broker)."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from models.offline.base import ItemCatalog
from models.offline.baselines import ContentKNN, ItemKNN, Pop
from models.offline.cold_start import COLD_USER_EVENTS, replay_cold_start, split_cold_start
from models.offline.cold_start_eval import GrownCatalogue
from models.offline.data import Dataset, Interaction, Item, write_jsonl_dataset
from models.offline.protocol import TARGET_TYPES


def item(i: str, published: int | None = None) -> Item:
    return Item(i, i, i, (), {}, published)


def random_log(seed: int = 0) -> Dataset:
    rng = random.Random(seed)
    items = {f"i{j:02d}": item(f"i{j:02d}") for j in range(40)}
    log = [Interaction(f"u{rng.randrange(12)}", f"i{rng.randrange(40):02d}", rng.randrange(200) * 10,
                       rng.choice(["click", "click", "rating", "review"])) for _ in range(600)]
    return Dataset("random", items, sorted(log, key=lambda e: e.ts))


@pytest.mark.parametrize("fraction", [0.5, 0.8, 0.95])
def test_no_event_after_the_cut_reaches_training_and_validation_is_before_it(fraction):
    ds = random_log()
    cs = split_cold_start(ds, fraction)
    events = ds.interactions
    assert cs.split.train and cs.split.valid and cs.targets
    assert all(ev.ts < cs.cut_ts for ev in cs.split.train)
    assert all(ev.ts < cs.cut_ts for ev in cs.split.valid.values())
    before = [ev for ev in events if ev.ts < cs.cut_ts]
    # training + validation = exactly the events before the cut (ties at the cut all go after it)
    assert sorted(map(repr, cs.split.train + list(cs.split.valid.values()))) == sorted(map(repr, before))
    assert abs(len(before) / len(events) - fraction) < 0.1
    after = [p for p, ev in enumerate(cs.events) if ev.ts >= cs.cut_ts and ev.type in TARGET_TYPES]
    assert cs.targets == after
    for user, ev in cs.split.valid.items():  # each user's last consumption event before the cut
        mine = [e for e in before if e.user_id == user and e.type in TARGET_TYPES]
        assert len(mine) >= 3 and ev is mine[-1]
    assert not cs.split.test


def test_targets_can_be_sampled_with_a_seed():
    ds = random_log()
    full = split_cold_start(ds, 0.5)
    a, b = split_cold_start(ds, 0.5, max_targets=20, seed=3), split_cold_start(ds, 0.5, max_targets=20, seed=3)
    assert a.targets == b.targets and len(a.targets) == 20 and set(a.targets) <= set(full.targets)


def test_new_old_and_cold_user_groups_on_a_hand_made_log():
    items = {i: item(i) for i in "abcdefg"}
    rows = [("u1", "a", 0), ("u1", "b", 1), ("u2", "a", 2), ("u1", "c", 3), ("u3", "b", 4),   # before the cut
            ("u1", "d", 5),   # u1: 3 earlier events, new item d
            ("u2", "b", 6),   # u2: 1 earlier event, old item b        -> old, cold user
            ("u4", "d", 7),   # u4: no earlier event, d is new         -> new, cold user
            ("u2", "e", 8),   # u2: 2 earlier events, new item e       -> new, cold user
            ("u2", "a", 9),   # u2 has seen a: not ranked
            ("u1", "c", 10)]  # u1 has seen c: not ranked
    ds = Dataset("hand", items, [Interaction(u, i, t, "click") for u, i, t in rows])
    cs = split_cold_start(ds, fraction=0.5)
    assert cs.cut_ts == 5 and cs.new_items == {"d", "e"}  # f and g never appear: not targets
    assert [cs.groups(p) for p in cs.targets[:4]] == [("new",), ("old", "cold_user"), ("new", "cold_user"),
                                                       ("new", "cold_user")]
    assert COLD_USER_EVENTS == 2
    catalog = ItemCatalog(items)
    pop = Pop()
    pop.fit(cs.split.train, catalog)
    m = replay_cold_start(pop, cs, catalog, progress=False)
    assert (m["n_test"], m["n_test_new"], m["n_test_old"], m["n_test_cold_user"]) == (4, 3, 1, 3)
    assert m["n_test_skipped_seen"] == 2 and m["n_valid"] == 1  # u1's c: the validation target


CUT = 160.5 / 172  # new_item_log: the cut right after its 160 events before


def new_item_log(n_old: int = 30, n_new: int = 6) -> tuple[Dataset, np.ndarray]:
    """Old items all consumed before the cut, new items (published at the cut) consumed after
    it; each new item's text equals the text of the old item its reader read last."""
    rng = np.random.default_rng(0)
    old = [f"o{j:02d}" for j in range(n_old)]
    new = [f"n{j:02d}" for j in range(n_new)]
    twin = [old[(3 * u + 10) % n_old] for u in range(n_new)]  # never read by user u before the cut
    log, t = [], 0
    for u in range(20):  # every old item read by at least 4 users
        for k in range(8):
            log.append(Interaction(f"u{u:02d}", old[(3 * u + k) % n_old], t, "click"))
            t += 1
    cut = t
    for u, n in enumerate(new):  # user u reads an old item, then that item's text twin
        log.append(Interaction(f"u{u:02d}", twin[u], t, "click"))
        log.append(Interaction(f"u{u:02d}", n, t + 1, "click"))
        t += 2
    ids = sorted(old + new)
    vecs = rng.normal(size=(len(ids), 16))
    for u, n in enumerate(new):
        vecs[ids.index(n)] = vecs[ids.index(twin[u])]
    items = {i: item(i, published=cut if i in new else None) for i in ids}
    return Dataset("new-items", items, log), vecs


@pytest.mark.parametrize("model", [Pop(), ItemKNN(k=10, shrink=0.0)], ids=["pop", "itemknn"])
def test_an_id_only_model_never_ranks_a_new_item_in_its_top_10(model):
    ds, _ = new_item_log()
    cs = split_cold_start(ds, fraction=CUT)
    assert all(ds.interactions[p].ts >= cs.cut_ts for p in cs.targets)
    catalog = ItemCatalog(ds.items)
    model.fit(cs.split.train, catalog)
    m = replay_cold_start(model, cs, catalog, progress=False)
    assert m["n_test_new"] == 6
    # every old item has behaviour before the cut and so a higher score than any new item:
    # a new item ranks at best after all the user's unseen old items (>= 22 of them)
    assert m["recall@10_new"] == 0.0 and m["ndcg@10_new"] == 0.0
    assert m["rank_pct_new"] > 0.5  # below chance: after every old item


def test_the_content_reference_ranks_a_text_identical_new_item_first():
    ds, vecs = new_item_log()
    cs = split_cold_start(ds, fraction=CUT)
    catalog = ItemCatalog(ds.items)
    cb = ContentKNN(vecs, recent=1)
    cb.fit(cs.split.train, catalog)
    m = replay_cold_start(cb, cs, catalog, progress=False)
    assert m["n_test_new"] == 6 and m["ndcg@10_new"] == 1.0 and m["recall@10_new"] == 1.0
    assert m["rank_pct_new"] == 0.0


def test_items_not_yet_available_are_not_ranked():
    """Two text twins of the user's item; the one published later (and first in catalogue order,
    which wins ties) cannot take the first place."""
    items = {"a": item("a"), "b": item("b"), "c_late": item("c_late", 50), "d_early": item("d_early", 5)}
    vecs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])  # in catalogue (sorted id) order
    log = [Interaction("u1", "a", 0, "click"), Interaction("u2", "b", 1, "click"),
           Interaction("u1", "d_early", 10, "click")]
    cs = split_cold_start(Dataset("avail", items, log), fraction=0.7)
    catalog = ItemCatalog(items)
    assert cs.cut_ts == 10 and catalog.ids == ("a", "b", "c_late", "d_early")
    cb = ContentKNN(vecs, recent=1)
    cb.fit(cs.split.train, catalog)
    m = replay_cold_start(cb, cs, catalog, k=1, progress=False)
    assert m["n_test_new"] == 1 and m["recall@1_new"] == 1.0


class _Rows:
    def __init__(self, ids):
        self.index = {i: r for r, i in enumerate(ids)}


class _Inner:
    """A model whose rows are in training order, then the items added after it."""
    name = "inner"

    def __init__(self, ids):
        self.model = type("M", (), {"items": _Rows(ids)})()
        self.ids = ids

    def score(self, user_id):
        return np.arange(len(self.ids), dtype=float)  # score = own row


def test_a_grown_catalogue_puts_the_scores_back_in_catalogue_order():
    catalog = ItemCatalog({i: item(i) for i in "abcd"})
    grown = GrownCatalogue(_Inner(["b", "d", "a", "c"]), catalog)  # trained on b, d; a, c added after
    assert grown.score("u").tolist() == [2.0, 0.0, 3.0, 1.0]


def test_evaluate_cold_start_end_to_end(tmp_path):
    from models.offline.evaluate import run_evaluation

    ds, _ = new_item_log()
    write_jsonl_dataset(ds, tmp_path / "data")
    metrics = run_evaluation(tmp_path / "data", tmp_path / "out", only=["pop", "itemknn"], progress=False,
                             protocol="cold-start", cut=CUT)
    assert metrics["protocol"].startswith("cold start")
    doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for name in ("pop", "itemknn"):
        m = doc["models"][name]
        assert m["n_test_new"] == 6 and m["recall@10_new"] == 0.0 and "ID-only" in m["new_items"]
        assert m["n_test"] == 12 and m["n_test_old"] == 6
    with pytest.raises(ValueError):
        run_evaluation(tmp_path / "data", tmp_path / "out2", only=["pop"], progress=False, protocol="nope")
