"""``stream-app evaluate``: baselines, single-dimension ablations and the fusion, one protocol.

Models: ``pop``, ``itemknn`` (k and shrinkage tuned on the validation split), ``only:<dim>`` for
every attention dimension alone (the trained attention fusion with the other dimensions masked as
empty: one training serves all ablations), ``only:cooc`` (the co-engagement dimension alone,
parameters tuned on validation by a coordinate search of at most a few passes), ``only:sequence`` (the sequence model
alone: causal self-attention over the user's last items, a GRU, or, with ``--sequence-kind auto``,
the mix of both that does best on a holdout of each user's last training event; epochs chosen on
that holdout), ``attention`` (the attention fusion alone,
the previous ``fused``), ``fused-no-text`` (the blend built on an attention fusion whose
transformer vectors are replaced by collaborative factors) and ``fused`` (the served model: z-score
blend of attention, co-engagement, popularity and sequence, weights chosen on validation). Every model is
fitted on the training part and replayed over the whole log in time order
(``models.offline.protocol``); the fused variants use the same incremental update as the worker.
Nothing is chosen on the test targets. Independent trainings and every replay run as parallel
jobs (``models.offline.parallel``, ``models.offline.staged``); the results equal a serial run's
(``jobs=1``). Every training stops after a fixed number of epochs or passes (early stopping
included); a seconds cap is opt-in, and the summary lists what it stopped (``stopped_by_time``).
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
from models.offline.parallel import Jobs
from models.offline.staged import stage
from models.offline.time_caps import stopped_by_time, time_stops
from models.offline.train_sequence import SequenceConfig, sequence_configs
from models.offline.protocol import (PROTOCOL, Split, replay_evaluate, replay_evaluate_shared, split_leave_one_out,
                                     tune)
from models.offline.report import write_report
from models.offline.tune_cooc import MAX_PASSES

log = logging.getLogger(__name__)

ITEMKNN_GRID = {"k": [10, 50, 200, 800], "shrink": [0.0, 50.0]}
THEN, LATER = 1, 2  # job priorities after the trainings (0): what fused's figures wait on, then the rest
MAX_PREQUENTIAL = 20_000  # prequential hit@10 on a seeded sample of stream events (wall time)
MODELS = ("pop", "itemknn", *(f"only:{d.name}" for d in default_dimensions()), "only:cooc", "only:sequence",
          "attention",
          "fused", "fused-no-text")


def run_evaluation(dataset: str | Path, out: str | Path, seed: int = 0, only: Sequence[str] | None = None,
                   progress: bool = True, cooc_budget_s: float | None = None, domain: str = "default",
                   sequence_budget_s: float | None = None, sequence_kind: str = "auto",
                   protocol: str = "leave-one-out", cut: float = 0.8, max_targets: int | None = None,
                   jobs: int | None = None, max_passes: int = MAX_PASSES, sequence_epochs: int | None = None) -> dict:
    """Fit and replay the models (all, or the names in ``only``) on ``dataset``; write the report
    to ``out`` and return the metrics. ``domain``: the fused models' preset (``models.domains``:
    event weights and dimensions, as ``STREAM_RECO_DOMAIN`` in the worker). ``protocol="cold-start"``:
    ``models.offline.cold_start_eval`` (``cut``: share of events before the time cut;
    ``max_targets``: a seeded sample of the targets after it). ``jobs``: parallel processes (None:
    every core). ``max_passes``: of the co-engagement search; ``sequence_epochs``: each sequence
    model's maximum (None: its default); ``cooc_budget_s`` / ``sequence_budget_s``: opt-in seconds
    caps (results then depend on the machine; the summary says what they stopped)."""
    sequence = sequence_configs(sequence_kind, sequence_budget_s, sequence_epochs)
    if protocol == "cold-start":
        from models.offline.cold_start_eval import run_cold_start

        return run_cold_start(dataset, out, seed, only, progress, cooc_budget_s, domain, sequence, cut, max_targets,
                              jobs, max_passes)
    if protocol != "leave-one-out":
        raise ValueError(f"unknown protocol {protocol!r}")
    t0 = time.perf_counter()
    ds, catalog = seeded_catalog(dataset, seed)
    split = split_leave_one_out(ds)
    print(f"{ds.name}: {len(ds.interactions)} events, {len(catalog)} items, {split}", flush=True)
    names = [n for n in MODELS if not only or n in only]
    fused_names = [n for n in names if n not in ("pop", "itemknn")]
    with Jobs(jobs) as pool:
        pending: dict[str, tuple] = {}  # name -> (future of a job's (metrics, extra, replay seconds), fit seconds)
        if fused_names:
            item_vecs, text_feats = item_text_vectors(catalog), dataset_text_features(ds)
            staged = _stage_fused(fused_names, split, catalog, item_vecs, text_feats, seed, progress, cooc_budget_s,
                                  domain, sequence, pool, max_passes)
        for n in ("pop", "itemknn"):  # after the longer jobs
            if n in names:
                pending[n] = (pool.submit(baseline_job, n, split, catalog, seed, progress, priority=LATER), None)
        if fused_names:
            _finish_fused(fused_names, staged, split, catalog, seed, progress, pool, pending)
        results = {n: _collect(n, *pending[n]) for n in names}
    summary = {**_summary(results, time.perf_counter() - t0, seed), "domain": domain,
               "stopped_by_time": stopped_by_time(results)}
    metrics = {"dataset": ds.name, "protocol": PROTOCOL + f"; prequential on {MAX_PREQUENTIAL} sampled events",
               "models": results}
    write_report(metrics, out)
    (Path(out) / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    if summary["stopped_by_time"]:
        print(f"stopped by time (these figures depend on the machine): {', '.join(summary['stopped_by_time'])}",
              flush=True)
    print(f"summary: {summary}", flush=True)
    return metrics


def baseline_job(name: str, split: Split, catalog, seed: int, progress: bool) -> tuple[dict, dict, float]:
    """Fit (itemknn: tuned on validation) and replay one baseline (a job)."""
    t = time.perf_counter()
    if name == "pop":
        model, extra = Pop(), {}
    else:
        tuned = tune(lambda **p: ItemKNN(**p), ITEMKNN_GRID, split, catalog, progress=False)
        model, extra = ItemKNN(**tuned.best_params), {"params": tuned.best_params}
    model.fit(split.train, catalog)
    fit_s = time.perf_counter() - t
    m, _, replay_s = replay_job(model, split, catalog, seed, progress, False)
    return m, {**extra, "fit_seconds": round(fit_s, 1)}, replay_s


def replay_job(model, split: Split, catalog, seed: int, progress: bool, weights: bool) -> tuple[dict, dict, float]:
    """Replay one fitted model over the log (a job): (metrics, extra, seconds); ``weights``: the
    mean published dimension weights of the test users go into ``extra``."""
    t = time.perf_counter()
    m = replay_evaluate(model, split, catalog, k=10, progress=progress, seed=seed,
                        max_prequential_events=MAX_PREQUENTIAL)
    return m, {"mean_dimension_weights": _mean_weights(model, split)} if weights else {}, time.perf_counter() - t


def no_text_job(nt: FusedRecommender, split: Split, catalog, seed: int, progress: bool, budget_s, max_passes):
    """fused-no-text's blend selection and replay (a job)."""
    t = time.perf_counter()
    nt.select(split, budget_s, max_passes)
    m, _, replay_s = replay_job(nt, split, catalog, seed, progress, False)
    return m, {"blend_weights": nt.blend, "stopped_by_time": time_stops(nt.info["selection"]),
               "select_seconds": round(time.perf_counter() - t - replay_s, 1)}, replay_s


