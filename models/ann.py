"""An approximate maximum-inner-product index over the attention fusion's item vectors, kept in
step with the catalogue one changed row at a time (faiss's inverted file, numpy around it).

The attention score of item i for a user vector u is ``u . e_i + b_i``; with the bias folded in
as one more coordinate, ``x_i = [e_i, b_i]`` and ``q = [u, 1]``, it is the plain inner product
``q . x_i``, which an inner-product index searches. The index is an inverted file of product
codes (faiss's ``IndexIVFPQFastScan``: k-means cells, a query scans its ``nprobe`` nearest cells;
each vector held there as 4-bit codes of ``PQ_DSUB`` coordinates each, an eighth of its float32
bytes, scanned with SIMD table look-ups) keyed by catalogue row, so a row is removed or replaced
by its id, without a rebuild:

* ``sync(X, live, changed=None, bias=None)`` brings the index to the catalogue's current ``X`` (N, D + 1):
  it re-adds only rows whose vector changed (an upsert, a row taken by a new item), removes rows
  that are no longer live (a deleted item's row, until a new item takes it), adds new rows. Which
  rows changed is the caller's ``changed`` (rows of ``X``) when it knows, else found from a 64-bit
  hash of each row's bits kept per row. A catalogue that changed shape (another model) or
  outgrew its cells (4x the rows the cells were trained on) is re-indexed from scratch, in
  chunks of rows (the cells and codes are trained on a sample);
* ``search(Q, k)`` -> (B, k) catalogue rows, -1 where fewer than k were found, best first by the
  codes (the caller scores them exactly; ``keep`` > k ranks a longer list of the scan again by
  the exact vectors). A row that is not live is never in the index, so never returned. A query
  scans ``default_nprobe()`` cells: ~the square root of the cell count, at least 16, so the
  scanned share of the catalogue falls as it grows (``models.offline.two_stage`` measures recall
  against exact ranking).

Every row's exact vector is kept beside the codes (float32, one array, free rows' too): a row's
old vector is read from it, exactly, to update the score moments when it changes.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(500, 9)).astype(np.float32)
>>> live = np.ones(500, dtype=bool)
>>> index = ItemIndex(); index.sync(X, live)
>>> q = rng.normal(size=(1, 9)).astype(np.float32)
>>> int(index.search(q, 1, nprobe=10**6, keep=10**6)[0, 0]) == int(np.argmax(X @ q[0]))
True
>>> live[int(np.argmax(X @ q[0]))] = False; index.sync(X, live)
>>> int(np.argmax(X @ q[0])) in index.search(q, 20, nprobe=10**6)[0].tolist()
False
>>> X[3] += 1.0; index.sync(X, live); index.updates
3
>>> mean, std = index.score_moments(q); bool(np.allclose([mean[0], std[0]], [(X @ q[0]).mean(), (X @ q[0]).std()]))
True
"""
from __future__ import annotations

import logging
import math

import numpy as np

# faiss's loader tries builds this wheel does not ship (AVX2, AVX-512) and logs each failure as
# INFO before it loads the one it has: noise in every worker's log, not a fault
logging.getLogger("faiss.loader").setLevel(logging.WARNING)
import faiss  # noqa: E402

TRAIN_PER_CELL = 64  # k-means training points per cell (a sample of the catalogue)
REBUILD_GROWTH = 4  # re-index once the catalogue has this many times the rows the cells were trained on
MIN_NPROBE = 16  # cells a query scans at least (all of them for a small index)
CHUNK_ROWS = 8192  # rows per step of a build or a hash pass (bounds the temporary arrays)
PQ_DSUB = 2  # coordinates per 4-bit code of the product quantiser
BLOCK_ROWS = 16_384  # rows per block of the exact vectors (``Blocks``)


def cells_for(n: int) -> int:
    """Inverted-file cells for n items: ~sqrt(n), at least 1."""
    return max(1, int(math.sqrt(max(n, 1))))


def nprobe_for(cells: int) -> int:
    """Cells a query scans: ~sqrt(cells), at least ``MIN_NPROBE``, at most all (module doc).

    >>> [nprobe_for(c) for c in (10, 41, 316, 547, 1000, 3162)]
    [10, 16, 18, 24, 32, 57]
    """
    return min(cells, max(MIN_NPROBE, math.ceil(math.sqrt(cells))))


