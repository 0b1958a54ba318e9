"""An approximate maximum-inner-product index over the attention fusion's item vectors, kept in
step with the catalogue one changed row at a time (faiss's inverted file, numpy around it).

The attention score of item i for a user vector u is ``u . e_i + b_i``; with the bias folded in
as one more coordinate, ``x_i = [e_i, b_i]`` and ``q = [u, 1]``, it is the plain inner product
``q . x_i``, which an inner-product index searches. The index is an inverted file (``IVFFlat``:
k-means cells, a query scans its ``nprobe`` nearest cells) keyed by catalogue row, so a row is
removed or replaced by its id, without a rebuild:

* ``sync(X, live)`` compares the catalogue's current ``X`` (N, D + 1) with the copy it indexed
  and re-adds only rows whose vector changed (an upsert, a row taken by a new item), removes
  rows that are no longer live (a deleted item's row, until a new item takes it), adds new rows;
  a catalogue that changed shape (another model) or outgrew its cells (4x the rows the cells
  were trained on) is re-indexed from scratch;
* ``search(Q, k)`` -> (B, k) catalogue rows, -1 where fewer than k were found. A row that is not
  live is never in the index, so never returned.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(500, 9)).astype(np.float32)
>>> live = np.ones(500, dtype=bool)
>>> index = ItemIndex(); index.sync(X, live)
>>> q = rng.normal(size=(1, 9)).astype(np.float32)
>>> int(index.search(q, 1, nprobe=10**6)[0, 0]) == int(np.argmax(X @ q[0]))
True
>>> live[int(np.argmax(X @ q[0]))] = False; index.sync(X, live)
>>> int(np.argmax(X @ q[0])) in index.search(q, 20, nprobe=10**6)[0].tolist()
False
"""
from __future__ import annotations

import math

import faiss
import numpy as np

TRAIN_PER_CELL = 64  # k-means training points per cell (a sample of the catalogue)
REBUILD_GROWTH = 4  # re-index once the catalogue has this many times the rows the cells were trained on


def cells_for(n: int) -> int:
    """Inverted-file cells for n items: ~sqrt(n), at least 1."""
    return max(1, int(math.sqrt(max(n, 1))))


class ItemIndex:
    """Catalogue rows -> vectors, searchable by inner product (module doc)."""

    def __init__(self, nprobe: int | None = None, seed: int = 0):
        self.nprobe = nprobe  # cells a query scans; None: ``default_nprobe``
        self.seed = seed
        self._index: faiss.IndexIVFFlat | None = None
        self._X = np.zeros((0, 0), dtype=np.float32)  # what is indexed, by row (copy)
        self._in = np.zeros(0, dtype=bool)  # row is in the index
        self._trained_on = 0
        self._sum, self._outer = np.zeros(0), np.zeros((0, 0))  # of all rows of X, float64
        self.rebuilds = 0  # how many times the index was built from scratch
        self.updates = 0  # rows re-added or removed incrementally

    def __len__(self) -> int:
        return int(self._in.sum())

    @property
    def cells(self) -> int:
        return 0 if self._index is None else self._index.nlist

    def default_nprobe(self) -> int:
        """~1/8 of the cells, at least 8 (all of them for a small index)."""
        return min(self.cells, max(8, self.cells // 8))

    def _build(self, X: np.ndarray, live: np.ndarray) -> None:
        # One thread, as the rest of the model: its OpenMP pool would fight the broker, the event
        # loop and the encoder for the same cores.
        faiss.omp_set_num_threads(1)
        n, d = X.shape
        nlist = cells_for(int(live.sum()))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rows = np.flatnonzero(live)
        rng = np.random.default_rng(self.seed)
        sample = rows if rows.size <= TRAIN_PER_CELL * nlist else rng.choice(rows, TRAIN_PER_CELL * nlist, replace=False)
        train = X[sample]  # at least nlist points: nlist <= sqrt(rows)
        index.cp.seed = self.seed
        index.cp.min_points_per_centroid = 1
        index.train(np.ascontiguousarray(train, dtype=np.float32))
        if rows.size:
            index.add_with_ids(np.ascontiguousarray(X[rows], dtype=np.float32), rows.astype(np.int64))
        self._index, self._trained_on = index, max(1, rows.size)
        self._X, self._in = X.copy(), live.copy()
        X64 = X.astype(np.float64)
        self._sum, self._outer = X64.sum(axis=0), X64.T @ X64
        self.rebuilds += 1

    def sync(self, X: np.ndarray, live: np.ndarray) -> None:
        """Bring the index to ``X`` (N, D + 1) float32 with rows ``live`` (N,) bool (module doc)."""
        X = np.asarray(X, dtype=np.float32)
        old = self._X
        if (self._index is None or X.shape[1] != old.shape[1] or X.shape[0] < old.shape[0]
                or live.sum() > REBUILD_GROWTH * self._trained_on):
            if live.any():
                self._build(X, live)
            return
        n0 = old.shape[0]
        was = np.zeros(len(X), dtype=bool)
        was[:n0] = self._in
        changed = np.ones(len(X), dtype=bool)
        changed[:n0] = (X[:n0] != old).any(axis=1)
        drop = np.flatnonzero(was & (~live | changed))
        add = np.flatnonzero(live & (~was | changed))
        if drop.size:
            self._index.remove_ids(drop.astype(np.int64))
        if add.size:
            self._index.add_with_ids(np.ascontiguousarray(X[add]), add.astype(np.int64))
        self.updates += int(drop.size + add.size)
        moved = np.flatnonzero(changed[:n0])
        if moved.size:  # every row's vector counts in the moments, a free row's too
            a, b = old[moved].astype(np.float64), X[moved].astype(np.float64)
            self._sum += b.sum(axis=0) - a.sum(axis=0)
            self._outer += b.T @ b - a.T @ a
        if len(X) > n0:
            b = X[n0:].astype(np.float64)
            self._sum += b.sum(axis=0)
            self._outer += b.T @ b
        self._X, self._in = X.copy(), live.copy()

    def score_moments(self, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std), (B,) each, of every query's inner products with all N rows of the last
        ``sync``'s X, free rows included (as a full row of scores would z-score them), from the
        running sum and sum of outer products of the rows: exact, O(D^2) per query."""
        n = max(len(self._X), 1)
        Q = np.asarray(Q, dtype=np.float64)
        mean = Q @ self._sum / n
        ex2 = np.einsum("bd,de,be->b", Q, self._outer, Q) / n
        return mean, np.sqrt(np.maximum(ex2 - mean * mean, 0.0))

    def search(self, Q: np.ndarray, k: int, nprobe: int | None = None) -> np.ndarray:
        """(B, k) catalogue rows of the k largest inner products with each query (B, D + 1),
        best first; -1 pads where fewer were found."""
        if self._index is None or k <= 0 or not self._in.any():
            return np.full((len(Q), max(k, 0)), -1, dtype=np.int64)
        self._index.nprobe = min(self.cells, nprobe or self.nprobe or self.default_nprobe())
        _, rows = self._index.search(np.ascontiguousarray(Q, dtype=np.float32), k)
        return rows
