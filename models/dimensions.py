"""Interest dimensions: each is a small rule for how one event moves one decayed average.

Every dimension keeps a weighted, time-decayed mean of some item vector in one *space*:

- ``text``: the encoder's item vectors (semantics); ``cf``: collaborative item factors learned
  from the interaction log; ``hybrid``: both side by side, so a trained fusion can weigh what the
  text says against what co-engagement says; ``category``: hashed category/brand/price-band
  distribution.

Update for an event at time t with item vector x and weight w (all dimensions share it):

    decay  = per_event_decay * 0.5 ** ((t - t_last) / half_life)
    acc    = decay * acc + w * x          # stored as the mean: mean = acc / norm
    norm   = decay * norm + |w|

so state is O(space) per dimension and never needs the user's history again. A dimension whose
norm is 0 (no evidence yet) is masked out by the fusion.

>>> d = Dimension("content", "text", weight="strength")
>>> d.event_weight(strength=2.0, valence=-1.0)
2.0
>>> Dimension("sentiment", "text", weight="valence").event_weight(strength=2.0, valence=-1.0)
-1.0
"""
from __future__ import annotations

from dataclasses import dataclass

DAY_MS = 86_400_000.0


@dataclass(frozen=True)
class Dimension:
    name: str
    space: str  # "text" | "cf" | "hybrid" | "category"
    weight: str = "strength"  # "strength" | "valence" | "liked" (strength of positive events only)
    half_life_ms: float = 0.0  # 0 = no time decay
    per_event_decay: float = 1.0  # < 1 forgets older events by count: short-term interest

    def event_weight(self, strength: float, valence: float) -> float:
        if self.weight == "strength":
            return strength
        if self.weight == "valence":
            return valence
        if self.weight == "liked":
            return strength * max(valence, 0.0)
        raise ValueError(f"unknown weight rule {self.weight!r}")

    def decay(self, dt_ms: float) -> float:
        d = self.per_event_decay
        if self.half_life_ms > 0 and dt_ms > 0:
            d *= 0.5 ** (dt_ms / self.half_life_ms)
        return d


def content(space: str = "text") -> Dimension:
    """Long-term semantic centre of everything engaged with, by action strength."""
    return Dimension("content", space, "strength", half_life_ms=365 * DAY_MS)


def sentiment(space: str = "text") -> Dimension:
    """Liked minus disliked: a 1-star item pulls this vector away from similar items."""
    return Dimension("sentiment", space, "valence", half_life_ms=365 * DAY_MS)


def recency(space: str = "text", half_life_ms: float = 1 * DAY_MS) -> Dimension:
    """Short-term interest: the last few events, by count and by event time (a domain's
    freshness half-life replaces the default of 1 day, ``models.domains``)."""
    return Dimension("recency", space, "strength", half_life_ms=half_life_ms, per_event_decay=0.7)


def category() -> Dimension:
    """Distribution over categories, brands and price bands of liked items."""
    return Dimension("category", "category", "strength", half_life_ms=365 * DAY_MS)


def collaborative() -> Dimension:
    """Mean of collaborative item factors of engaged items (what similar users also engaged with)."""
    return Dimension("collaborative", "cf", "strength", half_life_ms=365 * DAY_MS)


def default_dimensions(space: str = "text") -> tuple[Dimension, ...]:
    """The product's dimensions; ``space`` is where content, sentiment and recency live:
    ``"text"`` (transformer vectors only: the untrained default, which has no CF factors),
    ``"hybrid"`` (text + CF factors: trained models), ``"cf"`` (no text: the ablation that shows
    what the large model adds)."""
    return (content(space), sentiment(space), recency(space), category(), collaborative())
