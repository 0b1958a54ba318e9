"""A data set as Kafka messages: ``catalog_item/v1`` per item and ``interaction/v1`` per event,
cut to the schemas' limits. Used by the replay, the demo, the benchmark and the tests."""
from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

from models.offline.data import Dataset, Interaction, Item

MAX_TITLE, MAX_ITEM_TEXT, MAX_CATEGORIES, MAX_EVENT_TEXT = 500, 10_000, 64, 4000


def catalog_message(item: Item) -> dict:
    """One ``catalog_item/v1`` message for a data set item."""
    msg: dict = {"item_id": item.item_id, "title": (item.title or item.item_id)[:MAX_TITLE]}
    if item.text:
        msg["text"] = item.text[:MAX_ITEM_TEXT]
    categories = list(dict.fromkeys(c for c in item.categories if c))[:MAX_CATEGORIES]
    if categories:
        msg["categories"] = categories
    attributes = dict(item.attributes or {})
    price = attributes.get("price")
    if price is not None and (isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0):
        del attributes["price"]
    if "brand" in attributes and not isinstance(attributes["brand"], str):
        attributes["brand"] = str(attributes["brand"])
    if attributes:
        msg["attributes"] = attributes
    if item.published_ts is not None:
        msg["published_ts"] = int(item.published_ts)
    return msg


def interaction_message(ev: Interaction, event_id: str) -> dict:
    """One ``interaction/v1`` message. Ratings are clamped to the schema's 1..5 scale (MovieLens
    has half stars down to 0.5); a rating without a value is sent as a click, a review without
    text as its rating (or a click)."""
    msg: dict = {"event_id": event_id, "type": ev.type, "user_id": ev.user_id, "item_id": ev.item_id,
                 "ts": max(0, int(ev.ts))}
    if ev.rating is not None and math.isfinite(ev.rating):
        value = min(5.0, max(1.0, float(ev.rating)))
        msg["value"] = int(value) if value.is_integer() else value
    if ev.text:
        msg["text"] = ev.text[:MAX_EVENT_TEXT]
    if msg["type"] == "rating" and "value" not in msg:
        msg["type"] = "click"
    if msg["type"] == "review" and "text" not in msg:
        msg["type"] = "rating" if "value" in msg else "click"
    return msg


def dataset_messages(ds: Dataset) -> tuple[list[dict], list[dict]]:
    """(catalog messages, interaction messages in time order). Event ids are
    ``<data set name>-<index in the data set's log>``, so they are unique per data set."""
    catalog = [catalog_message(it) for it in ds.items.values()]
    order = sorted(range(len(ds.interactions)), key=lambda i: ds.interactions[i].ts)  # stable
    events = [interaction_message(ds.interactions[i], f"{ds.name}-{i}") for i in order]
    return catalog, events


def most_active_users(events: Sequence[dict], n: int) -> list[str]:
    """The ``n`` users with the most events (ties: first seen first)."""
    return [u for u, _ in Counter(ev["user_id"] for ev in events).most_common(n)] if n > 0 else []


