"""Pair messages on the wire: a batch's deltas, bundled per partition in columns, fold as one
message per item would; a record that is no pair message is refused."""
from __future__ import annotations

import pytest

from models.cooc.table import RowTable
from stream_app import cooc_pairs
from tests.stream_app.test_cooc_stream import batch, processor


@pytest.mark.parametrize("half_life_ms", [0.0, 7.0])  # with decay, weights no float32 prints short
def test_bundled_deltas_fold_as_one_message_per_item_and_stay_on_their_partition(monkeypatch, half_life_ms):
    from stream_app.catalog import item_partition

    result = processor(half_life_ms).apply_batch(batch(), {})
    single, bundled = RowTable(), RowTable()
    single.fold([(item, 7, value) for item, value in result.pairs])
    monkeypatch.setattr(cooc_pairs, "BUNDLE_BYTES", 250)  # a few deltas per message
    messages = cooc_pairs.bundle_pairs(result.pairs, 4, item_partition)
    assert 4 < len(messages) < len(result.pairs)
    entries = []
    for p, key, value in messages:
        assert item_partition(key, 4) == p and len(value) < 250 + 200
        these = cooc_pairs.unbundle(key, value)
        assert {item_partition(item, 4) for item, _ in these} == {p}
        entries += [(item, 7, d) for item, d in these]
    assert sorted(i for i, _, _ in entries) == sorted(i for i, _ in result.pairs)  # each delta once
    bundled.fold(entries)
    assert {i: bundled.row(i) for i in bundled.rows} == {i: single.row(i) for i in single.rows}


def test_a_record_that_is_no_pair_message_is_refused_by_unbundle():
    columns = b'"n":[1],"ts":[5],"ids":["b"],"w":[0.5]'
    for value in (b"not json", b"[1, 2]", b'{"items": {"a": 3}}', b"\xff", b'{"items":["a"],"n":[1]}',
                  b'{"items":["a"],"len":[2],' + columns + b"}", b'{"items":["a"],"len":[-1],' + columns + b"}",
                  b'{"items":[7],"len":[1],' + columns + b"}", b'{"items":["a","c"],"len":[1,0],' + columns + b"}"):
        with pytest.raises(ValueError):
            cooc_pairs.unbundle("a", value)


def rows(table: RowTable) -> dict:
    return {i: table.row(i) for i in table.rows}


def test_a_message_in_columns_folds_as_its_items_would_once_even_when_read_again():
    result = processor(7.0).apply_batch(batch(), {})
    [(_, key, value)] = cooc_pairs.bundle_pairs(result.pairs, 1, lambda item, n: 0)
    by_item, whole = RowTable(), RowTable()
    by_item.fold([(item, 7, d) for item, d in cooc_pairs.unbundle(key, value)])
    entries = cooc_pairs.pair_entries(key, 7, value)
    assert [e[0] for e in entries] == [None]  # the whole message as one entry
    assert cooc_pairs.entry_items(entries) == set(by_item.rows)
    whole.fold(entries)
    assert rows(whole) == rows(by_item)
    assert whole.fold(entries) == [] and rows(whole) == rows(by_item)  # read again: nothing added
    some = RowTable()  # two of its items folded at this offset already: the others still come in
    some.fold([(item, 7, d) for item, d in list(cooc_pairs.unbundle(key, value))[:2]])
    some.fold(entries)
    assert rows(some) == rows(by_item)
