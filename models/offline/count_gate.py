"""Blend weights by how much behaviour an item has (``models.blend.GatedBlend``), chosen on a
validation built like the cold-start split.

The fixed blend is tuned on targets where nearly every item is old, and z-scores components in
which an item without behaviour has no signal (popularity 0, no co-engagement, outside the
sequence model's vocabulary), so a new item known by its text is buried. The gate gives items with
an engagement count of 0, of 1..k and of more than k their own weight vectors; the last bucket
keeps the fixed blend's weights, so items with behaviour rank as before. One more bucket takes the
items the trained model does not know once they have behaviour (``GatedBlend.untrained``): their
co-engagement and popularity follow the stream from the first event, but the sequence model still
scores them neutrally, so the 1..k weights, chosen for the known items with few events (where the
sequence model weighs most), would keep them out of the lists.

Validation (``record_gate_validation``), training events only, the test never ranked: an inner
time cut at ``fraction`` of the training events. The co-engagement counts are fitted on the events
before it and then follow the log (as the worker's counts follow the stream); the items whose
first event falls after it are *new* here, and the trained model is made to see them as a
catalogue event would: no learned id embedding or bias (the median bias), no collaborative
factors, not in the sequence model's vocabulary. Every consumption event after the inner cut (at
most ``max_targets``: a seeded sample of each kind, old-item targets at least half of them when
there are that many, each kind weighted back to its share, so the search sees what a gate costs
the old items too) is ranked just before it is folded in, over the items available at its time,
the user's seen items excluded.

Search (``choose_gate``): for each k of ``K_CHOICES``, the bucket-0 weights, then the 1..k
weights, then (when the validation has untrained items with behaviour) the untrained bucket's, each
over the simplex grid (step ``STEP``) and then its shift (``SHIFTS``: how far a
bucket's items are moved as a whole, the prior that a fresh item is wanted), the other buckets
fixed, judged as the fixed blend is (``models.offline.choose_blend``: the best neighbourhood among
the points at least as good as where the search stands; the search moves only to a point that
scores better). The k with the best validation NDCG@10 wins. No gate is searched with fewer than
``MIN_NEW_TARGETS`` new-item targets (the validation could not judge it); a gate is kept only when
it beats the fixed blend on this validation, does not score below it on the fixed blend's own
validation (each user's last validation target, nearly all on items with behaviour), and costs
this validation's old-item targets at most ``OLD_LOSS`` (1%) of the fixed blend's NDCG on them (the
fixed blend's own validation holds no item the trained model lacks, so it cannot see what the
untrained bucket costs the old items; the whole-validation score trades them for new ones at their
share). That guard steers the search: each step moves to the best point it accepts (walking past at most
``ACCEPT_TRIES`` refused ones), so a bucket whose best point would cost the usual targets settles
on the best one that does not, instead of the whole gate being refused at the end.

The recorded targets and their fast scoring: ``models.offline.gate_validation``.
"""
from __future__ import annotations

import copy
import logging
import time
from typing import Callable

import numpy as np

from models.blend import GatedBlend
from models.engine import InterestModel
from models.items import ItemVectors
from models.offline.base import ItemCatalog
from models.offline.baselines import _TrainingEvents
from models.offline.choose_blend import _z, gated_ndcg, neighbourhood_mean, simplex_grid
from models.offline.gate_validation import SHIFTS, GateValidation
from models.offline.protocol import TARGET_TYPES, Split
from models.offline.tune_cooc import fit_cooc

log = logging.getLogger(__name__)

K_CHOICES = (2, 6, 20)  # the 1..k bucket's upper count
STEP = 0.1
MIN_NEW_TARGETS = 30  # fewer new-item targets on validation: it cannot judge the gate, none is served
ACCEPT_TRIES = 100  # refused points walked past per search step before the step stays where it stands
OLD_LOSS = 0.01  # a gate may cost this validation's old-item targets at most this share of the fixed blend's NDCG


