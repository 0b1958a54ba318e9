"""The blend gated by item engagement count (``models.blend.GatedBlend``,
``models.offline.count_gate``): chosen on validation only; a new item (a catalogue event, no
behaviour) enters a user's list from its text, in the exact and the two-stage ranking; reasons
still sum to the score; a checkpoint without a gate loads and serves as before, one with a gate
round-trips."""
from __future__ import annotations

import dataclasses

import numpy as np
import orjson
import pytest

from models.blend import GatedBlend, as_blend, combine, combine_many
from models.candidates import CandidateSizes
from models.cooc import CoocModel, CoocParams
from models.engine import Event, InterestModel
from models.offline.base import ItemCatalog
from models.offline import count_gate
from models.offline.count_gate import GateValidation, choose_gate, record_gate_validation
from models.offline.choose_blend import simplex_grid
from models.offline.data import Interaction
from models.offline.fused import FusedRecommender
from models.offline.protocol import split_leave_one_out
from models.offline.train_attention import TrainConfig
from models.offline.train_sequence import SequenceConfig
from tests.models.offline.test_fused_blend import small_dataset
from tests.models.test_candidates import ranked
from tests.models.test_fold import TEXT, features, stream, trained_like
from tests.models.test_recommend_many import assert_same_lists, with_sequence

NAMES = ["attention", "co-engagement", "popularity", "sequence"]


@pytest.fixture(scope="module")
def fitted():
    ds = small_dataset(n_users=60)
    catalog = ItemCatalog.from_dataset(ds)
    split = split_leave_one_out(ds)
    vecs = np.random.default_rng(1).normal(size=(len(catalog), 8)).astype(np.float32)
    rec = FusedRecommender("fused", item_vectors=vecs, progress=False, cf_dim=4,
                           config=TrainConfig(epochs=2, d_model=8, d_attn=4, batch_size=64),
                           sequence=SequenceConfig(dim=8, hidden=8, window=10, epochs=3), gate=False)
    rec.fit(split.train, catalog)
    rec.select(split, budget_s=3.0)
    return ds, catalog, split, rec


def test_gated_blend_uses_each_bucket_weights_and_its_parts_sum_to_the_score():
    rng = np.random.default_rng(0)
    comps = {c: rng.normal(size=(3, 7)) for c in ("attention", "co-engagement")}
    comps["popularity"] = np.log1p(np.tile([0.0, 0.0, 1.0, 3.0, 9.0, 50.0, 2.0], (3, 1)))
    gate = GatedBlend([0, 3], [{"attention": 1.0}, {"attention": 0.5, "co-engagement": 0.5},
                               {"attention": 0.2, "co-engagement": 0.3, "popularity": 0.5}], [1.5, -0.5, 0.0])
    S, scale, offset = combine_many(comps, gate)
    for b, cols in enumerate(([0, 1], [2, 3, 6], [4, 5])):
        plain = combine_many(comps, gate.buckets[b])[0] + gate.shifts[b]
        np.testing.assert_allclose(S[:, cols], plain[:, cols], atol=1e-12)
    parts = sum(scale[c] * comps[c] - offset[c] for c in comps)
    np.testing.assert_allclose(parts, S, atol=1e-12)
    assert as_blend(dict(gate), gate.config()).config() == gate.config()
    assert as_blend({"attention": 1.0}) == {"attention": 1.0} and type(as_blend({"attention": 1.0})) is dict
    # without the counts (no popularity component) the last bucket serves
    np.testing.assert_allclose(combine_many({"attention": comps["attention"]}, gate)[0],
                               combine_many({"attention": comps["attention"]}, gate.buckets[-1])[0])


def test_gate_is_chosen_on_validation_only(fitted):
    ds, catalog, split, rec = fitted
    assert split.test
    val = record_gate_validation(rec, split, NAMES, rec.blend)
    blend, report = choose_gate(val, rec.blend)
    # any other test events: the same recorded validation, the same gate
    other = [c for c in catalog.ids]
    events = list(split.events)
    for u, p in split.test_pos.items():
        ev = events[p]
        events[p] = Interaction(ev.user_id, other[(other.index(ev.item_id) + 5) % len(other)], ev.ts, "click")
    moved = dataclasses.replace(split, events=events, test={u: events[p] for u, p in split.test_pos.items()})
    val2 = record_gate_validation(rec, moved, NAMES, rec.blend)
    blend2, report2 = choose_gate(val2, rec.blend)
    assert len(val.rows) == len(val2.rows) > 0
    assert report["by_k"] == report2["by_k"]
    assert (blend.config() if isinstance(blend, GatedBlend) else blend) == \
        (blend2.config() if isinstance(blend2, GatedBlend) else blend2)
    # the chosen gate is never worse than the fixed blend on that validation
    assert report["valid_ndcg@10"] >= report["valid_ndcg@10_fixed"]
    # a gate refused (it would lower the fixed blend's own validation) is not served
    refused, rep = choose_gate(val, rec.blend, accept=lambda g: False)
    assert refused == rec.blend and not isinstance(refused, GatedBlend) and rep["gate"] is None


