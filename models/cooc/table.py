"""The aggregator's neighbour rows of one pairs partition, held as arrays and folded a batch at a
time (``stream_app.cooc_stream.CoocAggregator``; numpy and orjson only).

The numbers are those of ``models.cooc.online``'s module doc: a row is ``n``, the reference time
``ts``, the offset of the last pair message folded in and its neighbours' weights, valued at
``ts``. Here the neighbour ids are small integer codes (``code``: id -> code, ``names``: code ->
id; both kept until ``clear``), and a row's neighbours are an int64 array of codes (ascending)
with a float64 array of weights.

``fold`` takes a batch of pair messages at once, with no Python work per neighbour: every
message's entries concatenated, each scaled to its row's new reference time (the latest of the
row's and its messages' times), appended to the rows they add to, grouped by (row, neighbour)
in one stable sort and summed (``np.add.reduceat``), each row in the order of its entries. It
skips a message at or below its row's offset (or an earlier message's of the batch), as
``NeighbourRow.fold`` does one message at a time. A row past ``2 * top_m`` neighbours after the
batch keeps its ``top_m`` largest (ties: the smaller id): pruning happens once per batch instead
of once per message, so rows stay between ``top_m`` and ``2 * top_m``; without pruning, the rows
are ``NeighbourRow.fold``'s sums (exactly so for the rule's dyadic weights without decay, to
rounding with decay).
"""
from __future__ import annotations

from itertools import repeat
from typing import Iterable, Sequence

import numpy as np
import orjson

from models.cooc.online import DeltaColumns, NeighbourRow
from models.cooc.rows import decay_factor

CHUNK = 128  # pair messages decoded at once
_NO_CODES = np.zeros(0, dtype=np.int64)
_NO_WEIGHTS = np.zeros(0)


class Row:
    """One row in array form (module doc)."""

    __slots__ = ("n", "ts", "offset", "codes", "w")

    def __init__(self, n: float = 0.0, ts: int = 0, offset: int = -1, codes: np.ndarray = _NO_CODES,
                 w: np.ndarray = _NO_WEIGHTS):
        self.n, self.ts, self.offset, self.codes, self.w = n, ts, offset, codes, w

    def empty(self) -> bool:
        return not self.codes.size and not self.n


