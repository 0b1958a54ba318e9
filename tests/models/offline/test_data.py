"""Loading datasets: RecBole atomic, MovieLens CSV and generic JSON Lines folders."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest

from models.offline.data import Dataset, Interaction, Item, write_jsonl_dataset
from models.offline.loaders import load_dataset
from tests.data_paths import dataset_dir


def _ms(year: int) -> int:
    from datetime import datetime, timezone

    return int(datetime(year, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def recbole_dir(tmp_path: Path) -> Path:
    d = tmp_path / "toy100"
    d.mkdir()
    (d / "toy100.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t4\t300\n"
        "2\t20\t5\t100\n"
        "1\t20\t3\t100\n"
        "3\t99\t2\t50\n"  # unknown item
        "2\t30\t1\t200\n",
        encoding="utf-8",
    )
    (d / "toy100.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\tdirector:token\n"
        "10\tToy Story\t1995\tAnimation Children's Comedy\tLasseter\n"
        "20\tHeat\t1995\tAction Crime\tMann\n"
        "30\tunkonwn\tunkonwn\tunknown\t\n",
        encoding="utf-8",
    )
    return d


@pytest.fixture
def movielens_dir(tmp_path: Path) -> Path:
    d = tmp_path / "ml-toy"
    d.mkdir()
    (d / "movies.csv").write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation\n"
        '11,"American President, The (1995)",Comedy|Drama\n'
        "27008,From Dusk Till Dawn 2: Texas Blood Money (1999) ,Horror\n"
        "171749,Death Note: Desu nôto (2006–2007),(no genres listed)\n"
        "40697,Babylon 5,Sci-Fi\n",
        encoding="utf-8",
    )
    (d / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        "1,1,4.0,964982703\n"
        "1,11,3.5,964982000\n"
        "2,40697,5.0,964982703\n"
        "2,777,1.0,964982800\n",  # unknown movie
        encoding="utf-8",
    )
    (d / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n"
        "2,1,pixar,964982703\n"
        "3,1,Funny,964990000\n"
        "4,1,Pixar,964990001\n"
        '5,1,"quotable, really",964990002\n'
        "5,1,funny,964990003\n"
        "5,1,classic,964990004\n",
        encoding="utf-8",
    )
    return d


def _write_jsonl(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def jsonl_dir(tmp_path: Path) -> Path:
    d = tmp_path / "shop"
    d.mkdir()
    _write_jsonl(
        d / "items.jsonl",
        [
            '{"item_id": "sku-1", "title": "Kettle", "text": "Steel kettle, 1.7 l", '
            '"categories": ["kitchen", "appliances"], "attributes": {"price": 24.5, "brand": "acme"}, '
            '"published_ts": 1700000000000}',
            "",
            '{"item_id": 2, "title": "Mug"}',
        ],
    )
    _write_jsonl(
        d / "interactions.jsonl",
        [
            '{"user_id": "u1", "item_id": "sku-1", "ts": 2000, "type": "click"}',
            '{"user_id": 7, "item_id": "2", "ts": 1000, "type": "rating", "rating": 4}',
            '{"user_id": "u1", "item_id": "2", "ts": 2000, "type": "review", "text": "nice mug"}',
            '{"user_id": "u1", "item_id": "gone", "ts": 500, "type": "favorite"}',
        ],
    )
    return d


# --------------------------------------------------------------------------- RecBole


def test_recbole_items_and_events(recbole_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="models.offline.data"):
        ds = load_dataset(recbole_dir)
    assert ds.name == "toy100"
    assert set(ds.items) == {"10", "20", "30"}
    toy = ds.items["10"]
    assert toy.title == "Toy Story"
    assert toy.text == "Toy Story (1995). Genres: Animation, Children's, Comedy"
    assert toy.categories == ("Animation", "Children's", "Comedy")
    assert toy.published_ts == _ms(1995) == 788918400000
    assert toy.attributes == {"director": "Lasseter", "year": 1995}
    unknown = ds.items["30"]
    assert unknown.published_ts is None and unknown.categories == () and unknown.text == "unkonwn"

    # Sorted by time; the two events at t=100 keep their file order.
    assert [(e.user_id, e.item_id, e.ts) for e in ds.interactions] == [
        ("2", "20", 100_000),
        ("1", "20", 100_000),
        ("2", "30", 200_000),
        ("1", "10", 300_000),
    ]
    assert all(e.type == "rating" and isinstance(e.rating, float) for e in ds.interactions)
    assert ds.interactions[0].rating == 5.0
    assert "dropped 1 interactions" in caplog.text


def test_recbole_without_rating_or_time(tmp_path: Path) -> None:
    d = tmp_path / "clicks"
    d.mkdir()
    (d / "clicks.inter").write_text("user_id:token\titem_id:token\na\tx\nb\ty\n", encoding="utf-8")
    (d / "clicks.item").write_text("item_id:token\nx\ny\n", encoding="utf-8")
    ds = load_dataset(d)
    assert [(e.type, e.ts, e.rating) for e in ds.interactions] == [("click", 0, None), ("click", 1, None)]
    assert ds.items["x"].title == "x" and ds.items["x"].text == "x"


# --------------------------------------------------------------------------- MovieLens CSV


def test_movielens_titles_genres_and_tags(movielens_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="models.offline.data"):
        ds = load_dataset(movielens_dir)
    assert ds.name == "ml-toy"
    items = ds.items
    assert items["11"].title == "American President, The"
    assert items["11"].published_ts == _ms(1995)
    assert items["27008"].title == "From Dusk Till Dawn 2: Texas Blood Money"
    assert items["171749"].title == "Death Note: Desu nôto"
    assert items["171749"].published_ts == _ms(2006)
    assert items["171749"].categories == ()
    assert items["40697"].title == "Babylon 5" and items["40697"].published_ts is None
    assert items["40697"].text == "Babylon 5. Genres: Sci-Fi"
    # Tags are written by users over time: they are review events, never item text.
    assert items["1"].text == "Toy Story (1995). Genres: Adventure, Animation"
    assert items["1"].categories == ("Adventure", "Animation")

    reviews = [e for e in ds.interactions if e.type == "review"]
    ratings = [e for e in ds.interactions if e.type == "rating"]
    assert len(reviews) == 6 and len(ratings) == 3
    assert all(e.rating is None and e.text for e in reviews)
    assert reviews[0] == Interaction("2", "1", 964982703000, "review", None, "pixar")
    ts = [e.ts for e in ds.interactions]
    assert ts == sorted(ts)
    # Equal timestamps: rating rows come before tag rows (file order).
    same = [e for e in ds.interactions if e.ts == 964982703000]
    assert [e.type for e in same] == ["rating", "rating", "review"]
    assert "dropped 1 interactions" in caplog.text


def test_movielens_tags_optional(movielens_dir: Path) -> None:
    (movielens_dir / "tags.csv").unlink()
    ds = load_dataset(movielens_dir)
    assert {e.type for e in ds.interactions} == {"rating"}
    assert ds.items["1"].text == "Toy Story (1995). Genres: Adventure, Animation"


# --------------------------------------------------------------------------- JSON Lines


def test_jsonl_load(jsonl_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="models.offline.data"):
        ds = load_dataset(jsonl_dir)
    kettle = ds.items["sku-1"]
    assert kettle == Item(
        "sku-1", "Kettle", "Steel kettle, 1.7 l", ("kitchen", "appliances"), {"price": 24.5, "brand": "acme"},
        1700000000000,
    )
    assert ds.items["2"] == Item("2", "Mug", "Mug", (), {}, None)
    assert ds.interactions == [
        Interaction("7", "2", 1000, "rating", 4.0, None),
        Interaction("u1", "sku-1", 2000, "click"),
        Interaction("u1", "2", 2000, "review", None, "nice mug"),
    ]
    assert isinstance(ds.interactions[0].rating, float)
    assert "dropped 1 interactions" in caplog.text


def test_jsonl_rejects_bad_type(jsonl_dir: Path) -> None:
    _write_jsonl(jsonl_dir / "interactions.jsonl", ['{"user_id": "u", "item_id": "2", "ts": 1, "type": "buy"}'])
    with pytest.raises(ValueError, match="unknown interaction type 'buy'"):
        load_dataset(jsonl_dir)


def test_jsonl_rejects_missing_field(jsonl_dir: Path) -> None:
    _write_jsonl(jsonl_dir / "interactions.jsonl", ['{"user_id": "u", "item_id": "2", "type": "click"}'])
    with pytest.raises(ValueError, match="missing field 'ts'"):
        load_dataset(jsonl_dir)


@pytest.mark.parametrize("fixture", ["recbole_dir", "movielens_dir", "jsonl_dir"])
def test_round_trip_through_jsonl(fixture: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    ds = load_dataset(request.getfixturevalue(fixture))
    out = write_jsonl_dataset(ds, tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == ["interactions.jsonl", "items.jsonl"]
    back = load_dataset(out)
    assert back.items == ds.items
    assert back.interactions == ds.interactions


def test_layout_detection_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no known dataset layout"):
        load_dataset(tmp_path / "empty")


def test_users_in_order_of_appearance() -> None:
    ds = Dataset("x", {}, [Interaction("b", "i", 1, "click"), Interaction("a", "i", 2, "click"),
                           Interaction("b", "i", 3, "click")])
    assert ds.users == ["b", "a"]


# --------------------------------------------------------------------------- real data


@pytest.mark.data
def test_real_ml100k() -> None:
    ds = load_dataset(dataset_dir("ml-100k"))
    assert ds.name == "ml-100k"
    assert len(ds.items) == 1682
    assert len(ds.interactions) == 100_000
    assert len(ds.users) == 943
    assert Counter(e.type for e in ds.interactions) == {"rating": 100_000}
    ts = [e.ts for e in ds.interactions]
    assert ts == sorted(ts)
    assert ts[0] == 874724710000  # 1997-09-20 03:05:10 UTC
    assert ds.items["1"].text == "Toy Story (1995). Genres: Animation, Children's, Comedy"
    assert ds.items["267"].published_ts is None


@pytest.mark.data
def test_real_ml_latest_small(tmp_path: Path) -> None:
    ds = load_dataset(dataset_dir("ml-latest-small"))
    assert len(ds.items) == 9742
    counts = Counter(e.type for e in ds.interactions)
    assert counts == {"rating": 100_836, "review": 3_683}
    assert len(ds.users) == 610
    toy = ds.items["1"]
    assert toy.title == "Toy Story" and toy.published_ts == _ms(1995)
    assert toy.text == "Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy"
    assert all(e.text for e in ds.interactions if e.type == "review")
    back = load_dataset(write_jsonl_dataset(ds, tmp_path / "ml"))
    assert back.items == ds.items and back.interactions == ds.interactions
