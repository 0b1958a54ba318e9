"""``stream-app evaluate --protocol cold-start``: every model on the cold-start protocol
(:mod:`models.offline.cold_start`), metrics for all targets, new items, old items and cold users.

Models: ``pop``, ``itemknn`` (tuned on the validation targets before the cut), ``content`` (items
nearest by text vector to the user's last items; history length tuned on validation), the
``only:<dim>`` attention dimensions, ``only:cooc``, ``only:sequence``, ``attention``, ``fused`` and
``fused-fixed`` (the same blend without its count gate, ``models.offline.count_gate``): one
training, as in leave-one-out (``fused-no-text`` is not run under this protocol). The fused
models are trained on a catalogue without the new items (an item never consumed at all stays in it,
a negative with a learned id embedding, as an unread item published before training would be);
each new item is then added the way the worker adds a catalogue event (``InterestModel.add_item``: text and
category vectors, no collaborative factors, no learned id embedding), so a new item is scored
from its text. How each model treats a new item: :data:`NEW_ITEM_HANDLING`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np
import orjson

from models.offline.base import ItemCatalog, Recommender, seeded_catalog
from models.offline.baselines import ContentKNN, ItemKNN, Pop
from models.offline.cold_start import GROUPS, ColdStartSplit, cold_start_protocol, replay_cold_start, \
    split_cold_start
from models.offline.data import Interaction
from models.offline.parallel import Jobs
from models.offline.protocol import tune
from models.offline.report import write_report
from models.offline.time_caps import stopped_by_time, time_stops
from models.offline.train_sequence import SequenceConfig, sequence_configs
from models.offline.tune_cooc import MAX_PASSES
from models.dimensions import default_dimensions

CONTENT_GRID = {"recent": [1, 5, 20]}
ITEMKNN_GRID = {"k": [10, 50, 200, 800], "shrink": [0.0, 50.0]}
MODELS = ("pop", "itemknn", "content", *(f"only:{d.name}" for d in default_dimensions()), "only:cooc",
          "only:sequence", "attention", "fused-fixed", "fused")
COLUMNS = tuple(f"{m}@10{s}" for s in ("", "_new", "_old", "_cold_user") for m in ("ndcg", "recall")) + (
    "rank_pct_new", "valid_ndcg@10", "n_test", "n_test_new", "n_test_cold_user")

#: How each model scores an item with no event before the cut (written into the report).
NEW_ITEM_HANDLING = {
    "pop": "ID-only: count 0 at the cut, so ranked after every counted item (ties in catalogue order); "
           "the count grows with post-cut events, as the streaming counter does",
    "itemknn": "ID-only: no neighbours (similarities fixed at the cut), score 0, ranked after every "
               "item with a similarity or training popularity",
    "content": "text only: scored like any item, from its text vector",
    "only:cooc": "ID-only: no counts at the cut (score 0); counts grow online after the cut",
    "only:sequence": "ID-only: not in the trained vocabulary; gets the user's mean sequence score "
                     "(neutral, not last)",
    "attention": "text and category vectors, no collaborative factors, the median learned item bias",
    "fused-fixed": "the fused model's blend without its count gate (one weight vector for every item)",
    "fused": "attention as above; co-engagement and popularity from the online counts; sequence neutral; "
             "freshness from its publishing time where the domain's items go stale; blend weights by the item's engagement count (models.offline.count_gate), so at count 0 "
             "the components that know the item weigh",
}
for _d in default_dimensions():
    NEW_ITEM_HANDLING.setdefault(f"only:{_d.name}", "the attention dimension alone: text/category vectors "
                                 "(a collaborative-factor dimension sees zeros for a new item)")


class GrownCatalogue(Recommender):
    """A fused model whose catalogue grew after training: its scores (in its own row order) put
    back into the evaluation catalogue's order."""

    def __init__(self, inner, catalog: ItemCatalog):
        self.inner, self.name = inner, inner.name
        rows = inner.model.items.index
        self._perm = np.array([rows[i] for i in catalog.ids], dtype=np.int64)

    def fit(self, train: Sequence[Interaction], items: ItemCatalog) -> None:
        raise RuntimeError("fitted on the training catalogue already")

    def learn_one(self, ev: Interaction) -> None:
        self.inner.learn_one(ev)

    def score(self, user_id: str) -> np.ndarray:
        return np.asarray(self.inner.score(user_id))[self._perm]