class RowTable:
    """Item id -> ``Row`` for one pairs partition (module doc)."""

    def __init__(self):
        self.rows: dict[str, Row] = {}
        self.code: dict[str, int] = {}
        self.names = np.empty(64, dtype=object)  # code -> id (capacity grows by doubling)

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, item: str) -> bool:
        return item in self.rows

    def clear(self) -> None:
        self.__init__()

    def codes(self, ids: Sequence[str]) -> np.ndarray:
        """The codes of ``ids`` (new ids get the next codes), as int64. O(len(ids)): only the new
        ids' names are written."""
        code = self.code
        out = np.fromiter(map(code.get, ids, repeat(-1)), dtype=np.int64, count=len(ids))
        if (out < 0).any():
            start, new = len(code), []
            for k in np.flatnonzero(out < 0).tolist():
                c = code.get(ids[k])
                if c is None:
                    c = code[ids[k]] = len(code)
                    new.append(ids[k])
                out[k] = c
            if len(code) > self.names.size:
                grown = np.empty(max(len(code), 2 * self.names.size), dtype=object)
                grown[:start] = self.names[:start]
                self.names = grown
            self.names[start:len(code)] = new
        return out

    def restore(self, records: Iterable[tuple[str, bytes | None]]) -> None:
        """Rows from their changelog records (``NeighbourRow.to_bytes``; None: no row yet), their
        neighbour ids coded in one call."""
        decoded = [(item, orjson.loads(value) if value else None) for item, value in records]
        found = [d for _, d in decoded if d is not None]
        codes = self.codes([i for d in found for i in d["ids"]])
        bounds = np.cumsum([0] + [len(d["ids"]) for d in found]).tolist()
        k = 0
        for item, d in decoded:
            if d is None:
                self.rows[item] = Row()
                continue
            c = codes[bounds[k]:bounds[k + 1]]
            k += 1
            order = np.argsort(c)
            self.rows[item] = Row(float(d["n"]), int(d["ts"]), int(d["offset"]), c[order],
                                  np.asarray(d["w"], dtype=np.float64)[order])

    def row(self, item: str) -> NeighbourRow:
        """Row ``item`` as a ``NeighbourRow`` (an empty one when absent)."""
        r = self.rows.get(item)
        if r is None:
            return NeighbourRow()
        return NeighbourRow(r.n, r.ts, r.offset, dict(zip(self.names[r.codes].tolist(), r.w.tolist())))

    def to_bytes(self, items: Sequence[str]) -> list[bytes]:
        """The changelog records of rows ``items`` (``NeighbourRow.to_bytes``' form), made in one
        pass over their neighbours."""
        rows = [self.rows[i] for i in items]
        if not rows:
            return []
        names = self.names[np.concatenate([r.codes for r in rows])].tolist()
        weights = np.concatenate([r.w for r in rows]).tolist()
        out, a = [], 0
        for r in rows:
            b = a + r.codes.size
            out.append(orjson.dumps({"n": r.n, "ts": r.ts, "offset": r.offset, "ids": names[a:b], "w": weights[a:b]}))
            a = b
        return out

    def fold(self, messages: Sequence[tuple[str | None, int, bytes | dict | DeltaColumns]], half_life_ms: float = 0.0,
             top_m: int = 64) -> list[str]:
        """Fold a batch of (item id, pairs offset, pair message: its bytes or decoded), or (None,
        pairs offset, a message in columns: the deltas of several items) (module doc); the ids
        of the rows that changed, sorted."""
        rows = self.rows
        last: dict[str, int] = {}
        slot: dict[str, int] = {}
        m_slot, m_n, m_ts, m_len, codes, weights = [], [], [], [], [], []

        def new(item: str, offset: int) -> bool:  # not folded yet (then it is, by the caller)
            done = last.get(item)
            if done is None:
                row = rows.get(item)
                done = -1 if row is None else row.offset
            return offset > done

        for a in range(0, len(messages), CHUNK):  # decoded a chunk at a time: few objects alive at once
            ids, ws = [], []
            for item, offset, value in messages[a:a + CHUNK]:
                if isinstance(value, DeltaColumns):
                    if len(set(value.items)) == len(value.items) and all(new(i, offset) for i in value.items):
                        last.update(zip(value.items, repeat(offset)))  # the whole message, as it is
                        m_slot += [slot.setdefault(i, len(slot)) for i in value.items]
                        m_n += value.n
                        m_ts += value.ts
                        m_len += value.lens
                        ids += value.ids
                        ws += value.w
                        continue
                    each = [(i, d) for i, d in value]  # some folded already (a re-read): item by item
                else:
                    each = [(item, value)]
                for item, d in each:
                    if not new(item, offset):
                        continue
                    last[item] = offset
                    d = d if isinstance(d, dict) else orjson.loads(d)
                    m_slot.append(slot.setdefault(item, len(slot)))
                    m_n.append(d["n"])
                    m_ts.append(d["ts"])
                    m_len.append(len(d["ids"]))
                    ids += d["ids"]
                    ws += d["w"]
            codes.append(self.codes(ids))
            weights.append(np.fromiter(ws, dtype=np.float64, count=len(ws)))
        if not slot:
            return []
        items = list(slot)
        old = [rows.get(i) or Row() for i in items]
        m_slot, m_ts, m_len = np.asarray(m_slot), np.asarray(m_ts, dtype=np.int64), np.asarray(m_len)
        had = np.fromiter((not r.empty() for r in old), dtype=bool, count=len(old))
        o_ts = np.fromiter((r.ts for r in old), dtype=np.int64, count=len(old))
        ref = np.full(len(items), np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(ref, m_slot, m_ts)
        ref[had] = np.maximum(ref[had], o_ts[had])
        m_f = decay_factor(ref[m_slot] - m_ts, half_life_ms)  # each message valued at its row's time
        o_f = np.where(had, decay_factor(ref - o_ts, half_life_ms), 0.0)
        n = np.fromiter((r.n for r in old), dtype=np.float64, count=len(old)) * o_f
        np.add.at(n, m_slot, np.asarray(m_n, dtype=np.float64) * m_f)
        o_len = np.fromiter((r.codes.size for r in old), dtype=np.int64, count=len(old))
        codes = np.concatenate([*(r.codes for r in old), *codes])
        w = np.concatenate([*(r.w for r in old), np.concatenate(weights) * np.repeat(m_f, m_len)])
        w[: o_len.sum()] *= np.repeat(o_f, o_len)
        at = np.concatenate([np.repeat(np.arange(len(items)), o_len), np.repeat(m_slot, m_len)])
        self._merge(items, old, at, codes, w, n, ref, last, top_m)
        return sorted(items)

    def _merge(self, items, old, at, codes, w, n, ref, last, top_m) -> None:
        """The rows of ``items`` become the sums of their entries (row ``at``, ``codes``, ``w``),
        cut back past ``2 * top_m``."""
        key = at * max(1, len(self.code)) + codes
        order = np.argsort(key, kind="stable")
        key = key[order]
        first = np.ones(key.size, dtype=bool)
        first[1:] = key[1:] != key[:-1]
        starts = np.flatnonzero(first)
        sums = np.add.reduceat(w[order], starts) if starts.size else _NO_WEIGHTS
        cell_codes, cell_at = codes[order][starts], at[order][starts]
        bounds = np.searchsorted(cell_at, np.arange(len(items) + 1)).tolist()
        ref, n = ref.tolist(), n.tolist()
        for s, item in enumerate(items):
            c, v = cell_codes[bounds[s]:bounds[s + 1]], sums[bounds[s]:bounds[s + 1]]
            if c.size > 2 * top_m:
                keep = self._largest(c, v, top_m)
                c, v = c[keep], v[keep]
            self.rows[item] = Row(n[s], ref[s], last[item], c.copy(), v.copy())

    def _largest(self, codes: np.ndarray, w: np.ndarray, m: int) -> np.ndarray:
        """Mask of the ``m`` largest weights; among equal weights at the cut, the smaller ids
        (``models.cooc.online``'s rule)."""
        cut = np.partition(w, w.size - m)[w.size - m]  # the m-th largest
        keep = w > cut
        tied = np.flatnonzero(w == cut)
        need = m - int(keep.sum())
        if need:
            names = self.names[codes[tied]].tolist()
            keep[tied[sorted(range(tied.size), key=names.__getitem__)[:need]]] = True
        return keep


def fold_records(table: RowTable, messages: Sequence[tuple[str, int, bytes]], stored: dict[str, bytes | None],
                 half_life_ms: float = 0.0, top_m: int = 64) -> list[tuple[str, bytes]]:
    """The aggregator's work on one partition's batch: the rows ``table`` lacks restored from
    ``stored`` (their changelog records), the messages folded, and (item id, record) of every
    row that changed, by id."""
    table.restore((i, v) for i, v in stored.items() if i not in table)
    touched = table.fold(messages, half_life_ms, top_m)
    return list(zip(touched, table.to_bytes(touched)))
