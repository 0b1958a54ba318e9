"""The co-engagement counts (``models.cooc.counts``): a row read from the per-row dicts is kept as
sorted arrays and brought up to date from the cells changed since, so after any mix of additions,
reads, deleted items and copies every read equals the row read afresh from the dicts."""
from __future__ import annotations

import numpy as np
import pytest

from models.cooc import CoocCounts


def afresh(c: CoocCounts, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Row ``j`` but ``M[j, j]`` from ``row`` (which reads the dict itself), non-zero entries."""
    r = c.row(j)
    r[j] = 0.0
    idx = np.flatnonzero(r)
    return idx, r[idx]


def same(a, b) -> bool:
    return a[0].dtype == np.int64 and a[0].tobytes() == b[0].astype(np.int64).tobytes() and \
        a[1].tobytes() == b[1].astype(np.float32).tobytes()


@pytest.mark.parametrize("seed", range(4))
def test_rows_read_between_changes_equal_rows_read_afresh(seed):
    rng = np.random.default_rng(seed)
    c = CoocCounts(dense_max=0)
    for i in range(60):
        c.add_item(f"i{i}")
    assert not c.dense
    copies = []
    for step in range(300):
        op = rng.random()
        if op < 0.5:  # a batch, repeated cells among it
            n = int(rng.integers(1, 40))
            rows, cols = rng.integers(0, 60, n), rng.integers(0, 60, n)
            c.add(rows, cols, rng.choice([1.0, 0.5, 0.25, 1 / 3], n))
        elif op < 0.9:
            for j in rng.integers(0, 60, 5).tolist():
                assert same(c.off_diagonal(j), afresh(c, j))
        elif op < 0.97:
            live = [i for i in c.ids if i]
            row = c.free(live[int(rng.integers(len(live)))])
            assert not c.off_diagonal(row)[0].size
            c.add_item(f"new{step}")  # takes the freed row
        else:
            copies.append((c.copy(), {j: afresh(c, j) for j in range(60)}))
    for j in range(60):
        assert same(c.off_diagonal(j), afresh(c, j))
    for copy, then in copies:  # the changes made after a copy reach neither its reads nor its rows
        for j in range(60):
            assert same(copy.off_diagonal(j), then[j])


def test_a_sparse_row_equals_the_dense_row_of_the_same_additions():
    rng = np.random.default_rng(9)
    sparse, dense = CoocCounts(dense_max=0), CoocCounts()
    for c in (sparse, dense):
        for i in range(30):
            c.add_item(f"i{i}")
    for _ in range(50):
        rows, cols = rng.integers(0, 30, 20), rng.integers(0, 30, 20)
        vals = rng.choice([1.0, 0.5, 0.25], 20)  # exact in float32 either way
        for c in (sparse, dense):
            c.add(rows, cols, vals)
        j = int(rng.integers(30))
        assert same(sparse.off_diagonal(j), dense.off_diagonal(j))
