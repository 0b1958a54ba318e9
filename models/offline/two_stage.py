"""Two-stage ranking against exact ranking (``models.candidates``): how many of the exact top-10
the two-stage lists keep (recall@10 against exact), NDCG@10 of both on a held-out item, and
milliseconds per list (wall, and this process's CPU time, the steadier figure on a shared
machine; the 1-minute load average beside them).

    python -m models.offline.two_stage --dataset ../shared/data/ml-100k
    python -m models.offline.two_stage --synthetic 100000
    python -m models.offline.two_stage --synthetic 300000 --nprobe 0 16 68   # one row per probe count (0: the default)

``--dataset``: the untrained default model (the attention fusion is the identity on the item
text vectors of the encoder) with co-engagement counts fitted on the training events and a fixed
blend (``BLEND``, not tuned), leave-one-out split (``models.offline.protocol``): every training
event folded in, each test user's list ranked, its test item the target. ``--synthetic N``: N
items with random unit vectors around 64 topics (64-d), users with random histories of 20
items mostly from two topics, co-engagement from those histories; no target (NDCG not given).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from models.attention import AttentionFusion
from models.cooc import CoocModel, CoocParams
from models.engine import Event, InterestModel
from models.features import CATEGORY_BUCKETS
from models.items import ItemVectors

BLEND = {"attention": 0.3, "co-engagement": 0.5, "popularity": 0.2}


def blank_model(text_dim: int, cf_dim: int = 4) -> InterestModel:
    """The untrained fusion with empty co-engagement counts and ``BLEND``."""
    base = InterestModel.untrained(text_dim=text_dim, cf_dim=cf_dim)
    space = {"text": text_dim, "cf": cf_dim, "category": CATEGORY_BUCKETS, "hybrid": text_dim + cf_dim}
    return InterestModel(AttentionFusion.default(base.dims, space), ItemVectors(text_dim, cf_dim, CATEGORY_BUCKETS),
                         CoocModel(CoocParams()), dict(BLEND))


def synthetic(n_items: int, n_users: int = 2000, dim: int = 64, history: int = 20, topics: int = 64,
              seed: int = 0) -> tuple[InterestModel, dict]:
    """A model over ``n_items`` random unit vectors and the states of ``n_users`` users (module doc)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(topics, dim))
    topic = rng.integers(0, topics, n_items)
    X = centres[topic] / np.sqrt(dim) + rng.normal(size=(n_items, dim)) / np.sqrt(dim)
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    model = blank_model(dim)
    for i in range(n_items):
        model.add_item(f"i{i}", X[i])
    by_topic = [np.flatnonzero(topic == t) for t in range(topics)]
    events, ts = [], 10**12
    for u in range(n_users):
        likes = rng.choice(topics, 2, replace=False)
        for j in range(history):
            pool = by_topic[rng.choice(likes)] if rng.random() < 0.8 else None
            item = int(rng.choice(pool)) if pool is not None and pool.size else int(rng.integers(n_items))
            ts += 1000
            events.append(Event(f"u{u}", f"i{item}", "rating", float(rng.integers(3, 6)), ts, f"e{u}-{j}"))
    states: dict = {}
    model.fold(events, states)
    return model, states


def dataset_model(path: str) -> tuple[InterestModel, dict, dict]:
    """-> (model, states after the training events, user -> test item) of a data set (module doc)."""
    from models.offline.base import ItemCatalog
    from models.offline.fused import item_text_vectors
    from models.offline.loaders import load_dataset
    from models.offline.protocol import split_leave_one_out

    ds = load_dataset(path)
    catalog = ItemCatalog.from_dataset(ds)
    split = split_leave_one_out(ds)
    vecs = item_text_vectors(catalog)
    model = blank_model(vecs.shape[1])
    for i, item_id in enumerate(catalog.ids):
        it = catalog.item(i)
        model.add_item(item_id, vecs[i], it.categories, it.attributes)
    states: dict = {}
    events = sorted(split.train, key=lambda e: e.ts)
    model.fold([e.event(f"t{n}") for n, e in enumerate(events)], states)
    targets = {u: ev.item_id for u, ev in split.test.items() if u in states}
    return model, states, targets


def lists(model: InterestModel, states: list, mode: str, batch: int, k: int = 10) -> tuple[list, float, float]:
    """-> (each user's top-k ids, ms per list wall, ms per list of this process's CPU time) with
    ``model.ranking.mode = mode`` (CPU time is the steadier figure on a shared machine)."""
    model.ranking.mode = mode
    model.recommend_many(states[:batch], k)  # warm: the index, caches
    t, c = time.perf_counter(), time.process_time()
    out = [[r.item_id for r in rec.items] for i in range(0, len(states), batch)
           for rec in model.recommend_many(states[i:i + batch], k)]
    n = max(1, len(states))
    return out, 1000 * (time.perf_counter() - t) / n, 1000 * (time.process_time() - c) / n


def ndcg(tops: list, targets: list) -> float:
    return float(np.mean([1 / np.log2(top.index(t) + 2) if t in top else 0.0 for top, t in zip(tops, targets)]))


def compare(model: InterestModel, states: dict, users: list, targets: dict | None = None,
            batch: int = 32, k: int = 10) -> dict:
    """recall@k of two-stage against exact, NDCG@k of both (with ``targets``), ms per list."""
    sts = [states[u] for u in users]
    exact, ms_exact, cpu_exact = lists(model, sts, "exact", batch, k)
    two, ms_two, cpu_two = lists(model, sts, "two-stage", batch, k)
    recall = np.mean([len(set(a) & set(b)) / max(1, len(a)) for a, b in zip(two, exact)])
    out = {"items": model.items.live, "users": len(users), "recall@10 vs exact": round(float(recall), 4),
           "ms/list exact": round(ms_exact, 2), "ms/list two-stage": round(ms_two, 2),
           "cpu ms/list exact": round(cpu_exact, 2), "cpu ms/list two-stage": round(cpu_two, 2),
           "index cells": model.ranking.index.cells,
           "nprobe": model.ranking.index.nprobe or model.ranking.index.default_nprobe(),
           "load": round(os.getloadavg()[0], 2)}
    if targets is not None:
        t = [targets[u] for u in users]
        out["ndcg@10 exact"], out["ndcg@10 two-stage"] = round(ndcg(exact, t), 4), round(ndcg(two, t), 4)
    model.ranking.mode = "auto"
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", help="data set folder (as stream-app train reads)")
    ap.add_argument("--synthetic", type=int, help="items of a synthetic catalogue")
    ap.add_argument("--users", type=int, default=500, help="users ranked (a sample)")
    ap.add_argument("--batch", type=int, default=32, help="users per recommend_many call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nprobe", type=int, nargs="*", default=[],
                    help="cells a query scans (default: the index's own choice); several: one row each")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    if args.dataset:
        model, states, targets = dataset_model(args.dataset)
        users = sorted(targets)
    else:
        model, states = synthetic(args.synthetic or 100_000, seed=args.seed)
        users, targets = sorted(states), None
    users = [users[i] for i in sorted(rng.choice(len(users), min(args.users, len(users)), replace=False))]
    for nprobe in args.nprobe or [None]:
        model.ranking.index.nprobe = nprobe
        print(compare(model, states, users, targets, args.batch), flush=True)


if __name__ == "__main__":
    main()
