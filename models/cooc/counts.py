"""Where the co-engagement counts live: pair weights ``M`` and engagement counts ``n`` over item
rows, in a form whose memory stays bounded as the catalogue grows (numpy only; serving core).

``M`` is a dense float32 matrix up to ``DENSE_MAX_ITEMS`` items (12,288: 600 MB at the limit,
380 MB at 9,742 items, 11 MB at 1,682); beyond that the counts move to one dict per row, whose
size is bounded by the number of distinct pairs the windows produced (not by N^2). Both forms
take additions in the order given (a cell repeated among them receives its additions in that
order), so a batch of additions gives the bits of the same additions one at a time. A per-row
dict that is read is also kept as sorted arrays, and the next read merges into them only the cells
changed since (a row of thousands of partners is not read from its dict again at every read).

A deleted item frees its row (``free``): its row and column of ``M`` and its ``n`` are zeroed,
its id leaves ``index`` (``ids[row]`` becomes ``FREE``), and the next new item takes the lowest
free row, inheriting nothing. So the counts keep as many rows as there were items at once.

Every change bumps ``version``: what is computed from the counts (``models.cooc.model``'s
similarity rows) is kept only while the version stands, so the counts change through these
methods only.
"""
from __future__ import annotations

import heapq
from itertools import repeat

import numpy as np

DENSE_MAX_ITEMS = 12_288
FREE = ""  # ``ids[row]`` of a free row (item ids are never empty)


