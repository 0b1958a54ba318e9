"""Choosing the blend weights (``models.blend``) on the validation targets only.

One replay up to the last validation target records, at every validation target the protocol
ranks, each component's per-user z-scores over the catalogue, the seen mask and the target
(exactly what ``models.offline.protocol.replay_evaluate`` would rank). A grid over the simplex
(step ``step``), which contains every component alone, is then scored offline.

The maximum over ~1,800 points scored on a few hundred targets is partly luck (the winner's
curse): a point can win on validation by ranking a handful of targets a little differently. So
each point is judged by its *neighbourhood score*, the mean validation NDCG of itself and its
neighbours (the points reached by moving one step of weight from one component to another), and
the best neighbourhood wins among the points that score, by themselves, at least as well as the
best single component; ties go to the earlier grid point. A flat optimum is preferred to a sharp
one, and on validation the blend is still never below its best single component (up to float32
rounding of the recorded z-scores).

At most ``max_users`` validation targets are recorded (a seeded sample beyond that) to bound
memory: V x C x N float32.

>>> simplex_grid(2, 0.5).tolist()
[[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
>>> neighbourhood_mean(simplex_grid(2, 0.5), np.array([0.0, 3.0, 0.0]), 0.5).tolist()
[1.5, 1.0, 1.5]
"""
from __future__ import annotations

import itertools
import time
from typing import Callable, Mapping

import numpy as np

from models.blend import zscore
from models.offline.base import ItemCatalog
from models.offline.data import Interaction
from models.offline.protocol import Split

Components = Callable[[str], Mapping[str, np.ndarray]]


def simplex_grid(n_comp: int, step: float = 0.05) -> np.ndarray:
    """Every weight vector on the simplex with the given step, one-hot vectors included."""
    m = int(round(1 / step))
    pts = [c for c in itertools.product(range(m, -1, -1), repeat=n_comp) if sum(c) == m]
    return np.asarray(pts, dtype=np.float64) / m


def neighbourhood_mean(grid: np.ndarray, scores: np.ndarray, step: float) -> np.ndarray:
    """(G,) mean of ``scores`` over each grid point and the points one step of weight away."""
    units = [tuple(c) for c in np.rint(grid / step).astype(int).tolist()]  # weights in steps
    where = {u: g for g, u in enumerate(units)}
    out = np.empty(len(units))
    for g, u in enumerate(units):
        near = [g]
        for i, j in itertools.permutations(range(len(u)), 2):  # one step from j to i
            if u[j] > 0:
                v = list(u)
                v[i] += 1
                v[j] -= 1
                near.append(where[tuple(v)])
        out[g] = scores[near].mean()
    return out


def _z(s: np.ndarray, moments: tuple[float, float] | None = None) -> np.ndarray:
    """(N,) float32: one user's component z-scored as the blend does it (``models.blend.zscore``;
    ``moments``: the component's own, ``InterestModel.own_moments``)."""
    return zscore(np.array(s, dtype=np.float64)[None], 1.0, moments)[0][0].astype(np.float32)


