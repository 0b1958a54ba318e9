"""``models.items.ItemVectors`` storage: the hybrid space is text and cf side by side (no copy),
the category space is sparse but reads, slices and multiplies as the dense array would, to the
bit; growth by ``GROWTH``."""
import numpy as np
import pytest

from models.features import category_vector
from models.items import CATEGORY_NNZ, GROWTH, ItemVectors


def filled(n, text=6, cf=3, buckets=64, seed=0):
    rng = np.random.default_rng(seed)
    items = ItemVectors(text_dim=text, cf_dim=cf, category_dim=buckets, capacity=4)
    T = rng.normal(size=(n, text)).astype(np.float32)
    C = rng.normal(size=(n, cf)).astype(np.float32)
    K = np.zeros((n, buckets), dtype=np.float32)
    for i in range(n):
        k = CATEGORY_NNZ + 3 if i % 97 == 5 else int(rng.integers(0, 5))  # a few rows beyond the in-place pairs
        K[i] = category_vector([f"cat:{rng.integers(10**6)}" for _ in range(k)], buckets)
        items.upsert(f"i{i}", text=T[i], category=K[i], cf=C[i])
    return items, T, C, K


def test_spaces_read_back_what_was_written():
    items, T, C, K = filled(1000)
    np.testing.assert_array_equal(items.space("text"), T)
    np.testing.assert_array_equal(items.space("cf"), C)
    np.testing.assert_array_equal(items.space("hybrid"), np.concatenate([T, C], axis=1))
    cat = items.space("category")
    assert cat.shape == K.shape and len(cat) == len(K)
    np.testing.assert_array_equal(np.asarray(cat), K)
    rows = np.array([5, 0, 999, 5, 102])
    np.testing.assert_array_equal(cat.take(rows, axis=0), K[rows])
    np.testing.assert_array_equal(cat[:3], K[:3])
    np.testing.assert_array_equal(cat[7], K[7])
    for r in (5, 102, 999, -1, -995):  # one row at a time (a full row, sparse rows, from the end)
        np.testing.assert_array_equal(cat.take([r], axis=0), K[[r]])
        np.testing.assert_array_equal(cat.take(np.array(r), axis=0), K[r])
    with pytest.raises(IndexError):
        cat.take([1000], axis=0)
    for r in (5, 6):
        v = items.vectors(r)
        np.testing.assert_array_equal(v["category"], K[r])
        np.testing.assert_array_equal(v["hybrid"], np.concatenate([T[r], C[r]]))
    # an item updated from a full row to a sparse one and back
    items.upsert("i5", text=T[5], category=K[6], cf=C[5])
    np.testing.assert_array_equal(items.space("category")[5], K[6])
    items.upsert("i5", text=T[5], category=K[5], cf=C[5])
    np.testing.assert_array_equal(items.space("category")[5], K[5])


def test_the_category_product_is_the_dense_one():
    """To float32 rounding: which kernel the BLAS runs for a block of rows depends on the CPU it
    detected (bit-equal on one with an AVX-512 kernel, not on one it serves with its Haswell one)."""
    for n in (300, 20_000, 41_000):
        items, _, _, K = filled(n, buckets=256, seed=n)
        W = np.random.default_rng(1).normal(size=(256, 48)).astype(np.float32)
        np.testing.assert_allclose(items.space("category") @ W, K @ W, rtol=1e-5, atol=1e-5)


def test_rows_grow_by_the_growth_factor():
    items, _, _, _ = filled(1000)
    assert 1000 <= items.capacity <= int(1000 * GROWTH) + 1
    per_row = 4 * (6 + 3) + 6 * CATEGORY_NNZ + 2 + 8  # vectors, category pairs, flags, publishing time
    assert items.nbytes() < items.capacity * per_row + 2 * 64 * 4 * 11 + 8 * 1000


def test_a_publishing_time_is_kept_per_row_and_freed_with_it():
    items = ItemVectors(2, 1, 4, capacity=2)
    for i, p in zip("abc", (5, None, 7)):  # the third grows the arrays
        items.upsert(i, text=np.ones(2), category=np.zeros(4), published_ts=p)
    assert items.published[[0, 2]].tolist() == [5.0, 7.0] and np.isnan(items.published[1])
    items.delete("a")
    assert np.isnan(items.published[0])
    items.upsert("d", text=np.ones(2), category=np.zeros(4))  # takes a's row, with no time of its own
    assert items.index["d"] == 0 and np.isnan(items.published[0])


def test_changed_since_names_every_row_written_freed_or_taken():
    items, T, C, K = filled(200)
    v = items.version
    assert items.changed_since(v).size == 0
    items.upsert("i7", text=T[8], category=K[8], cf=C[8])
    items.delete("i9")
    items.upsert("new", text=T[1], category=K[1])  # takes row 9
    items.upsert("newer", text=T[2], category=K[2])  # a new row at the end
    assert items.changed_since(v).tolist() == [7, 9, 200]
    assert items.changed_since(0).tolist() == list(range(201))
