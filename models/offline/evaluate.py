"""``stream-app evaluate``: baselines, single-dimension ablations and the fusion, one protocol.

Models: ``pop``, ``itemknn`` (k and shrinkage tuned on the validation split), ``only:<dim>`` for
every interest dimension of the domain alone, ``fused-no-text`` (the same fusion with the
transformer's vectors replaced by collaborative factors) and ``fused``. Every model is fitted on the training part and
replayed over the whole log in time order (``models.protocol``); the fused variants use the same
incremental state update as the stream worker, with the event weights and dimensions of
``domain`` (``models.domains``; ``stream-app evaluate --domain``).
"""
from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import orjson
import torch

from models.offline.base import ItemCatalog, Recommender
from models.offline.baselines import ItemKNN, Pop
from models.offline.loaders import load_dataset
from models.domains import get_domain
from models.offline.fused import FusedRecommender, dataset_text_features, item_text_vectors
from models.offline.protocol import PROTOCOL, replay_evaluate, split_leave_one_out, tune
from models.offline.report import write_report
from models.offline.train import TrainConfig

log = logging.getLogger(__name__)

ITEMKNN_GRID = {"k": [10, 50, 200, 800], "shrink": [0.0, 50.0]}


def model_factories(catalog: ItemCatalog, item_vecs: np.ndarray, text_feats: dict, seed: int,
                    progress: bool, domain: str = "default",
                    config: TrainConfig | None = None) -> dict[str, Callable[[], Recommender]]:
    cfg = get_domain(domain)

    def fused(name: str, **kw) -> Callable[[], Recommender]:
        return lambda: FusedRecommender(name, item_vectors=item_vecs, text_features=text_feats, seed=seed,
                                        progress=progress, domain=cfg, config=config or TrainConfig(), **kw)

    out: dict[str, Callable[[], Recommender]] = {"pop": Pop}
    out["itemknn"] = ItemKNN  # replaced by the tuned one in run_evaluation
    for d in cfg.dims():
        out[f"only:{d.name}"] = fused(f"only:{d.name}", dims=[d.name])
    out["fused-no-text"] = fused("fused-no-text", text=False)
    out["fused"] = fused("fused")
    return out


def run_evaluation(dataset: str | Path, out: str | Path, seed: int = 0, only: Sequence[str] | None = None,
                   progress: bool = True, domain: str = "default", config: TrainConfig | None = None) -> dict:
    """Fit and replay the models (all, or the names in ``only``) on ``dataset``; write the report
    to ``out`` and return the metrics. ``domain``: the fused models' preset (``models.domains``);
    ``config``: their training settings (default ``TrainConfig()``)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    ds = load_dataset(dataset)
    catalog = ItemCatalog.from_dataset(ds)
    split = split_leave_one_out(ds)
    print(f"{ds.name}: {len(ds.interactions)} events, {len(catalog)} items, {split}", flush=True)
    item_vecs = item_text_vectors(catalog)
    text_feats = dataset_text_features(ds)
    factories = model_factories(catalog, item_vecs, text_feats, seed, progress, domain, config)
    names = [n for n in factories if not only or n in only]
    results: dict[str, dict] = {}
    for name in names:
        t = time.perf_counter()
        if name == "itemknn":
            tuned = tune(lambda **p: ItemKNN(**p), ITEMKNN_GRID, split, catalog, progress=False)
            model = ItemKNN(**tuned.best_params)
            extra = {"params": tuned.best_params}
        else:
            model, extra = factories[name](), {}
        model.fit(split.train, catalog)
        fit_s = time.perf_counter() - t
        m = replay_evaluate(model, split, catalog, k=10, progress=progress, seed=seed)
        if isinstance(model, FusedRecommender):
            extra = {"best_holdout_ndcg@10": model.info["best_holdout_ndcg@10"],
                     "epochs": len(model.info["history"]), "mean_dimension_weights": _mean_weights(model, split)}
        results[name] = {**m, **extra, "fit_seconds": round(fit_s, 1)}
        print(f"  {name:<20} ndcg@10 {m['ndcg@10']:.4f} recall@10 {m['recall@10']:.4f} "
              f"prequential_hit@10 {m['prequential_hit@10']:.4f} ({time.perf_counter() - t:.0f}s)", flush=True)
    singles = {n: r["ndcg@10"] for n, r in results.items() if n.startswith("only:")}
    summary = {"seconds": round(time.perf_counter() - t0, 1), "seed": seed, "domain": get_domain(domain).name}
    if singles and "fused" in results:
        best = max(singles, key=singles.get)
        summary.update(best_single=best, fused_over_best_single=round(results["fused"]["ndcg@10"] / singles[best], 4))
    if "fused" in results and "fused-no-text" in results:
        summary["fused_over_fused_no_text"] = round(results["fused"]["ndcg@10"] / results["fused-no-text"]["ndcg@10"], 4)
    metrics = {"dataset": ds.name, "protocol": PROTOCOL, "models": results}
    write_report(metrics, out)
    (Path(out) / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    print(f"summary: {summary}", flush=True)
    return metrics


def _mean_weights(model: FusedRecommender, split) -> dict[str, float]:
    """Average attention weight per dimension over the test users' final states."""
    ws = []
    for user in split.test:
        st = model.state(user)
        if st is not None:
            _, alpha, _ = model.scorer.user(st.mean, st.norm)
            ws.append(alpha)
    if not ws:
        return {}
    mean = np.mean(ws, axis=0)
    return {n: round(float(a), 4) for n, a in zip(model.model.dim_names, mean)}
