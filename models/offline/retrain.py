"""One retrain: a data set (the live topics, ``stream_app.topic_data``) -> a new version of the
model, judged against the serving one on the most recent slice of time, published only when it
is better (``stream-app train --from-kafka``, ``stream-app retrain``).

1. ``models.offline.recent.split_recent``: the recent slice (the last 10 % of events by time, or
   ``holdout_ms``) is cut off; the model is trained on what comes before it only.
2. Training is ``stream-app train``'s (``models.offline.fused``: attention fusion, co-engagement,
   sequence model, blend weights chosen on a leave-one-out validation inside the training log),
   from scratch or, with ``warm_start``, from the serving checkpoint (``models.offline.warm``:
   smaller budgets, no co-engagement parameter search).
   The recent slice never starts before the newest event the serving version has seen (its
   ``retrain.json``), so neither model has learned from it; with no newer event there is nothing
   to judge and nothing is trained.
3. Both models, the new one and the serving one (``models.offline.gate.serving_model``: the
   checkpoint as a worker holds it, or the untrained default), are measured on the recent slice
   by the same replay (``models.offline.recent.evaluate_recent``).
4. The new version is written whole (``models.registry``): the checkpoint, its co-engagement
   counts brought up to the newest event by that replay (as a worker that streamed the log would
   hold them), and ``retrain.json`` with both figures, the data window, the read's counts, the
   parent version and the gate's decision (``models.offline.gate.decide``); the ``current``
   pointer moves to it only when it passed.
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import orjson

from models import registry
from models.offline.base import ItemCatalog
from models.offline.baselines import _TrainingEvents
from models.offline.data import Dataset
from models.offline.fused import FusedRecommender, dataset_text_features, encoder, item_text_vectors
from models.offline.gate import checkpoint_version, decide, serving_model, trained_through
from models.offline.protocol import split_leave_one_out
from models.offline.recent import TimeSplit, evaluate_recent, split_recent
from models.offline.train_attention import TrainConfig
from models.offline.train_sequence import sequence_configs
from models.offline.tune_cooc import MAX_PASSES
from models.offline.warm import WarmStart

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainConfig:
    recent_fraction: float = 0.1  # the recent slice: this share of the events, by time ...
    holdout_ms: int | None = None  # ... or the events within this long of the newest (wins when set)
    metric: str = "ndcg@10"  # the gate's figure: ndcg@10 | hr@10
    margin: float = 0.0  # the new model must beat the serving one by more than this (absolute)
    min_ranked: int = 20  # recent events ranked, at least, for the gate to judge
    max_ranked: int | None = 5000  # rank a seeded sample of this many recent events at most
    warm_start: bool = False
    seed: int = 0
    domain: str = "default"
    budget_s: float | None = None  # co-engagement parameter search: opt-in seconds cap (cold start only)
    max_passes: int = MAX_PASSES  # co-engagement parameter search: passes at most (cold start only)
    sequence_kind: str = "auto"
    sequence_budget_s: float | None = None  # cold start: each sequence model's opt-in seconds cap
    sequence_epochs: int | None = None  # cold start: each sequence model's epochs at most (None: its default)
    warm_epochs: int = 4  # warm start: attention epochs at most ...
    warm_examples: int = 30_000  # ... on the newest this many training examples
    warm_sequence_epochs: int = 5  # warm start: the sequence model's epochs at most
    warm_sequence_budget_s: float | None = None  # warm start: the sequence model's opt-in seconds cap
    progress: bool = False


def train_new(ds: Dataset, split: TimeSplit, catalog: ItemCatalog, item_vecs, text_feats, cfg: RetrainConfig,
              warm: WarmStart | None) -> FusedRecommender:
    """The new model, trained on ``split.before`` as ``stream-app train`` trains (its blend and
    parameters chosen on a leave-one-out validation inside it), from ``warm`` when given."""
    train_ds = Dataset(ds.name, ds.items, split.before)
    loo = split_leave_one_out(train_ds)
    if warm is not None:
        config = TrainConfig(epochs=cfg.warm_epochs, patience=1, max_examples=cfg.warm_examples, newest_examples=True)
        seq = sequence_configs(warm.sequence_kind or cfg.sequence_kind, cfg.warm_sequence_budget_s,
                               cfg.warm_sequence_epochs)
    else:
        config, seq = TrainConfig(), sequence_configs(cfg.sequence_kind, cfg.sequence_budget_s, cfg.sequence_epochs)
    rec = FusedRecommender("fused", item_vectors=item_vecs, text_features=text_feats, config=config, seed=cfg.seed,
                           progress=cfg.progress, domain=cfg.domain, sequence=seq, warm=warm,
                           cooc_params=warm.cooc_params if warm is not None else None,
                           encoder_version=encoder().version)
    rec.fit(loo.train, catalog)
    rec.select(loo, cfg.budget_s, cfg.max_passes)
    return rec


def retrain(ds: Dataset, models_dir: str | Path, serving: str | Path | None, cfg: RetrainConfig = RetrainConfig(),
            read: dict | None = None, trainer: Callable = train_new) -> dict:
    """Train, judge, write and maybe publish (see the module doc); returns the metadata written
    to the new version's ``retrain.json`` (plus ``path``), or ``{"skipped": why}`` without writing
    anything when there is no event newer than what the serving version was trained on.
    ``trainer``: ``train_new``'s signature (tests pass a deliberately worse one)."""
    t0 = time.perf_counter()
    through = trained_through(serving)
    if through is not None and (not ds.interactions or ds.interactions[-1].ts <= through):
        why = f"no event after {through} (ms), the newest the serving version has seen"
        log.info("nothing to retrain on: %s", why)
        return {"skipped": why}
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    version = registry.new_version(models_dir)
    work = registry.partial_dir(models_dir, version)
    work.mkdir()
    try:
        return _run(ds, models_dir, version, work, serving, cfg, read, t0, trainer)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)  # never leave a half-written version behind
        raise