def _collect(name: str, job, fit_s: float | None) -> dict:
    m, extra, replay_s = job.result()
    entry = {**m, **extra}
    entry.setdefault("fit_seconds", round(fit_s or 0.0, 1))
    print(f"  {name:<20} ndcg@10 {m['ndcg@10']:.4f} recall@10 {m['recall@10']:.4f} "
          f"valid_ndcg@10 {m['valid_ndcg@10']:.4f} fit {entry['fit_seconds']:.0f}s replay {replay_s:.0f}s "
          f"skipped(test, seen) {m['n_test_skipped_seen']}", flush=True)
    return entry


def _stage_fused(names, split: Split, catalog, item_vecs, text_feats, seed, progress, budget_s, domain,
                 sequence: Sequence[SequenceConfig], pool: Jobs, max_passes: int):
    """Submit the fused models' independent steps (``models.offline.staged``): one attention
    training (+ co-engagement search and sequence models) serves fused, attention, only:cooc,
    only:sequence and the only:<dim> ablations; fused-no-text trains its own attention fusion (and
    reuses the co-engagement parameters and the sequence model)."""
    recs = []
    if any(n != "fused-no-text" for n in names):
        recs.append(FusedRecommender("fused", item_vectors=item_vecs, text_features=text_feats, seed=seed,
                                     progress=progress, domain=domain, sequence=sequence))
    if "fused-no-text" in names:
        recs.append(FusedRecommender("fused-no-text", text=False, item_vectors=item_vecs, text_features=text_feats,
                                     seed=seed, progress=progress, domain=domain, sequence=None if recs else sequence))
    return stage(pool, recs, split, catalog, budget_s, max_passes), time.perf_counter()


