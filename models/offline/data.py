"""Datasets: load a folder of items and interactions into one in-memory shape.

Every loader returns a :class:`Dataset` made of :class:`Item` and
:class:`Interaction` records. Ids are strings everywhere, timestamps are
integer milliseconds since the Unix epoch (UTC), and ``Dataset.interactions``
is sorted by timestamp; events with equal timestamps keep their order in the
source files (the sort is stable).

:func:`load_dataset` recognises three folder layouts from their contents,
checked in this order:

1. **Generic JSON Lines** -- the folder holds ``items.jsonl`` and
   ``interactions.jsonl``. One JSON object per line, UTF-8; blank lines are
   ignored.

   ``items.jsonl``:

   ============== ===================== ========================================
   field          type                  meaning
   ============== ===================== ========================================
   item_id        string (required)     unique id; a JSON integer is read as its
                                        decimal string
   title          string (required)     display title
   text           string (optional)     text that describes the item; defaults
                                        to ``title``
   categories     list of strings       category labels, most general first;
                  (optional)            defaults to ``[]``
   attributes     object (optional)     free-form structured fields, e.g.
                                        ``{"price": 12.5, "brand": "acme"}``;
                                        defaults to ``{}``
   published_ts   integer or null       publication time, milliseconds since
                  (optional)            the Unix epoch (UTC)
   ============== ===================== ========================================

   ``interactions.jsonl``:

   ============== ===================== ========================================
   field          type                  meaning
   ============== ===================== ========================================
   user_id        string (required)     user id; a JSON integer is read as its
                                        decimal string
   item_id        string (required)     must name an item of ``items.jsonl``
   ts             integer (required)    event time, milliseconds since the Unix
                                        epoch (UTC)
   type           string (required)     one of ``click``, ``favorite``,
                                        ``rating``, ``review``
   rating         number or null        explicit rating, any scale (e.g. 1-5)
                  (optional)
   text           string or null        text written by the user (a review or
                  (optional)            a tag)
   ============== ===================== ========================================

2. **MovieLens CSV** -- the folder holds ``movies.csv``
   (``movieId,title,genres``) and ``ratings.csv``
   (``userId,movieId,rating,timestamp`` with timestamps in seconds), and
   optionally ``tags.csv`` (``userId,movieId,tag,timestamp``). The year in
   ``"Title (1995)"`` is removed from the title and becomes ``published_ts``
   (1 January of that year); genres (``|``-separated, ``(no genres listed)``
   meaning none) become ``categories``. The item text is
   ``"Title (1995). Genres: A, B"`` (tags are written by users over time, so
   they never enter item text, which would leak the future). Each rating row is an interaction of type ``rating``; each
   tag row is an interaction of type ``review`` whose ``text`` is the tag and
   whose ``rating`` is ``None``.

3. **RecBole atomic files** -- the folder holds ``<name>.inter`` and
   ``<name>.item``: tab-separated, with a typed header such as
   ``user_id:token item_id:token rating:float timestamp:float``. Known
   columns are ``user_id``, ``item_id``, ``rating`` and ``timestamp``
   (seconds) in ``.inter``, and ``item_id``, ``movie_title``/``title``,
   ``release_year``/``year`` and ``class``/``genre``/``categories``
   (space-separated) in ``.item``; other item columns go to
   ``attributes``. With a rating column every event is of type ``rating``,
   otherwise ``click``; without a timestamp column the row number is used
   as the time. The item text is ``"Title (1995). Genres: A, B"``.

Interactions whose item is missing from the item file are dropped, and a
warning with their count is logged.

:func:`write_jsonl_dataset` writes any dataset in the generic JSON Lines
layout, which :func:`read_jsonl_dataset` reads back unchanged:

>>> import tempfile
>>> ds = Dataset(
...     name="tiny",
...     items={"a": Item("a", "Alpha", "Alpha. Genres: X", ("X",), {"price": 3.5}, None)},
...     interactions=[Interaction("u1", "a", 1_000, "click")],
... )
>>> with tempfile.TemporaryDirectory() as tmp:
...     _ = write_jsonl_dataset(ds, tmp)
...     back = read_jsonl_dataset(tmp)
>>> back.items == ds.items and back.interactions == ds.interactions
True
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson

from models.engine import Event

logger = logging.getLogger(__name__)

__all__ = [
    "INTERACTION_TYPES",
    "Dataset",
    "Interaction",
    "Item",
    "read_jsonl_dataset",
    "write_jsonl_dataset",
]

#: The interaction types an event may have.
INTERACTION_TYPES: frozenset[str] = frozenset({"click", "favorite", "rating", "review"})



@dataclass(frozen=True, slots=True)
class Item:
    """One catalogue entry. ``published_ts`` is in milliseconds (UTC) or ``None``."""

    item_id: str
    title: str
    text: str
    categories: tuple[str, ...]
    attributes: dict
    published_ts: int | None


@dataclass(frozen=True, slots=True)
class Interaction:
    """One user event. ``ts`` is in milliseconds (UTC); ``type`` is one of
    ``click``, ``favorite``, ``rating``, ``review``."""

    user_id: str
    item_id: str
    ts: int
    type: str
    rating: float | None = None
    text: str | None = None

    def event(self, event_id: str) -> Event:
        """This interaction as the model's event (what the worker builds from a message)."""
        return Event(self.user_id, self.item_id, self.type, self.rating, self.ts, event_id, self.text)


