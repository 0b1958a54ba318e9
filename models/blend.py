"""Fusion of component scores that cannot fall below its best component (numpy only).

Each component c (the attention-fused vector score, the co-engagement score, popularity, the
item's freshness where items go stale (``models.freshness``), the sequence model's score) gives a
score vector s_c over the catalogue; the final score is

    score_i = sum_c w_c * (s_c,i - mean(s_c)) / std(s_c)          (per user, over the catalogue)

with weights w_c >= 0 that sum to 1, chosen on the validation targets by a grid over the simplex
that contains every single component alone, among the points at least as good as the best of
them (``models.offline.choose_blend.select_weights``): on validation the blend is therefore never below
its best component. A component with constant
scores for this user (std 0, e.g. no recent items yet) contributes nothing.

Explanations: score_i = sum_c scale_c * s_c,i - offset, with scale_c = w_c / std_c; the engine
splits the attention term further into its dimensions (see ``InterestModel.recommend``).

Gated by behaviour (``GatedBlend``): the weights may depend on how much behaviour item i has,
n_i = its engagement count in the co-engagement counts (the popularity component is log(1 + n_i),
so the count follows the stream at no extra cost). A few buckets of n (0, 1..k, more), each with its
own weight vector and shift: score_i = sum_c w_{b(i),c} * z_c,i + shift_b(i), the z-scores unchanged. An item with no
behaviour yet (a catalogue event only) is then ranked by the components that know it (its text),
not pulled down by the ones that cannot. scale_c and offset_c become per item, (B, N) (the shift
goes into the offset of the first component). An optional bucket of its own (``untrained``) takes
the items the trained model does not know (added by a catalogue event after training: no learned
id, not in the sequence model's vocabulary) once they have behaviour: the stream gives them
co-engagement and popularity at once, while the components trained on ids still score them
neutrally, so the weights of the known items with as few events would bury them.

>>> import numpy as np
>>> s, scale, offset = combine({"a": np.array([0.0, 1.0, 2.0]), "b": np.array([5.0, 5.0, 5.0])},
...                            {"a": 1.0, "b": 0.0})
>>> np.round(s, 3).tolist(), offset["b"]
([-1.225, 0.0, 1.225], 0.0)
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

COMPONENTS = ("attention", "co-engagement", "popularity", "freshness", "sequence")


def combine(components: Mapping[str, np.ndarray], weights: Mapping[str, float],
            moments: Mapping[str, tuple[float, float]] | None = None, untrained: np.ndarray | None = None):
    """-> (score (N,), scale per component, offset per component) with
    score = sum_c scale_c * s_c - offset_c. ``moments``: (mean, std) of some components, known
    already (``component_moments``). One user's ``combine_many``."""
    out, scale, offset = combine_many({c: np.asarray(s)[None] for c, s in components.items()}, weights, moments,
                                      None if untrained is None else np.asarray(untrained)[None])
    one = {c: v[0] if np.ndim(v[0]) else float(v[0]) for c, v in scale.items()}  # (N,) per item when gated
    return out[0], one, {c: v[0] if np.ndim(v[0]) else float(v[0]) for c, v in offset.items()}


def zscore(s: np.ndarray, w: float = 1.0, moments: tuple[float, float] | None = None):
    """``w`` times each row of ``s`` (B, N) z-scored, in place and in ``s``'s dtype: -> (z, scale,
    offset), z = (s - mean) * scale per row, scale = w / std and offset = w * mean / std (B,) each,
    so that z = s * scale - offset up to rounding (the form the reasons take). A constant row
    (std 0) gets scale and offset 0. ``moments``: one (mean, std) for every row, known already
    (``component_moments``). The blend's z-scoring, and the sequence mix's."""
    if moments is None:
        sd, mean = s.std(axis=1), s.mean(axis=1)
    else:
        mean, sd = np.full(len(s), moments[0], dtype=s.dtype), np.full(len(s), moments[1], dtype=s.dtype)
    w = s.dtype.type(w)
    ok = sd > 0
    safe = np.where(ok, sd, 1)
    scale = np.where(ok, w / safe, 0).astype(s.dtype)
    offset = np.where(ok, w * mean / safe, 0).astype(s.dtype)
    s -= mean[:, None]
    s *= scale[:, None]
    return s, scale, offset


