"""The recorded validation a blend gate is chosen on (``models.offline.count_gate``), each target
cut down to the items that can reach its top 10, and scored for many gates in one pass.

Only a target's top 10 matters, so each target keeps just the items that can reach it under some
weights: an item scores between its smallest and largest component z-score (the weights are a
convex combination) plus the smallest and largest shift, so items whose upper bound is below the
10th best lower bound are dropped, exactly. Items whose bucket no gate can move (many events, known
to the trained model) score as the fixed blend and are kept only as counts.
"""
from __future__ import annotations

import numpy as np

from models.blend import GatedBlend

SHIFTS = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0)  # a bucket's shift, in z-score units
TOP = 10


class GateValidation:
    """The recorded validation targets, each cut down to the items that can matter (module doc)."""

    def __init__(self, names: list[str], base: np.ndarray, low_cut: float):
        self.names, self.base, self.low_cut = names, base, low_cut
        self._bk: dict[tuple, np.ndarray] = {}
        # (weight, target z (C,), target popularity, top fixed scores, fixed count, Z, pop, target untrained,
        #  untrained, target on a new item)
        self.rows: list[tuple] = []
        self.n_new = 0

    def add(self, Z: np.ndarray, pop: np.ndarray, out: np.ndarray, j: int, weight: float,
            untrained: np.ndarray | None = None, new: bool = False) -> None:
        """One target: z-scores Z (C, N), popularity (N,), ``out`` (N,) not ranked, target ``j``,
        ``untrained`` (N,) the items the trained model does not know (None: none), ``new``: the
        target is a new item (``ndcg(..., old=True)`` leaves it out). An item whose
        bucket a gate can move (few events, or untrained) is kept by its bounds; the others score
        as the fixed blend."""
        untr = np.zeros(len(pop), bool) if untrained is None else np.asarray(untrained, bool)
        zt, pt, ut = Z[:, j].copy(), float(pop[j]), bool(untr[j])
        others = ~out
        others[j] = False
        low = others & ((pop <= self.low_cut) | untr)
        high = others & ~low
        s_high = self.base @ Z[:, high]
        lo = np.concatenate([s_high, Z[:, low].min(axis=0) + min(SHIFTS)])
        floor = np.partition(lo, -TOP)[-TOP] if lo.size >= TOP else -np.inf  # 10th best lower bound
        if pt > self.low_cut and not ut:
            t, top_t = float(self.base @ zt), None
        else:
            t, top_t = None, float(zt.max()) + max(SHIFTS)
        if (top_t if t is None else t) < floor:  # never in the top 10, whatever the weights
            self.rows.append((weight, None, 0.0, None, 0, None, None, False, None, new))
            return
        keep = low.copy()
        keep[low] = Z[:, low].max(axis=0) + max(SHIFTS) >= floor
        top = np.sort(s_high)[::-1][:TOP]
        fixed = int((s_high > t).sum()) if t is not None else 0
        self.rows.append((weight, zt, pt, top, fixed, Z[:, keep].copy(), pop[keep].copy(), ut, untr[keep].copy(),
                          new))

    def arrays(self) -> None:
        """Pad the kept rows into arrays for ``ndcg``."""
        live = [r for r in self.rows if r[1] is not None]
        self.total = float(sum(r[0] for r in self.rows))
        self.total_old = float(sum(r[0] for r in self.rows if not r[9]))
        self.tnew = np.array([r[9] for r in live], dtype=bool)
        C, V = len(self.names), len(live)
        L = max([r[5].shape[1] for r in live], default=0)
        self.w = np.array([r[0] for r in live])
        self.zt = np.array([r[1] for r in live]).reshape(V, C)
        self.pt = np.array([r[2] for r in live])
        self.ut = np.array([r[7] for r in live], dtype=bool)
        self.top = np.full((V, TOP), -np.inf)
        self.fixed = np.array([r[4] for r in live])
        self.Z = np.zeros((V, C, L), np.float32)
        self.pop = np.full((V, L), np.inf)
        self.untr = np.zeros((V, L), bool)
        self.pad = np.ones((V, L), bool)
        for v, r in enumerate(live):
            self.top[v, :len(r[3])] = r[3]
            n = r[5].shape[1]
            self.Z[v, :, :n], self.pop[v, :n], self.untr[v, :n], self.pad[v, :n] = r[5], r[6], r[8], False

    def has_untrained(self) -> bool:
        """Whether some kept item or target is untrained with behaviour (an untrained bucket matters)."""
        some = 1e-9  # log(1 + n) > 0: n > 0, the search's first edge
        return bool((self.untr & (self.pop > some) & ~self.pad).any() or (self.ut & (self.pt > some)).any())

    def _target(self, gate: GatedBlend, W: np.ndarray, shift: np.ndarray) -> tuple:
        """-> (high (V,): targets scored by the fixed blend, bt (V,): each target's bucket, t (V,): its score)."""
        high = (self.pt > self.low_cut) & ~self.ut
        bt = np.minimum(gate.bucket_of(self.pt, self.ut), len(W) - 1)
        t = np.where(high, self.zt @ self.base, (self.zt * W[bt]).sum(1) + shift[bt])
        return high, bt, t

    def ndcg(self, gate: GatedBlend, old: bool = False) -> float:
        """Validation NDCG@10 (weighted mean over every recorded target; ``old``: over the targets
        on old items only) of ``gate``."""
        if not len(self.w) or (old and not self.total_old):
            return 0.0
        weights, shifts = gate.table()
        W = np.array([[b.get(c, 0.0) for c in self.names] for b in weights], np.float32)  # (nb, C)
        bk = self._buckets(gate, len(W))  # (V, L)
        shift = np.asarray(shifts, np.float32)
        s = np.einsum("vcl,vlc->vl", self.Z, W[bk]) + shift[bk]
        s[self.pad] = -np.inf
        high, bt, t = self._target(gate, W, shift)
        above = np.where(high, self.fixed, (self.top > t[:, None]).sum(1))
        rank = above + (s > t[:, None]).sum(1)
        gain = np.where(rank < TOP, 1.0 / np.log2(rank + 2.0), 0.0)
        if old:
            return float((self.w * gain)[~self.tnew].sum() / self.total_old)
        return float((self.w * gain).sum() / self.total)

    def _buckets(self, gate: GatedBlend, n: int) -> np.ndarray:
        """(V, L) each kept item's bucket under ``gate``'s edges (``n`` buckets), computed once per edges."""
        key = (tuple(gate.edges), n, gate.untrained is not None)
        if key not in self._bk:
            self._bk[key] = np.minimum(gate.bucket_of(self.pop, self.untr), n - 1)
        return self._bk[key]

    def ndcg_grid(self, gate: GatedBlend, b: int, weights: np.ndarray, shifts: np.ndarray | None = None) -> np.ndarray:
        """(G,) ``ndcg`` of ``gate`` with bucket ``b``'s weights and shift replaced by each row of
        ``weights`` (G, C) and of ``shifts`` (G,; default: the bucket's own), all points in one pass
        over the targets. Per target, the other buckets' items score as in ``ndcg``; a bucket-``b``
        item whose bounds over every point put it always or never above the target is counted
        without scoring it (against a target in bucket ``b``: by the signs of its component
        differences, the shift cancelling), the others are scored for every point (float64)."""
        G = np.asarray(weights, np.float64)
        sh = np.full(len(G), float(gate.table()[1][b])) if shifts is None else np.asarray(shifts, np.float64)
        if not len(self.w):
            return np.zeros(len(G))
        weights, shifts = gate.table()
        W = np.array([[x.get(c, 0.0) for c in self.names] for x in weights], np.float32)  # (nb, C)
        shift = np.asarray(shifts, np.float32)
        bk = self._buckets(gate, len(W))  # (V, L)
        fixed_s = np.einsum("vcl,vlc->vl", self.Z, W[bk]) + shift[bk]
        high, bt, t = self._target(gate, W, shift)  # (V,) each
        tol = 1e-4
        gain = np.zeros(len(G))
        for v in range(len(self.w)):
            mine = (bk[v] == b) & ~self.pad[v]
            z = self.Z[v][:, mine].astype(np.float64)  # (C, n_b)
            fixed = fixed_s[v][~mine & ~self.pad[v]]
            if not high[v] and bt[v] == b:  # the target moves with the points
                zt = self.zt[v].astype(np.float64)
                tv = G @ zt + sh  # (G,)
                D = z - zt[:, None]
                always, never = D.min(0) > tol, D.max(0) < -tol
                rank = always.sum() + (G @ D[:, ~always & ~never] > 0).sum(1)
                F = np.concatenate([self.top[v], fixed])
                sure, maybe = F > tv.max() + tol, F >= tv.min() - tol
                rank = rank + sure.sum() + (F[maybe & ~sure][None, :] > tv[:, None]).sum(1)
            else:
                tv = float(t[v])
                rank = (self.fixed[v] if high[v] else int((self.top[v] > tv).sum())) + int((fixed > tv).sum())
                always = z.min(0) + sh.min() > tv + tol
                never = z.max(0) + sh.max() < tv - tol
                amb = ~always & ~never
                rank = rank + always.sum() + ((G @ z[:, amb] + sh[:, None]) > tv).sum(1)
            gain += self.w[v] * np.where(rank < TOP, 1.0 / np.log2(rank + 2.0), 0.0)
        return gain / self.total
