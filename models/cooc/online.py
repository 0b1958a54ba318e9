"""Co-engagement counts learned while serving: what every worker adds to the checkpoint's counts
(numpy and orjson only; serving core; ``stream_app.cooc_stream`` moves these through Kafka).

Three forms of the same numbers, by item id (rows differ between processes):

* a **pair message** (``encode_delta``/``decode_delta``): what one worker batch adds to one
  target item ``x``: ``n`` (its first engagements), ``ts`` (the event time the values are valued
  at) and the additions to row ``x`` of ``M`` by neighbour id. Made by ``CoocModel.deltas``, the
  same rule (``CoocModel.additions``) that ``update_many`` and ``fit`` apply offline, summed per
  target per batch: one delta per touched item per batch, not one per pair. A worker sends the
  deltas of one pairs partition together, in columns (``PairDeltas``,
  ``stream_app.cooc_pairs.bundle_pairs``); a message of one delta is read as well.
* a **neighbour row** (``NeighbourRow``): the aggregator's sum of every pair message of one item,
  bounded and decayed by event time (``models.cooc.table.RowTable.fold``, a batch at a time;
  ``tests/models/reference_cooc_fold.py`` holds the same rule one message at a time):

      a message older than the row's reference time ``ts`` is added scaled by
      2 ** -((ts - t) / half_life); a newer one first scales the row (and ``n``) by
      2 ** -((t - ts) / half_life) and becomes its reference time; half_life 0: plain sums.
      When a row holds more than 2 * top_m neighbours after a batch, only its top_m largest are
      kept (ties: the smaller id), so a row stays between top_m and 2 * top_m and pruning is rare.

  So, pruning aside, the row is the same sum to rounding whatever the order of the messages
  and however the events were split into batches and workers (and exactly the same sum, with
  decay off, where the weights are small dyadic numbers: 1, beta * trans_decay ** k). A row
  record also carries ``offset``: the pairs-topic offset of the last message folded in; a
  message at or below it was folded already (a re-read) and is skipped.
* the **online rows** of a worker (``models.cooc.rows.OnlineRows``): the followed neighbour rows in compact form,
  per counts row one structured numpy array of (int32 counts row, float32 weight), plus ``n``
  and the reference time per row; ``models.cooc.model`` adds them to the checkpoint's counts when
  it scores. With decay, every row is valued at the latest reference time among the followed
  rows, so the scores depend only on the rows, not on when they arrived.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import orjson

from models.cooc.deltas import Deltas, RowDelta


def encode_delta(delta: RowDelta, ids: Sequence[str]) -> bytes:
    """A pair message's value: ``delta`` with its columns as item ids (``ids[row]``)."""
    return orjson.dumps({"n": delta.n, "ts": delta.ts, "ids": [ids[c] for c in delta.cols.tolist()],
                         "w": delta.vals.tolist()})


