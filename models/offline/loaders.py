"""Data set folders -> :class:`~models.offline.data.Dataset`: the entry point
:func:`load_dataset` and the readers of the MovieLens CSV and RecBole atomic layouts (the
layouts are documented in :mod:`models.offline.data`).
"""
from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any, Iterator

from models.offline.data import (Dataset, Interaction, Item, finish, movie_text, parse_year,
                                 read_jsonl_dataset, seconds_to_ms, year_to_ms)

__all__ = ["load_dataset"]

# Genre values that MovieLens uses to say "no genre".
_NO_GENRE = frozenset({"(no genres listed)", "unknown"})
_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:\s*[\u2013-]\s*\d{0,4})?\)\s*$")

# --------------------------------------------------------------------------- MovieLens CSV


def _split_movie_title(raw: str) -> tuple[str, int | None]:
    raw = raw.strip()
    m = _TITLE_YEAR.match(raw)
    if not m:
        return raw, None
    return m.group("title"), parse_year(m.group("year"))


def _load_movielens_csv(folder: Path) -> Dataset:
    tag_rows: list[dict[str, str]] = []
    tags_path = folder / "tags.csv"
    if tags_path.exists():
        with tags_path.open(newline="", encoding="utf-8") as fh:
            tag_rows = list(csv.DictReader(fh))

    items: dict[str, Item] = {}
    with (folder / "movies.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            item_id = row["movieId"].strip()
            title, year = _split_movie_title(row["title"])
            genres = tuple(
                g.strip() for g in row.get("genres", "").split("|") if g.strip() and g.strip() not in _NO_GENRE
            )
            items[item_id] = Item(
                item_id=item_id,
                title=title,
                text=movie_text(title, year, genres),
                categories=genres,
                attributes={"year": year} if year is not None else {},
                published_ts=year_to_ms(year),
            )

    events: list[Interaction] = []
    with (folder / "ratings.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            rating = row.get("rating", "").strip()
            events.append(
                Interaction(
                    user_id=row["userId"].strip(),
                    item_id=row["movieId"].strip(),
                    ts=seconds_to_ms(row["timestamp"]),
                    type="rating",
                    rating=float(rating) if rating else None,
                )
            )
    for row in tag_rows:
        events.append(
            Interaction(
                user_id=row["userId"].strip(),
                item_id=row["movieId"].strip(),
                ts=seconds_to_ms(row["timestamp"]),
                type="review",
                rating=None,
                text=row["tag"],
            )
        )
    return finish(folder.name, items, events)


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
        year = parse_year(row[i_year]) if i_year is not None else None
        cats = tuple(c for c in row[i_cat].split() if c not in _NO_GENRE) if i_cat is not None else ()
        attributes: dict[str, Any] = {
            names[j]: _atomic_value(row[j], columns[j][1]) for j in range(len(columns)) if j not in used
        }
        if year is not None:
            attributes["year"] = year
        items[item_id] = Item(
            item_id=item_id,
            title=title,
            text=movie_text(title, year, cats),
            categories=cats,
            attributes=attributes,
            published_ts=year_to_ms(year),
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
        ts = seconds_to_ms(row[t_col]) if t_col is not None and row[t_col].strip() else rowno
        events.append(
            Interaction(
                user_id=row[u_col].strip(),
                item_id=row[it_col].strip(),
                ts=ts,
                type=etype,
                rating=rating,
            )
        )
    return finish(name, items, events)


# --------------------------------------------------------------------------- entry point


def load_dataset(path: str | Path) -> Dataset:
    """Load the dataset in folder ``path``; the layout is detected from its files.

    Raises ``FileNotFoundError`` for a missing folder and ``ValueError`` when no
    known layout matches.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {folder}")
    if (folder / "items.jsonl").is_file() and (folder / "interactions.jsonl").is_file():
        return read_jsonl_dataset(folder)
    if (folder / "movies.csv").is_file() and (folder / "ratings.csv").is_file():
        return _load_movielens_csv(folder)
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
