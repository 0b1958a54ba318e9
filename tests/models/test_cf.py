"""Collaborative item factors: a small log factorised whole, a large one by the truncated SVD of
its sparse matrix, which finds the same factors."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

import models.cf as cf
from models.cf import item_factors, truncated_svd


def planted_log(n_users=600, n_items=400, groups=8, per_user=25, seed=0) -> list[tuple[str, str]]:
    """Users who engage mostly within one of ``groups`` item groups, a little at random."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, groups, n_items)
    pairs = []
    for u in range(n_users):
        g = u % groups
        mine = np.flatnonzero(group == g)
        picks = np.concatenate([rng.choice(mine, per_user - 5), rng.integers(0, n_items, 5)])
        pairs += [(f"u{u}", f"i{i}") for i in picks.tolist()]
    return pairs


def test_the_truncated_path_finds_the_dense_factors():
    pairs = planted_log()  # 8 groups: a gap after the 8th singular value
    ids, dense = item_factors(pairs, k=8)
    ids_t, trunc = item_factors(pairs, k=8, dense_max=0)
    assert ids_t == ids
    assert trunc.shape == dense.shape == (len(ids), 8)
    # the factors are a basis of the same subspace, up to signs: compare the item-item cosines
    assert np.abs(trunc @ trunc.T - dense @ dense.T).max() < 1e-3


def test_truncated_singular_values_and_vectors_are_the_top_ones():
    rng = np.random.default_rng(1)
    planted = np.linalg.qr(rng.standard_normal((300, 3)))[0] @ np.diag([9.0, 6.0, 4.0]) \
        @ np.linalg.qr(rng.standard_normal((200, 3)))[0].T
    X = sparse.csr_matrix(planted) + sparse.random(300, 200, density=0.05, random_state=2)  # noise: s < 2
    s, vt = truncated_svd(X.tocsr(), 3)  # three planted directions above the noise
    _, s_d, vt_d = np.linalg.svd(X.toarray(), full_matrices=False)
    assert s == pytest.approx(s_d[:3], rel=1e-9)
    assert np.abs(vt.T @ vt - vt_d[:3].T @ vt_d[:3]).max() < 1e-6  # the same projection
    big = np.abs(vt).argmax(axis=1)
    assert (vt[np.arange(3), big] > 0).all()  # each sign fixed by its largest entry


def test_the_truncated_path_gives_the_same_bits_for_the_same_log_and_seed():
    pairs = planted_log(seed=3)
    a = item_factors(pairs, k=8, seed=5, dense_max=0)[1]
    b = item_factors(pairs, k=8, seed=5, dense_max=0)[1]
    assert np.array_equal(a, b)


def test_a_large_log_is_never_made_dense_and_a_small_one_is_factorised_whole(monkeypatch):
    def no_dense(*args):
        raise AssertionError("a dense users x items matrix")

    monkeypatch.setattr(cf, "_weighted_dense", no_dense)
    rng = np.random.default_rng(0)
    pairs = [(f"u{u}", f"i{i}") for u, i in zip(rng.integers(0, 30_000, 60_000).tolist(),
                                                 rng.integers(0, 20_000, 60_000).tolist())]
    ids, F = item_factors(pairs, k=8)  # 30,000 x 20,000 dense: 2.4 GB and ~10^13 flops
    assert F.shape == (len(ids), 8) and np.isfinite(F).all()
    monkeypatch.undo()

    def no_truncated(*args, **kwargs):
        raise AssertionError("the truncated path for a small log")

    monkeypatch.setattr(cf, "truncated_svd", no_truncated)
    assert item_factors(planted_log(n_users=943, n_items=1682), k=8)[1].shape == (1682, 8)  # ml-100k's size