def test_the_gate_validation_samples_both_kinds_of_target_and_weights_each_back_to_its_share():
    fresh, old = list(range(0, 4000, 2)), list(range(1, 4000, 2))[:1500]
    w = count_gate.sample_targets(fresh, old, 1500)
    assert len(w) == 1500 and sum(p % 2 == 0 for p in w) == 750  # half new, half old
    assert sum(w.values()) == pytest.approx(len(fresh) + len(old))
    assert sum(v for p, v in w.items() if p % 2 == 0) == pytest.approx(len(fresh))
    few = count_gate.sample_targets(fresh, old[:100], 1500)  # few old ones: the new ones fill the rest
    assert sum(p % 2 == 1 for p in few) == 100 and len(few) == 1500
    assert count_gate.sample_targets(fresh[:190], old, 1500, seed=3) == {  # the rule before: every new one
        **{p: 1.0 for p in fresh[:190]},
        **{int(p): len(old) / 1310 for p in np.random.default_rng(3).choice(old, size=1310, replace=False)}}


def test_fused_select_keeps_the_gate_only_where_the_fixed_validation_does_not_drop(fitted, monkeypatch):
    ds, catalog, split, rec = fitted
    gated = FusedRecommender("fused", item_vectors=rec.item_vectors, progress=False, cf_dim=4,
                             config=rec.config, sequence=rec.sequence_configs, cooc_params=rec.cooc_params)
    gated.fit(split.train, catalog)
    sel = gated.select(split, budget_s=3.0)
    # too few new-item targets on validation to judge a gate: none
    assert sel["gate"]["gate"] is None and sel["gate"]["n_valid_new"] < count_gate.MIN_NEW_TARGETS
    assert gated.blend == gated.fixed_blend and not isinstance(gated.blend, GatedBlend)
    monkeypatch.setattr(count_gate, "MIN_NEW_TARGETS", 0)
    sel = gated.select(split, budget_s=3.0)
    report = sel["gate"]
    std = report["standard_valid_ndcg@10"]
    assert std["fixed"] == pytest.approx(sel["blend"]["valid_ndcg@10"], abs=1e-6)  # the fixed blend's own score
    assert std["gate"] >= std["fixed"]
    assert isinstance(gated.blend, GatedBlend) == (report["gate"] is not None)
    assert gated.fixed_blend == pytest.approx(rec.blend)


def test_the_fast_validation_score_equals_a_full_ranking():
    """``GateValidation`` keeps only the items that can reach a target's top 10: its NDCG is the
    full ranking's."""
    rng = np.random.default_rng(3)
    base = np.array([0.5, 0.3, 0.2, 0.0])
    val = GateValidation(NAMES, base, float(np.log1p(20)))
    gates = [GatedBlend([0, 4], [{"attention": 1.0}, {"attention": 0.6, "sequence": 0.4}, dict(zip(NAMES, base))]),
             GatedBlend([0, 20], [{"co-engagement": 0.7, "attention": 0.3}, {"popularity": 1.0},
                                  dict(zip(NAMES, base))], [3.0, -1.0, 0.0]),
             GatedBlend([0, 2], [{"sequence": 1.0}, dict(zip(NAMES, base)), dict(zip(NAMES, base))], [1.5, 0.5, 0.0]),
             GatedBlend([0, 4], [{"attention": 1.0}, {"attention": 0.6, "sequence": 0.4}, dict(zip(NAMES, base))],
                        [0.5, 0.0, 0.0], untrained=({"co-engagement": 0.6, "popularity": 0.4}, 2.0))]
    full = {id(g): [] for g in gates}
    new = [v % 3 == 0 for v in range(60)]  # targets on new items: ``ndcg(old=True)`` leaves them out
    for v in range(60):
        N = 80
        Z = rng.normal(size=(4, N)).astype(np.float32)
        pop = np.log1p(rng.choice([0, 0, 1, 3, 10, 30, 100], size=N).astype(float))
        untrained = rng.random(N) < 0.25  # also with many events: they move with the untrained bucket
        out = rng.random(N) < 0.2
        j = int(rng.integers(N))
        out[j] = False
        val.add(Z, pop, out, j, 1.0, untrained, new[v])
        for g in gates:
            weights, shifts = g.table()
            W = np.array([[b.get(c, 0.0) for c in NAMES] for b in weights])
            bk = g.bucket_of(pop, untrained)
            s = (W[bk] * Z.T).sum(1) + np.asarray(shifts)[bk]
            s[out] = -np.inf
            rank = int((s > s[j]).sum())
            full[id(g)].append(1 / np.log2(rank + 2) if rank < 10 else 0.0)
    val.arrays()
    for g in gates:
        assert val.ndcg(g) == pytest.approx(np.mean(full[id(g)]), abs=1e-5)
        old = [x for x, n in zip(full[id(g)], new) if not n]
        assert val.ndcg(g, old=True) == pytest.approx(np.mean(old), abs=1e-5)


