"""What one event and one item contribute to a user's interest, independent of any model weights.

- action strength: how much an event says "I engaged" (view < click < favorite < high rating);
- valence: liked (+1) .. disliked (-1), from the rating or from review text sentiment;
- category tokens: genres/categories plus domain attributes (brand, price band), hashed into a
  fixed number of buckets so any domain's vocabulary fits one fixed-size vector;
- item text: the one string the text encoder reads for an item, wherever it is encoded
  (worker, training, evaluation, benchmarks).

>>> strength("rating", 5.0) > strength("favorite", None) > strength("click", None)
True
>>> valence("rating", 1.0), valence("rating", 5.0)
(-1.0, 1.0)
>>> category_tokens(["Drama"], {"brand": "Acme", "price": 12.0})
['cat:drama', 'brand:acme', 'price:10-20']
>>> item_text("Heat", None, ["Action", "Crime"])
'Heat. Categories: Action, Crime'
>>> item_text("Heat", "Heat (1995). Genres: Action, Crime", ["Action", "Crime"])
'Heat (1995). Genres: Action, Crime'
"""
from __future__ import annotations

import math
import zlib
from typing import Iterable, Mapping

import numpy as np

from models.domains import BASE_EVENT_WEIGHTS

CATEGORY_BUCKETS = 256

_BASE_STRENGTH = BASE_EVENT_WEIGHTS  # the "default" domain's event weights (models.domains)
_PRICE_BANDS = (0, 1, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)


def strength(event_type: str, value: float | None, weights: Mapping[str, float] | None = None) -> float:
    """Engagement strength of one event: the event type's weight (``weights``: a domain's
    ``event_weights``; default ``_BASE_STRENGTH``). A rating with a value is its weight times
    0.5 (1 star) .. 2.0 (5 stars).

    >>> strength("rating", 5.0, {"rating": 1.2}), strength("click", None, {"click": 0.3})
    (2.4, 0.3)
    """
    weights = _BASE_STRENGTH if weights is None else weights
    if event_type == "rating" and value is not None:
        return weights.get("rating", 1.0) * (0.5 + (float(value) - 1.0) * 0.375)
    return weights.get(event_type, 0.5)


def valence(event_type: str, value: float | None, text_sentiment: float | None = None) -> float:
    """Liked (+) vs disliked (-) in [-1, 1]. Ratings: (r-3)/2. Review text: its sentiment."""
    if event_type == "rating" and value is not None:
        return max(-1.0, min(1.0, (float(value) - 3.0) / 2.0))
    if text_sentiment is not None:
        return max(-1.0, min(1.0, float(text_sentiment)))
    if event_type == "favorite":
        return 1.0
    if event_type == "click":
        return 0.25
    return 0.0


def item_text(title: str, text: str | None = None, categories: Iterable[str] = ()) -> str:
    """What the encoder reads for an item: its descriptive text when it has one (data sets put
    title, year and genres there), otherwise its title followed by its categories."""
    if text and text.strip():
        return text
    cats = [c for c in categories if c]
    return f"{title}. Categories: {', '.join(cats)}" if cats else title


def _price_band(price: float) -> str:
    lo = _PRICE_BANDS[0]
    for hi in _PRICE_BANDS[1:]:
        if price < hi:
            return f"{lo}-{hi}"
        lo = hi
    return f"{lo}+"


def category_tokens(categories: Iterable[str], attributes: Mapping | None = None) -> list[str]:
    toks = [f"cat:{c.strip().lower()}" for c in categories if c and c.strip()]
    attributes = attributes or {}
    if attributes.get("brand"):
        toks.append(f"brand:{str(attributes['brand']).strip().lower()}")
    price = attributes.get("price")
    if isinstance(price, (int, float)) and not isinstance(price, bool) and math.isfinite(price) and price >= 0:
        toks.append(f"price:{_price_band(float(price))}")
    return toks


def category_vector(tokens: Iterable[str], buckets: int = CATEGORY_BUCKETS) -> np.ndarray:
    """Hashed multi-hot, L2-normalised; zeros when there are no tokens. ``(buckets,)``"""
    v = np.zeros(buckets, dtype=np.float32)
    for t in tokens:
        v[zlib.crc32(t.encode()) % buckets] += 1.0
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


class TextSentiment:
    """Lexicon sentiment of short user text (reviews, comments, tags), in [-1, 1]; offline (VADER)."""

    def __init__(self) -> None:
        import vader

        self._an = vader.SentimentIntensityAnalyzer()

    def __call__(self, text: str) -> float:
        return float(self._an.polarity_scores(text)["compound"])
