"""Collaborative item factors from the interaction log (PureSVD on a weighted user-item matrix).

Each item gets a k-dimensional vector; items that the same users engage with get close vectors.
The collaborative dimension of a user is the decayed mean of these vectors over their events.

The matrix is factorised whole (a dense SVD) while that is cheap, ``min(U, I)^2 * max(U, I)`` up
to ``DENSE_SVD_MAX`` for U users and I items: both shared MovieLens sets, a few seconds. Past it a
dense SVD grows as the cube of the log's size (an 11,000 x 12,000 log: ~15 min on 2 cores; 10^5 x
10^5: 40 GB for the matrix alone), so the matrix is kept sparse and its top ``k`` factors are
found by a randomised truncated SVD (``truncated_svd``: memory and time linear in the number of
interactions), seeded, the same bits for the same log and seed.

>>> ids, F = item_factors([("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "c")], k=2)
>>> sorted(ids)
['a', 'b', 'c']
>>> ia, ib, ic = (ids.index(x) for x in "abc")
>>> bool(F[ia] @ F[ib] > F[ia] @ F[ic])
True
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from scipy import sparse

DENSE_SVD_MAX = 1.2e10  # min(U, I)^2 * max(U, I) of a log factorised whole (ml-latest-small: 3.6e9)
POWER_ITERATIONS = 12  # passes that sharpen the 2k directions tracked towards the top k singular vectors


def item_factors(pairs: Iterable[tuple[str, str]], k: int = 64, seed: int = 0,
                 dense_max: float = DENSE_SVD_MAX) -> tuple[list[str], np.ndarray]:
    """pairs: (user_id, item_id) training interactions. -> (item ids, (n_items, k) unit-norm
    factors). ``seed``: the truncated path's random start (module doc)."""
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    rows, cols = [], []
    for u, i in pairs:
        rows.append(users.setdefault(u, len(users)))
        cols.append(items.setdefault(i, len(items)))
    shape = (len(users), len(items))
    k = max(1, min(k, min(shape) - 1))
    if min(shape) ** 2 * max(shape) <= dense_max:
        _, s, vt = np.linalg.svd(_weighted_dense(rows, cols, shape), full_matrices=False)
    else:
        s, vt = truncated_svd(_weighted_sparse(rows, cols, shape), k, seed)
    F = (vt[:k].T * np.sqrt(s[:k])).astype(np.float32)  # (n_items, k)
    F /= np.linalg.norm(F, axis=1, keepdims=True) + 1e-8
    return list(items), F


def _weighted_dense(rows: list[int], cols: list[int], shape: tuple[int, int]) -> np.ndarray:
    """(U, I) float32: engaged or not, heavy users and popular items damped (a cosine-like
    normalisation) before the factorisation."""
    X = np.zeros(shape, dtype=np.float32)
    np.add.at(X, (np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64)), 1.0)
    X = np.minimum(X, 1.0)
    X /= np.sqrt(X.sum(1, keepdims=True) + 1.0)
    X /= np.sqrt(X.sum(0, keepdims=True) + 1.0) ** 0.5
    return X


def _weighted_sparse(rows: list[int], cols: list[int], shape: tuple[int, int]) -> sparse.csr_matrix:
    """``_weighted_dense``'s matrix, sparse (float64)."""
    X = sparse.csr_matrix((np.ones(len(rows)), (np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64))),
                          shape=shape)
    X.sum_duplicates()
    X.data[:] = 1.0
    X = sparse.diags(1.0 / np.sqrt(np.asarray(X.sum(axis=1)).ravel() + 1.0)) @ X
    return (X @ sparse.diags(1.0 / np.sqrt(np.asarray(X.sum(axis=0)).ravel() + 1.0) ** 0.5)).tocsr()


def truncated_svd(X: sparse.spmatrix, k: int, seed: int = 0, oversample: int | None = None,
                  power: int = POWER_ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` singular values (k,) and right singular vectors (k, I) of ``X`` (U, I), by
    a randomised range finder with power iterations (Halko, Martinsson & Tropp, 2011), each pass
    re-orthonormalised, tracking ``k + oversample`` directions (default 2k). On ml-100k's matrix
    at k = 64 the projection onto the vectors found is the dense SVD's to 5e-4 (16 extra
    directions and 6 passes: 0.04). Each vector's sign is fixed (its largest entry positive), so
    the result depends only on ``X`` and ``seed``.

    >>> X = sparse.csr_matrix(np.array([[3.0, 0, 1], [0, 2, 0], [1, 0, 3], [0, 1, 0]]))
    >>> s, vt = truncated_svd(X, 2)
    >>> np.allclose(s, np.linalg.svd(X.toarray(), compute_uv=False)[:2])
    True
    """
    r = min(k + (k if oversample is None else oversample), min(X.shape))
    Q = np.linalg.qr(X @ np.random.default_rng(seed).standard_normal((X.shape[1], r)))[0]  # (U, r)
    for _ in range(power):
        Q = np.linalg.qr(X @ np.linalg.qr(X.T @ Q)[0])[0]
    _, s, vt = np.linalg.svd((X.T @ Q).T, full_matrices=False)  # Q^T X: (r, I)
    vt = vt[:k]
    big = np.abs(vt).argmax(axis=1)
    vt *= np.where(vt[np.arange(len(vt)), big] < 0, -1.0, 1.0)[:, None]
    return s[:k], vt


def save_factors(path: str | Path, ids: list[str], F: np.ndarray) -> None:
    np.savez_compressed(path, ids=np.array(ids, dtype=object).astype(str), factors=F)


def load_factors(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {str(i): f for i, f in zip(z["ids"], z["factors"])}