def test_a_new_item_enters_the_list_from_its_text_in_both_rankings():
    rng = np.random.default_rng(2)
    model = trained_like(2, CoocModel(CoocParams(window=4, trans_window=2, trans_decay=0.3)))
    states: dict = {}
    model.fold(stream(rng, 400), states, features(rng, 8), on_error=lambda ev, exc: None)
    user = max(states, key=lambda u: len(states[u].seen.recent))
    st = states[user]
    plain = dict(model.blend)
    # a catalogue event only: the text of the item the attention fusion likes best for this user
    att = model.components[0].scores(st)
    att[model.seen_rows(st)] = -np.inf
    best = model.items.ids[int(np.argmax(att))]
    model.add_item("brand-new", model.items.space("text")[model.items.index[best]].copy(), [], None)
    model.ranking.sizes = CandidateSizes(ann=5, sequence=5, popular=5, fresh=5)
    for mode in ("exact", "two-stage"):  # the fixed blend buries it: no popularity, no co-engagement
        assert "brand-new" not in [r.item_id for r in ranked(model, [st], mode, k=10)[0].items]
    model.blend = as_blend(plain, {"edges": [0, 3], "weights": [{"attention": 1.0}, plain, plain],
                                   "shifts": [0.5, 0.0, 0.0]})
    for mode in ("exact", "two-stage"):
        out = ranked(model, [st], mode, k=10)[0]
        assert "brand-new" in [r.item_id for r in out.items], mode
        for r in out.items:
            assert sum(r.reasons.values()) == pytest.approx(r.score, abs=1e-4)
    # the stream: once engaged with by others it leaves bucket 0, still served
    others = [u for u in states if u != user][:2]
    model.fold([Event(u, "brand-new", "click", None, 10**13 + k, f"n{k}") for k, u in enumerate(others)], states)
    assert model.cooc.popularity()[model.cooc.index["brand-new"]] > 0
    model.ranking.sizes = CandidateSizes(ann=1000, sequence=1000, popular=1000, fresh=1000)
    users = [states[u] for u in sorted(states)]
    assert_same_lists(ranked(model, users, "two-stage"), ranked(model, users, "exact"))


def test_an_untrained_item_with_behaviour_is_weighed_by_its_own_bucket_in_both_rankings():
    rng = np.random.default_rng(6)
    model = trained_like(3, CoocModel(CoocParams(window=4, trans_window=2, trans_decay=0.3)))
    with_sequence(model, rng, [f"i{i}" for i in range(69)])
    states: dict = {}
    model.fold(stream(rng, 400), states, features(rng, 8), on_error=lambda ev, exc: None)
    model.add_item("brand-new", rng.normal(size=TEXT).astype(np.float32), [], None)  # a catalogue event only
    row = model.items.index["brand-new"]
    assert np.flatnonzero(model.untrained_rows()).tolist() == [row]  # the one item the trained model lacks
    fans = sorted(states)[:3]
    model.fold([Event(u, "brand-new", "click", None, 10**13 + k, f"n{k}") for k, u in enumerate(fans)], states)
    assert model.cooc.popularity()[model.cooc.index["brand-new"]] > 0  # behaviour: out of bucket 0
    plain = {"attention": 0.3, "co-engagement": 0.3, "popularity": 0.1, "sequence": 0.3}
    mine = {"co-engagement": 0.5, "popularity": 0.5}
    known = GatedBlend([0, 3], [plain, plain, plain])
    gate = GatedBlend([0, 3], [plain, plain, plain], untrained=(mine, 6.0))
    st = states[next(u for u in sorted(states) if u not in fans)]
    raw = model.component_scores(st)
    model.blend = known
    before = model.scores(st)
    model.blend = gate
    after = model.scores(st)
    assert after[row] == pytest.approx(combine(raw, mine)[0][row] + 6.0)  # its own bucket's weights and shift
    assert before[row] == pytest.approx(combine(raw, plain)[0][row])  # without it, the known items' weights
    rest = np.arange(len(after)) != row
    np.testing.assert_allclose(after[rest], before[rest], rtol=1e-12, atol=1e-12)  # every other item as before
    out = ranked(model, [st], "exact", k=10)[0]
    assert out.items[0].item_id == "brand-new"
    for r in out.items:
        assert sum(r.reasons.values()) == pytest.approx(r.score, abs=1e-4)
    model.ranking.sizes = CandidateSizes(ann=1000, sequence=1000, popular=1000, fresh=1000)
    users = [states[u] for u in sorted(states)]
    assert_same_lists(ranked(model, users, "two-stage"), ranked(model, users, "exact"))


