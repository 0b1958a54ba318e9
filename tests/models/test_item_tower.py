"""The attention fusion's item tower follows the catalogue row by row (``AttentionFusion.item_matrix``):
after items are added, updated, deleted and their rows reused, E, the bias and every score are
bit for bit those of a fresh build over the same catalogue, and only the changed rows were
recomputed; an identity tower (the untrained default) keeps no copy of the item vectors."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from models.attention import ITEM_BLOCK, AttentionFusion
from models.engine import InterestModel
from tests.models.test_fold import TEXT, add_items, trained_like


def with_item_ids(model: InterestModel, rng) -> InterestModel:
    """The model's fusion with all three spaces in its item tower and learned ids for some items."""
    fusion = model.attention
    sd, D = fusion.cfg.space_dims, fusion.cfg.d_model
    ids = tuple(f"i{i}" for i in range(0, 70, 3)) + ("late-1",)
    cfg = replace(fusion.cfg, item_spaces=("text", "category", "cf"), item_ids=ids)
    w = dict(fusion.w)
    for s in cfg.item_spaces:
        w[f"item_proj.{s}.weight"] = rng.normal(size=(D, sd[s])).astype(np.float32)
    w["item_emb"] = rng.normal(size=(len(ids), D)).astype(np.float32)
    w["item_bias"] = rng.normal(size=len(ids)).astype(np.float32)
    return InterestModel(AttentionFusion(cfg, w), model.items, model.cooc, model.blend)


def churn(model: InterestModel, rng, step: int) -> None:
    live = sorted(model.items.index)
    for i in rng.choice(live, 12, replace=False):
        if rng.random() < 0.5:
            model.delete_item(i)
        else:
            model.add_item(i, rng.normal(size=TEXT).astype(np.float32), ["g1"])  # an update
    add_items(model, [f"s{step}-{n}" for n in range(9)] + (["late-1"] if step == 1 else []), rng)


@pytest.mark.parametrize("ids", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_scores_after_catalogue_changes_equal_a_fresh_build(seed, ids, monkeypatch):
    rng = np.random.default_rng(seed)
    model = trained_like(seed, None)
    if ids:
        model = with_item_ids(model, rng)
    fusion = model.attention
    U = rng.normal(size=(5, fusion.cfg.d_model)).astype(np.float32)
    fusion.item_matrix(model.items)
    computed = []
    tower = fusion._tower_rows
    monkeypatch.setattr(fusion, "_tower_rows", lambda items, rows, c: (computed.extend(rows.tolist()),
                                                                       tower(items, rows, c)))
    for step in range(4):
        version = model.items.version
        churn(model, rng, step)
        changed = model.items.changed_since(version).tolist()
        computed.clear()
        E, b = fusion.item_matrix(model.items)
        assert computed == changed and len(changed) < len(model.items)  # those rows, no rebuild
        fresh = AttentionFusion(fusion.cfg, fusion.w)
        E0, b0 = fresh.item_matrix(model.items)
        np.testing.assert_array_equal(E, E0)
        np.testing.assert_array_equal(b, b0)
        np.testing.assert_array_equal(U @ E.T + b, U @ E0.T + b0)
        assert fusion.item_matrix(model.items)[0] is not None and computed == changed  # cached: nothing redone


def test_a_large_change_is_computed_in_blocks_as_a_fresh_build():
    rng = np.random.default_rng(3)
    model = trained_like(3, None)
    fusion = model.attention
    fusion.item_matrix(model.items)
    add_items(model, [f"b{n}" for n in range(ITEM_BLOCK + 5)], rng)
    E, b = fusion.item_matrix(model.items)
    E0, b0 = AttentionFusion(fusion.cfg, fusion.w).item_matrix(model.items)
    np.testing.assert_array_equal(E, E0)
    np.testing.assert_array_equal(b, b0)


def test_every_row_sits_at_the_same_place_of_its_product_in_an_update_as_in_a_fresh_build(monkeypatch):
    """Whatever the BLAS: row r is at place r % ITEM_BLOCK of every product that computes it (a
    BLAS may round a row by its place in a tile), so no kernel can tell an update from a build."""
    rng = np.random.default_rng(5)
    model = trained_like(5, None)
    fusion = model.attention
    places = []
    take = type(model.items.row_spaces()["text"]).take

    def recorded(self, rows, axis=0):
        places.append(np.asarray(rows).copy())
        return take(self, rows, axis)

    monkeypatch.setattr(type(model.items.row_spaces()["text"]), "take", recorded)
    fusion.item_matrix(model.items)
    add_items(model, [f"b{n}" for n in range(ITEM_BLOCK + 40)], rng)
    version = model.items.version
    churn(model, rng, 0)
    changed = set(model.items.changed_since(version).tolist())
    places.clear()
    fusion.item_matrix(model.items)
    assert places and all(len(block) == ITEM_BLOCK for block in places)
    done = {int(r) for block in places for p, r in enumerate(block.tolist()) if r % ITEM_BLOCK == p}
    assert changed <= done


def test_an_identity_tower_reads_the_catalogue_vectors_without_a_copy():
    model = InterestModel.untrained(text_dim=8, cf_dim=2)
    rng = np.random.default_rng(0)
    for n in range(20):
        model.add_item(f"i{n}", rng.normal(size=8).astype(np.float32))
    E, b = model.attention.item_matrix(model.items)
    assert np.shares_memory(E, model.items.space("text")) and model.attention.item_matrix_nbytes() == 0
    np.testing.assert_array_equal(E, model.items.space("text") @ np.eye(8, dtype=np.float32))
    assert b.shape == (20,) and not b.any()
    model.delete_item("i3")
    model.add_item("new", rng.normal(size=8).astype(np.float32))
    E, b = model.attention.item_matrix(model.items)
    assert E.shape == (20, 8) and np.array_equal(E[3], model.items.vectors(3)["text"])
