"""A model loaded while a worker runs takes over the serving model's catalogue and online
co-engagement rows (models.handover)."""
from __future__ import annotations

import numpy as np
import pytest

from models.cooc import CoocModel
from models.cooc.online import rows_by_id
from models.engine import Event, InterestModel
from models.handover import adopt, hand_over, snapshot

DIM = 4


def model(cooc: bool = True) -> InterestModel:
    m = InterestModel.untrained(text_dim=DIM, cf_dim=2)
    if cooc:
        m = InterestModel(m.attention, m.items, CoocModel())
    return m


def vec(i: int) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[i % DIM], v[(i + 1) % DIM] = 1.0, 0.5 * (i % 3)
    return v / np.linalg.norm(v)


def catalogue(m: InterestModel) -> dict[str, tuple]:
    return {i: (tuple(m.items.space("text")[r].tolist()), tuple(m.items.space("category")[r].tolist()))
            for i, r in m.items.index.items()}


def test_the_new_model_ends_with_the_serving_catalogue_whatever_changed_meanwhile():
    old = model()
    for i in range(12):
        old.add_item(f"i{i}", vec(i), categories=[f"g{i % 3}"])
    new = model()
    snap = snapshot(old)
    assert adopt(new, snap) == 12 and catalogue(new) == catalogue(old)
    # while the new one loaded: one item changed, two deleted, one added (into a freed row)
    old.add_item("i3", vec(7), categories=["other"])
    old.delete_item("i0")
    old.delete_item("i5")
    old.add_item("n1", vec(2), categories=["g9"])
    done = hand_over(old, new, snap.version)
    assert catalogue(new) == catalogue(old)
    assert done["changed"] == 4
    assert "i0" not in new.cooc.index and "n1" in new.cooc.index


def test_an_unchanged_catalogue_is_not_compared_again_and_online_rows_carry_over():
    old = model()
    for i in range(6):
        old.add_item(f"i{i}", vec(i))
    old.cooc.set_online_row("i1", 3.0, 1_000, ["i2", "i4"], [2.0, 1.0])
    new = model()
    snap = snapshot(old)
    adopt(new, snap)
    done = hand_over(old, new, snap.version)
    assert done == {"changed": 0, "freed": 0, "rows": 1}
    assert rows_by_id(new.cooc) == rows_by_id(old.cooc)
    # both rank a user the same way from there on
    states_old, states_new = {}, {}
    evs = [Event("u", "i1", "click", None, 1, "e1"), Event("u", "i3", "rating", 5.0, 2, "e2")]
    old.fold(evs, states_old)
    new.fold(evs, states_new)
    assert [r.item_id for r in old.recommend(states_old["u"], 3).items] == \
        [r.item_id for r in new.recommend(states_new["u"], 3).items]


def test_ids_deleted_here_lose_their_trained_counts():
    old, new = model(), model()
    for i in range(3):
        old.add_item(f"i{i}", vec(i))
    new.cooc.add_item("gone")  # known to the new checkpoint's counts, deleted from this catalogue
    adopt(new, snapshot(old))
    assert hand_over(old, new)["freed"] == 1
    assert "gone" not in new.cooc.index


def test_a_model_with_other_item_spaces_is_refused():
    old = model()
    old.add_item("a", vec(0))
    other = InterestModel.untrained(text_dim=DIM + 1, cf_dim=2)
    with pytest.raises(ValueError, match="do not fit"):
        adopt(other, snapshot(old))