@dataclass
class PairDeltas:
    """A worker batch's deltas by item id, in columns (``CoocModel.delta_columns``): target
    ``items`` (T), their ``n`` (T,) and ``ts`` (T,), and target t's neighbour ``ids`` and weights
    ``w`` at ``bounds[t]:bounds[t + 1]``. Iterated: (item id, the delta as ``decode``d JSON);
    sent as pair messages in columns (``message``; ``stream_app.cooc_pairs.bundle_pairs``)."""

    items: list[str]
    n: np.ndarray  # (T,) float64
    ts: np.ndarray  # (T,) int64
    bounds: np.ndarray  # (T + 1,)
    ids: np.ndarray  # (K,) object: neighbour ids
    w: np.ndarray  # (K,) float64: the float32 sums, exactly

    @classmethod
    def of(cls, d: Deltas, names: np.ndarray) -> "PairDeltas":
        """``d`` with its rows as item ids (``names``: row -> id, an object array)."""
        return cls(names[d.rows].tolist(), d.n, d.ts, d.bounds, names[d.cols], d.vals.astype(np.float64))

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(DeltaColumns(self.items, self.n.tolist(), self.ts.tolist(), np.diff(self.bounds).tolist(),
                                 self.ids.tolist(), self.w.tolist()))

    def sizes(self) -> np.ndarray:
        """(T,) about how many bytes each target adds to a ``message`` (its neighbours' ids taken
        at the mean length of a sample of them)."""
        sample = self.ids[:: max(1, len(self.ids) // 256)].tolist()
        each = 24.0 + (sum(map(len, sample)) / len(sample) if sample else 0.0)  # an id and a weight
        own = np.fromiter(map(len, self.items), np.float64, len(self)) + 40.0
        return own + each * np.diff(self.bounds)

    def message(self, sel: np.ndarray) -> bytes:
        """The pair message of the targets at positions ``sel``, in columns:
        ``{"items": [id, ...], "n": [...], "ts": [...], "len": [...], "ids": [...], "w": [...]}``,
        ``len`` the number of each target's neighbours, whose ids and weights follow in order."""
        lens = self.bounds[sel + 1] - self.bounds[sel]
        first = np.cumsum(lens) - lens  # each target's first place in the message
        at = np.repeat(self.bounds[sel] - first, lens) + np.arange(int(lens.sum()))
        return orjson.dumps({"items": [self.items[i] for i in sel.tolist()], "n": self.n[sel], "ts": self.ts[sel],
                             "len": lens, "ids": self.ids[at].tolist(), "w": self.w[at]},
                            option=orjson.OPT_SERIALIZE_NUMPY)


class DeltaColumns:
    """A pair message in columns as read (``decode_columns``): target ``items``, their ``n``,
    ``ts`` and ``lens`` (neighbours each), then every target's neighbour ``ids`` and weights ``w``
    in order, all lists. Iterated: (item id, its delta); ``models.cooc.table.RowTable.fold``
    takes the columns as they are."""

    __slots__ = ("items", "n", "ts", "lens", "ids", "w")

    def __init__(self, items: list, n: list, ts: list, lens: list, ids: list, w: list):
        self.items, self.n, self.ts, self.lens, self.ids, self.w = items, n, ts, lens, ids, w

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        a = 0
        for item, n, ts, k in zip(self.items, self.n, self.ts, self.lens):
            yield item, {"n": n, "ts": ts, "ids": self.ids[a:a + k], "w": self.w[a:a + k]}
            a += k


def decode_columns(d: dict) -> DeltaColumns:
    """The columns of a pair message in columns (``PairDeltas.message``, decoded JSON).
    ValueError when they do not fit together."""
    items, n, ts, lens, ids, w = (d.get(k) for k in ("items", "n", "ts", "len", "ids", "w"))
    if not all(isinstance(c, list) for c in (items, n, ts, lens, ids, w)):
        raise ValueError("a pair message in columns has the lists items, n, ts, len, ids and w")
    if not len(items) == len(n) == len(ts) == len(lens) or len(ids) != len(w) \
            or not all(isinstance(k, int) and k >= 0 for k in lens) or sum(lens) != len(ids) \
            or not all(isinstance(i, str) for i in items):
        raise ValueError("the columns of a pair message do not fit together")
    return DeltaColumns(items, n, ts, lens, ids, w)


def decode_delta(value: bytes) -> tuple[float, int, list[str], list[float]]:
    """(n, ts, neighbour ids, weights) of a pair message."""
    d = orjson.loads(value)
    return float(d["n"]), int(d["ts"]), list(d["ids"]), [float(w) for w in d["w"]]


@dataclass
class NeighbourRow:
    """One item's online counts at the aggregator (module doc): ``n``, neighbour id -> weight,
    both valued at event time ``ts``; ``offset``: pairs-topic offset of the last message folded."""

    n: float = 0.0
    ts: int = 0
    offset: int = -1
    nb: dict[str, float] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return orjson.dumps({"n": self.n, "ts": self.ts, "offset": self.offset, "ids": list(self.nb),
                             "w": list(self.nb.values())})

    @classmethod
    def from_bytes(cls, value: bytes | None) -> "NeighbourRow":
        if not value:
            return cls()
        d = orjson.loads(value)
        return cls(float(d["n"]), int(d["ts"]), int(d["offset"]), dict(zip(d["ids"], map(float, d["w"]))))


def apply_rows(model, records: Sequence[tuple[str, bytes | None]]) -> int:
    """Followed row records (item id, ``NeighbourRow`` bytes or None) into ``model``'s online rows
    (a ``CoocModel``), all at once (``CoocModel.set_online_rows``); neighbours unknown to the
    counts get a row (as ids known from training do). The records are decoded ``CHUNK`` at a time
    into arrays, so few Python objects are alive at once. Returns the latest event time the rows
    are valued at (ms; 0 for none): how far the whole cluster's events have come."""
    last = dict(records)  # an item's last record stands for its earlier ones
    if not last:
        return 0
    values = list(last.values())
    n, ts, lengths, cols, weights = [], [], [], [], []
    for a in range(0, len(values), CHUNK):
        ids, ws = [], []
        for value in values[a:a + CHUNK]:
            d = orjson.loads(value) if value is not None else _NO_ROW
            n.append(float(d["n"]))
            ts.append(int(d["ts"]))
            lengths.append(len(d["ids"]))
            ids += d["ids"]
            ws += d["w"]
        cols.append(model.rows_of(ids))
        weights.append(np.fromiter(ws, dtype=np.float32, count=len(ws)))
    model.set_online_rows(list(last), n, ts, lengths, np.concatenate(cols), np.concatenate(weights))
    return max(ts)


CHUNK = 128  # records decoded at once
_NO_ROW = {"n": 0.0, "ts": 0, "ids": [], "w": []}


def rows_by_id(model) -> dict[str, dict]:
    """Every online row of ``model`` by item id (``OnlineRows.snapshot``)."""
    online, ids = model.online, model.counts.ids
    return {ids[j]: online.snapshot(j, ids) for j in range(min(len(online.rows), len(ids)))
            if online.rows[j].size or online.n[j]}


def carry_rows(old, new) -> int:
    """A new model (another checkpoint, other rows) keeps what was learned online: every online
    row of ``old`` set in ``new`` by item id (``CoocModel``s both); how many rows."""
    online, ids = old.online, old.counts.ids
    new.online.half_life_ms = online.half_life_ms
    carried = 0
    for j in range(min(len(online.rows), len(ids))):
        arr = online.rows[j]
        if arr.size or online.n[j]:
            nb = {ids[r]: w for r, w in zip(arr["row"].tolist(), arr["w"].tolist())}
            new.set_online(ids[j], NeighbourRow(float(online.n[j]), int(online.ts[j]), -1, nb))
            carried += 1
    return carried