class GatedBlend(dict):
    """Blend weights by the item's engagement count n: ``edges`` e_0 < e_1 < ... give the buckets
    n <= e_0, e_0 < n <= e_1, ..., n > e_last; ``buckets[b]``: component -> weight in bucket b (the
    last: items with much behaviour); ``shifts[b]``: added to the scores of bucket b (0 if None).
    ``untrained``: (weights, shift) of one more bucket, at index ``len(buckets)``, for the items
    the trained model does not know with n > e_0 (None: they go by their count like any item).
    As a mapping (what reports and the dimension shares read), each component's mean weight over
    the buckets: non-zero wherever some bucket uses it.

    >>> g = GatedBlend([0], [{"attention": 1.0}, {"attention": 0.5, "popularity": 0.5}])
    >>> dict(g), g.bucket_of(np.log1p(np.array([0.0, 1.0, 7.0]))).tolist()
    ({'attention': 0.75, 'popularity': 0.25}, [0, 1, 1])
    >>> u = GatedBlend([0], g.buckets, untrained=({"popularity": 1.0}, 0.5))
    >>> u.bucket_of(np.log1p(np.array([0.0, 1.0, 7.0])), np.array([True, True, False])).tolist()
    [0, 2, 1]
    >>> u.table()[1], as_blend(None, u.config()).config() == u.config()
    ((0.0, 0.0, 0.5), True)
    """

    def __init__(self, edges, buckets, shifts=None, untrained=None):
        self.edges = tuple(float(e) for e in edges)
        self.buckets = tuple({c: float(w) for c, w in b.items()} for b in buckets)
        self.shifts = tuple(float(x) for x in (shifts if shifts is not None else [0.0] * len(self.buckets)))
        if isinstance(untrained, Mapping):  # as ``config`` writes it
            untrained = (untrained["weights"], untrained.get("shift", 0.0))
        self.untrained = None if untrained is None else (
            {c: float(w) for c, w in untrained[0].items()}, float(untrained[1]))
        if len(self.buckets) != len(self.edges) + 1 or len(self.shifts) != len(self.buckets) \
                or list(self.edges) != sorted(set(self.edges)):
            raise ValueError("a gated blend needs increasing edges and one bucket more than edges")
        every = self.table()[0]
        used = {c for b in every for c in b}
        names = [c for c in COMPONENTS if c in used] + sorted(used - set(COMPONENTS))
        super().__init__({c: sum(b.get(c, 0.0) for b in every) / len(every) for c in names})
        self._cuts = np.log1p(np.asarray(self.edges)) + 1e-9  # on the popularity scale, log(1 + n)

    def table(self) -> tuple[tuple[dict, ...], tuple[float, ...]]:
        """(weights, shifts) of every bucket ``bucket_of`` can give, by index: the count buckets,
        then the untrained one when there is one."""
        if self.untrained is None:
            return self.buckets, self.shifts
        return self.buckets + (self.untrained[0],), self.shifts + (self.untrained[1],)

    def bucket_of(self, popularity: np.ndarray, untrained: np.ndarray | None = None) -> np.ndarray:
        """Bucket of every item from its popularity score log(1 + n) (any shape); ``untrained``
        (broadcastable to it): the items the trained model does not know, which go to the
        untrained bucket once n > e_0 (when the blend has one)."""
        b = np.searchsorted(self._cuts, popularity, side="left")
        if self.untrained is not None and untrained is not None:
            b = np.where(np.asarray(untrained, dtype=bool) & (b > 0), len(self.buckets), b)
        return b

    def replaced(self, b: int, weights: Mapping[str, float] | None = None, shift: float | None = None) -> "GatedBlend":
        """The same gate with bucket ``b``'s weights and/or shift replaced (``b`` may be the
        untrained bucket's index, ``len(buckets)``)."""
        buckets, shifts = list(self.table()[0]), list(self.table()[1])
        if weights is not None:
            buckets[b] = dict(weights)
        if shift is not None:
            shifts[b] = shift
        n = len(self.buckets)
        return GatedBlend(self.edges, buckets[:n], shifts[:n],
                          None if self.untrained is None else (buckets[n], shifts[n]))

    def config(self) -> dict:
        """What a checkpoint stores (``config.json``'s ``blend_gate``; ``as_blend`` reads it back)."""
        out = {"edges": list(self.edges), "weights": [dict(b) for b in self.buckets], "shifts": list(self.shifts)}
        if self.untrained is not None:
            out["untrained"] = {"weights": dict(self.untrained[0]), "shift": self.untrained[1]}
        return out


