"""The serving fast paths give bit-identical results to the plain formulas they replace
(``tests/models/reference_cooc.py``): the co-engagement update (one event, or a batch's at
once, vs each event's pairs added one by one), similarity rows kept until the counts change
(vs recomputed from the whole row at every request), ``top_k`` and the rounding of reasons."""
from __future__ import annotations

import numpy as np
import pytest

from models.cooc import CoocModel, CoocParams
from models.engine import round6, top_k
from tests.models.reference_cooc import plain_row, plain_scores, plain_update

PARAMS = [CoocParams(window=3, trans_window=2, trans_decay=0.5, beta=2.0, shrink=1.0, alpha=0.6, k=4, hist_len=3),
          CoocParams(window=2, trans_window=4, trans_decay=0.3, beta=0.7, shrink=0.0, alpha=0.5, k=3, hist_len=4),
          CoocParams(window=4, trans_window=3, trans_decay=0.0, beta=1.0, shrink=10.0, k=100),
          CoocParams(window=3, trans_window=2, beta=0.0, shrink=2.5, alpha=0.8, k=2)]


def model(params: CoocParams, n_items: int, dense_max: int) -> CoocModel:
    m = CoocModel(params)
    m.counts.dense_max = dense_max
    for i in range(n_items):
        m.add_item(f"i{i}")
    return m


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("dense_max", [10_000, 8])
def test_streamed_counts_and_scores_equal_the_plain_formulas_bit_for_bit(params, dense_max):
    rng = np.random.default_rng(0)
    fast, plain = model(params, 12, dense_max), model(params, 12, dense_max)
    recent: dict[int, list[int]] = {}
    for step in range(400):
        seen = recent.setdefault(int(rng.integers(6)), [])
        row = int(rng.integers(12))
        if row in seen:
            seen.remove(row)
        else:
            prev = seen[::-1]
            if step % 50 == 7:
                prev = prev + prev[:1]  # a repeated row among the previous ones
            fast.update_many([(prev, row)])
            plain_update(plain, prev, row)
        seen.append(row)
        if step % 7 == 0:  # scores read between updates: cached rows must follow the counts
            hist = seen[::-1]
            np.testing.assert_array_equal(fast.scores(hist), plain_scores(plain, hist))
            np.testing.assert_array_equal(fast.popularity(), np.log1p(plain.counts.n[:12]))
    for j in range(12):
        np.testing.assert_array_equal(fast.counts.row(j), plain.counts.row(j))
        idx, vals = fast.similarity_row(j)
        ref_idx, ref_vals = plain_row(plain, j)
        order, ref_order = np.argsort(idx), np.argsort(ref_idx)
        np.testing.assert_array_equal(idx[order], ref_idx[ref_order])
        np.testing.assert_array_equal(vals[order], ref_vals[ref_order])
    np.testing.assert_array_equal(fast.counts.n, plain.counts.n)


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("dense_max", [10_000, 8])
def test_a_batch_of_updates_adds_what_its_events_add_in_the_same_order(params, dense_max):
    """A batch's updates at once (``update_many``) equal its events' pairs added one event at a
    time, bit for bit: counts large and small (float32 sums that round differently in another
    order), fractional bonuses, repeated rows and the row itself among the previous ones."""
    rng = np.random.default_rng(3)
    one, many = model(params, 12, dense_max), model(params, 12, dense_max)
    start = rng.random(144) * 2.0 ** rng.integers(0, 25, 144)
    for m in (one, many):
        m.counts.add(np.repeat(np.arange(12), 12), np.tile(np.arange(12), 12), start)
    engagements = [(rng.integers(0, 12, size=int(rng.integers(0, 7))).tolist(), int(rng.integers(0, 12)))
                   for _ in range(600)]
    for prev, row in engagements:
        plain_update(one, prev, row)
    many.update_many(engagements)
    for j in range(12):
        assert one.counts.row(j).tobytes() == many.counts.row(j).tobytes()
    assert one.counts.n.tobytes() == many.counts.n.tobytes()


def test_cached_rows_are_read_only_and_dropped_when_the_counts_change():
    m = model(PARAMS[0], 5, 10_000)
    m.fit([[0, 1, 2, 3], [1, 2, 4]])
    idx, vals = m.similarity_row(1)
    assert m.similarity_row(1)[0] is idx
    with pytest.raises(ValueError):
        vals[0] = 1.0
    m.update_many([([2, 1], 0)])
    assert m.similarity_row(1)[0] is not idx
    other = m.with_params(m.params, copy=False)  # shared counts, separate caches
    other.update_many([([0], 3)])
    np.testing.assert_array_equal(m.scores([1, 2]), plain_scores(m, [1, 2]))


def test_top_k_picks_what_a_plain_argpartition_picks():
    def plain(scores, k):
        finite = np.flatnonzero(np.isfinite(scores))
        k = min(k, finite.size)
        if k == 0:
            return np.zeros(0, dtype=np.int64)
        cand = finite[np.argpartition(-scores[finite], k - 1)[:k]] if k < finite.size else finite
        return cand[np.lexsort((cand, -scores[cand]))][:k]

    rng = np.random.default_rng(1)
    for trial in range(3000):
        n = int(rng.integers(1, 60)) if trial % 10 else int(rng.integers(100, 2000))
        s = rng.integers(0, 4, n).astype(np.float64) if trial % 2 else rng.normal(size=n)  # ties / none
        s[rng.random(n) < 0.3] = -np.inf
        k = int(rng.integers(0, min(n + 3, 40)))
        np.testing.assert_array_equal(top_k(s, k), plain(s, k))


def test_round6_is_pythons_round():
    rng = np.random.default_rng(2)
    halves = (rng.integers(-10**7, 10**7, 20_000) + 0.5) / 1e6
    v = np.concatenate([rng.normal(size=20_000) * 10.0 ** rng.integers(-9, 4, 20_000), halves,
                        np.nextafter(halves, np.inf), np.nextafter(halves, -np.inf),
                        rng.integers(-2**20, 2**20, 5_000) / 2.0 ** rng.integers(0, 30, 5_000),
                        [0.0, -0.0, -1e-9, np.inf, -np.inf, np.nan, 1e300, 5e-324, 2.0**40 / 1e6]])
    got = round6(v)
    want = np.array([round(x, 6) for x in v.tolist()])
    same = ((got == want) | (np.isnan(got) & np.isnan(want))) & (np.signbit(got) == np.signbit(want))
    assert same.all(), v[~same][:5]


def test_rows_pruned_together_equal_each_row_alone_and_ties_go_to_the_smaller_column():
    m = model(CoocParams(window=3, trans_window=0, shrink=0.0, alpha=0.5, k=2), 8, 10_000)
    m.fit([[0, 1, 2, 3], [0, 4, 5], [6, 7]])  # row 0: five neighbours, every value tied
    rows = [0, 6, 1, 0, 7]
    together = m.with_params(m.params).similarity_rows(rows)
    for j, (idx, vals) in zip(rows, together):
        alone = m.with_params(m.params).similarity_row(j)
        np.testing.assert_array_equal(idx, alone[0])
        np.testing.assert_array_equal(vals, alone[1])
        np.testing.assert_array_equal(idx, plain_row(m, j)[0])
    assert together[0][0].tolist() == [1, 2]  # of 1 to 5 at the same value: the two smaller
    assert together[0][0] is together[3][0]  # a row asked twice is computed once