def _run(ds: Dataset, models_dir: Path, version: str, work: Path, serving: str | Path | None, cfg: RetrainConfig,
         read: dict | None, t0: float, trainer: Callable) -> dict:
    through = trained_through(serving)
    split = split_recent(ds.interactions, cfg.recent_fraction, cfg.holdout_ms, after_ts=through)
    catalog = ItemCatalog.from_dataset(ds)
    item_vecs, text_feats = item_text_vectors(catalog), dataset_text_features(ds)
    warm = WarmStart.load(serving) if cfg.warm_start and serving else None
    if cfg.warm_start and warm is None:
        log.warning("warm start asked for, but no serving checkpoint: training from scratch")
    t_train = time.perf_counter()
    rec = trainer(ds, split, catalog, item_vecs, text_feats, cfg, warm)
    train_s = time.perf_counter() - t_train
    new = rec.variant("fused", "fused")
    guard = _TrainingEvents(rec._train_events)
    new_m = evaluate_recent(new.model, split, text_feats, learn_before=lambda e: not guard.consume(e),
                            max_ranked=cfg.max_ranked, seed=cfg.seed)
    old = serving_model(serving, catalog, item_vecs, cfg.domain, encoder().version)
    old_m = evaluate_recent(old, split, text_feats, learn_before=None if through is None else (lambda e: e.ts > through),
                            max_ranked=cfg.max_ranked, seed=cfg.seed)
    decision = decide(new_m, old_m, cfg.metric, cfg.margin, cfg.min_ranked)
    warm = rec.warm  # None when the checkpoint did not fit the model (logged)
    new.attention.version = version
    new.save(work)
    meta = {"version": version, "parent": {"version": checkpoint_version(serving),
                                           "path": str(serving) if serving else None},
            "created_at_ms": int(time.time() * 1000), "data": {"name": ds.name, "items": len(catalog),
                                                             "events": len(ds.interactions), **split.window(),
                                                             "last_event_ts": split.recent[-1].ts, "read": read},
            "recent": {"new": new_m, "serving": old_m}, "gate": decision.to_dict(),
            "warm_start": {"from": warm.version, **rec.info.get("warm_start", {}),
                           "cf_new_items": rec.info.get("warm_cf_new_items")} if warm is not None else None,
            "config": asdict(replace(cfg, progress=False)),
            "seconds": {"train": round(train_s, 1), "total": round(time.perf_counter() - t0, 1)}}
    (work / registry.METADATA).write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    path = registry.commit_version(models_dir, version)
    if decision.publish:
        registry.publish(models_dir, version)
    log.info("version %s: new %s %.4f, serving %s %.4f -> %s (%s)", version, cfg.metric, decision.new,
             checkpoint_version(serving) or "untrained default", decision.serving,
             "published" if decision.publish else "not published", decision.reason)
    return {**meta, "path": str(path)}