def as_blend(weights: Mapping[str, float] | None, gate: Mapping | None = None):
    """The blend an engine serves: None (no blend), a plain weights dict (a checkpoint without a
    gate serves exactly as before) or a ``GatedBlend`` (``gate``: ``GatedBlend.config()``)."""
    if isinstance(weights, GatedBlend):
        return weights
    if gate:
        return GatedBlend(gate["edges"], gate["weights"], gate.get("shifts"), gate.get("untrained"))
    return dict(weights) if weights else None


def rows_of(a: np.ndarray, T: np.ndarray) -> np.ndarray:
    """A blend's scale or offset at the ranked columns ``T`` (B, k): (B, 1) for a per-user one
    (B,), (B, k) for a gated, per-item one (B, N)."""
    return a[:, None] if a.ndim == 1 else np.take_along_axis(a, T, axis=1)


def _gated(components: Mapping[str, np.ndarray], gate: GatedBlend, moments, untrained=None) -> tuple:
    """``combine_many`` with each item's weights those of its bucket (scale, offset (B, N))."""
    bucket = gate.bucket_of(np.asarray(components["popularity"]), untrained)  # (B, N)
    weights, shifts = gate.table()
    out, scale, offset = None, {}, {}
    for name, s in components.items():
        table = np.array([b.get(name, 0.0) for b in weights])
        B = len(s)
        if not (table > 0).any():
            scale[name] = offset[name] = np.zeros(B)
            continue
        z, s1, o1 = zscore(np.array(s, dtype=np.float64), 1.0, (moments or {}).get(name))
        W = table[bucket]  # (B, N)
        z *= W
        scale[name], offset[name] = W * s1[:, None], W * o1[:, None]
        out = z if out is None else out + z
    if out is None:
        out = np.zeros(bucket.shape, dtype=np.float64)
    if any(shifts):
        shift = np.asarray(shifts)[bucket]
        out += shift
        first = next(iter(components))
        offset[first] = np.broadcast_to(offset[first].reshape(len(shift), -1), shift.shape) - shift
    return out, scale, offset


def combine_many(components: Mapping[str, np.ndarray], weights: Mapping[str, float],
                 moments: Mapping[str, tuple[float, float]] | None = None, untrained: np.ndarray | None = None):
    """``combine`` of B users at once: each component (B, N) -> (score (B, N), scale and offset
    per component, each (B,), or (B, N) for a ``GatedBlend``); every user's moments are its own
    row's. A gated blend without the popularity component (no counts) serves its last bucket.
    ``untrained`` (N,) or (B, N): the items a gate's untrained bucket is for (None: none)."""
    if isinstance(weights, GatedBlend):
        if "popularity" in components:
            return _gated(components, weights, moments, untrained)
        weights = weights.buckets[-1]
    out = None
    scale: dict[str, np.ndarray] = {}
    offset: dict[str, np.ndarray] = {}
    for name, s in components.items():
        w = float(weights.get(name, 0.0))
        B = len(s)
        if w <= 0:
            scale[name] = offset[name] = np.zeros(B)
            continue
        z, scale[name], offset[name] = zscore(np.array(s, dtype=np.float64), w, (moments or {}).get(name))
        if not scale[name].any():  # constant for every user: contributes nothing
            continue
        out = z if out is None else out + z
    if out is None:
        first = next(iter(components.values()))
        out = np.zeros((len(first), np.shape(first)[1]), dtype=np.float64)
    return out, scale, offset


def component_moments(s: np.ndarray) -> tuple[float, float]:
    """(mean, std) of one component's scores, as ``combine`` computes them."""
    s = np.asarray(s, dtype=np.float64)
    return float(s.mean()), float(s.std())


def normalise_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Non-negative weights scaled to sum to 1 (all zero stays all zero)."""
    w = {k: max(0.0, float(v)) for k, v in weights.items()}
    total = sum(w.values())
    return {k: (v / total if total > 0 else 0.0) for k, v in w.items()}
