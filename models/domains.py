"""Domain presets: how one domain's events are read by the interest model.

A :class:`DomainConfig` says how much each event type counts (``event_weights``: the action
strength of ``click``, ``favorite``, ``rating``, ``review``), which interest dimensions the domain
uses (``dimensions``, names of :mod:`models.dimensions`, most important first) and how fast
interest goes stale (``freshness_half_life_days``). The worker picks one with the setting
``STREAM_RECO_DOMAIN`` (``stream_app.settings``), ``stream-app train`` / ``evaluate`` with
``--domain``; ``default`` is the behaviour without a domain.

What a preset changes in :class:`models.engine.InterestModel`:

- **event weights**: the strength of each event type (``models.features.strength``); a rating
  keeps its 1-5 scaling, multiplied by the domain's ``rating`` weight;
- **dimensions**: only the listed ones are kept (in the model's own order:
  content, sentiment, recency, category, collaborative);
- **freshness**: a domain with a half-life uses it as the event-time half-life of the
  ``recency`` dimension (by *event time*, not item age: the short-term interest loses half its
  weight when the user's next event comes that many days later); without one, recency keeps its
  default of 1 day.

A trained checkpoint stores its own dimensions; the domain's event weights apply on top.

>>> DOMAINS["news"].freshness_half_life_days
1.0
>>> get_domain("ecommerce").event_weights["favorite"] > get_domain("ecommerce").event_weights["click"]
True
>>> [d.name for d in get_domain("default").dims()]
['content', 'sentiment', 'recency', 'category', 'collaborative']
>>> [d.half_life_ms / DAY_MS for d in get_domain("video").dims() if d.name == "recency"]
[30.0]
"""
from __future__ import annotations

from dataclasses import dataclass, field

from models.dimensions import DAY_MS, Dimension, default_dimensions, recency

__all__ = ["BASE_EVENT_WEIGHTS", "DIMENSION_NAMES", "DOMAINS", "DomainConfig", "get_domain"]

EVENT_TYPES = ("click", "favorite", "rating", "review")
#: The interest dimensions of the model, in its own order.
DIMENSION_NAMES = tuple(d.name for d in default_dimensions())
#: Action strength of each event type without a domain (a rating: times its 1-5 scaling).
BASE_EVENT_WEIGHTS = {"click": 0.5, "review": 1.0, "favorite": 1.5, "rating": 1.0}


@dataclass(frozen=True)
class DomainConfig:
    """How one domain's events and items are read. ``event_weights``: relative strength of each
    event type (``click``, ``favorite``, ``rating``, ``review``); ``dimensions``: the interest
    dimensions that matter, most important first; ``freshness_half_life_days``: how fast interest
    goes stale (``None``: recency keeps its default half-life)."""

    name: str
    event_weights: dict[str, float] = field(hash=False)
    dimensions: tuple[str, ...]
    freshness_half_life_days: float | None
    notes: str
    item_attributes: tuple[str, ...] = ()

    def __post_init__(self):
        unknown = set(self.event_weights) - set(EVENT_TYPES)
        if unknown:
            raise ValueError(f"{self.name}: unknown event types {sorted(unknown)}")
        bad = [w for w in self.event_weights.values() if not 0.0 <= float(w) <= 100.0]
        if bad:
            raise ValueError(f"{self.name}: event weights must be between 0 and 100, not {bad}")
        unknown = set(self.dimensions) - set(DIMENSION_NAMES)
        if unknown or not self.dimensions:
            raise ValueError(f"{self.name}: dimensions must be a non-empty subset of "
                             f"{list(DIMENSION_NAMES)}, not {list(self.dimensions)}")
        if self.freshness_half_life_days is not None and self.freshness_half_life_days <= 0:
            raise ValueError(f"{self.name}: freshness_half_life_days must be > 0 or None")

    def dims(self, space: str = "text") -> tuple[Dimension, ...]:
        """The model's dimensions for this domain (``space`` as in
        :func:`models.dimensions.default_dimensions`), in the model's order."""
        out = []
        for d in default_dimensions(space):
            if d.name not in self.dimensions:
                continue
            if d.name == "recency" and self.freshness_half_life_days is not None:
                d = recency(space, half_life_ms=self.freshness_half_life_days * DAY_MS)
            out.append(d)
        return tuple(out)


DEFAULT = DomainConfig(
    name="default",
    event_weights=dict(BASE_EVENT_WEIGHTS),
    dimensions=DIMENSION_NAMES,
    freshness_half_life_days=None,
    notes="No domain: click 0.5, review 1.0, favorite 1.5, a rating 0.5 (1 star) to 2.0 (5 stars); "
          "all five dimensions; recency's half-life 1 day.",
)

ECOMMERCE = DomainConfig(
    name="ecommerce",
    event_weights={"click": 0.3, "favorite": 2.0, "rating": 1.2, "review": 1.0},
    dimensions=("category", "collaborative", "content", "sentiment", "recency"),
    freshness_half_life_days=None,
    notes="Views are cheap, cart/purchase (favorite) is the strong signal. Brand and price band "
          "(attributes.brand, attributes.price) carry much of the preference and enter through "
          "the category dimension; bought-together items give co-engagement.",
    item_attributes=("price", "brand"),
)

NEWS = DomainConfig(
    name="news",
    event_weights={"click": 1.0, "favorite": 1.5, "rating": 0.5, "review": 0.8},
    dimensions=("recency", "content", "category", "collaborative", "sentiment"),
    freshness_half_life_days=1.0,
    notes="Clicks dominate; articles are read mostly within a day or two of published_ts, so "
          "freshness (half-life 1 day) and short-term interest matter more than long-term taste.",
    item_attributes=(),
)

VIDEO = DomainConfig(
    name="video",
    event_weights={"click": 1.0, "favorite": 1.5, "rating": 1.0, "review": 0.8},
    dimensions=("content", "collaborative", "category", "recency", "sentiment"),
    freshness_half_life_days=30.0,
    notes="A watch is a click whose rating field holds the fraction watched (0-1); likes are "
          "favorites. Episodes of a series are watched in sequence (strong co-engagement); new "
          "releases get a mild boost (half-life 30 days).",
    item_attributes=("series", "duration_min"),
)

#: The presets by name.
DOMAINS: dict[str, DomainConfig] = {d.name: d for d in (DEFAULT, ECOMMERCE, NEWS, VIDEO)}


def get_domain(domain: str | DomainConfig | None) -> DomainConfig:
    """The preset named ``domain`` (or ``domain`` itself when it is a config; None: default).

    >>> get_domain("video").name
    'video'
    >>> get_domain("books")
    Traceback (most recent call last):
    ...
    ValueError: unknown domain 'books'; known: default, ecommerce, news, video
    """
    if domain is None:
        return DEFAULT
    if isinstance(domain, DomainConfig):
        return domain
    try:
        return DOMAINS[domain]
    except KeyError:
        raise ValueError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}") from None