class CoocCounts:
    """Pair weights ``M`` and engagement counts ``n`` over item rows; dense or per-row dicts."""

    def __init__(self, dense_max: int = DENSE_MAX_ITEMS):
        self.dense_max = int(dense_max)
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self.n = np.zeros(0, dtype=np.float64)  # n[:len(self)]: engagements of each item row
        self._dense: np.ndarray | None = np.zeros((0, 0), dtype=np.float32)
        self._rows: list[dict[int, float]] | None = None
        self._sorted: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # per-row dicts read, as sorted arrays
        self._changed: dict[int, set[int]] = {}  # for each row in ``_sorted``: its cells changed since
        self._free: list[int] = []  # heap of free rows
        self.version = 0  # bumped on every change of M, n or the item rows

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dense(self) -> bool:
        return self._dense is not None

    def add_item(self, item_id: str) -> int:
        row = self.index.get(item_id)
        if row is not None:
            return row
        if self._free:  # its row and column are zero since it was freed
            row = heapq.heappop(self._free)
            self.ids[row] = item_id
        else:
            row = len(self.ids)
            self.ids.append(item_id)
            self._reserve(row + 1)
        self.index[item_id] = row
        self.version += 1
        return row

    def add_free(self) -> int:
        """A new row that is free (zero, taken by the next new item)."""
        row = len(self.ids)
        self.ids.append(FREE)
        self._reserve(row + 1)
        heapq.heappush(self._free, row)
        self.version += 1
        return row

    def free(self, item_id: str, symmetric: bool = False) -> int | None:
        """Zero the item's row and column of M and its n, and free its row; its row, or None for
        an id without one. ``symmetric``: the caller knows that M[x, r] != 0 only where
        M[r, x] != 0 (``models.cooc.model``'s rule when ``trans_window <= window``), so per row
        only the rows of the item's partners are visited, not every row."""
        row = self.index.pop(item_id, None)
        if row is None:
            return None
        if self._dense is not None:
            self._dense[row, :] = 0.0
            self._dense[:, row] = 0.0
        else:
            partners = list(self._rows[row]) if symmetric else range(len(self._rows))
            for c in partners:
                if self._rows[c].pop(row, None) is not None and c in self._changed:
                    self._changed[c].add(row)
            self._rows[row] = {}
            self._sorted.pop(row, None)
            self._changed.pop(row, None)
        self.n[row] = 0.0
        self.ids[row] = FREE
        heapq.heappush(self._free, row)
        self.version += 1
        return row

    def _reserve(self, n: int) -> None:
        if self.n.size < n:
            self.n = np.concatenate([self.n, np.zeros(max(n - self.n.size, 64, self.n.size // 4))])
        if self._dense is not None and n > self._dense.shape[0]:
            cap = min(max(n, self._dense.shape[0] + max(64, self._dense.shape[0] // 4)), self.dense_max)
            if n > self.dense_max:
                self._to_sparse()
            else:
                grown = np.zeros((cap, cap), dtype=np.float32)
                k = self._dense.shape[0]
                grown[:k, :k] = self._dense
                self._dense = grown
        if self._rows is not None:
            self._rows.extend({} for _ in range(n - len(self._rows)))

    def _to_sparse(self) -> None:
        d = self._dense
        self._rows = [{int(c): float(d[r, c]) for c in np.flatnonzero(d[r])} for r in range(d.shape[0])]
        self._sorted, self._changed = {}, {}
        self._dense = None

    def add(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> None:
        """M[rows, cols] += vals, one addition after another in the order given (a repeated cell
        receives its additions in that order): dense, in float32 (``vals`` taken as float32);
        per row, each sum rounded to float32."""
        if self._dense is not None:
            flat = np.reshape(self._dense, -1, copy=False)
            np.add.at(flat, np.asarray(rows) * self._dense.shape[1] + np.asarray(cols), vals.astype(np.float32))
        else:
            changed = self._changed
            for r, c, v in zip(rows.tolist(), cols.tolist(), vals.tolist()):
                row = self._rows[r]
                row[c] = float(np.float32(row.get(c, 0.0) + v))
                if r in changed:
                    changed[r].add(c)
        self.version += 1

    def add_engaged(self, rows: np.ndarray) -> None:
        """n[r] += 1 for each r in ``rows`` (repeats count again)."""
        np.add.at(self.n, rows, 1.0)
        self.version += 1

    def off_diagonal(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Row ``j`` of M as (columns ascending, float32 values): its non-zero entries but ``M[j, j]``."""
        if self._dense is not None:
            r = self._dense[j, : len(self.ids)]
            nz = r != 0
            nz[j] = False
            idx = nz.nonzero()[0]
            return idx, r[idx]
        if not self._rows[j]:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        cols, vals = self._sorted_row(j)
        keep = (vals != 0) & (cols != j)
        return cols[keep], vals[keep]

    def _sorted_row(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Row ``j``'s dict as (columns ascending, float32 values), kept between reads: a read
        after a few changes merges the changed cells into the kept arrays (linear in the row,
        in numpy) instead of reading the whole dict again."""
        d, got, changed = self._rows[j], self._sorted.get(j), self._changed.get(j)
        if got is not None and not changed:
            return got
        if got is None or 4 * len(changed) > len(d):
            cols = np.fromiter(d.keys(), np.int64, len(d))
            vals = np.fromiter(d.values(), np.float64, len(d))  # float32 values, held as Python floats
            order = np.argsort(cols)
            got = cols[order], vals[order].astype(np.float32)
        else:
            cells = np.fromiter(changed, np.int64, len(changed))
            cells.sort()
            now = np.fromiter(map(d.get, cells.tolist(), repeat(0.0)), np.float64, cells.size).astype(np.float32)
            cols, vals = got
            at = np.searchsorted(cols, cells)
            known = at < cols.size
            known[known] = cols[at[known]] == cells[known]
            vals = vals.copy()  # the kept arrays may be held by a caller
            vals[at[known]] = now[known]
            got = np.insert(cols, at[~known], cells[~known]), np.insert(vals, at[~known], now[~known])
        self._sorted[j], self._changed[j] = got, set()
        return got

    def row(self, j: int) -> np.ndarray:
        """Row ``j`` of M over all items, float32 (a copy)."""
        n = len(self.ids)
        if self._dense is not None:
            return self._dense[j, :n].copy()
        out = np.zeros(n, dtype=np.float32)
        r = self._rows[j]
        if r:
            out[np.fromiter(r.keys(), np.int64, len(r))] = np.fromiter(r.values(), np.float32, len(r))
        return out

    def triplets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Non-zero entries (rows, cols, vals) of M, for saving."""
        n = len(self.ids)
        if self._dense is not None:
            r, c = np.nonzero(self._dense[:n, :n])
            return r, c, self._dense[r, c]
        rs = [(r, c, v) for r, d in enumerate(self._rows[:n]) for c, v in d.items()]
        arr = np.array(rs, dtype=np.float64).reshape(-1, 3)
        return arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2].astype(np.float32)

    @classmethod
    def restore(cls, ids: list[str], n: np.ndarray, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray,
                dense_max: int = DENSE_MAX_ITEMS) -> "CoocCounts":
        """The counts that ``ids``, ``n`` and ``triplets`` were taken from."""
        out = cls(dense_max)
        out.ids = list(ids)
        out.index = {iid: r for r, iid in enumerate(out.ids) if iid != FREE}
        out._free = [r for r, iid in enumerate(out.ids) if iid == FREE]  # ascending: a heap
        out._reserve(len(out.ids))
        out.add(rows, cols, vals)
        out.n[: len(out)] = n
        out.version += 1
        return out

    def copy(self) -> "CoocCounts":
        out = CoocCounts(self.dense_max)
        out.ids, out.index, out.n = list(self.ids), dict(self.index), self.n.copy()
        out._dense = None if self._dense is None else self._dense.copy()
        out._rows = None if self._rows is None else [dict(r) for r in self._rows]
        out._sorted, out._changed = dict(self._sorted), {r: set(c) for r, c in self._changed.items()}
        out._free = list(self._free)
        out.version = self.version
        return out
