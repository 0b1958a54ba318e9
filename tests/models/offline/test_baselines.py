"""Popularity and item-kNN baselines."""

from __future__ import annotations


import numpy as np
import pytest

from models.offline.base import ItemCatalog
from models.offline.baselines import ItemKNN, Pop
from models.offline.data import Dataset, Interaction, Item
from models.offline.loaders import load_dataset
from models.offline.protocol import replay_evaluate, split_leave_one_out, tune
from tests.data_paths import dataset_dir


def _catalog(ids) -> ItemCatalog:
    return ItemCatalog({i: Item(i, i, i, (), {}, None) for i in ids})


def _random_log(seed: int, n_users: int = 40, n_items: int = 25, per_user: int = 8) -> list[Interaction]:
    rng = np.random.default_rng(seed)
    log, t = [], 0
    for u in range(n_users):
        for i in rng.choice(n_items, size=per_user, replace=False):
            log.append(Interaction(f"u{u}", f"i{i:02d}", t, "click"))
            t += 1
    return log


def _clustered_dataset(seed: int = 0) -> Dataset:
    """Six taste groups of five items each; a user consumes four items of one group.
    Group 0 has three times the users of any other group, so its items lead popularity,
    while co-occurrence points every user at the rest of the own group."""
    rng = np.random.default_rng(seed)
    groups = [[f"g{g}i{i}" for i in range(5)] for g in range(6)]
    items = {i: Item(i, i, i, (), {}, None) for group in groups for i in group}
    log = []
    users = [0] * 30 + [g for g in range(1, 6) for _ in range(10)]
    for u, g in enumerate(users):
        for i in rng.choice(groups[g], size=4, replace=False):
            log.append(Interaction(f"u{u}", str(i), 0, "click"))
    # Random distinct timestamps interleave the users.
    times = rng.permutation(len(log))
    log = [Interaction(e.user_id, e.item_id, int(t), e.type) for e, t in zip(log, times)]
    return Dataset("clusters", items, log)


# --------------------------------------------------------------------------- Pop


def test_pop_counts_and_incremental_updates() -> None:
    cat = _catalog("xyz")
    train = [Interaction("u1", "y", 1, "click"), Interaction("u2", "y", 2, "rating", 2.0),
             Interaction("u2", "x", 3, "review", None, "ok"), Interaction("u3", "ghost", 4, "click")]
    pop = Pop()
    pop.fit(train, cat)
    assert pop.score("u1").tolist() == [1.0, 2.0, 0.0]
    assert pop.score("never-seen").tolist() == [1.0, 2.0, 0.0]
    for ev in train:  # replaying the training log changes nothing
        pop.learn_one(ev)
    assert pop.counts.tolist() == [1.0, 2.0, 0.0]
    pop.learn_one(Interaction("u4", "z", 5, "click"))
    pop.learn_one(Interaction("u4", "z", 6, "click"))
    pop.learn_one(train[0])  # a second, new occurrence of an identical event counts
    assert pop.counts.tolist() == [1.0, 3.0, 2.0]


# --------------------------------------------------------------------------- ItemKNN


def _brute_force_similarity(log: list[Interaction], cat: ItemCatalog, shrink: float) -> np.ndarray:
    users = sorted({e.user_id for e in log})
    x = np.zeros((len(users), len(cat)))
    for e in log:
        x[users.index(e.user_id), cat.index(e.item_id)] = 1.0
    co = x.T @ x
    n = x.sum(axis=0)
    sim = co / (np.sqrt(np.outer(n, n)) + shrink)
    np.fill_diagonal(sim, 0.0)
    return sim


def _dense_weights(knn: ItemKNN, n: int) -> np.ndarray:
    """w[i, j] = contribution of history item i to candidate j."""
    w = np.zeros((n, n))
    for i in range(n):
        lo, hi = knn._indptr[i], knn._indptr[i + 1]
        w[i, knn._cand[lo:hi]] = knn._vals[lo:hi]
    return w


@pytest.mark.parametrize("shrink", [0.0, 5.0])
def test_itemknn_similarity_matches_brute_force(shrink: float) -> None:
    log = _random_log(1)
    cat = _catalog(sorted({e.item_id for e in log}))
    knn = ItemKNN(k=len(cat), shrink=shrink, block_size=7)  # several blocks, no pruning
    knn.fit(log, cat)
    np.testing.assert_allclose(_dense_weights(knn, len(cat)), _brute_force_similarity(log, cat, shrink), atol=1e-12)