class _Unknown:
    """A sequence model that does not know some items (scores them neutrally, as new ones)."""

    def __init__(self, inner, drop: set[str]):
        self._inner = inner
        self.index = {i: r for i, r in inner.index.items() if i not in drop}

    def __getattr__(self, name):
        return getattr(self._inner, name)


def cold_view(rec, new: set[str], before) -> InterestModel:
    """The fitted ``rec`` (``FusedRecommender``) as it would serve had the items ``new`` arrived
    as catalogue events: counts fitted on ``before`` only, no blend (components are read raw)."""
    att = copy.copy(rec.attention)
    att._id_row = {i: r for i, r in rec.attention._id_row.items() if i not in new}
    att._cache = None
    d = rec.model.items.dims
    cf = {i: v for i, v in zip(rec._cf_ids, rec._cf) if i not in new}
    items = ItemVectors(d["text"], d["cf"], d["category"], cf_factors=cf)
    seq = None if rec.sequence is None else _Unknown(rec.sequence, new)
    model = InterestModel(att, items, fit_cooc(before, rec._catalog, rec.cooc_params), None, domain=rec.domain,
                          sequence=seq)
    for j, item_id in enumerate(rec._catalog.ids):
        it = rec._catalog.item(j)
        model.add_item(item_id, rec._text_vecs[j], it.categories, it.attributes, it.published_ts)
    return model


def _stream(split: Split, catalog: ItemCatalog, fraction: float):
    """-> (positions fed, inner cut time, items first seen at or after it, training events before it)."""
    train_ts = sorted(ev.ts for ev in split.train)
    horizon, cut = train_ts[-1], train_ts[min(int(fraction * len(train_ts)), len(train_ts) - 1)]
    test = set(split.test_pos.values())
    fed = [p for p, ev in enumerate(split.events) if ev.ts <= horizon and p not in test and ev.item_id in catalog]
    first: dict[str, int] = {}
    for p in fed:
        first.setdefault(split.events[p].item_id, split.events[p].ts)
    new = {i for i, ts in first.items() if ts >= cut}
    return fed, cut, new, [ev for ev in split.train if ev.ts < cut]


