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
   ``"Title (1995). Genres: A, B. Tags: t1, t2"`` with the movie's most
   frequent tags. Each rating row is an interaction of type ``rating``; each
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
layout, which :func:`load_dataset` reads back unchanged:

>>> import tempfile
>>> ds = Dataset(
...     name="tiny",
...     items={"a": Item("a", "Alpha", "Alpha. Genres: X", ("X",), {"price": 3.5}, None)},
...     interactions=[Interaction("u1", "a", 1_000, "click")],
... )
>>> with tempfile.TemporaryDirectory() as tmp:
...     _ = write_jsonl_dataset(ds, tmp)
...     back = load_dataset(tmp)
>>> back.items == ds.items and back.interactions == ds.interactions
True
"""

from __future__ import annotations

import csv
import logging
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson

logger = logging.getLogger(__name__)

__all__ = [
    "INTERACTION_TYPES",
    "Dataset",
    "Interaction",
    "Item",
    "load_dataset",
    "write_jsonl_dataset",
]

#: The interaction types an event may have.
INTERACTION_TYPES: frozenset[str] = frozenset({"click", "favorite", "rating", "review"})

# Genre values that MovieLens uses to say "no genre".
_NO_GENRE = frozenset({"(no genres listed)", "unknown"})
_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:\s*[\u2013-]\s*\d{0,4})?\)\s*$")


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


def _year_to_ms(year: int | None) -> int | None:
    if year is None:
        return None
    return int(datetime(year, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)


def _parse_year(value: Any) -> int | None:
    try:
        year = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return year if 1 <= year <= 9999 else None


def _seconds_to_ms(value: str | float) -> int:
    return int(round(float(value) * 1000))


def _movie_text(title: str, year: int | None, genres: Iterable[str], tags: Iterable[str] = ()) -> str:
    parts = [f"{title} ({year})" if year is not None else title]
    genres = list(genres)
    tags = list(tags)
    if genres:
        parts.append("Genres: " + ", ".join(genres))
    if tags:
        parts.append("Tags: " + ", ".join(tags))
    return ". ".join(parts)


def _finish(name: str, items: dict[str, Item], events: Iterable[Interaction]) -> Dataset:
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


def _load_jsonl(folder: Path) -> Dataset:
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
    return _finish(folder.name, items, events)


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


# --------------------------------------------------------------------------- MovieLens CSV


def _split_movie_title(raw: str) -> tuple[str, int | None]:
    raw = raw.strip()
    m = _TITLE_YEAR.match(raw)
    if not m:
        return raw, None
    return m.group("title"), _parse_year(m.group("year"))


def _top_tags(tags: list[str], limit: int) -> list[str]:
    """Most frequent tags (case-insensitive), ties by first appearance."""
    counts: Counter[str] = Counter()
    shown: dict[str, str] = {}
    for tag in tags:
        key = tag.strip().lower()
        if not key:
            continue
        counts[key] += 1
        shown.setdefault(key, tag.strip())
    order = {key: i for i, key in enumerate(shown)}
    best = sorted(counts, key=lambda k: (-counts[k], order[k]))[:limit]
    return [shown[k] for k in best]


def _load_movielens_csv(folder: Path, max_item_tags: int) -> Dataset:
    tag_rows: list[dict[str, str]] = []
    tags_path = folder / "tags.csv"
    if tags_path.exists():
        with tags_path.open(newline="", encoding="utf-8") as fh:
            tag_rows = list(csv.DictReader(fh))
    tags_by_movie: dict[str, list[str]] = defaultdict(list)
    for row in tag_rows:
        tags_by_movie[row["movieId"]].append(row["tag"])

    items: dict[str, Item] = {}
    with (folder / "movies.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            item_id = row["movieId"].strip()
            title, year = _split_movie_title(row["title"])
            genres = tuple(
                g.strip() for g in row.get("genres", "").split("|") if g.strip() and g.strip() not in _NO_GENRE
            )
            tags = _top_tags(tags_by_movie.get(item_id, []), max_item_tags)
            items[item_id] = Item(
                item_id=item_id,
                title=title,
                text=_movie_text(title, year, genres, tags),
                categories=genres,
                attributes={"year": year} if year is not None else {},
                published_ts=_year_to_ms(year),
            )

    events: list[Interaction] = []
    with (folder / "ratings.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            rating = row.get("rating", "").strip()
            events.append(
                Interaction(
                    user_id=row["userId"].strip(),
                    item_id=row["movieId"].strip(),
                    ts=_seconds_to_ms(row["timestamp"]),
                    type="rating",
                    rating=float(rating) if rating else None,
                )
            )
    for row in tag_rows:
        events.append(
            Interaction(
                user_id=row["userId"].strip(),
                item_id=row["movieId"].strip(),
                ts=_seconds_to_ms(row["timestamp"]),
                type="review",
                rating=None,
                text=row["tag"],
            )
        )
    return _finish(folder.name, items, events)


# --------------------------------------------------------------------------- RecBole atomic


def _read_atomic(path: Path) -> tuple[list[tuple[str, str]], Iterator[list[str]]]:
    """Return ``[(name, type), ...]`` from the typed header and an iterator of rows."""
    fh = path.open(newline="", encoding="utf-8")
    reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        header = next(reader)
    except StopIteration:
        fh.close()
        raise ValueError(f"{path}: empty file") from None
    columns = []
    for field in header:
        name, _, ftype = field.strip().partition(":")
        columns.append((name, ftype or "token"))

    def rows() -> Iterator[list[str]]:
        with fh:
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue
                yield row + [""] * (len(columns) - len(row))

    return columns, rows()


def _atomic_value(value: str, ftype: str) -> Any:
    value = value.strip()
    if ftype == "float":
        try:
            return float(value)
        except ValueError:
            return None
    if ftype == "float_seq":
        out = []
        for v in value.split():
            try:
                out.append(float(v))
            except ValueError:
                pass
        return out
    if ftype == "token_seq":
        return value.split()
    return value


def _first(names: list[str], *candidates: str) -> int | None:
    for cand in candidates:
        if cand in names:
            return names.index(cand)
    return None


def _load_recbole(folder: Path, inter_path: Path, item_path: Path) -> Dataset:
    name = inter_path.stem

    columns, rows = _read_atomic(item_path)
    names = [c[0] for c in columns]
    i_id = _first(names, "item_id")
    if i_id is None:
        raise ValueError(f"{item_path}: no item_id column")
    i_title = _first(names, "movie_title", "title", "item_title", "name")
    i_year = _first(names, "release_year", "year")
    i_cat = _first(names, "class", "genre", "genres", "categories", "category")
    used = {i for i in (i_id, i_title, i_year, i_cat) if i is not None}
    items: dict[str, Item] = {}
    for row in rows:
        item_id = row[i_id].strip()
        title = row[i_title].strip() if i_title is not None else item_id
        year = _parse_year(row[i_year]) if i_year is not None else None
        cats = tuple(c for c in row[i_cat].split() if c not in _NO_GENRE) if i_cat is not None else ()
        attributes: dict[str, Any] = {
            names[j]: _atomic_value(row[j], columns[j][1]) for j in range(len(columns)) if j not in used
        }
        if year is not None:
            attributes["year"] = year
        items[item_id] = Item(
            item_id=item_id,
            title=title,
            text=_movie_text(title, year, cats),
            categories=cats,
            attributes=attributes,
            published_ts=_year_to_ms(year),
        )

    columns, rows = _read_atomic(inter_path)
    names = [c[0] for c in columns]
    u_col = _first(names, "user_id")
    it_col = _first(names, "item_id")
    if u_col is None or it_col is None:
        raise ValueError(f"{inter_path}: needs user_id and item_id columns")
    r_col = _first(names, "rating")
    t_col = _first(names, "timestamp")
    etype = "rating" if r_col is not None else "click"
    events = []
    for rowno, row in enumerate(rows):
        rating = None
        if r_col is not None and row[r_col].strip():
            rating = float(row[r_col])
        ts = _seconds_to_ms(row[t_col]) if t_col is not None and row[t_col].strip() else rowno
        events.append(
            Interaction(
                user_id=row[u_col].strip(),
                item_id=row[it_col].strip(),
                ts=ts,
                type=etype,
                rating=rating,
            )
        )
    return _finish(name, items, events)


# --------------------------------------------------------------------------- entry point


def load_dataset(path: str | Path, *, max_item_tags: int = 5) -> Dataset:
    """Load the dataset in folder ``path``; the layout is detected from its files.

    ``max_item_tags`` bounds how many tags go into a MovieLens item's text.
    Raises ``FileNotFoundError`` for a missing folder and ``ValueError`` when no
    known layout matches.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {folder}")
    if (folder / "items.jsonl").is_file() and (folder / "interactions.jsonl").is_file():
        return _load_jsonl(folder)
    if (folder / "movies.csv").is_file() and (folder / "ratings.csv").is_file():
        return _load_movielens_csv(folder, max_item_tags)
    inters = sorted(folder.glob("*.inter"))
    preferred = [p for p in inters if p.stem == folder.name]
    for inter in preferred + [p for p in inters if p not in preferred]:
        item = inter.with_suffix(".item")
        if item.is_file():
            return _load_recbole(folder, inter, item)
    raise ValueError(
        f"{folder}: no known dataset layout (expected items.jsonl + interactions.jsonl, "
        "movies.csv + ratings.csv, or <name>.inter + <name>.item)"
    )
