"""The interest model as one object: catalogue vectors + dimensions + fusion scorer.

This is the single code path for "event in, top-K out". The stream worker and the offline
evaluation both call ``add_item``, ``apply`` and ``recommend`` on it, so what is measured offline is
what is served.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from models.cf import load_factors
from models.dimensions import Dimension, default_dimensions
from models.features import CATEGORY_BUCKETS, category_tokens, category_vector, strength, valence
from models.fusion import FusedScorer
from models.items import ItemVectors
from models.state import UserState


@dataclass
class Ranked:
    item_id: str
    score: float
    reasons: dict[str, float]  # dimension -> contribution to the score


@dataclass
class Recommendation:
    items: list[Ranked]
    dimension_weights: dict[str, float]
    model_version: str


class InterestModel:
    def __init__(self, scorer: FusedScorer, items: ItemVectors):
        self.scorer = scorer
        self.dims: tuple[Dimension, ...] = scorer.cfg.dims
        self.items = items
        self.dim_names = [d.name for d in self.dims]

    @classmethod
    def untrained(cls, text_dim: int = 384, cf_dim: int = 64) -> "InterestModel":
        space = {"text": text_dim, "cf": cf_dim, "category": CATEGORY_BUCKETS, "hybrid": text_dim + cf_dim}
        return cls(FusedScorer.default(default_dimensions(), space), ItemVectors(text_dim, cf_dim, CATEGORY_BUCKETS))

    @classmethod
    def load(cls, checkpoint: str | Path | None) -> "InterestModel":
        """A trained checkpoint folder (``stream-app train``), or the untrained default for None."""
        if not checkpoint:
            return cls.untrained()
        path = Path(checkpoint)
        scorer = FusedScorer.load(path)
        sd = scorer.cfg.space_dims
        cf = load_factors(path / "cf.npz") if (path / "cf.npz").exists() else {}
        return cls(scorer, ItemVectors(sd["text"], sd["cf"], sd["category"], cf_factors=cf))

    @property
    def version(self) -> str:
        return self.scorer.version

    def new_state(self) -> UserState:
        return UserState.empty(self.dims, self.items.dims)

    def add_item(self, item_id: str, text_vector: np.ndarray, categories: Sequence[str] = (),
                 attributes: Mapping | None = None) -> int:
        cat = category_vector(category_tokens(categories, attributes), self.items.dims["category"])
        return self.items.upsert(item_id, text=text_vector, category=cat)

    def apply(self, state: UserState, item_id: str, event_type: str, value: float | None, ts: int,
              offset: int, text_sentiment: float | None = None, text_vector: np.ndarray | None = None) -> bool:
        """Fold one event into the user's state. Raises KeyError for an unknown or retired item.
        ``text_vector``: the encoded review/comment text of the event, if any."""
        if item_id not in self.items:
            raise KeyError(item_id)
        row = self.items.index[item_id]
        return state.apply(self.dims, self.items, row, item_id, strength(event_type, value),
                           valence(event_type, value, text_sentiment), ts, offset, text_vector)

    def scores(self, state: UserState) -> np.ndarray:
        """(N,) scores over the catalogue in ``items.ids`` order (seen items not yet excluded)."""
        return self.scorer.scores(state.mean, state.norm, self.items)

    def recommend(self, state: UserState, k: int = 10) -> Recommendation:
        u, alpha, h = self.scorer.user(state.mean, state.norm)
        E, b = self.scorer.item_matrix(self.items)
        s = E @ u + b  # (N,)
        seen = [self.items.index[i] for i in state.seen if i in self.items.index]
        s[seen] = -np.inf
        s[self.items.deleted] = -np.inf
        top = top_k(s, k)
        contrib = self.scorer.explain(alpha, h, E[top])  # (k, n_dims)
        ranked = [Ranked(self.items.ids[r], float(s[r]),
                         {n: round(float(c), 6) for n, c in zip(self.dim_names, contrib[j])})
                  for j, r in enumerate(top)]
        weights = {n: round(float(a), 6) for n, a in zip(self.dim_names, alpha)}
        return Recommendation(ranked, weights, self.version)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best finite scores, best first; ties broken by lower index.

    >>> top_k(np.array([0.1, 0.9, -np.inf, 0.9, 0.5]), 3).tolist()
    [1, 3, 4]
    """
    finite = np.flatnonzero(np.isfinite(scores))
    k = min(k, finite.size)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    cand = finite[np.argpartition(-scores[finite], k - 1)[:k]] if k < finite.size else finite
    return cand[np.lexsort((cand, -scores[cand]))][:k]