def test_checkpoint_without_a_gate_loads_unchanged_and_a_gated_one_round_trips(fitted, tmp_path):
    ds, catalog, split, rec = fitted
    live = rec.variant("fused", "fused")
    for ev in split.events[:300]:
        live.learn_one(ev)
    live.attention.version = "v-old"
    path = live.save(tmp_path / "old")
    meta = orjson.loads((path / "config.json").read_bytes())
    meta.pop("blend_gate")  # as a checkpoint written before the gate existed
    (path / "config.json").write_bytes(orjson.dumps(meta))
    gate = GatedBlend([0, 2], [{"attention": 1.0}, dict(rec.blend), dict(rec.blend)], [1.0, 0.0, 0.0],
                      untrained=({"co-engagement": 0.7, "attention": 0.3}, 0.5))
    live.blend = gate
    path2 = live.save(tmp_path / "gated")
    for p, blend in ((path, dict(rec.blend)), (path2, gate)):
        served = InterestModel.load(p)
        for i, iid in enumerate(catalog.ids):
            it = catalog.item(i)
            served.add_item(iid, rec.item_vectors[i], it.categories, it.attributes)
        assert type(served.blend) is type(blend) and served.blend == pytest.approx(blend)
        user = next(iter(split.test))
        st = live.state(user) or served.new_state()
        ref = InterestModel(live.attention, live.model.items, live.model.cooc, blend, sequence=live.sequence)
        np.testing.assert_allclose(served.scores(st), ref.scores(st), rtol=1e-5, atol=1e-6)
        assert [r.item_id for r in served.recommend(st, 5).items] == [r.item_id for r in ref.recommend(st, 5).items]
    assert InterestModel.load(path2).blend.config() == gate.config()


def test_a_bucket_searched_over_a_grid_scores_each_point_as_alone():
    """``GateValidation.ndcg_grid`` (one bucket's weights or shift over a grid) equals ``ndcg`` of each point."""
    rng = np.random.default_rng(4)
    base = np.array([0.5, 0.3, 0.2, 0.0])
    val = GateValidation(NAMES, base, float(np.log1p(6)))
    for v in range(80):
        N = 60
        Z = rng.integers(-2, 3, size=(4, N)).astype(np.float32)  # small integers: exact ties
        pop = np.log1p(rng.choice([0, 0, 1, 2, 5, 30, 100], size=N).astype(float))
        out = rng.random(N) < 0.2
        j = int(rng.integers(N))
        out[j] = False
        val.add(Z, pop, out, j, 1.0 + (v % 3), rng.random(N) < 0.2)
    val.arrays()
    assert val.has_untrained()
    plain = dict(zip(NAMES, base))
    grid = simplex_grid(len(NAMES), 0.25)
    for gate, searched in ((GatedBlend([0, 6], [{"attention": 1.0}, {"sequence": 0.5, "popularity": 0.5}, plain],
                                       [1.0, 0.5, 0.0]), (0, 1)),
                           (GatedBlend([0, 6], [{"attention": 1.0}, {"sequence": 0.5, "popularity": 0.5}, plain],
                                       [1.0, 0.5, 0.0], untrained=({"co-engagement": 1.0}, 1.5)), (0, 1, 3))):
        for b in searched:
            expected = [val.ndcg(gate.replaced(b, dict(zip(NAMES, w.tolist())))) for w in grid]
            assert val.ndcg_grid(gate, b, grid) == pytest.approx(expected, abs=1e-12)
            shifts = np.array([-1.0, 0.0, 0.5, 2.0])
            expected = [val.ndcg(gate.replaced(b, shift=x)) for x in shifts]
            w = np.tile([gate.table()[0][b].get(c, 0.0) for c in NAMES], (len(shifts), 1))
            assert val.ndcg_grid(gate, b, w, shifts) == pytest.approx(expected, abs=1e-12)