def record_validation(learn: Callable[[Interaction], None], components: Components, names: list[str],
                      split: Split, catalog: ItemCatalog, max_users: int = 3000, seed: int = 0,
                      raw: list | None = None, moments: Callable[[], Mapping] | None = None):
    """Replay with ``learn`` up to the last validation target; at each (recorded) validation
    target store the z-scored components. -> (Z (V, C, N) float32, seen (V, N) bool, targets (V,)).
    ``raw`` (a list): gets each recorded target's raw popularity scores (N,) float32 (what a
    count-gated blend buckets by, ``gated_ndcg``). ``moments()``: the components z-scored with
    their own moments (``InterestModel.own_moments``)."""
    vpos = dict(zip(split.valid_pos.values(), split.valid_pos))
    if len(vpos) > max_users:
        keep = np.random.default_rng(seed).choice(sorted(vpos), size=max_users, replace=False)
        vpos = {int(p): vpos[int(p)] for p in keep}
    last = max(split.valid_pos.values()) + 1 if split.valid_pos else 0
    n = len(catalog)
    seen: dict[str, set[int]] = {}  # per user, the rows consumed
    Z, M, T = [], [], []
    for pos in range(last):
        ev = split.events[pos]
        j = catalog.get(ev.item_id)
        if j is None:
            continue
        had = seen.setdefault(ev.user_id, set())
        if pos in vpos and j not in had:
            comps, own = components(ev.user_id), moments() if moments is not None else {}
            Z.append(np.stack([_z(comps[c], own.get(c)) for c in names]))
            if raw is not None:
                raw.append(np.asarray(comps["popularity"], dtype=np.float32))
            mask = np.zeros(n, dtype=bool)
            mask[np.fromiter(had, np.intp, len(had))] = True
            M.append(mask)
            T.append(j)
        learn(ev)
        had.add(j)
    if not Z:
        return np.zeros((0, len(names), n), np.float32), np.zeros((0, n), bool), np.zeros(0, np.int64)
    return np.stack(Z), np.stack(M), np.asarray(T, dtype=np.int64)


def ndcg_of(Z: np.ndarray, M: np.ndarray, T: np.ndarray, w: np.ndarray, k: int = 10) -> np.ndarray:
    """Per-target NDCG@k of weights ``w`` (protocol tie rule: the lower index wins a tie)."""
    s = np.tensordot(w.astype(np.float32), Z, axes=(0, 1))  # (V, N)
    s[M] = -np.inf
    rows = np.arange(len(T))
    t = s[rows, T][:, None]
    lower = np.arange(s.shape[1])[None, :] < T[:, None]
    rank = (s > t).sum(1) + ((s == t) & lower).sum(1)
    return np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)


def grid_ndcg(Z: np.ndarray, M: np.ndarray, T: np.ndarray, grid: np.ndarray, k: int = 10,
              tol: float = 1e-4) -> np.ndarray:
    """(G,) mean NDCG@k of every weight vector of ``grid`` (G, C), non-negative weights: what
    ``ndcg_of`` gives point by point, from one pass over the targets. An item n ranks above the
    target t under weights w when w . (z_n - z_t) > 0 (a tie, == 0, goes to the lower index, the
    protocol's rule); with non-negative weights an item whose every component difference is above
    ``tol`` is above at every point, one whose every difference is below -``tol`` never is, so only
    the others are scored, and a target with k items always above it is skipped. Differences are
    taken in float64, so items equal to the target on every component tie exactly.

    >>> Z = np.array([[[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]]], np.float32)  # (V=1, C=2, N=3)
    >>> grid_ndcg(Z, np.zeros((1, 3), bool), np.array([1]), simplex_grid(2, 0.5), k=2).round(4).tolist()
    [0.6309, 0.6309, 0.6309]
    """
    W = np.asarray(grid, np.float64)  # (G, C)
    total = np.zeros(len(W))
    for v in range(len(T)):
        j = int(T[v])
        live = ~M[v]
        live[j] = False
        D = Z[v].astype(np.float64) - Z[v][:, j].astype(np.float64)[:, None]  # (C, N)
        always = live & (D.min(0) > tol)
        above = int(always.sum())
        if above >= k:
            continue
        idx = np.flatnonzero(live & ~always & (D.max(0) >= -tol))
        rank = _ranks(W, D, idx, j, above, k)
        total += np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)
    return total / max(len(T), 1)


FIRST_PER_KEY = 64  # _ranks: items taken first by each component's difference and by their sum
CHUNK = 1024  # _ranks: items scored at once after those


