"""The sequential dimension (self-attention and GRU): the numpy server equals the torch model it was
trained as, training windows are exactly what a user state holds, and the engine serves it as a
blend component."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import models.offline.train_sequence as seqmod
from models.engine import Event, InterestModel
from models.offline.base import ItemCatalog
from models.offline.data import Dataset, Interaction, Item
from models.offline.protocol import split_leave_one_out
from models.offline.train_sequence import (GRU_CONFIG, SequenceConfig, _GRU, sequence_configs, train_best_sequence,
                                     train_sequence, training_examples)
from models.offline.train_sequence_attention import SelfAttention, segments, token_chains
from models.seen import SeenItems
from models.sequence import SequenceMix, load_sequence


def chain_dataset(n_users: int = 60, n_items: int = 30, seed: int = 0) -> Dataset:
    """Users walk a ring of items (i -> i+1 mostly), with re-engagements, clicks and reviews."""
    rng = np.random.default_rng(seed)
    items = {f"i{j}": Item(f"i{j}", f"item {j}", "", (), {}, None) for j in range(n_items)}
    events = []
    for u in range(n_users):
        j = int(rng.integers(n_items))
        for t in range(15):
            kind = ("rating", "click", "review")[int(rng.integers(3))]
            events.append(Interaction(f"u{u}", f"i{j}", 1000 * (t + u), kind, 4.0 if kind == "rating" else None,
                                      "ok" if kind == "review" else None))
            j = (j + (1 if rng.random() < 0.8 else int(rng.integers(n_items)))) % n_items
    return Dataset("chain", items, sorted(events, key=lambda e: e.ts))


def test_numpy_state_equals_the_torch_gru():
    torch.manual_seed(0)
    cfg = SequenceConfig(dim=6, hidden=5, window=4, dropout=0.0)
    module = _GRU(9, cfg).eval()
    served = module.export([f"i{j}" for j in range(9)], cfg.window, {})
    windows = [[3, 1, 4, -1], [2, -1, -1, -1], [-1, -1, -1, -1], [8, 0, 7, 5]]
    lengths = [3, 1, 0, 4]
    with torch.no_grad():
        h = module.hidden(torch.tensor(windows), torch.tensor(lengths)).numpy()
        want = module.out(torch.from_numpy(h)).numpy()
    for b, (w, n) in enumerate(zip(windows, lengths)):
        newest_first = [f"i{j}" for j in reversed(w[:n])]
        np.testing.assert_allclose(served.state(newest_first), h[b], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(served.scores(newest_first), want[b], rtol=1e-5, atol=1e-5)


def test_numpy_scores_equal_the_torch_self_attention():
    torch.manual_seed(0)
    module = SelfAttention(11, SequenceConfig(window=6, dim=8, heads=2, layers=2)).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # away from the near-zero initialisation
    served = module.export([f"i{j}" for j in range(11)], 6, {})
    windows = torch.tensor([[3, 1, 4, -1, -1, -1], [2, -1, -1, -1, -1, -1], [-1] * 6, [8, 0, 7, 5, 9, 10]])
    lengths = torch.tensor([3, 1, 0, 6])
    with torch.no_grad():
        want = module.scores(windows, lengths).numpy()
    newest_first = [[f"i{j}" for j in reversed(w[:n].tolist())] for w, n in zip(windows, lengths)]
    np.testing.assert_allclose(served.scores_many(newest_first), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(served.scores(newest_first[0]), want[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(served.scores([]), module.bias.detach().numpy())


@pytest.mark.parametrize("window", [20, 4])
def test_attention_segments_carry_every_label_once_with_its_serving_window(window):
    ds = chain_dataset()  # 15 events a user: a window of 20 holds every history whole, 4 cuts chains
    catalog = ItemCatalog.from_dataset(ds)
    ex, _ = training_examples(ds.interactions, catalog, window)
    x, y = segments(token_chains(ds.interactions, catalog, window, skip=set()), window)
    got = [(x[s, max(0, p - window + 1): p + 1].tolist(), int(y[s, p])) for s, p in zip(*np.nonzero(y >= 0))]
    want = [(ex.windows[k, : ex.lengths[k]].tolist(), int(ex.target[k])) for k in range(len(ex)) if ex.lengths[k]]
    assert len(got) == len(want) > 0  # every label with a history, once (with none the score is the bias)
    if window == 20:  # the items before each label in its segment are exactly its serving window
        assert sorted(got) == sorted(want)
    else:  # the newest part of it: all of it in a chain's first segment, at least half a window after
        assert sorted(t for _, t in got) == sorted(t for _, t in want)
        for c, t in got:
            assert any(w[len(w) - len(c):] == c and len(c) >= min(len(w), window // 2) for w, u in want if u == t)


def test_training_windows_are_what_the_user_state_holds():
    ds = chain_dataset()
    catalog = ItemCatalog.from_dataset(ds)
    window = 4
    ex, _ = training_examples(ds.interactions, catalog, window)
    seen: dict[str, SeenItems] = {}
    want = []
    for ev in ds.interactions:
        s = seen.setdefault(ev.user_id, SeenItems())
        if ev.type in ("rating", "click") and ev.item_id not in s:
            want.append(([catalog.get(i) for i in reversed(s.newest(window))], catalog.get(ev.item_id)))
        s.add(ev.item_id)
    assert len(ex) == len(want) > 0
    for k, (w, t) in enumerate(want):
        assert ex.windows[k, : ex.lengths[k]].tolist() == w and int(ex.target[k]) == t

    rest, held = training_examples(ds.interactions, catalog, window, holdout=True)
    assert len(rest) + len(held) == len(ex) and len(held) == len(set(ex.users))  # every user has several
    last = {u: k for k, u in enumerate(ex.users)}
    assert sorted(held.where) == sorted(ex.where[k] for k in last.values())
    for k, pos in enumerate(held.where):
        u = held.users[k]
        before = {catalog.get(e.item_id) for e in ds.interactions[:pos] if e.user_id == u}
        assert set(held.seen[k].tolist()) == before


@functools.cache
def _trained(kind: str):
    ds = chain_dataset()
    catalog = ItemCatalog.from_dataset(ds)
    split = split_leave_one_out(ds)
    cfg = SequenceConfig(kind=kind, dim=16, hidden=16, window=5 if kind == "attention" else 10, epochs=40, lr=1e-2,
                         patience=40, dropout=0.1)
    return ds, catalog, split, train_sequence(split.train, split, catalog, cfg)


@pytest.fixture(params=["attention", "gru"])
def trained(request):
    return _trained(request.param)


@pytest.fixture
def mixed():
    """Both kinds (windows of 5 and 10 items), mixed half and half."""
    models = [_trained("attention")[3], _trained("gru")[3]]
    return _trained("gru")[1], SequenceMix(models, [0.5, 0.5], info={"kind": "attention+gru"}), models


def test_training_learns_the_chain_and_keeps_the_best_holdout_epoch(trained):
    _, _, _, model = trained
    hist = model.info["history"]
    assert model.info["best_holdout_ndcg@10"] == pytest.approx(max(h["holdout_ndcg@10"] for h in hist), abs=1e-5)
    assert hist[-1]["loss"] < hist[0]["loss"]
    top = int(np.argmax(model.scores(["i7", "i6"])))
    assert model.ids[top] == "i8"  # i -> i+1 is the pattern of 80% of the steps


def test_sampled_softmax_trains_too(trained, monkeypatch):
    ds, catalog, split, _ = trained
    monkeypatch.setattr(seqmod, "SAMPLED_ABOVE", 10)
    kind = trained[3].info["kind"]
    model = train_sequence(split.train, split, catalog, SequenceConfig(kind=kind, dim=8, hidden=8, window=5, epochs=2,
                                                                       negatives=8))
    assert model.info["sampled_softmax"] and model.scores(["i1"]).shape == (len(catalog),)


def test_a_mix_scores_the_weighted_z_scores_of_its_members(mixed):
    _, mix, (att, gru) = mixed
    z = lambda s: (s - s.mean()) / s.std()  # noqa: E731
    for w in (["i7", "i6"], ["i2"], ["i1", "i9", "i4", "i3", "i8", "i20"]):  # windows of 5 (attention) / 10 (gru)
        np.testing.assert_allclose(mix.scores(w), 0.5 * z(att.scores(w)) + 0.5 * z(gru.scores(w)), rtol=1e-4,
                                   atol=1e-5)
    np.testing.assert_allclose(mix.scores_many([["i7", "i6"], []]),
                               np.stack([mix.scores(["i7", "i6"]), mix.scores([])]), rtol=1e-6, atol=1e-6)


def test_mix_checkpoint_round_trip_and_engine_component(mixed, tmp_path):
    catalog, mix, _ = mixed
    _round_trip_and_serve(catalog, mix, tmp_path)


def test_checkpoint_round_trip_and_engine_component(trained, tmp_path):
    _, catalog, _, model = trained
    _round_trip_and_serve(catalog, model, tmp_path)


def _round_trip_and_serve(catalog, model, tmp_path):
    model.save(tmp_path / "sequence.npz")
    back = load_sequence(tmp_path / "sequence.npz")
    assert type(back) is type(model)
    assert back.ids == model.ids and back.window == model.window and back.info == model.info
    np.testing.assert_array_equal(back.scores(["i3", "i2"]), model.scores(["i3", "i2"]))

    engine = InterestModel.untrained(text_dim=2, cf_dim=2)
    engine.sequence = back
    engine.blend = {"attention": 0.2, "sequence": 0.8}
    rng = np.random.default_rng(0)
    for iid in [*catalog.ids, "brand-new"]:
        engine.add_item(iid, rng.normal(size=2))
    st = engine.new_state()
    for k, iid in enumerate(["i6", "i7"]):
        engine.apply(st, Event("u", iid, "rating", 5.0, 1000 + k, f"e{k}"))
    comp = engine.component_scores(st)["sequence"]
    raw = back.scores(["i7", "i6"])
    np.testing.assert_array_equal(comp[: len(catalog)], raw)
    assert comp[-1] == pytest.approx(raw.mean())  # an item the model was not trained on: neutral
    rec = engine.recommend(st, k=3)
    assert back.ids[int(np.argmax(raw))] == "i8"  # the chain's next step
    assert "i8" in [r.item_id for r in rec.items]
    for r in rec.items:
        assert "sequence" in r.reasons and sum(r.reasons.values()) == pytest.approx(r.score, abs=1e-5)
    assert rec.dimension_weights["sequence"] == pytest.approx(0.8)


def test_sequence_configs_defaults_and_unknown_kind():
    assert sequence_configs("gru") == (GRU_CONFIG,)
    assert [c.kind for c in sequence_configs()] == ["attention", "gru"]  # auto: both
    assert [c.budget_s for c in sequence_configs()] == [None, None]  # no seconds cap unless asked for
    assert [c.budget_s for c in sequence_configs("auto", 12)] == [12, 12]
    assert [c.epochs for c in sequence_configs("auto", epochs=4)] == [4, 4]
    assert all(c.threads == 1 for c in sequence_configs())
    with pytest.raises(ValueError, match="unknown sequence model kind"):
        sequence_configs("lstm")


def test_training_stops_on_its_epochs_unless_a_seconds_cap_is_asked_for():
    ds = chain_dataset()
    catalog = ItemCatalog.from_dataset(ds)
    split = split_leave_one_out(ds)
    cfg = SequenceConfig(kind="gru", dim=8, hidden=8, window=5, epochs=3, patience=100)
    model = train_sequence(split.train, split, catalog, cfg)
    assert model.info["epochs_run"] == 3 and model.info["stopped_by_time"] is False
    capped = train_sequence(split.train, split, catalog, SequenceConfig(**{**cfg.__dict__, "budget_s": 0.0}))
    assert capped.info["epochs_run"] == 1 and capped.info["stopped_by_time"] is True


def test_auto_keeps_the_best_holdout_mix_of_the_kinds():
    ds = chain_dataset()
    catalog = ItemCatalog.from_dataset(ds)
    split = split_leave_one_out(ds)
    configs = [SequenceConfig(kind="attention", dim=8, window=5, epochs=3, dropout=0.1, lr=1e-2),
               SequenceConfig(kind="gru", dim=8, hidden=8, window=5, epochs=3, lr=1e-2)]
    alone = [train_sequence(split.train, split, catalog, c).info["best_holdout_ndcg@10"] for c in configs]
    best = train_best_sequence(split.train, split, catalog, configs)
    assert best.info["candidates"] == {c.kind: round(a, 5) for c, a in zip(configs, alone)}
    grid = best.info["mix_grid"]  # "w_attention,w_gru" -> holdout NDCG@10 of that mix
    assert len(grid) == 5 and grid["1,0"] == pytest.approx(alone[0], abs=1e-4)
    assert grid["0,1"] == pytest.approx(alone[1], abs=1e-4)
    if isinstance(best, SequenceMix):  # a mix only when it beats both kinds alone
        assert best.info["best_holdout_ndcg@10"] == max(grid.values()) > max(grid["1,0"], grid["0,1"])
        assert best.info["weights"] == dict(zip(("attention", "gru"), best.weights))
    else:
        assert best.info["kind"] == ("attention" if grid["1,0"] >= grid["0,1"] else "gru")
        assert max(grid["1,0"], grid["0,1"]) >= max(grid.values())