def test_the_search_moves_only_to_gates_the_guard_accepts(fitted):
    ds, catalog, split, rec = fitted
    val = record_gate_validation(rec, split, NAMES, rec.blend)
    free, free_report = choose_gate(val, rec.blend)
    assert isinstance(free, GatedBlend) and free_report["valid_ndcg@10"] > free_report["valid_ndcg@10_fixed"]
    refused_point = free.buckets[1]

    def accept(g: GatedBlend) -> bool:  # the guard refuses the point the free search moved to
        return g.buckets[1] != refused_point

    held, report = choose_gate(val, rec.blend, accept)
    # the whole gate is not thrown away: the search settled on the best point the guard takes
    assert isinstance(held, GatedBlend) and accept(held)
    assert report["valid_ndcg@10_fixed"] < report["valid_ndcg@10"] < free_report["valid_ndcg@10"]
    assert sum(r["points_refused"] for r in report["by_k"].values()) >= 1
    for r in report["by_k"].values():
        assert r["accepted"] and r["weights"][1] != refused_point
    # each accepted move scores as the validation says
    assert val.ndcg(held) == pytest.approx(report["valid_ndcg@10"], abs=1e-9)


def test_a_gate_that_would_cost_the_old_items_is_held_to_the_old_items_guard():
    """Targets on new items that only co-engagement finds, and old-item targets beside untrained
    items that co-engagement also likes: lifting the untrained bucket helps the first and costs the
    second. The guard keeps the old-item targets within ``OLD_LOSS`` of the fixed blend."""
    rng = np.random.default_rng(7)
    base = np.array([0.5, 0.2, 0.0, 0.3])
    val = GateValidation(NAMES, base, float(np.log1p(20)))
    for v in range(200):
        N = 50
        Z = rng.normal(size=(4, N)).astype(np.float32)
        pop = np.log1p(rng.choice([3, 30, 100], size=N).astype(float))
        untrained = np.zeros(N, bool)
        untrained[:8] = True  # untrained items with behaviour, liked by co-engagement
        Z[1, :8] += 2.0
        new = v % 2 == 0
        j = 0 if new else 20
        Z[:, 20] += 1.5  # an old target the fixed blend ranks well
        val.add(Z, pop, np.zeros(N, bool), j, 1.0, untrained, new)
    val.arrays()
    fixed_old = val.ndcg(as_blend(dict(zip(NAMES, base)), {"edges": [0], "weights": [dict(zip(NAMES, base))] * 2}),
                         old=True)
    free, free_report = choose_gate(val, dict(zip(NAMES, base)))
    assert isinstance(free, GatedBlend) and free.untrained is not None
    assert val.ndcg(free, old=True) < fixed_old * (1 - count_gate.OLD_LOSS)  # the free search pays with old items
    held, report = choose_gate(val, dict(zip(NAMES, base)), count_gate.old_items_guard(val, dict(zip(NAMES, base))))
    assert val.ndcg(held if isinstance(held, GatedBlend) else count_gate.as_gate(held), old=True) \
        >= fixed_old * (1 - count_gate.OLD_LOSS)
    assert report["valid_ndcg@10"] < free_report["valid_ndcg@10"]


def test_the_untrained_rows_follow_the_catalogue_row_by_row():
    rng = np.random.default_rng(8)
    model = trained_like(4, CoocModel(CoocParams(window=4, trans_window=2, trans_decay=0.3)))
    with_sequence(model, rng, [f"i{i}" for i in range(60)])
    before = model.untrained_rows().copy()
    assert before.sum() == 10  # the rows of i60..i69, outside the vocabulary (i69 retired, its row free)
    model.add_item("late", rng.normal(size=TEXT).astype(np.float32))  # appended
    model.delete_item("i3")
    model.add_item("reuses-a-row", rng.normal(size=TEXT).astype(np.float32))  # may take a freed row
    rows = model.untrained_rows()
    ids = model.items.ids
    expected = [i not in model.sequence.index for i in ids]
    assert rows.tolist() == expected