def test_itemknn_keeps_top_k_per_candidate() -> None:
    log = _random_log(2)
    cat = _catalog(sorted({e.item_id for e in log}))
    k = 3
    knn = ItemKNN(k=k, shrink=0.0, block_size=10)
    knn.fit(log, cat)
    full = _brute_force_similarity(log, cat, 0.0)
    w = _dense_weights(knn, len(cat))
    for j in range(len(cat)):
        kept = np.sort(w[:, j][w[:, j] > 0])[::-1]
        best = np.sort(full[:, j])[::-1][:k]
        assert len(kept) <= k
        np.testing.assert_allclose(kept, best[best > 0], atol=1e-12)


def test_itemknn_shrink_lowers_similarity() -> None:
    log = _random_log(3)
    cat = _catalog(sorted({e.item_id for e in log}))
    plain, shrunk = ItemKNN(k=5, shrink=0.0), ItemKNN(k=5, shrink=20.0)
    plain.fit(log, cat)
    shrunk.fit(log, cat)
    assert shrunk._vals.max() < plain._vals.max()


def test_itemknn_user_score_is_sum_over_history() -> None:
    log = _random_log(4)
    cat = _catalog(sorted({e.item_id for e in log}))
    knn = ItemKNN(k=6, shrink=2.0)
    knn.fit(log, cat)
    w = _dense_weights(knn, len(cat))
    history = ["i03", "i07", "i11"]
    for t, item in enumerate(history + ["i07"]):  # a repeated item counts once
        knn.learn_one(Interaction("new-user", item, 1000 + t, "click"))
    expected = w[[cat.index(i) for i in history]].sum(axis=0)
    np.testing.assert_allclose(knn.score("new-user"), expected, atol=1e-5)
    # Cold users fall back to popularity order (tiny prior, far below similarities).
    cold = knn.score("cold")
    assert cold.max() < 1e-5
    counts = np.bincount([cat.index(e.item_id) for e in log], minlength=len(cat))
    assert np.array_equal(np.argsort(-cold, kind="stable"), np.argsort(-counts, kind="stable"))


def test_itemknn_scores_summed_again_for_a_user_no_longer_kept_are_the_same_bits() -> None:
    log = _random_log(5, n_users=60, per_user=10)
    cat = _catalog(sorted({e.item_id for e in log}))
    kept, evicting = ItemKNN(k=6, shrink=2.0), ItemKNN(k=6, shrink=2.0)
    for m in (kept, evicting):
        m.fit(log[:300], cat)
    evicting._acc_max = 2  # keeps the last 2 users scored: most scores are summed again
    for ev in log:
        for m in (kept, evicting):
            m.learn_one(ev)
        for u in (ev.user_id, "u3", "u40", "nobody"):
            assert kept.score(u).tobytes() == evicting.score(u).tobytes()
    assert len(evicting._acc) == 2 and len(kept._acc) > 2


def test_itemknn_beats_pop_on_co_occurrence() -> None:
    ds = _clustered_dataset()
    split = split_leave_one_out(ds)
    catalog = ItemCatalog(ds.items)
    results = {}
    for model in (Pop(), ItemKNN(k=10, shrink=0.0)):
        model.fit(split.train, catalog)
        results[model.name] = replay_evaluate(model, split, catalog, k=5, progress=False)
    pop, knn = results["Pop"], results["ItemKNN"]
    assert knn["recall@5"] > pop["recall@5"] + 0.2
    assert knn["ndcg@5"] > pop["ndcg@5"]
    assert knn["prequential_hit@5"] > pop["prequential_hit@5"]


def test_tuning_uses_validation_targets() -> None:
    ds = _clustered_dataset(seed=1)
    split = split_leave_one_out(ds)
    catalog = ItemCatalog(ds.items)
    res = tune(ItemKNN, {"k": [1, 10], "shrink": [0.0, 10.0]}, split, catalog)
    assert len(res.results) == 4
    scores = [m["valid_ndcg@10"] for _, m in res.results]
    assert res.best_score == max(scores)
    assert all(m["n_test"] == 0 for _, m in res.results)


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError):
        ItemKNN(k=0)
    with pytest.raises(ValueError):
        ItemKNN(shrink=-1.0)


# --------------------------------------------------------------------------- real data


@pytest.mark.data
def test_real_ml100k_itemknn_beats_pop_on_validation() -> None:
    ds = load_dataset(dataset_dir("ml-100k"))
    split = split_leave_one_out(ds)
    catalog = ItemCatalog(ds.items)
    scores = {}
    for model in (Pop(), ItemKNN(k=100, shrink=10.0)):
        model.fit(split.train, catalog)
        m = replay_evaluate(model, split, catalog, progress=False, measure=("valid",))
        assert m["n_valid"] == 943
        scores[model.name] = m["valid_ndcg@10"]
    assert 0.02 < scores["Pop"] < scores["ItemKNN"]
