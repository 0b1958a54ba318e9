"""Collaborative item factors from the interaction log (PureSVD on a weighted user-item matrix).

Each item gets a k-dimensional vector; items that the same users engage with get close vectors.
The collaborative dimension of a user is the decayed mean of these vectors over their events.

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


def item_factors(pairs: Iterable[tuple[str, str]], k: int = 64, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """pairs: (user_id, item_id) training interactions. -> (item ids, (n_items, k) unit-norm factors)."""
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    rows, cols = [], []
    for u, i in pairs:
        rows.append(users.setdefault(u, len(users)))
        cols.append(items.setdefault(i, len(items)))
    X = np.zeros((len(users), len(items)), dtype=np.float32)
    np.add.at(X, (np.array(rows), np.array(cols)), 1.0)
    X = np.minimum(X, 1.0)
    # Damp heavy users and popular items (cosine-like normalisation) before the factorisation.
    X /= np.sqrt(X.sum(1, keepdims=True) + 1.0)
    X /= np.sqrt(X.sum(0, keepdims=True) + 1.0) ** 0.5
    k = max(1, min(k, min(X.shape) - 1))
    _, s, vt = np.linalg.svd(X, full_matrices=False)
    F = (vt[:k].T * np.sqrt(s[:k])).astype(np.float32)  # (n_items, k)
    F /= np.linalg.norm(F, axis=1, keepdims=True) + 1e-8
    return list(items), F


def save_factors(path: str | Path, ids: list[str], F: np.ndarray) -> None:
    np.savez_compressed(path, ids=np.array(ids, dtype=object).astype(str), factors=F)


def load_factors(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {str(i): f for i, f in zip(z["ids"], z["factors"])}
