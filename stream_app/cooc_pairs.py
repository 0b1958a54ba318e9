"""Pair messages on the wire: a worker batch's co-engagement deltas (``models.cooc.online.PairDeltas``)
as a few messages per pairs partition (``bundle_pairs``), and any pair message read back as the
entries the aggregator folds (``pair_entries``; ``unbundle`` also reads the earlier forms: a
bundle of one JSON object per item, and a message of one delta keyed by its item).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import orjson

if TYPE_CHECKING:
    from models.cooc.online import DeltaColumns, PairDeltas

BUNDLE_BYTES = 256 * 1024  # a pair message carries the deltas of one partition's items up to about this size


def bundle_pairs(deltas: "PairDeltas", partitions: int, partition_of) -> list[tuple[int, str, bytes]]:
    """A batch's deltas (``models.cooc.online.PairDeltas``, one per item) as pair messages
    (partition, key, value): per partition (``partition_of(item, partitions)``) the deltas of its
    items in columns (``PairDeltas.message``), cut at about ``BUNDLE_BYTES``, each message keyed
    by its first item (a message keyed by an item id belongs on that item's partition)."""
    if not len(deltas):
        return []
    part = np.fromiter((partition_of(i, partitions) for i in deltas.items), np.int64, len(deltas))
    order = np.argsort(part, kind="stable")
    sizes, parts = deltas.sizes()[order].tolist(), part[order].tolist()
    out, start, size = [], 0, 0.0
    for k, (p, b) in enumerate(zip(parts, sizes)):
        if k > start and (p != parts[start] or size + b > BUNDLE_BYTES):
            out.append(_message(deltas, order[start:k], parts[start]))
            start, size = k, 0.0
        size += b
    out.append(_message(deltas, order[start:], parts[start]))
    return out


def _message(deltas: "PairDeltas", sel: np.ndarray, partition: int) -> tuple[int, str, bytes]:
    return partition, deltas.items[int(sel[0])], deltas.message(sel)


def unbundle(key: str, value: bytes) -> "list[tuple[str, dict]] | DeltaColumns":
    """(item id, decoded delta) of a pair message: each item of a message in columns
    (``bundle_pairs``: its ``DeltaColumns``, which iterate so), of a bundle ``{"items": {item id:
    delta, ...}}``, or the one delta of a message keyed by its item. ValueError when the value is
    no JSON object or does not fit.

    >>> unbundle("x", b'{"items":{"a":{"n":1},"b":{"n":2}}}'), unbundle("x", b'{"n":1}')
    ([('a', {'n': 1}), ('b', {'n': 2})], [('x', {'n': 1})])
    >>> list(unbundle("a", b'{"items":["a","b"],"n":[1,2],"ts":[5,6],"len":[1,0],"ids":["b"],"w":[0.5]}'))
    [('a', {'n': 1, 'ts': 5, 'ids': ['b'], 'w': [0.5]}), ('b', {'n': 2, 'ts': 6, 'ids': [], 'w': []})]
    """
    from models.cooc.online import decode_columns

    d = orjson.loads(value)
    if not isinstance(d, dict):
        raise ValueError("a pair message is a JSON object")
    items = d.get("items")
    if isinstance(items, list):
        return decode_columns(d)
    out = list(items.items()) if isinstance(items, dict) else [(key, d)]
    if not all(isinstance(delta, dict) for _, delta in out):
        raise ValueError("a delta is a JSON object")
    return out


def pair_entries(key: str, offset: int, value: bytes) -> list[tuple[str | None, int, object]]:
    """A pair message at ``offset`` as entries of ``models.cooc.table.RowTable.fold``: one per
    item, or one for a whole message in columns (folded as it is). ValueError as ``unbundle``."""
    from models.cooc.online import DeltaColumns

    entries = unbundle(key, value)
    if isinstance(entries, DeltaColumns):
        return [(None, offset, entries)]
    return [(item, offset, d) for item, d in entries]


def entry_items(entries) -> set[str]:
    """The item ids of ``pair_entries``' entries."""
    out: set[str] = set()
    for item, _, value in entries:
        if item is None:
            out.update(value.items)
        else:
            out.add(item)
    return out
