"""Retraining with a gate (no broker): the recent slice of time, the gate's decision, warm start's
handling of items the serving model never saw, and whole runs that publish a better model and
refuse a worse one without moving the pointer."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
import torch

from models import registry
from models.attention import AttentionFusion
from models.offline.base import ItemCatalog
from models.offline.data import Dataset, Interaction
from models.offline.gate import decide
from models.offline.loaders import load_dataset
from models.offline.recent import split_recent
from models.offline.retrain import RetrainConfig, retrain
from models.offline.synthetic import generate
from models.offline.train_attention import AttentionFusionModule
from models.offline.warm import cf_factors, init_attention
from tests.support.bad_models import garbage_trainer, randomised

SMALL = dict(budget_s=2.0, sequence_kind="gru", sequence_budget_s=3.0, warm_sequence_budget_s=3.0, warm_epochs=2)


# -- the recent slice -----------------------------------------------------------------------------

def _log(times):
    return [Interaction(f"u{i % 3}", f"i{i}", t, "click") for i, t in enumerate(times)]


def test_the_recent_slice_is_the_last_events_by_time_and_never_splits_a_moment():
    s = split_recent(_log([5, 1, 2, 3, 4, 6, 7, 8, 9, 9]), fraction=0.1)
    assert [e.ts for e in s.before] == list(range(1, 9)) and [e.ts for e in s.recent] == [9, 9]
    assert max(e.ts for e in s.before) < s.cutoff_ts <= min(e.ts for e in s.recent)
    s = split_recent(_log(range(100)), fraction=0.25)
    assert len(s.recent) == 25 and s.cutoff_ts == 75
    win = s.window()
    assert win["train"] == {"events": 75, "first_ts": 0, "last_ts": 74} and win["recent"]["last_ts"] == 99


def test_the_recent_slice_by_duration_and_after_the_serving_models_data():
    s = split_recent(_log(range(0, 1000, 10)), holdout_ms=100)  # events within 100 ms of the newest (990)
    assert [e.ts for e in s.recent] == list(range(900, 1000, 10))
    s = split_recent(_log(range(0, 1000, 10)), fraction=0.5, holdout_ms=None, after_ts=949)
    assert [e.ts for e in s.recent] == list(range(950, 1000, 10))
    for kw in ({"fraction": 0.0}, {"fraction": 1.0}, {"holdout_ms": 0}, {"after_ts": 990}):
        with pytest.raises(ValueError):
            split_recent(_log(range(0, 1000, 10)), **kw)
    with pytest.raises(ValueError):
        split_recent(_log([7, 7, 7]), fraction=0.5)  # one moment: nothing before the cut


# -- the gate -------------------------------------------------------------------------------------

@pytest.mark.parametrize("new,serving,margin,publish", [
    (0.20, 0.10, 0.0, True), (0.10, 0.10, 0.0, False), (0.05, 0.10, 0.0, False),
    (0.12, 0.10, 0.05, False), (0.16, 0.10, 0.05, True), (0.10, float("nan"), 0.0, True),
    (float("nan"), 0.10, 0.0, False)])
def test_the_gate_publishes_only_a_model_that_beats_the_serving_one_by_the_margin(new, serving, margin, publish):
    for metric in ("ndcg@10", "hr@10"):
        d = decide({metric: new, "n_ranked": 100}, {metric: serving, "n_ranked": 100}, metric, margin)
        assert d.publish is publish, d.reason
        assert d.to_dict()["metric"] == metric


def test_the_gate_wants_enough_ranked_events_and_a_known_metric():
    assert not decide({"ndcg@10": 0.9, "n_ranked": 19}, {"ndcg@10": 0.0}, min_ranked=20).publish
    assert decide({"ndcg@10": 0.9, "n_ranked": 20}, {"ndcg@10": 0.0}, min_ranked=20).publish
    with pytest.raises(ValueError):
        decide({"ndcg@10": 0.9, "n_ranked": 20}, {}, metric="recall@5")


# -- warm start -----------------------------------------------------------------------------------

def test_unseen_items_get_collaborative_factors_from_their_text():
    rng = np.random.default_rng(0)
    text = rng.normal(size=(30, 8)).astype(np.float32)
    W = rng.normal(size=(8, 4))
    known = {f"i{j}": (v / np.linalg.norm(v)).astype(np.float32) for j, v in enumerate(text[:25] @ W)}
    ids, F, new = cf_factors([f"i{j}" for j in range(30)], text, known, ridge=1e-3)
    assert new == 5 and F.shape == (30, 4)
    for j in range(25):
        np.testing.assert_array_equal(F[j], known[f"i{j}"])  # the known factors as they are
    np.testing.assert_allclose(np.linalg.norm(F[25:], axis=1), 1.0, rtol=1e-5)
    truth = text[25:] @ W
    truth /= np.linalg.norm(truth, axis=1, keepdims=True)
    assert (np.sum(F[25:] * truth, axis=1) > 0.9).all()  # the relation of text to factors is learned


def _fusion(ids, seed):
    from models.dimensions import default_dimensions
    from models.attention import FusionConfig

    cfg = FusionConfig(dims=tuple(default_dimensions()), space_dims={"text": 6, "cf": 4, "category": 5, "hybrid": 10},
                       d_model=8, d_attn=4, item_ids=tuple(ids))
    torch.manual_seed(seed)
    module = AttentionFusionModule(cfg)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
    return cfg, module


def test_warm_start_carries_weights_by_item_id_and_starts_unseen_items_from_their_vectors():
    cfg, trained = _fusion(["a", "b", "c"], seed=1)
    served = AttentionFusion(cfg, {k: v.numpy() for k, v in trained.state_dict().items()}, "v1")
    new_cfg, module = _fusion(["c", "x", "a", "y"], seed=2)  # the catalogue moved on: x, y are new, b is gone
    with torch.no_grad():
        counts = init_attention(dict(module.state_dict()), served, new_cfg.item_ids)
    assert counts == {"items_carried": 2, "items_new": 2}
    state = module.state_dict()
    np.testing.assert_array_equal(state["item_emb"][0].numpy(), served.w["item_emb"][2])  # c
    np.testing.assert_array_equal(state["item_emb"][2].numpy(), served.w["item_emb"][0])  # a
    assert not state["item_emb"][[1, 3]].any() and not state["item_bias"][[1, 3]].any()  # x, y: vectors only
    for name in ("w_q.weight", "w_k.weight", "dim_bias", "item_proj.text.weight", "proj.content.weight"):
        np.testing.assert_array_equal(state[name].numpy(), served.w[name])
    feats = {s: torch.randn(4, new_cfg.space_dims[s]) for s in new_cfg.item_spaces}
    e, b = module.items(feats)
    expect = sum(torch.from_numpy(served.w[f"item_proj.{s}.weight"]) @ feats[s][1] for s in new_cfg.item_spaces)
    torch.testing.assert_close(e[1], expect)  # an unseen item is what the item tower makes of its vectors
    assert float(b[1].detach()) == 0.0


# -- whole runs -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    ds = load_dataset(generate("ecommerce", tmp_path_factory.mktemp("synth"), seed=0, n_users=120, n_items=80,
                               n_events=2000))
    cut = ds.interactions[int(len(ds.interactions) * 0.75)].ts
    head = Dataset(ds.name, ds.items, [e for e in ds.interactions if e.ts < cut])
    return head, ds


def test_a_worse_model_is_refused_and_a_better_one_published(data, tmp_path):
    head, full = data
    first = retrain(head, tmp_path, None, RetrainConfig(**SMALL))
    assert first["gate"]["publish"], first["gate"]  # beats the untrained default
    v1 = first["version"]
    assert registry.current_version(tmp_path) == v1
    assert first["parent"] == {"version": None, "path": None}
    assert first["data"]["last_event_ts"] == head.interactions[-1].ts
    assert first["recent"]["new"]["n_ranked"] == first["recent"]["serving"]["n_ranked"] > 20

    worse = retrain(full, tmp_path, tmp_path / v1, RetrainConfig(**SMALL), trainer=garbage_trainer)
    assert not worse["gate"]["publish"], worse["gate"]
    assert worse["recent"]["new"]["ndcg@10"] < worse["recent"]["serving"]["ndcg@10"]
    assert registry.current_version(tmp_path) == v1  # the pointer did not move
    assert worse["data"]["cutoff_ts"] > head.interactions[-1].ts  # judged on events v1 never saw
    assert worse["parent"]["version"] == v1 and (tmp_path / worse["version"] / "retrain.json").is_file()

    bad = randomised(tmp_path / v1, tmp_path)
    registry.publish(tmp_path, bad)
    better = retrain(full, tmp_path, registry.current_checkpoint(tmp_path), RetrainConfig(**SMALL, warm_start=True))
    assert better["gate"]["publish"], better["gate"]
    assert better["recent"]["new"]["ndcg@10"] > better["recent"]["serving"]["ndcg@10"]
    assert registry.current_version(tmp_path) == better["version"] > bad > v1
    assert better["warm_start"]["from"] == bad and better["parent"]["version"] == bad


def test_nothing_is_trained_without_events_newer_than_the_serving_version(data, tmp_path):
    head, _ = data
    first = retrain(head, tmp_path, None, RetrainConfig(**SMALL))
    again = retrain(head, tmp_path, tmp_path / first["version"], RetrainConfig(**SMALL))
    assert "skipped" in again and registry.versions(tmp_path) == [first["version"]]


def test_warm_start_from_the_serving_checkpoint_with_new_items(data, tmp_path):
    head, full = data
    dropped = sorted(full.items)[:5]  # items the first model never saw: not in its catalogue
    early = Dataset(head.name, {k: v for k, v in head.items.items() if k not in dropped},
                    [e for e in head.interactions if e.item_id not in dropped])
    first = retrain(early, tmp_path, None, RetrainConfig(**SMALL))
    served = tmp_path / first["version"] / "config.json"  # served with a gate by engagement count
    gate = {"edges": [2.0], "weights": [{"attention": 1.0}, {"attention": 0.3, "co-engagement": 0.7}], "shifts": [1.5, 0.0]}
    served.write_bytes(orjson.dumps({**orjson.loads(served.read_bytes()), "blend_gate": gate}))
    meta = retrain(full, tmp_path, tmp_path / first["version"], RetrainConfig(**SMALL, warm_start=True))
    kept = orjson.loads((Path(meta["path"]) / "config.json").read_bytes())
    assert kept["blend_gate"]["edges"] == [2.0] and kept["blend_gate"]["weights"][0] == {"attention": 1.0}
    assert kept["blend_gate"]["shifts"] == [1.5, 0.0]  # reused, not searched; the last bucket chosen again
    warm = meta["warm_start"]
    assert warm["from"] == first["version"] and warm["items_new"] == 5 and warm["cf_new_items"] == 5
    assert warm["items_carried"] == len(early.items)
    assert np.isfinite(warm["start_holdout_ndcg@10"])
    assert meta["recent"]["new"]["n_ranked"] > 20 and np.isfinite(meta["recent"]["new"]["ndcg@10"])
    catalog = ItemCatalog.from_dataset(full)
    assert set(AttentionFusion.load(meta["path"]).cfg.item_ids) == set(catalog.ids)


# -- warm start of the sequence models ----------------------------------------------------------

def test_the_grus_input_table_splits_back_into_embedding_and_weights():
    from models.offline.warm_sequence import split_in_proj

    rng = np.random.default_rng(0)
    emb, W, b = rng.normal(size=(40, 8)), rng.normal(size=(18, 8)), rng.normal(size=18)
    e, w, c = split_in_proj((emb @ W.T + b).astype(np.float32), 8)
    np.testing.assert_allclose(e @ w.T + c, emb @ W.T + b, atol=1e-4)


@pytest.mark.parametrize("kind", ["gru", "attention"])
def test_a_sequence_model_starts_from_the_served_one_by_item_id(kind):
    from models.offline.train_sequence import SequenceConfig, _GRU
    from models.offline.train_sequence_attention import SelfAttention
    from models.offline.warm_sequence import init_sequence

    cfg = SequenceConfig(kind=kind, window=5, dim=8, hidden=6, layers=1, heads=2, dropout=0.0)
    make = {"gru": _GRU, "attention": SelfAttention}[kind]
    torch.manual_seed(0)
    old_ids = ["a", "b", "c", "d"]
    trained = make(len(old_ids), cfg)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    served = trained.eval().export(old_ids, cfg.window, {"kind": kind})
    new_ids = ["d", "x", "b", "a"]  # c is gone, x is new
    text = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)
    fresh = make(len(new_ids), cfg)
    info = init_sequence(fresh, kind, served, new_ids, text)
    assert info == {"items_carried": 3, "items_new": 1}
    again = fresh.eval().export(new_ids, cfg.window, {})
    windows = [["a", "b"], ["d"], ["b", "d", "a"]]  # known items only: the same scores as served
    old = served.scores_many(windows)[:, [served.index[i] for i in ("d", "b", "a")]]
    new = again.scores_many(windows)[:, [again.index[i] for i in ("d", "b", "a")]]
    np.testing.assert_allclose(new, old, rtol=1e-4, atol=1e-4)
    assert np.isfinite(again.scores_many(windows)[:, again.index["x"]]).all()
    other = {"gru": "attention", "attention": "gru"}[kind]
    assert "skipped" in init_sequence(fresh, other, served, new_ids, text)


def test_the_recent_slice_is_ranked_after_the_history_and_seen_items_are_left_out():
    from models.engine import InterestModel
    from models.offline.recent import TimeSplit, evaluate_recent

    model = InterestModel.untrained(text_dim=2, cf_dim=2)
    for item, vec in (("a", [1.0, 0.0]), ("b", [0.9, 0.1]), ("c", [0.0, 1.0])):
        model.add_item(item, np.array(vec))
    before = [Interaction("u", "a", 1, "click"), Interaction("v", "c", 2, "click")]
    recent = [Interaction("u", "b", 3, "click"),  # nearest to u's a: rank 0
              Interaction("v", "a", 4, "click"),  # v has c; b is nearer to c than a is: rank 1
              Interaction("v", "a", 5, "click"),  # seen now: not ranked
              Interaction("w", "c", 6, "review", text="x")]  # not a consumption event: not ranked
    m = evaluate_recent(model, TimeSplit(before, recent, 3), k=2)
    assert m["n_ranked"] == 2 and m["n_recent"] == 4
    assert m["hr@2"] == 1.0 and m["ndcg@2"] == pytest.approx((1.0 + 1.0 / np.log2(3)) / 2)
    m = evaluate_recent(InterestModel.untrained(text_dim=2, cf_dim=2), TimeSplit(before, recent, 3), k=1)
    assert m["n_ranked"] == 0  # no item in that catalogue
