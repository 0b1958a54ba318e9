"""The co-engagement similarity rows kept between count changes (``models.cooc.row_cache``): after
counts learned in batches (``update_many``) and followed online rows (``set_online_rows``), every
row equals the row computed afresh from the same counts, bit for bit, while the rows the change
did not reach are kept, not computed again."""
from __future__ import annotations

import numpy as np
import pytest

from models.cooc import CoocModel, CoocParams

PARAMS = CoocParams(window=3, trans_window=2, trans_decay=0.5, beta=1.0, shrink=1.0, alpha=0.6, k=4, hist_len=3)


def fresh_rows(m: CoocModel) -> dict[int, tuple[bytes, bytes]]:
    other = CoocModel(m.params, m.counts)  # the same counts, an empty cache
    other.online = m.online
    return {j: _bits(other.similarity_row(j)) for j in range(len(m.counts))}


def _bits(row) -> tuple[bytes, bytes]:
    idx, vals = row
    order = np.argsort(idx)
    return idx[order].astype(np.int64).tobytes(), vals[order].tobytes()


@pytest.mark.parametrize("dense_max", [10_000, 0])
def test_rows_after_batches_of_changes_equal_fresh_rows_and_unreached_rows_stay(dense_max):
    rng = np.random.default_rng(5)
    m = CoocModel(PARAMS)
    m.counts.dense_max = dense_max
    n = 60
    for i in range(n):
        m.add_item(f"i{i}")
    m.fit([list(rng.choice(n, 6, replace=False)) for _ in range(40)])
    kept_any = False
    for step in range(8):
        before = {j: m.similarity_row(j) for j in range(n)}
        if step % 2:
            m.update_many([(list(rng.choice(n, 3, replace=False)), int(rng.integers(n))) for _ in range(2)])
        else:
            items = [f"i{i}" for i in rng.choice(n, 2, replace=False)]
            cols = rng.choice(n, 6).astype(np.int64)
            m.set_online_rows(items, [1.0, 2.0], [0, 0], [3, 3], cols, rng.random(6))
        want = fresh_rows(m)
        assert {j: _bits(m.similarity_row(j)) for j in range(n)} == want
        kept = [j for j in range(n) if m.similarity_row(j) is before[j]]
        kept_any |= bool(kept)
        assert len(kept) < n  # the change reached some rows
    assert kept_any and m._follow.rows.evicted > 0


def test_a_change_made_around_the_model_empties_the_cache():
    m = CoocModel(PARAMS)
    for i in range(10):
        m.add_item(f"i{i}")
    m.fit([[0, 1, 2, 3], [1, 2, 4]])
    row = m.similarity_row(1)
    m.counts.add(np.array([5]), np.array([6]), np.array([1.0]))  # not through the model
    m.update_many([([7], 8)])
    assert m.similarity_row(1) is not row
    assert _bits(m.similarity_row(1)) == fresh_rows(m)[1]
