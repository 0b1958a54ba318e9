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


def _lexsort_prune(raws, scale, col_pow, shrink, k):
    """The ranking written as a sort: by value descending, then column ascending."""
    out = []
    for (idx, num), s in zip(raws, scale):
        den = s * col_pow[idx] + shrink
        den[den <= 0] = 1.0
        vals = (num.astype(np.float64) / den).astype(np.float32)
        idx, vals = idx[vals != 0], vals[vals != 0]
        top = np.sort(np.lexsort((idx, -vals))[:k])
        out.append((idx[top], vals[top]))
    return out


@pytest.mark.parametrize("k", [0, 1, 3, 7, 50])
def test_pruned_rows_keep_the_k_largest_ties_to_the_smaller_column(k):
    from models.cooc.row_cache import prune_rows

    rng = np.random.default_rng(k)
    col_pow = rng.integers(1, 4, 40).astype(np.float64)  # few distinct values: many ties
    raws = []
    for size in (0, 1, 5, 12, 40):
        idx = np.sort(rng.choice(40, size, replace=False))
        raws.append((idx, rng.integers(0, 3, size).astype(np.float32)))  # zeros among them
    scale = [1.0, 2.0, 1.0, 3.0, 1.0]
    got = prune_rows(raws, scale, col_pow, 0.0, k)
    want = _lexsort_prune(raws, scale, col_pow, 0.0, k)
    assert [(_bits(a), len(a[0])) for a in got] == [(_bits(b), len(b[0])) for b in want]
    assert k in (0, 50) or any(len(r[0]) == k for r in got)  # the cut was made


@pytest.mark.parametrize("dense_max", [10_000, 0])
def test_scores_of_variants_equal_each_variant_scored_alone(dense_max):
    from dataclasses import replace

    from models.cooc.counts import CoocCounts

    rng = np.random.default_rng(1)
    m = CoocModel(PARAMS, CoocCounts(dense_max))
    for i in range(30):
        m.add_item(f"i{i}")
    m.fit([rng.integers(0, 30, 25).tolist() for _ in range(40)])
    variants = [PARAMS, replace(PARAMS, k=2), replace(PARAMS, alpha=0.3), replace(PARAMS, hist_len=1),
                replace(PARAMS, decay=0.5, shrink=0.0), replace(PARAMS, hist_len=6, k=100)]
    for recent in ([], [3], [5, 9, 1, 0, 17, 22, 4]):
        got = m.scores_variants(recent, variants)
        for v, g in zip(variants, got):
            alone = CoocModel(v, m.counts).scores(recent)
            assert g.tobytes() == alone.tobytes()
    with pytest.raises(ValueError):
        m.scores_variants([1], [replace(PARAMS, window=9)])
