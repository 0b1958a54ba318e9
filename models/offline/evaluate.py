"""``stream-app evaluate``: baselines, single-dimension ablations and the fusion, one protocol.

Models: ``pop``, ``itemknn`` (k and shrinkage tuned on the validation split), ``only:<dim>`` for
every attention dimension alone (the trained attention fusion with the other dimensions masked as
empty: one training serves all ablations), ``only:cooc`` (the co-engagement dimension alone,
parameters tuned on validation within a time budget), ``only:sequence`` (the sequence model
alone: causal self-attention over the user's last items, a GRU, or, with ``--sequence-kind auto``,
the mix of both that does best on a holdout of each user's last training event; epochs chosen on
that holdout), ``attention`` (the attention fusion alone,
the previous ``fused``), ``fused-no-text`` (the blend built on an attention fusion whose
transformer vectors are replaced by collaborative factors) and ``fused`` (the served model: z-score
blend of attention, co-engagement, popularity and sequence, weights chosen on validation). Every model is
fitted on the training part and replayed over the whole log in time order
(``models.offline.protocol``); the fused variants use the same incremental update as the worker.
Nothing is chosen on the test targets.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import orjson

from models.offline.base import seeded_catalog
from models.offline.baselines import ItemKNN, Pop
from models.dimensions import default_dimensions
from models.offline.fused import FusedRecommender, dataset_text_features, item_text_vectors
from models.offline.train_sequence import SequenceConfig, sequence_configs
from models.offline.protocol import PROTOCOL, Split, replay_evaluate, split_leave_one_out, tune
from models.offline.report import write_report

log = logging.getLogger(__name__)

ITEMKNN_GRID = {"k": [10, 50, 200, 800], "shrink": [0.0, 50.0]}
MAX_PREQUENTIAL = 20_000  # prequential hit@10 on a seeded sample of stream events (wall time)
MODELS = ("pop", "itemknn", *(f"only:{d.name}" for d in default_dimensions()), "only:cooc", "only:sequence",
          "attention",
          "fused", "fused-no-text")


def run_evaluation(dataset: str | Path, out: str | Path, seed: int = 0, only: Sequence[str] | None = None,
                   progress: bool = True, cooc_budget_s: float = 240.0, domain: str = "default",
                   sequence_budget_s: float | None = None, sequence_kind: str = "auto",
                   protocol: str = "leave-one-out", cut: float = 0.8, max_targets: int | None = None) -> dict:
    """Fit and replay the models (all, or the names in ``only``) on ``dataset``; write the report
    to ``out`` and return the metrics. ``domain``: the fused models' preset (``models.domains``:
    event weights and dimensions, as ``STREAM_RECO_DOMAIN`` in the worker). ``protocol="cold-start"``:
    ``models.offline.cold_start_eval`` (``cut``: share of events before the time cut;
    ``max_targets``: a seeded sample of the targets after it)."""
    if protocol == "cold-start":
        from models.offline.cold_start_eval import run_cold_start

        return run_cold_start(dataset, out, seed, only, progress, cooc_budget_s, domain, sequence_budget_s,
                              sequence_kind, cut, max_targets)
    if protocol != "leave-one-out":
        raise ValueError(f"unknown protocol {protocol!r}")
    t0 = time.perf_counter()
    ds, catalog = seeded_catalog(dataset, seed)
    split = split_leave_one_out(ds)
    print(f"{ds.name}: {len(ds.interactions)} events, {len(catalog)} items, {split}", flush=True)
    names = [n for n in MODELS if not only or n in only]
    results: dict[str, dict] = {}

    def measure(name: str, model, fit_s: float, extra: dict) -> dict:
        t = time.perf_counter()
        m = replay_evaluate(model, split, catalog, k=10, progress=progress, seed=seed,
                            max_prequential_events=MAX_PREQUENTIAL)
        results[name] = {**m, **extra, "fit_seconds": round(fit_s, 1)}
        print(f"  {name:<20} ndcg@10 {m['ndcg@10']:.4f} recall@10 {m['recall@10']:.4f} "
              f"valid_ndcg@10 {m['valid_ndcg@10']:.4f} fit {fit_s:.0f}s replay {time.perf_counter() - t:.0f}s "
              f"skipped(test, seen) {m['n_test_skipped_seen']}", flush=True)
        return results[name]

    if "pop" in names:
        t = time.perf_counter()
        pop = Pop()
        pop.fit(split.train, catalog)
        measure("pop", pop, time.perf_counter() - t, {})
    if "itemknn" in names:
        t = time.perf_counter()
        tuned = tune(lambda **p: ItemKNN(**p), ITEMKNN_GRID, split, catalog, progress=False)
        knn = ItemKNN(**tuned.best_params)
        knn.fit(split.train, catalog)
        measure("itemknn", knn, time.perf_counter() - t, {"params": tuned.best_params})
    fused_names = [n for n in names if n not in ("pop", "itemknn")]
    if fused_names:
        item_vecs = item_text_vectors(catalog)
        text_feats = dataset_text_features(ds)
        _evaluate_fused(fused_names, split, catalog, item_vecs, text_feats, seed, progress, cooc_budget_s, measure,
                        domain, sequence_configs(sequence_kind, sequence_budget_s))
    summary = {**_summary(results, time.perf_counter() - t0, seed), "domain": domain}
    metrics = {"dataset": ds.name, "protocol": PROTOCOL + f"; prequential on {MAX_PREQUENTIAL} sampled events",
               "models": results}
    write_report(metrics, out)
    (Path(out) / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    print(f"summary: {summary}", flush=True)
    return metrics


def _evaluate_fused(names, split: Split, catalog, item_vecs, text_feats, seed, progress, budget_s, measure,
                    domain: str = "default", sequence: Sequence[SequenceConfig] = sequence_configs()) -> None:
    """One attention training (+ co-engagement tuning, sequence training and blend selection) serves
    fused, attention, only:cooc, only:sequence and the only:<dim> ablations; fused-no-text trains its
    own attention fusion (and reuses the co-engagement parameters and the sequence model)."""
    rec = None
    if any(n != "fused-no-text" for n in names):
        t = time.perf_counter()
        rec = FusedRecommender("fused", item_vectors=item_vecs, text_features=text_feats, seed=seed,
                               progress=progress, domain=domain, sequence=sequence)
        rec.fit(split.train, catalog)
        train_s = time.perf_counter() - t
        sel = rec.select(split, budget_s)
        fit_s = time.perf_counter() - t
        seq = sel.get("sequence", {})
        print(f"  fused: attention trained in {train_s:.0f}s, selection {sel.get('cooc', {}).get('seconds', 0)}s "
              f"cooc {rec.cooc_params}, sequence {seq.get('kind')} {seq.get('weights', '')} "
              f"(holdout ndcg@10 {seq.get('candidates')}, mixes {seq.get('mix_grid')}) "
              f"{seq.get('train_seconds', 0)}s, blend {rec.blend}", flush=True)
    for name in names:
        if name == "fused-no-text":
            continue
        v = rec.variant(name, name)
        extra = {"shared_fit": "fused"} if name != "fused" else {"blend_weights": rec.blend,
                                                                 "selection": _brief(rec.info["selection"])}
        if name == "only:cooc" or name == "fused":
            extra["cooc_params"] = rec.cooc_params.__dict__
        if (name == "only:sequence" or name == "fused") and rec.sequence is not None:
            extra["sequence"] = {k: rec.sequence.info.get(k) for k in ("kind", "weights", "candidates", "mix_grid",
                                                                    "best_holdout_ndcg@10", "train_seconds")}
        if name == "fused" or name == "attention":
            extra.update(best_holdout_ndcg=rec.info["best_holdout_ndcg@10"], epochs=len(rec.info["history"]))
        entry = measure(name, v, fit_s, extra)
        if name == "fused":
            entry["mean_dimension_weights"] = _mean_weights(v, split)
    if "fused-no-text" in names:
        t = time.perf_counter()
        nt = FusedRecommender("fused-no-text", text=False, item_vectors=item_vecs, text_features=text_feats,
                              seed=seed, progress=progress, cooc_params=rec.cooc_params if rec else None,
                              domain=domain, sequence=None if rec else sequence)
        nt.fit(split.train, catalog)
        if rec is not None:  # the sequence model does not read text: the fused one serves here too
            nt.sequence = rec.sequence
        nt.select(split, budget_s)
        measure("fused-no-text", nt, time.perf_counter() - t, {"blend_weights": nt.blend})


def _brief(sel: dict) -> dict:
    out = {"blend": {k: v for k, v in sel.get("blend", {}).items()}}
    if "cooc" in sel:
        out["cooc"] = {k: v for k, v in sel["cooc"].items() if k != "history"}
    return out


def _summary(results: dict, seconds: float, seed: int) -> dict:
    summary = {"seconds": round(seconds, 1), "seed": seed}
    singles = {n: r["ndcg@10"] for n, r in results.items() if n.startswith("only:")}
    if singles and "fused" in results:
        best = max(singles, key=singles.get)
        summary.update(best_single=best, fused_over_best_single=round(results["fused"]["ndcg@10"] / singles[best], 4))
    for other in ("itemknn", "pop", "attention", "fused-no-text"):
        if "fused" in results and other in results and results[other]["ndcg@10"] > 0:
            summary[f"fused_over_{other}"] = round(results["fused"]["ndcg@10"] / results[other]["ndcg@10"], 4)
    for n, r in results.items():
        if r.get("valid_ndcg@10") is not None:
            summary.setdefault("valid_to_test_drop", {})[n] = round(r["valid_ndcg@10"] - r["ndcg@10"], 4)
    return summary


def _mean_weights(model: FusedRecommender, split) -> dict[str, float]:
    """Average published dimension/component weight over the test users' final states."""
    ws = []
    for user in split.test:
        st = model.state(user)
        if st is not None:
            ws.append(model.model.recommend(st, k=1).dimension_weights)
    if not ws:
        return {}
    return {n: round(float(np.mean([w.get(n, 0.0) for w in ws])), 4) for n in ws[0]}