def _ranks(W: np.ndarray, D: np.ndarray, idx: np.ndarray, j: int, above: int, k: int) -> np.ndarray:
    """(G,) the target's rank at each point of ``W``: ``above`` plus the items of ``idx`` above it
    (``W @ D`` > 0, or == 0 at a lower index), exact where it is below ``k`` (elsewhere some
    count >= ``k``). Items are scored in chunks, the most likely to be above somewhere first (the
    largest differences on each component and in sum), and a point leaves once ``k`` items are
    above the target there: a target out of every top k (most targets) costs a few hundred items
    instead of the catalogue, and each further chunk is scored at the points still in."""
    rank = np.full(len(W), above, dtype=np.int64)
    parts = [idx]
    if idx.size > 2 * FIRST_PER_KEY * (len(D) + 1):
        Dl = D[:, idx]  # (C, L)
        first = np.zeros(idx.size, dtype=bool)
        for key in (*Dl, Dl.sum(0)):
            first[np.argpartition(-key, FIRST_PER_KEY)[:FIRST_PER_KEY]] = True
        rest = idx[~first]
        parts = [idx[first], *(rest[a:a + CHUNK] for a in range(0, rest.size, CHUNK))]
    alive = np.arange(len(W))
    for part in parts:
        S = W[alive] @ D[:, part]  # (A, L): each entry the same dot product as in W @ D
        rank[alive] += (S > 0).sum(1) + ((S == 0) & (part < j)).sum(1)
        alive = alive[rank[alive] < k]
        if not alive.size:
            break
    return rank


def gated_ndcg(Z: np.ndarray, M: np.ndarray, T: np.ndarray, P: np.ndarray, names: list[str], blend) -> float:
    """Mean validation NDCG@10 of a blend (weights dict or ``models.blend.GatedBlend``) on the
    recorded targets; ``P`` (V, N): each target's raw popularity (``record_validation``'s ``raw``)."""
    if len(T) == 0:
        return float("nan")
    buckets = getattr(blend, "buckets", (blend,))
    W = np.array([[b.get(c, 0.0) for c in names] for b in buckets], np.float32)  # (nb, C)
    shift = np.asarray(getattr(blend, "shifts", (0.0,)), np.float32)
    bk = blend.bucket_of(P) if hasattr(blend, "bucket_of") else np.zeros(P.shape, np.int64)
    out = []
    for v in range(len(T)):  # one target at a time: (C, N) at most
        s = (W[bk[v]].T * Z[v]).sum(0) + shift[bk[v]]
        s[M[v]] = -np.inf
        t, j = s[T[v]], int(T[v])
        rank = int((s > t).sum() + (s[:j] == t).sum())  # the protocol's tie rule: the lower index wins
        out.append(1.0 / np.log2(rank + 2.0) if rank < 10 else 0.0)
    return float(np.mean(out))


def select_weights(Z: np.ndarray, M: np.ndarray, T: np.ndarray, names: list[str],
                   step: float = 0.05) -> tuple[dict[str, float], dict]:
    """Best simplex point on the recorded validation targets (by neighbourhood score, see the
    module's docstring). -> (weights by name, report)."""
    t0 = time.perf_counter()
    grid = simplex_grid(len(names), step)
    if len(T) == 0:
        w = grid[0]
        return dict(zip(names, w.tolist())), {"valid_ndcg@10": float("nan"), "n_valid": 0}
    scores = grid_ndcg(Z, M, T, grid)  # (G,)
    single = {}
    for c, name in enumerate(names):
        one = int(np.flatnonzero((grid == np.eye(len(names))[c]).all(1))[0])
        single[name] = float(scores[one])
    smooth = neighbourhood_mean(grid, scores, step)
    eligible = scores >= max(single.values())
    best = int(np.argmax(np.where(eligible, smooth, -np.inf)))
    peak = int(scores.argmax())
    report = {"weights": dict(zip(names, grid[best].tolist())), "valid_ndcg@10": float(scores[best]),
              "neighbourhood_valid_ndcg@10": float(smooth[best]), "single_valid_ndcg@10": single,
              "max_point": {"weights": dict(zip(names, grid[peak].tolist())), "valid_ndcg@10": float(scores[peak]),
                            "neighbourhood_valid_ndcg@10": float(smooth[peak])},
              "n_valid": int(len(T)), "grid_points": int(len(grid)), "seconds": round(time.perf_counter() - t0, 1)}
    return dict(zip(names, grid[best].tolist())), report