def sample_targets(fresh: list[int], old: list[int], max_targets: int, seed: int = 0) -> dict[int, float]:
    """Position -> weight of the targets recorded: at most ``max_targets``, old-item ones at least
    half when there are that many, each kind a seeded sample weighted back to its share.

    >>> w = sample_targets(list(range(10)), list(range(100, 130)), 8)
    >>> sorted(w.values()) == [2.5] * 4 + [7.5] * 4
    True
    >>> sample_targets([1, 2], [5, 6, 7], 10)
    {1: 1.0, 2: 1.0, 5: 1.0, 6: 1.0, 7: 1.0}
    """
    all_fresh, all_old = len(fresh), len(old)
    n_fresh = min(all_fresh, max(max_targets // 2, max_targets - all_old))
    n_old = max(0, max_targets - n_fresh)
    rng = np.random.default_rng(seed)
    if len(old) > n_old:
        old = rng.choice(old, size=n_old, replace=False).tolist()
    if len(fresh) > n_fresh:
        fresh = sorted(rng.choice(fresh, size=n_fresh, replace=False).tolist())
    return {**{int(p): all_fresh / max(len(fresh), 1) for p in fresh},
            **{int(p): all_old / max(len(old), 1) for p in old}}


def record_gate_validation(rec, split: Split, names: list[str], base: dict[str, float], fraction: float = 0.8,
                           max_targets: int = 1500, seed: int = 0) -> GateValidation:
    """Replay the training log past an inner cut and record the targets (module doc)."""
    catalog = rec._catalog
    fed, cut, new, before = _stream(split, catalog, fraction)
    events = split.events
    cands = [p for p in fed if events[p].ts >= cut and events[p].type in TARGET_TYPES]
    fresh = [p for p in cands if events[p].item_id in new]
    old = [p for p in cands if events[p].item_id not in new]
    weight = sample_targets(fresh, old, max_targets, seed)
    model = cold_view(rec, new, before)
    val = GateValidation(names, np.array([base.get(c, 0.0) for c in names]), float(np.log1p(max(K_CHOICES))))
    avail = {}
    for p in fed:
        avail.setdefault(events[p].item_id, events[p].ts)
    for j, it in enumerate(catalog.items):
        if it.published_ts is not None:
            avail[it.item_id] = min(avail.get(it.item_id, it.published_ts), it.published_ts)
    t_avail = np.array([avail.get(i, np.iinfo(np.int64).max) for i in catalog.ids])
    guard, states, seen = _TrainingEvents(before), {}, {}
    for p in fed[: fed.index(max(weight)) + 1] if weight else []:
        ev = events[p]
        j = catalog.index(ev.item_id)
        mask = seen.setdefault(ev.user_id, np.zeros(len(catalog), bool))
        if p in weight and not mask[j]:
            st = states.get(ev.user_id) or model.new_state()
            raw, own = model.component_scores(st), model.own_moments()
            Z = np.stack([_z(raw[c], own.get(c)) for c in names])
            val.add(Z, np.asarray(raw["popularity"]), mask | (t_avail > ev.ts), j, weight[p], model.untrained_rows(),
                    ev.item_id in new)
            val.n_new += ev.item_id in new
        learn = not guard.consume(ev)
        model.fold([ev.event(f"gate-{p}")], states, rec.text_features, learn=lambda e: learn)
        mask[j] = True
    val.arrays()
    return val


def _first(gate: GatedBlend, now: float, order, scores: np.ndarray, make, accept) -> tuple:
    """Walk the points in ``order`` (best first): the first that scores above ``now`` and that
    ``accept`` takes. A point that only ties ``now`` ends the walk (ties keep where the search
    stands), as does ``ACCEPT_TRIES`` refused points. -> (gate, score)."""
    tries = 0
    for i in order:
        if not scores[i] > now:
            break
        candidate = make(i)
        if accept is None or accept(candidate):
            return candidate, float(scores[i])
        tries += 1
        if tries >= ACCEPT_TRIES:
            break
    return gate, now


def _search(val: GateValidation, gate: GatedBlend, b: int, grid: np.ndarray, accept=None) -> tuple[GatedBlend, float]:
    """Bucket ``b``'s weights over ``grid``, then its shift over ``SHIFTS``, the other buckets as
    in ``gate``; each move only to a point ``accept`` takes (None: any)."""
    def with_(w=None, shift=None) -> GatedBlend:
        return gate.replaced(b, None if w is None else dict(zip(val.names, w.tolist())), shift)

    now = val.ndcg(gate)
    scores = val.ndcg_grid(gate, b, grid)  # (G,) each point as ``val.ndcg(with_(w))``
    smooth = np.where(scores >= now, neighbourhood_mean(grid, scores, STEP), -np.inf)
    order = [i for i in np.argsort(-smooth, kind="stable") if np.isfinite(smooth[i])]
    gate, now = _first(gate, now, order, scores, lambda i: with_(grid[i]), accept)
    shifted = val.ndcg_grid(gate, b, np.tile(np.array([gate.table()[0][b].get(c, 0.0) for c in val.names]), (len(SHIFTS), 1)),
                            np.array(SHIFTS))  # (S,) each shift as ``val.ndcg(with_(shift=x))``
    return _first(gate, now, np.argsort(-shifted, kind="stable"), shifted, lambda i: with_(shift=SHIFTS[i]), accept)


def choose_gate(val: GateValidation, base: dict[str, float], accept=None) -> tuple[dict | GatedBlend, dict]:
    """The gate with the best validation NDCG@10, or ``base`` when none beats it. -> (blend, report).
    ``accept(gate)``: False for a gate that must not be served (``select_gate``: one that lowers
    the fixed blend's own validation)."""
    t0 = time.perf_counter()
    grid = simplex_grid(len(val.names), STEP)
    plain = {c: base.get(c, 0.0) for c in val.names}
    fixed = val.ndcg(GatedBlend([0], [plain, plain]))
    report = {"valid_ndcg@10_fixed": fixed, "n_valid": len(val.rows), "n_valid_new": val.n_new,
              "n_valid_ranked": int(len(val.w)), "by_k": {}}
    best, best_score = base, fixed
    refused = 0

    def judged(g: GatedBlend) -> bool:
        nonlocal refused
        ok = accept(g)
        refused += not ok
        return ok

    untrained = (plain, 0.0) if val.has_untrained() else None
    report["untrained_bucket"] = untrained is not None
    for k in K_CHOICES:
        gate, score = GatedBlend((0, k), [plain, plain, plain], untrained=untrained), fixed
        refused = 0
        for b in (0, 1, len(gate.buckets)) if untrained is not None else (0, 1):  # the last: the untrained bucket
            gate, score = _search(val, gate, b, grid, None if accept is None else judged)
        ok = accept is None or score <= fixed or accept(gate)
        report["by_k"][str(k)] = {"valid_ndcg@10": score, "accepted": ok, "points_refused": refused,
                                  **gate.config()}
        if score > best_score and ok:
            best, best_score = gate, score
    report.update({"valid_ndcg@10": best_score, "gate": best.config() if isinstance(best, GatedBlend) else None,
                   "seconds": round(time.perf_counter() - t0, 1)})
    return best, report


def as_gate(blend) -> GatedBlend:
    """A served blend as a gate (a plain weights dict: one bucket for every item)."""
    return blend if isinstance(blend, GatedBlend) else GatedBlend([0], [dict(blend)] * 2)


def old_items_guard(val: GateValidation, blend) -> Callable[[GatedBlend], bool]:
    """Accepts a gate that costs ``val``'s old-item targets at most ``OLD_LOSS`` of ``blend``'s
    NDCG@10 on them."""
    floor = val.ndcg(as_gate(blend), old=True) * (1.0 - OLD_LOSS)
    return lambda g: val.ndcg(g, old=True) >= floor


def select_gate(rec, split: Split, standard: tuple, fraction: float = 0.8) -> tuple[dict | GatedBlend, dict]:
    """``FusedRecommender.select``'s last step: the gate over its chosen blend ``rec.blend``.
    ``standard``: (Z, M, T, P, names), the fixed blend's own recorded validation
    (``models.offline.choose_blend.record_validation`` with ``raw``): a gate that scores lower
    there than the fixed blend is not served (items with behaviour, the usual targets, first), nor
    one that costs this validation's old-item targets more than ``OLD_LOSS`` of their NDCG."""
    if rec._cooc is None or not rec.blend:
        return rec.blend, {"gate": None}
    names = rec.blend_names()
    t0 = time.perf_counter()
    val = record_gate_validation(rec, split, names, rec.blend, fraction)
    if val.n_new < MIN_NEW_TARGETS:
        log.info("blend gate: none (%d new-item targets on validation, %d needed)", val.n_new, MIN_NEW_TARGETS)
        return rec.blend, {"gate": None, "n_valid": len(val.rows), "n_valid_new": val.n_new}
    floor = gated_ndcg(*standard, rec.blend)
    keeps_old = old_items_guard(val, rec.blend)
    blend, report = choose_gate(val, rec.blend, lambda g: keeps_old(g) and gated_ndcg(*standard, g) >= floor)
    report["standard_valid_ndcg@10"] = {"fixed": floor, "gate": gated_ndcg(*standard, blend)}
    report["old_valid_ndcg@10"] = {"fixed": val.ndcg(as_gate(rec.blend), old=True),
                                   "gate": val.ndcg(as_gate(blend), old=True)}
    report["record_seconds"] = round(time.perf_counter() - t0 - report["seconds"], 1)
    log.info("blend gate: %s (validation NDCG@10 %.4f, fixed blend %.4f; %d targets, %d on new items)",
             report["gate"], report["valid_ndcg@10"], report["valid_ndcg@10_fixed"], report["n_valid"],
             report["n_valid_new"])
    return blend, report
