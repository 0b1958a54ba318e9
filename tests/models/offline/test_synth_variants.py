"""The review-copies stand-in: the shape it promises, read back through the project's loader."""
from collections import Counter, defaultdict

import pytest

from models.offline.data import read_jsonl_dataset
from models.offline.protocol import split_leave_one_out
from models.offline.synth_variants import generate


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth-variants")
    return out, generate(out, seed=1)


def test_five_core_and_size(variants):
    out, summary = variants
    ds = read_jsonl_dataset(out)
    users = Counter(ev.user_id for ev in ds.interactions)
    items = Counter(ev.item_id for ev in ds.interactions)
    assert min(users.values()) >= 5 and min(items.values()) >= 5
    assert len(set((ev.user_id, ev.item_id) for ev in ds.interactions)) == len(ds.interactions)  # no repeats
    assert summary["events"] == len(ds.interactions) and 300 <= summary["items"] <= 421
    assert 0 < summary["items_without_text"] < summary["items"]
    assert {c for it in ds.items.values() for c in it.categories} == {"Fashion", "Beauty", "Gift Cards", "Magazines"}


def test_copies_share_day_and_text_and_keep_item_id_order(variants):
    out, _ = variants
    ds = read_jsonl_dataset(out)
    groups = defaultdict(list)
    for ev in ds.interactions:  # time order, ties in file order
        groups[(ev.user_id, ev.ts)].append(ev)
    copies = [g for g in groups.values() if len(g) > 1]
    assert len(copies) > 0.3 * len(groups)  # many reviews land on several variants
    for g in copies:
        ids = [ev.item_id for ev in g]
        assert ids == sorted(ids)  # a dump sorted by product code
    assert all(ev.ts % 86_400_000 == 0 for ev in ds.interactions)  # day-level timestamps
    split = split_leave_one_out(ds)
    assert len(split.test) > 1000


def test_random_ties_and_a_bad_option(tmp_path):
    generate(tmp_path, seed=1, ties="random")
    ds = read_jsonl_dataset(tmp_path)
    groups = defaultdict(list)
    for ev in ds.interactions:
        groups[(ev.user_id, ev.ts)].append(ev.item_id)
    assert any(g != sorted(g) for g in groups.values() if len(g) > 2)
    with pytest.raises(ValueError):
        generate(tmp_path, ties="alphabetical")
