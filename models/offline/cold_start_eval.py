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
from models.offline.protocol import tune
from models.offline.report import write_report
from models.offline.train_sequence import sequence_configs
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
             "blend weights by the item's engagement count (models.offline.count_gate), so at count 0 "
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
                   progress: bool = True, cooc_budget_s: float = 240.0, domain: str = "default",
                   sequence_budget_s: float | None = None, sequence_kind: str = "auto", fraction: float = 0.8,
                   max_targets: int | None = None) -> dict:
    """Fit every model (or those in ``only``) before the cut, replay the log, write the report."""
    t0 = time.perf_counter()
    ds, catalog = seeded_catalog(dataset, seed)
    cs = split_cold_start(ds, fraction, max_targets, seed)
    print(f"{ds.name}: {len(ds.interactions)} events, {len(catalog)} items, {cs}", flush=True)
    names = [n for n in MODELS if not only or n in only]
    results: dict[str, dict] = {}

    def measure(name: str, model: Recommender, fit_s: float, extra: dict) -> None:
        m = replay_cold_start(model, cs, catalog, k=10, progress=progress)
        results[name] = {**m, **extra, "fit_seconds": round(fit_s, 1), "new_items": NEW_ITEM_HANDLING[name]}
        print(f"  {name:<20} " + " ".join(f"{c} {m[c]:.4f}" for c in COLUMNS[:8])
              + f" (n {m['n_test']}, new {m['n_test_new']}, cold users {m['n_test_cold_user']}) "
              f"valid {m['valid_ndcg@10']:.4f} fit {fit_s:.0f}s replay {m['eval_seconds']:.0f}s", flush=True)

    vecs = None
    if any(n not in ("pop", "itemknn") for n in names):
        from models.offline.fused import item_text_vectors

        vecs = item_text_vectors(catalog)
    _baselines(names, cs, catalog, vecs, measure)
    fused = [n for n in names if n not in ("pop", "itemknn", "content")]
    if fused:
        _fused(fused, ds, cs, catalog, vecs, seed, progress, cooc_budget_s, domain,
               sequence_configs(sequence_kind, sequence_budget_s), measure)
    metrics = {"dataset": ds.name, "protocol": cold_start_protocol(fraction), "models": results}
    write_report(metrics, out, columns=COLUMNS)
    summary = {"seconds": round(time.perf_counter() - t0, 1), "seed": seed, "domain": domain, "cut_ts": cs.cut_ts,
               "fraction": fraction, "n_targets": len(cs.targets), "n_new_items": len(cs.new_items),
               "groups": list(GROUPS)}
    (Path(out) / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    print("new items: " + "; ".join(f"{n}: {results[n]['new_items']}" for n in results), flush=True)
    print(f"summary: {summary}", flush=True)
    return metrics


def _baselines(names, cs: ColdStartSplit, catalog, vecs, measure) -> None:
    if "pop" in names:
        t = time.perf_counter()
        pop = Pop()
        pop.fit(cs.split.train, catalog)
        measure("pop", pop, time.perf_counter() - t, {})
    if "itemknn" in names:
        t = time.perf_counter()
        tuned = tune(lambda **p: ItemKNN(**p), ITEMKNN_GRID, cs.split, catalog)
        knn = ItemKNN(**tuned.best_params)
        knn.fit(cs.split.train, catalog)
        measure("itemknn", knn, time.perf_counter() - t, {"params": tuned.best_params})
    if "content" in names:
        t = time.perf_counter()
        tuned = tune(lambda **p: ContentKNN(vecs, **p), CONTENT_GRID, cs.split, catalog)
        cb = ContentKNN(vecs, **tuned.best_params)
        cb.fit(cs.split.train, catalog)
        measure("content", cb, time.perf_counter() - t, {"params": tuned.best_params})


def _fused(names, ds, cs: ColdStartSplit, catalog: ItemCatalog, vecs, seed, progress, budget_s, domain,
           sequence, measure) -> None:
    """One attention training on the training catalogue (every item but the new ones), then each
    new item added as a catalogue event; the variants share the grown catalogue."""
    from models.offline.fused import FusedRecommender, dataset_text_features

    t = time.perf_counter()
    old = [j for j, i in enumerate(catalog.ids) if i not in cs.new_items]
    train_catalog = ItemCatalog({catalog.ids[j]: catalog.item(j) for j in old})
    rec = FusedRecommender("fused", item_vectors=vecs[old], text_features=dataset_text_features(ds), seed=seed,
                           progress=progress, domain=domain, sequence=sequence)
    rec.fit(cs.split.train, train_catalog)
    rec.select(cs.split, budget_s)
    for j, item_id in enumerate(catalog.ids):
        if item_id in cs.new_items:
            it = catalog.item(j)
            rec.model.add_item(item_id, vecs[j], it.categories, it.attributes)
    fit_s = time.perf_counter() - t
    print(f"  fused: trained and selected in {fit_s:.0f}s on {len(train_catalog)} items, "
          f"{len(catalog) - len(train_catalog)} added after; cooc {rec.cooc_params}, blend {rec.blend}", flush=True)
    for name in names:
        extra = {"shared_fit": "fused"} if name != "fused" else {
            "blend_weights": rec.blend, "blend_gate": rec.info.get("selection", {}).get("gate")}
        measure(name, GrownCatalogue(rec.variant(name, name), catalog), fit_s, extra)  # mode = name
