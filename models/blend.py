"""Fusion of component scores that cannot fall below its best component (numpy only).

Each component c (the attention-fused vector score, the co-engagement score, popularity, the
sequence model's score) gives a score vector s_c over the catalogue; the final score is

    score_i = sum_c w_c * (s_c,i - mean(s_c)) / std(s_c)          (per user, over the catalogue)

with weights w_c >= 0 that sum to 1, chosen on the validation targets by a grid over the simplex
that contains every single component alone, among the points at least as good as the best of
them (``models.offline.choose_blend.select_weights``): on validation the blend is therefore never below
its best component. A component with constant
scores for this user (std 0, e.g. no recent items yet) contributes nothing.

Explanations: score_i = sum_c scale_c * s_c,i - offset, with scale_c = w_c / std_c; the engine
splits the attention term further into its dimensions (see ``InterestModel.recommend``).

>>> import numpy as np
>>> s, scale, offset = combine({"a": np.array([0.0, 1.0, 2.0]), "b": np.array([5.0, 5.0, 5.0])},
...                            {"a": 1.0, "b": 0.0})
>>> np.round(s, 3).tolist(), offset["b"]
([-1.225, 0.0, 1.225], 0.0)
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

COMPONENTS = ("attention", "co-engagement", "popularity", "sequence")


def combine(components: Mapping[str, np.ndarray], weights: Mapping[str, float],
            moments: Mapping[str, tuple[float, float]] | None = None):
    """-> (score (N,), scale per component, offset per component) with
    score = sum_c scale_c * s_c - offset_c. ``moments``: (mean, std) of some components, known
    already (``component_moments``). One user's ``combine_many``."""
    out, scale, offset = combine_many({c: np.asarray(s)[None] for c, s in components.items()}, weights, moments)
    return out[0], {c: float(v[0]) for c, v in scale.items()}, {c: float(v[0]) for c, v in offset.items()}


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


def combine_many(components: Mapping[str, np.ndarray], weights: Mapping[str, float],
                 moments: Mapping[str, tuple[float, float]] | None = None):
    """``combine`` of B users at once: each component (B, N) -> (score (B, N), scale and offset
    per component, each (B,)); every user's moments are its own row's."""
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