def _finish_fused(names, staged, split: Split, catalog, seed, progress, pool: Jobs, pending: dict) -> None:
    """Submit each replay as soon as what it needs is ready: the attention-only variants once
    fused's attention fusion is trained (one replay over one shared state), only:cooc once the
    co-engagement search is done, only:sequence once the sequence models are; then fused-no-text's
    blend selection as a job and fused's here, each followed by its replay. The jobs fused's figures
    wait on go first (``THEN``); the others fill the processes when nothing else waits (``LATER``)."""
    staged, t = staged
    others = [n for n in names if n != "fused-no-text"]
    if others:
        rec = staged.fits[0].result()
        shared = [n for n in others if _attention_only(n)]
        if shared:
            job = pool.submit(shared_replay_job, rec, shared, split, catalog, seed, progress, priority=LATER)
            for name in shared:
                extra = {"shared_fit": "fused"}
                if name == "attention":
                    extra.update(best_holdout_ndcg=rec.info["best_holdout_ndcg@10"], epochs=len(rec.info["history"]))
                pending[name] = (_with(job, extra, name), time.perf_counter() - t)
        if "only:cooc" in others:
            params, report = staged.cooc.result() if staged.cooc is not None else (rec.cooc_params, {})
            job = pool.submit(cooc_job, rec, params, split, catalog, seed, progress, priority=LATER)
            pending["only:cooc"] = (_with(job, {"shared_fit": "fused", "cooc_params": params.__dict__,
                                                "stopped_by_time": time_stops({"cooc": report})}),
                                    time.perf_counter() - t)

    def no_text() -> None:  # its attention training, the search and the sequence models done
        if "fused-no-text" in names and "fused-no-text" not in pending:
            nt = staged.fitted(len(staged.fits) - 1)
            pending["fused-no-text"] = (pool.submit(no_text_job, nt, split, catalog, seed, progress, staged.budget_s,
                                                    staged.max_passes, priority=THEN), time.perf_counter() - t)

    if any(n in others for n in ("fused", "only:sequence")):
        rec = staged.fitted(0)
        if staged.fits[-1].done():
            no_text()
        if "only:sequence" in others and rec.sequence is not None:
            extra = {"shared_fit": "fused", "sequence": _sequence_info(rec),
                     "stopped_by_time": time_stops({"sequence": rec.sequence.info})}
            job = pool.submit(replay_job, rec.variant("only:sequence", "only:sequence"), split, catalog, seed,
                              progress, False, priority=THEN)
            pending["only:sequence"] = (_with(job, extra), time.perf_counter() - t)
        if "fused" in others:
            with pool.working_here():  # the replays wait on it: no job beside it on its core
                rec.select(split, staged.budget_s, staged.max_passes)
            _submit_fused(rec, split, catalog, seed, progress, pool, pending, time.perf_counter() - t)
    no_text()


def _submit_fused(rec: FusedRecommender, split: Split, catalog, seed, progress, pool: Jobs, pending: dict,
                  fit_s: float) -> None:
    """fused's replay, its blend chosen."""
    sel = rec.info["selection"]
    seq = sel.get("sequence") or {}
    print(f"  fused: trained and selected in {fit_s:.0f}s (co-engagement search {sel.get('cooc', {}).get('seconds', 0)}s) "
          f"cooc {rec.cooc_params}, sequence {seq.get('kind')} {seq.get('weights', '')} "
          f"(holdout ndcg@10 {seq.get('candidates')}, mixes {seq.get('mix_grid')}) "
          f"{seq.get('train_seconds', 0)}s, blend {rec.blend}", flush=True)
    extra = {"blend_weights": rec.blend, "selection": _brief(sel), "cooc_params": rec.cooc_params.__dict__,
             "best_holdout_ndcg": rec.info["best_holdout_ndcg@10"], "epochs": len(rec.info["history"]),
             "stopped_by_time": time_stops(sel)}
    if rec.sequence is not None:
        extra["sequence"] = _sequence_info(rec)
    job = pool.submit(replay_job, rec.variant("fused", "fused"), split, catalog, seed, progress, True, priority=THEN)
    pending["fused"] = (_with(job, extra), fit_s)


def _attention_only(name: str) -> bool:
    """A variant that scores the attention fusion alone (attention, only:<dimension>)."""
    return name == "attention" or name.startswith("only:") and name not in ("only:cooc", "only:sequence")


def _sequence_info(rec: FusedRecommender) -> dict:
    return {k: rec.sequence.info.get(k) for k in ("kind", "weights", "candidates", "mix_grid", "best_holdout_ndcg@10",
                                                  "train_seconds", "epochs_run", "stopped_by_time")}


def shared_replay_job(rec: FusedRecommender, names: list[str], split: Split, catalog, seed: int,
                      progress: bool) -> dict[str, tuple[dict, dict, float]]:
    """Replay the attention-only variants ``names`` of ``rec`` over one shared user state (a job):
    {name: (metrics, extra, seconds)}."""
    t = time.perf_counter()
    ms = replay_evaluate_shared(rec.sharing_state(names), split, catalog, k=10, progress=progress, seed=seed,
                                max_prequential_events=MAX_PREQUENTIAL)
    return {n: (m, {}, time.perf_counter() - t) for n, m in zip(names, ms)}


def cooc_job(rec: FusedRecommender, params, split: Split, catalog, seed: int, progress: bool):
    """only:cooc: the counts fitted with the searched parameters, then replayed (a job)."""
    rec.fit_counts(params)
    return replay_job(rec.variant("only:cooc", "only:cooc"), split, catalog, seed, progress, False)


class _with:
    """A job's future whose extra entries are completed with ``extra`` (``_collect``); ``part``:
    the entry of a job that returns several models' results."""

    def __init__(self, job, extra: dict, part: str | None = None):
        self.job, self.extra, self.part = job, extra, part

    def result(self):
        done = self.job.result()
        m, extra, s = done if self.part is None else done[self.part]
        return m, {**self.extra, **extra}, s


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
