"""The approximate index (``models.ann``) against brute force through a churning catalogue: what
it returns with every cell scanned, its score moments, and the two ways it learns which rows
changed (its own row hashes, or the caller's list)."""
import numpy as np
import pytest

from models.ann import ItemIndex, cells_for, nprobe_for, row_hashes


def brute(X, live, q, k):
    s = np.where(live, X @ q, -np.inf)
    return set(np.argsort(-s, kind="stable")[:k][np.isfinite(np.sort(-s)[:k])].tolist())


def churn(rng, X, live):
    """Upserts, deletions, reuse of free rows and new rows, as a catalogue sees them -> (X, live,
    the rows it changed)."""
    X, live = X.copy(), live.copy()
    n = len(X)
    changed = rng.choice(n, 7, replace=False)
    X[changed] = rng.normal(size=(7, X.shape[1])).astype(np.float32)
    live[rng.choice(n, 5, replace=False)] = False  # deleted (their vectors stay, as free rows)
    back = rng.choice(np.flatnonzero(~live), min(3, int((~live).sum())), replace=False)
    X[back] = rng.normal(size=(len(back), X.shape[1])).astype(np.float32)  # a free row reused
    live[back] = True
    new = rng.normal(size=(11, X.shape[1])).astype(np.float32)
    X = np.concatenate([X, new])
    live = np.concatenate([live, rng.random(11) < 0.8])
    return X, live, np.concatenate([changed, back])


@pytest.mark.parametrize("told", [False, True])
def test_follows_a_churning_catalogue_as_brute_force(told):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(600, 12)).astype(np.float32)
    live = rng.random(600) < 0.95
    index = ItemIndex()
    index.sync(X, live)
    Q = rng.normal(size=(5, 12)).astype(np.float32)
    for step in range(6):
        X, live, changed = churn(rng, X, live)
        index.sync(X, live, changed if told else None)
        assert index.rebuilds == 1 and len(index) == int(live.sum())
        rows = index.search(Q, 15, nprobe=10**6, keep=10**6)  # every row scanned, ranked exactly
        for q, r in zip(Q, rows):
            assert set(r.tolist()) == brute(X, live, q, 15)
        mean, std = index.score_moments(Q)
        S = Q.astype(np.float64) @ X.T.astype(np.float64)  # every row, free ones too
        np.testing.assert_allclose(mean, S.mean(axis=1), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(std, S.std(axis=1), rtol=1e-9)
    assert index.updates > 0


def test_an_unchanged_catalogue_changes_nothing_and_a_one_bit_change_is_seen():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 8)).astype(np.float32)
    live = np.ones(300, dtype=bool)
    index = ItemIndex()
    index.sync(X, live)
    index.sync(X.copy(), live)
    assert index.updates == 0
    X[17, 3] = np.nextafter(X[17, 3], np.float32(np.inf))  # one ulp
    assert (row_hashes(X) != index._hash).sum() == 1
    index.sync(X, live)
    assert index.updates == 2  # row 17 out and in again


def test_a_new_width_or_a_grown_catalogue_rebuilds():
    rng = np.random.default_rng(3)
    index = ItemIndex()
    index.sync(rng.normal(size=(100, 6)).astype(np.float32), np.ones(100, dtype=bool))
    index.sync(rng.normal(size=(100, 7)).astype(np.float32), np.ones(100, dtype=bool))
    assert index.rebuilds == 2
    index.sync(rng.normal(size=(401, 7)).astype(np.float32), np.ones(401, dtype=bool))
    assert index.rebuilds == 3 and index.cells == cells_for(401)


def test_the_scanned_share_falls_as_the_catalogue_grows():
    shares = [nprobe_for(cells_for(n)) / cells_for(n) for n in (10**4, 10**5, 10**6, 10**7)]
    assert all(a > b for a, b in zip(shares, shares[1:])) and shares[-1] < 0.02
    assert nprobe_for(5) == 5  # a small index: every cell


def test_the_bias_apart_indexes_as_the_joined_array():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(700, 10)).astype(np.float32)
    live = rng.random(700) < 0.9
    joined, apart = ItemIndex(), ItemIndex()
    joined.sync(X, live)
    apart.sync(X[:, :-1], live, bias=X[:, -1])
    for _ in range(3):
        X, live, changed = churn(rng, X, live)
        joined.sync(X, live)
        apart.sync(np.ascontiguousarray(X[:, :-1]), live, bias=X[:, -1].copy())
    Q = rng.normal(size=(4, 10)).astype(np.float32)
    np.testing.assert_array_equal(joined.search(Q, 20, nprobe=8), apart.search(Q, 20, nprobe=8))
    np.testing.assert_array_equal(joined.score_moments(Q), apart.score_moments(Q))
    np.testing.assert_array_equal(joined._hash, apart._hash)


def test_the_exact_vectors_grow_in_blocks_without_moving_and_read_back_exactly(monkeypatch):
    import models.ann as ann

    monkeypatch.setattr(ann, "BLOCK_ROWS", 64)
    rng = np.random.default_rng(5)
    X = rng.normal(size=(150, 7)).astype(np.float32)
    live = rng.random(150) < 0.9
    index = ItemIndex()
    index.sync(X, live)
    first = index._vecs.blocks[0]
    for _ in range(3):
        X, live, changed = churn(rng, X, live)
        index.sync(X, live, changed)
    assert index._vecs.blocks[0] is first and len(index._vecs.blocks) == -(-len(X) // 64)
    np.testing.assert_array_equal(index._vecs[:], X)
    rows = rng.permutation(len(X))[:90]
    np.testing.assert_array_equal(index._vecs[rows], X[rows])
    Q = rng.normal(size=(3, 7)).astype(np.float32)
    for q, r in zip(Q, index.search(Q, 10, nprobe=10**6, keep=10**6)):
        assert set(r.tolist()) == brute(X, live, q, 10)


def test_gathered_products_equal_the_per_user_products_and_refuse_rows_outside():
    from models.ann import gathered_products

    rng = np.random.default_rng(3)
    wide = rng.normal(size=(50, 12)).astype(np.float32)
    U = rng.normal(size=(4, 8)).astype(np.float32)
    rows = rng.integers(0, 50, (4, 7))
    for E in (wide[:, :8], np.ascontiguousarray(wide[:, 2:10]), wide[:, 2:10]):  # a column range, a copy
        want = np.stack([E[r] @ U[b] for b, r in enumerate(rows)])
        np.testing.assert_allclose(gathered_products(E, U, rows), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(IndexError):
        gathered_products(wide[:, :8], U, np.full((4, 7), 50))