def gathered_products(E: np.ndarray, U: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(B, K) float32: ``E[rows[b, j]] . U[b]`` for item vectors ``E`` (N, D) float32, user
    vectors ``U`` (B, D) and catalogue rows ``rows`` (B, K), every row valid. One call for the
    whole batch (faiss's ``fvec_inner_products_by_idx``, which runs outside the interpreter
    lock) when ``E``'s rows lie in a C-contiguous float32 array (``E`` itself, or a column range
    of one: the other columns then meet zeros in the padded user vectors), else a product per
    user. The same inputs give the same bits; they differ from ``E[rows] @ u`` in the last bits.
    A row outside ``E`` is an IndexError, as numpy's gather would raise.

    >>> E = np.arange(12, dtype=np.float32).reshape(4, 3)
    >>> gathered_products(E[:, 1:], np.float32([[1, 0], [0, 2]]), np.array([[3, 0], [1, 1]])).tolist()
    [[10.0, 1.0], [10.0, 10.0]]
    """
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    B, K = rows.shape
    if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= len(E)):  # faiss would read past E
        raise IndexError(f"rows outside the {len(E)} item vectors")
    base, start = E, 0
    if not E.flags.c_contiguous and isinstance(E.base, np.ndarray) and E.base.ndim == 2:
        base = E.base
        start = (E.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // 4
    if not B or not K:
        return np.zeros((B, K), dtype=np.float32)
    if (base.dtype != np.float32 or not base.flags.c_contiguous or E.dtype != np.float32
            or E.strides != (base.strides[0], 4) or not 0 <= start <= base.shape[1] - E.shape[1]):
        return np.stack([E[r] @ U[b] for b, r in enumerate(rows)]).astype(np.float32, copy=False)
    X = np.zeros((B, base.shape[1]), dtype=np.float32)
    X[:, start:start + E.shape[1]] = U
    out = np.empty((B, K), dtype=np.float32)
    faiss.fvec_inner_products_by_idx(faiss.swig_ptr(out), faiss.swig_ptr(X), faiss.swig_ptr(base),
                                     faiss.swig_ptr(rows), base.shape[1], B, K)
    return out


class Rows:
    """The indexed vectors ``[E, bias]`` (N, D + 1), read a block of rows at a time, so that a
    caller with the bias apart need not build the joined array. ``bias`` None: ``E`` is all."""

    def __init__(self, E: np.ndarray, bias: np.ndarray | None = None):
        self.E, self.bias = E, bias
        self.shape = (len(E), E.shape[1] + (0 if bias is None else 1))

    def __len__(self) -> int:
        return self.shape[0]

    def get(self, rows) -> np.ndarray:
        """(n, D + 1) float32, C-contiguous: ``rows`` (a slice or an index array)."""
        E = self.E[rows]
        if self.bias is None:
            return np.ascontiguousarray(E, dtype=np.float32)
        out = np.empty((len(E), self.shape[1]), dtype=np.float32)
        out[:, :-1] = E
        out[:, -1] = self.bias[rows]
        return out

    def blocks(self, rows: np.ndarray | None = None):
        """-> (start, block) over all rows, or over ``rows``, ``CHUNK_ROWS`` at a time."""
        n = len(self) if rows is None else len(rows)
        for a in range(0, n, CHUNK_ROWS):
            yield a, self.get(slice(a, a + CHUNK_ROWS) if rows is None else rows[a:a + CHUNK_ROWS])


class Blocks:
    """(n, d) float32 rows held in blocks of ``BLOCK_ROWS``: it grows without copying what it
    holds (one new item in a catalogue of 10^6 does not move 1.5 GB)."""

    def __init__(self, d: int):
        self.d, self.n, self.blocks = d, 0, []

    def __len__(self) -> int:
        return self.n

    @property
    def shape(self) -> tuple[int, int]:
        return self.n, self.d

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.blocks)

    def resize(self, n: int) -> None:
        while len(self.blocks) * BLOCK_ROWS < n:
            self.blocks.append(np.empty((BLOCK_ROWS, self.d), dtype=np.float32))
        self.n = max(self.n, n)

    def put(self, rows: np.ndarray, V: np.ndarray) -> None:
        block, at = np.divmod(np.asarray(rows, dtype=np.int64), BLOCK_ROWS)
        for k in np.unique(block).tolist():
            m = block == k
            self.blocks[k][at[m]] = V[m]

    def __getitem__(self, rows) -> np.ndarray:
        """Rows ``rows`` (a slice or an index array), a copy."""
        if isinstance(rows, slice):
            rows = np.arange(*rows.indices(self.n))
        block, at = np.divmod(np.asarray(rows, dtype=np.int64), BLOCK_ROWS)
        out = np.empty((block.size, self.d), dtype=np.float32)
        for k in np.unique(block).tolist():
            m = block == k
            out[m] = self.blocks[k][at[m]]
        return out


def _hash_weights(d: int) -> np.ndarray:
    return np.random.default_rng(0x5EED).integers(0, 2**63, size=d, dtype=np.uint64) | np.uint64(1)


def row_hashes(X: np.ndarray | Rows, rows: np.ndarray | None = None) -> np.ndarray:
    """(n,) uint64: each row's float32 bits times odd random weights, summed mod 2^64 (a row
    whose one value changed always hashes differently; two changed values collide with
    probability ~2^-64). ``rows``: only those rows of ``X``."""
    X = X if isinstance(X, Rows) else Rows(X)
    out = np.empty(len(X) if rows is None else len(rows), dtype=np.uint64)
    w = _hash_weights(X.shape[1])
    for a, c in X.blocks(rows):
        c = c.view(np.uint32).astype(np.uint64)
        c *= w
        out[a:a + len(c)] = c.sum(axis=1)
    return out


class ItemIndex:
    """Catalogue rows -> vectors, searchable by inner product (module doc)."""

    def __init__(self, nprobe: int | None = None, seed: int = 0):
        self.nprobe = nprobe  # cells a query scans; None: ``default_nprobe``
        self.seed = seed
        self._index: faiss.IndexIVFPQFastScan | None = None
        self._d = 0  # the indexed vectors' width
        self._vecs = Blocks(0)  # row -> its exact vector (every row, live or not)
        self._hash = np.zeros(0, dtype=np.uint64)  # row -> ``row_hashes`` of what is indexed
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
        """``nprobe_for(cells)``."""
        return nprobe_for(self.cells)

    def nbytes(self) -> int:
        """Bytes held: the inverted lists' codes and ids, the cell centres, the exact vectors,
        the per-row hash and flags, the moments (faiss's own bookkeeping not counted)."""
        ix = self._index
        faiss_b = 0 if ix is None else ix.ntotal * (ix.code_size + 8) + ix.nlist * ix.d * 4
        return int(faiss_b + self._vecs.nbytes + self._hash.nbytes + self._in.nbytes + self._outer.nbytes)

    def _padded(self, V: np.ndarray) -> np.ndarray:
        """(n, padded width) float32: ``V`` with zero columns up to the product quantiser's width."""
        out = np.zeros((len(V), self._index.d), dtype=np.float32)
        out[:, :V.shape[1]] = V
        return out

    def _add_moments(self, V: np.ndarray | Rows, sign: float = 1.0, rows: np.ndarray | None = None) -> None:
        V = V if isinstance(V, Rows) else Rows(V)
        for _, c in V.blocks(rows):
            c = c.astype(np.float64)
            self._sum += sign * c.sum(axis=0)
            self._outer += sign * (c.T @ c)

    def _build(self, X: Rows, live: np.ndarray) -> None:
        # One thread, as the rest of the model: its OpenMP pool would fight the broker, the event
        # loop and the encoder for the same cores.
        faiss.omp_set_num_threads(1)
        n, d = X.shape
        nlist = cells_for(int(live.sum()))
        width = -(-d // (2 * PQ_DSUB)) * 2 * PQ_DSUB  # an even number of sub-quantisers
        quantizer = faiss.IndexFlatIP(width)
        index = faiss.IndexIVFPQFastScan(quantizer, width, nlist, width // PQ_DSUB, 4, faiss.METRIC_INNER_PRODUCT)
        self._index, self._d = index, d
        self._vecs = Blocks(d)
        self._vecs.resize(n)
        for a, c in X.blocks():
            self._vecs.put(np.arange(a, a + len(c)), c)
        rows = np.flatnonzero(live)
        rng = np.random.default_rng(self.seed)
        sample = rows if rows.size <= TRAIN_PER_CELL * nlist else rng.choice(rows, TRAIN_PER_CELL * nlist, replace=False)
        index.cp.seed = index.pq.cp.seed = self.seed
        index.cp.min_points_per_centroid = index.pq.cp.min_points_per_centroid = 1
        index.train(self._padded(self._vecs[np.resize(sample, max(sample.size, 16))]))  # 16 codes a sub-quantiser
        for a in range(0, rows.size, CHUNK_ROWS):
            r = rows[a:a + CHUNK_ROWS]
            index.add_with_ids(self._padded(self._vecs[r]), r.astype(np.int64))
        self._trained_on = max(1, rows.size)
        self._hash, self._in = row_hashes(self._vecs), live.copy()
        self._sum, self._outer = np.zeros(d), np.zeros((d, d))
        self._add_moments(self._vecs)
        self.rebuilds += 1

    def _keep(self, X: Rows, rows: np.ndarray, n: int) -> None:
        """``rows`` of ``X`` into the exact vectors, grown to ``n`` rows."""
        self._vecs.resize(n)
        for a, c in X.blocks(rows):
            self._vecs.put(rows[a:a + len(c)], c)

    def sync(self, X: np.ndarray, live: np.ndarray, changed: np.ndarray | None = None,
             bias: np.ndarray | None = None) -> None:
        """Bring the index to ``X`` (N, D + 1) float32 with rows ``live`` (N,) bool; ``changed``:
        the rows of ``X`` whose vector may differ from the last sync's, if the caller knows
        (rows past the last sync's N need not be named); ``bias`` (N,): the last column apart,
        ``X`` then (N, D) (module doc)."""
        X = Rows(X, bias)
        n0 = len(self._hash)
        if (self._index is None or X.shape[1] != self._d or len(X) < n0
                or live.sum() > REBUILD_GROWTH * self._trained_on):
            if live.any():
                self._build(X, live)
            return
        if changed is None:
            h = row_hashes(X, np.arange(n0))
            moved = np.flatnonzero(h != self._hash)
        else:
            moved = np.unique(np.asarray(changed, dtype=np.int64))
            moved = moved[moved < n0]
            h = row_hashes(X, moved)
            keep = h != self._hash[moved]
            moved, h = moved[keep], h[keep]
        changed_mask = np.ones(len(X), dtype=bool)
        changed_mask[:n0] = False
        changed_mask[moved] = True
        was = np.zeros(len(X), dtype=bool)
        was[:n0] = self._in
        drop = np.flatnonzero(was & (~live | changed_mask))
        add = np.flatnonzero(live & (~was | changed_mask))
        new = np.arange(n0, len(X))
        if moved.size:  # every row's vector counts in the moments, a free row's too
            self._add_moments(self._vecs[moved], -1.0)
        self._keep(X, np.concatenate([moved, new]), len(X))
        self._add_moments(self._vecs, rows=np.concatenate([moved, new]))
        if drop.size:
            self._index.remove_ids(drop.astype(np.int64))
        for a in range(0, add.size, CHUNK_ROWS):
            r = add[a:a + CHUNK_ROWS]
            self._index.add_with_ids(self._padded(self._vecs[r]), r.astype(np.int64))
        self.updates += int(drop.size + add.size)
        hash_ = np.empty(len(X), dtype=np.uint64)
        hash_[:n0] = self._hash
        if changed is None:
            hash_[:n0] = h
        else:
            hash_[moved] = h
        if new.size:
            hash_[n0:] = row_hashes(X, new)
        self._hash, self._in = hash_, live.copy()

    def score_moments(self, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std), (B,) each, of every query's inner products with all N rows of the last
        ``sync``'s X, free rows included (as a full row of scores would z-score them), from the
        running sum and sum of outer products of the rows: exact, O(D^2) per query."""
        n = max(len(self._hash), 1)
        Q = np.asarray(Q, dtype=np.float64)
        mean = Q @ self._sum / n
        ex2 = ((Q @ self._outer) * Q).sum(axis=1) / n
        return mean, np.sqrt(np.maximum(ex2 - mean * mean, 0.0))

    def search(self, Q: np.ndarray, k: int, nprobe: int | None = None, keep: int | None = None) -> np.ndarray:
        """(B, k) catalogue rows of the k largest inner products with each query (B, D + 1),
        best first by the codes; -1 pads where fewer were found. ``keep`` > k: the codes' scan
        keeps that many rows per query (every row it scanned if that many), which are ranked
        again by the exact vectors."""
        B = len(Q)
        if self._index is None or k <= 0 or not self._in.any():
            return np.full((B, max(k, 0)), -1, dtype=np.int64)
        self._index.nprobe = min(self.cells, nprobe or self.nprobe or self.default_nprobe())
        Q = np.ascontiguousarray(Q, dtype=np.float32)
        _, found = self._index.search(self._padded(Q), min(max(keep or k, k), self._index.ntotal))
        if found.shape[1] <= k:
            return np.pad(found, ((0, 0), (0, k - found.shape[1])), constant_values=-1)
        rows = np.full((B, k), -1, dtype=np.int64)
        for i, c in enumerate(found):
            c = c[c >= 0]
            best = np.argsort(-(self._vecs[c] @ Q[i]), kind="stable")[:k]
            rows[i, :best.size] = c[best]
        return rows