@dataclass
class Dataset:
    """Items by id and the interaction log, sorted by time (stable)."""

    name: str
    items: dict[str, Item]
    interactions: list[Interaction]

    @property
    def users(self) -> list[str]:
        """User ids in order of first appearance in the log."""
        return list(dict.fromkeys(ev.user_id for ev in self.interactions))


# --------------------------------------------------------------------------- helpers


def year_to_ms(year: int | None) -> int | None:
    if year is None:
        return None
    return int(datetime(year, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)


def parse_year(value: Any) -> int | None:
    try:
        year = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return year if 1 <= year <= 9999 else None


def seconds_to_ms(value: str | float) -> int:
    return int(round(float(value) * 1000))


def movie_text(title: str, year: int | None, genres: Iterable[str]) -> str:
    """``"Title (1995). Genres: A, B"``: what MovieLens items carry as text (tags are written by
    users over time, so they enter as review events, never as item text)."""
    parts = [f"{title} ({year})" if year is not None else title]
    genres = list(genres)
    if genres:
        parts.append("Genres: " + ", ".join(genres))
    return ". ".join(parts)


def finish(name: str, items: dict[str, Item], events: Iterable[Interaction]) -> Dataset:
    kept: list[Interaction] = []
    dropped = 0
    for ev in events:
        if ev.item_id in items:
            kept.append(ev)
        else:
            dropped += 1
    if dropped:
        logger.warning(
            "dataset %s: dropped %d interactions whose item is unknown to the item file",
            name,
            dropped,
        )
    kept.sort(key=lambda ev: ev.ts)  # list.sort is stable
    return Dataset(name=name, items=items, interactions=kept)


# --------------------------------------------------------------------------- JSON Lines


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON: {exc}") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object")
            yield lineno, obj


def _id(value: Any, where: str, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{where}: field {field!r} must be a string, got {value!r}")
    return str(value)


def read_jsonl_dataset(folder: str | Path) -> Dataset:
    """Read a folder in the generic JSON Lines layout."""
    folder = Path(folder)
    items: dict[str, Item] = {}
    items_path = folder / "items.jsonl"
    for lineno, obj in _read_jsonl(items_path):
        where = f"{items_path}:{lineno}"
        try:
            item_id = _id(obj["item_id"], where, "item_id")
            title = str(obj["title"])
        except KeyError as exc:
            raise ValueError(f"{where}: missing field {exc.args[0]!r}") from None
        text = obj.get("text")
        categories = obj.get("categories") or []
        attributes = obj.get("attributes") or {}
        published = obj.get("published_ts")
        if not isinstance(categories, list):
            raise ValueError(f"{where}: 'categories' must be a list of strings")
        if not isinstance(attributes, dict):
            raise ValueError(f"{where}: 'attributes' must be an object")
        items[item_id] = Item(
            item_id=item_id,
            title=title,
            text=str(text) if text is not None else title,
            categories=tuple(str(c) for c in categories),
            attributes=attributes,
            published_ts=None if published is None else int(published),
        )

    events: list[Interaction] = []
    inter_path = folder / "interactions.jsonl"
    for lineno, obj in _read_jsonl(inter_path):
        where = f"{inter_path}:{lineno}"
        try:
            user_id = _id(obj["user_id"], where, "user_id")
            item_id = _id(obj["item_id"], where, "item_id")
            ts_raw = obj["ts"]
            etype = obj["type"]
        except KeyError as exc:
            raise ValueError(f"{where}: missing field {exc.args[0]!r}") from None
        if etype not in INTERACTION_TYPES:
            raise ValueError(f"{where}: unknown interaction type {etype!r}")
        if isinstance(ts_raw, bool) or not isinstance(ts_raw, (int, float)):
            raise ValueError(f"{where}: 'ts' must be an integer (milliseconds)")
        rating = obj.get("rating")
        text = obj.get("text")
        events.append(
            Interaction(
                user_id=user_id,
                item_id=item_id,
                ts=int(round(ts_raw)),
                type=etype,
                rating=None if rating is None else float(rating),
                text=None if text is None else str(text),
            )
        )
    return finish(folder.name, items, events)


def write_jsonl_dataset(ds: Dataset, out_dir: str | Path) -> Path:
    """Write ``ds`` as ``items.jsonl`` and ``interactions.jsonl`` under ``out_dir``.

    Optional interaction fields that are ``None`` are left out. Returns the folder.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "items.jsonl").open("wb") as fh:
        for item in ds.items.values():
            fh.write(
                orjson.dumps(
                    {
                        "item_id": item.item_id,
                        "title": item.title,
                        "text": item.text,
                        "categories": list(item.categories),
                        "attributes": item.attributes,
                        "published_ts": item.published_ts,
                    },
                    option=orjson.OPT_APPEND_NEWLINE,
                )
            )
    with (out / "interactions.jsonl").open("wb") as fh:
        for ev in ds.interactions:
            row: dict[str, Any] = {
                "user_id": ev.user_id,
                "item_id": ev.item_id,
                "ts": ev.ts,
                "type": ev.type,
            }
            if ev.rating is not None:
                row["rating"] = ev.rating
            if ev.text is not None:
                row["text"] = ev.text
            fh.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
    return out