def run_cold_start(dataset: str | Path, out: str | Path, seed: int = 0, only: Sequence[str] | None = None,
                   progress: bool = True, cooc_budget_s: float | None = None, domain: str = "default",
                   sequence: Sequence[SequenceConfig] = sequence_configs(), fraction: float = 0.8,
                   max_targets: int | None = None, jobs: int | None = None, max_passes: int = MAX_PASSES) -> dict:
    """Fit every model (or those in ``only``) before the cut, replay the log, write the report.
    Trainings and replays run as parallel jobs (``jobs``: processes, None: every core), with the
    results of a serial run."""
    t0 = time.perf_counter()
    ds, catalog = seeded_catalog(dataset, seed)
    cs = split_cold_start(ds, fraction, max_targets, seed)
    print(f"{ds.name}: {len(ds.interactions)} events, {len(catalog)} items, {cs}", flush=True)
    names = [n for n in MODELS if not only or n in only]
    vecs = None
    if any(n not in ("pop", "itemknn") for n in names):
        from models.offline.fused import item_text_vectors

        vecs = item_text_vectors(catalog)
    fused = [n for n in names if n not in ("pop", "itemknn", "content")]
    pending: dict = {}
    with Jobs(jobs) as pool:
        staged = _stage(ds, cs, catalog, vecs, seed, progress, cooc_budget_s, domain, sequence, pool,
                        max_passes) if fused else None
        for n in ("pop", "itemknn", "content"):
            if n in names:
                pending[n] = pool.submit(baseline_job, n, cs, catalog, vecs, progress)
        if fused:
            _fused(fused, cs, catalog, vecs, progress, staged, pool, pending)
        results = {n: _collect(n, pending[n].result()) for n in names}
    metrics = {"dataset": ds.name, "protocol": cold_start_protocol(fraction), "models": results}
    write_report(metrics, out, columns=COLUMNS)
    summary = {"seconds": round(time.perf_counter() - t0, 1), "seed": seed, "domain": domain, "cut_ts": cs.cut_ts,
               "fraction": fraction, "n_targets": len(cs.targets), "n_new_items": len(cs.new_items),
               "groups": list(GROUPS), "stopped_by_time": stopped_by_time(results)}
    (Path(out) / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    print("new items: " + "; ".join(f"{n}: {results[n]['new_items']}" for n in results), flush=True)
    if summary["stopped_by_time"]:
        print(f"stopped by time (these figures depend on the machine): {', '.join(summary['stopped_by_time'])}",
              flush=True)
    print(f"summary: {summary}", flush=True)
    return metrics


def replay_job(model: Recommender, cs: ColdStartSplit, catalog: ItemCatalog, progress: bool, extra: dict,
               fit_s: float) -> tuple[dict, dict]:
    """Replay one fitted model on the cold-start protocol (a job)."""
    m = replay_cold_start(model, cs, catalog, k=10, progress=progress)
    return m, {**extra, "fit_seconds": round(fit_s, 1)}


def _collect(name: str, done: tuple[dict, dict]) -> dict:
    m, extra = done
    print(f"  {name:<20} " + " ".join(f"{c} {m[c]:.4f}" for c in COLUMNS[:8])
          + f" (n {m['n_test']}, new {m['n_test_new']}, cold users {m['n_test_cold_user']}) "
          f"valid {m['valid_ndcg@10']:.4f} fit {extra['fit_seconds']:.0f}s replay {m['eval_seconds']:.0f}s", flush=True)
    return {**m, **extra, "new_items": NEW_ITEM_HANDLING[name]}


def baseline_job(name: str, cs: ColdStartSplit, catalog, vecs, progress: bool) -> tuple[dict, dict]:
    """Fit (tuned on the validation targets before the cut) and replay one baseline (a job)."""
    t = time.perf_counter()
    if name == "pop":
        model, extra = Pop(), {}
    else:
        make = (lambda **p: ItemKNN(**p)) if name == "itemknn" else (lambda **p: ContentKNN(vecs, **p))
        tuned = tune(make, ITEMKNN_GRID if name == "itemknn" else CONTENT_GRID, cs.split, catalog)
        model, extra = make(**tuned.best_params), {"params": tuned.best_params}
    model.fit(cs.split.train, catalog)
    return replay_job(model, cs, catalog, progress, extra, time.perf_counter() - t)


def _stage(ds, cs: ColdStartSplit, catalog: ItemCatalog, vecs, seed, progress, budget_s, domain, sequence,
           pool: Jobs, max_passes: int):
    """Submit the fused model's independent steps (``models.offline.staged``), trained on the
    training catalogue (every item but the new ones)."""
    from models.offline.fused import FusedRecommender, dataset_text_features
    from models.offline.staged import stage

    old = [j for j, i in enumerate(catalog.ids) if i not in cs.new_items]
    train_catalog = ItemCatalog({catalog.ids[j]: catalog.item(j) for j in old})
    rec = FusedRecommender("fused", item_vectors=vecs[old], text_features=dataset_text_features(ds), seed=seed,
                           progress=progress, domain=domain, sequence=sequence)
    return stage(pool, [rec], cs.split, train_catalog, budget_s, max_passes), time.perf_counter()


def _fused(names, cs: ColdStartSplit, catalog: ItemCatalog, vecs, progress, staged, pool: Jobs, pending) -> None:
    """The blend chosen here, then each new item added as a catalogue event; the variants share
    the grown catalogue and replay as jobs."""
    staged, t = staged
    rec = staged.selected(0, pool)
    for j, item_id in enumerate(catalog.ids):
        if item_id in cs.new_items:
            it = catalog.item(j)
            rec.model.add_item(item_id, vecs[j], it.categories, it.attributes, it.published_ts)
    fit_s = time.perf_counter() - t
    print(f"  fused: trained and selected in {fit_s:.0f}s on {len(staged.catalog)} items, "
          f"{len(catalog) - len(staged.catalog)} added after; cooc {rec.cooc_params}, blend {rec.blend}", flush=True)
    stops = time_stops(rec.info.get("selection", {}))
    for name in names:
        extra = {"shared_fit": "fused"} if name != "fused" else {
            "blend_weights": rec.blend, "blend_gate": rec.info.get("selection", {}).get("gate")}
        if name in ("fused", "fused-fixed", "only:cooc", "only:sequence"):
            extra["stopped_by_time"] = stops
        v = rec.variant(name, name)  # mode = name
        if name not in ("fused", "fused-fixed", "only:cooc"):
            v._cooc = None  # not used by this variant: not sent to the job
        pending[name] = pool.submit(replay_job, GrownCatalogue(v, catalog), cs, catalog, progress, extra, fit_s)
