#!/usr/bin/env python
"""Peer baseline: RecBole 1.2.1's SASRec (or GRU4Rec) on exactly the project's leave-one-out split.

Not part of the product; RecBole is not a dependency. Install it beside the project's environment
(reusing its torch and numpy), then run from the repository root:

    .venv/bin/pip install --target .peer-site --no-deps recbole==1.2.1 pandas texttable colorama \
        tabulate scipy scikit-learn joblib threadpoolctl cloudpickle narwhals
    PYTHONPATH=.:.peer-site .venv/bin/python tools/peer_sasrec.py --dataset FOLDER [--model SASRec|GRU4Rec]
    ... tools/peer_sasrec.py --protocol cold-start --dataset FOLDER [--cut 0.8] [--max-targets N] [--time-cap S]

``--protocol cold-start`` runs the peer on exactly the split of ``stream-app evaluate --protocol
cold-start`` (same ``--cut`` / ``--max-targets``; ``--split-seed`` = evaluate's ``--seed``), trained and
early-stopped before the cut and scored by the project's ``replay_cold_start`` (all / new-item /
old-item / cold-user targets): ``tools/peer_cold_start.py`` says how, and how new items are handled.
The rest of this docstring describes the default, leave-one-out.

RecBole 1.2.1 predates numpy 2 and imports tensorboard at start-up; ``_compat`` below supplies the
three numpy aliases it reads and a stand-in for the tensorboard writer it never uses here, so the
installed copy is run unmodified.

What it does
------------
* Reads FOLDER with the project's loader (``load_dataset``: generic JSONL, MovieLens CSV, RecBole atomic) and splits it with the project's
  ``split_leave_one_out``: per user, the time-ordered (stable sort) consumption events; last = test,
  second-last = validation; users with < 3 such events have no targets.
* Every event's "timestamp" given to the model side is its position in the project's time-ordered log
  (``split.events``), so ties resolve exactly as in the project.
* Model: RecBole's own model class (``recbole.model.sequential_recommender.sasrec.SASRec`` /
  ``gru4rec.GRU4Rec``) built with RecBole's default hyper-parameters (read from RecBole's
  ``properties/model/<Model>.yaml``) and a minimal config/dataset stand-in. RecBole's data splitting
  and trainer are bypassed; the training loop reproduces RecBole's: prefix data augmentation of every
  user's training sequence (everything before the validation target; whole sequence for users without
  targets), sequences truncated to the last ``MAX_ITEM_LIST_LENGTH`` = 50 items, left-aligned with zero
  padding, CE loss over all items, Adam lr 1e-3, batch 256, shuffled, evaluation each epoch, early
  stopping on validation NDCG@10 with patience 10, best-epoch weights used for test, seed 2020.
* Evaluation follows the project's replay protocol: validation history = all the user's events before
  the validation target; test history = all events before the test target (validation target included);
  full ranking over every catalogue item; items the user interacted with before the target are masked;
  a target whose item the user has already interacted with is skipped (not ranked), as ``replay_evaluate``
  does; ties rank the lower catalogue index first.
* Checks: (1) the (history, target) pairs the loop uses decode back to the project's split; (2) RecBole's
  OWN data pipeline (``tools/peer_recbole_check.py``) (atomic file with time-rank timestamps, ``eval_args`` LS valid_and_test, order TO) is
  run and its validation/test targets and histories are compared user by user with the project's;
  (3) the trained model is wrapped as a project ``Recommender`` and scored by the project's own
  ``replay_evaluate`` (valid + test); its numbers must equal this script's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from models.offline.base import ItemCatalog, Recommender
from models.offline.loaders import load_dataset
from models.offline.protocol import TARGET_TYPES, replay_evaluate, split_leave_one_out

from peer_recbole_check import recbole_split_check



def _compat() -> None:
    """Let RecBole 1.2.1 import under numpy 2 and without tensorboard (it never writes to it here)."""
    import types

    for name, alias in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if name not in np.__dict__:
            setattr(np, name, alias)
    try:
        import torch.utils.tensorboard  # noqa: F401
    except Exception:
        stub = types.ModuleType("torch.utils.tensorboard")
        stub.SummaryWriter = object
        sys.modules["torch.utils.tensorboard"] = stub


_compat()
import recbole  # noqa: E402
from recbole.utils import init_seed  # noqa: E402

K = 10


def log(*a):
    print(*a, flush=True)


# ----------------------------------------------------------------------------- data


def build(ds, split, catalog, max_len):
    """Per-user sequences (RecBole item ids = catalogue index + 1; 0 = padding)."""
    events = split.events
    by_user: dict[str, list[int]] = {}
    for pos, ev in enumerate(events):
        by_user.setdefault(ev.user_id, []).append(pos)
    train_seqs = []          # list of int lists
    valid, test = [], []     # (user, history ids, target id, seen-before mask ids)
    n_after_valid_unused = 0
    for u, ps in by_user.items():
        ids = [catalog.index(events[p].item_id) + 1 for p in ps]
        if u in split.test_pos:
            kv = ps.index(split.valid_pos[u])
            kt = ps.index(split.test_pos[u])
            assert kv < kt
            train_seqs.append(ids[:kv])
            # events after the validation target other than the test target are not training targets
            # (RecBole's leave-one-out trains on the prefix before the validation target only)
            n_after_valid_unused += len(ids) - kv - 1 - 1
            valid.append((u, ids[:kv], ids[kv]))
            test.append((u, ids[:kt], ids[kt]))
        else:
            train_seqs.append(ids)
    return augment(train_seqs, max_len), valid, test, n_after_valid_unused


def augment(train_seqs, max_len):
    """Prefix augmentation, as RecBole's SequentialDataset.data_augmentation -> (X, L, Y) tensors."""
    X, L, Y = [], [], []
    for s in train_seqs:
        for i in range(1, len(s)):
            h = s[max(0, i - max_len):i]
            X.append(h + [0] * (max_len - len(h)))
            L.append(len(h))
            Y.append(s[i])
    return (torch.tensor(X, dtype=torch.long).reshape(-1, max_len), torch.tensor(L, dtype=torch.long),
            torch.tensor(Y, dtype=torch.long))


def eval_tensors(rows, max_len, n_items):
    """rows of (user, history, target[, more ids to mask]) -> tensors; drops targets already seen (project
    skips them); masked: the history's items and the row's extra ids (cold start: items not yet available)."""
    X, L, T, seen_rows, users = [], [], [], [], []
    skipped = []
    for row in rows:
        u, hist, tgt = row[:3]
        if tgt in set(hist):
            skipped.append(u)
            continue
        h = hist[-max_len:]
        if not h:  # cannot happen with >= 3 consumption events before; keep a guard
            h = []
        X.append(h + [0] * (max_len - len(h)))
        L.append(max(len(h), 1))
        T.append(tgt)
        seen_rows.append(sorted(set(hist).union(*row[3:])))
        users.append(u)
    return dict(X=torch.tensor(X, dtype=torch.long).reshape(-1, max_len), L=torch.tensor(L, dtype=torch.long),
                T=torch.tensor(T, dtype=torch.long), seen=seen_rows, users=users, skipped=skipped)


# ----------------------------------------------------------------------------- model


class _DS:
    def __init__(self, n):
        self.n = n

    def num(self, field):
        return self.n


def make_model(name, n_items_plus_pad, max_len, seed):
    if name == "SASRec":
        from recbole.model.sequential_recommender.sasrec import SASRec as cls
    elif name == "GRU4Rec":
        from recbole.model.sequential_recommender.gru4rec import GRU4Rec as cls
    else:
        raise SystemExit(f"unknown model {name}")
    ypath = Path(recbole.__file__).parent / "properties" / "model" / f"{name}.yaml"
    cfg = yaml.safe_load(ypath.read_text())
    for k, v in cfg.items():  # PyYAML reads '1e-12' as a string (RecBole's own loader reads it as a float)
        if isinstance(v, str):
            try:
                cfg[k] = float(v)
            except ValueError:
                pass
    cfg.update(USER_ID_FIELD="user_id", ITEM_ID_FIELD="item_id", LIST_SUFFIX="_list",
               ITEM_LIST_LENGTH_FIELD="item_length", NEG_PREFIX="neg_", MAX_ITEM_LIST_LENGTH=max_len,
               device=torch.device("cpu"), loss_type="CE")
    if name == "SASRec":
        cfg.update(hidden_dropout_prob=0.5, attn_dropout_prob=0.5)
    init_seed(seed, True)
    model = cls(cfg, _DS(n_items_plus_pad))
    return model, {k: v for k, v in cfg.items() if k != "device"}


@torch.no_grad()
def evaluate(model, E, n_items, batch=1024):
    """NDCG@10 / Recall@10 over the non-skipped targets, project ranking rule."""
    model.eval()
    ndcg, hit = [], []
    for b in range(0, len(E["T"]), batch):
        X, L, T = E["X"][b:b + batch], E["L"][b:b + batch], E["T"][b:b + batch]
        X = X[:, :int(L.max())]  # drop trailing all-padding columns (see the training loop)
        s = model.full_sort_predict({"item_id_list": X, "item_length": L}).double()[:, 1:]  # drop padding col
        for r, seen in enumerate(E["seen"][b:b + batch]):
            s[r, [i - 1 for i in seen]] = -math.inf
        t = (T - 1)
        ts = s.gather(1, t.view(-1, 1))
        ar = torch.arange(s.shape[1]).view(1, -1)
        rank = (s > ts).sum(1) + ((s == ts) & (ar < t.view(-1, 1))).sum(1)
        h = rank < K
        hit.append(h.double())
        ndcg.append(torch.where(h, 1.0 / torch.log2(rank.double() + 2), torch.zeros_like(rank, dtype=torch.double)))
    if not hit:
        return float("nan"), float("nan")
    return float(torch.cat(ndcg).mean()), float(torch.cat(hit).mean())


class Wrapped(Recommender):
    """The trained model as a project Recommender, for the project's own replay_evaluate."""

    def __init__(self, model, catalog, max_len):
        self.model, self.catalog, self.max_len = model, catalog, max_len
        self.hist: dict[str, list[int]] = {}
        self.name = "peer-" + type(model).__name__

    def fit(self, train, items):
        pass

    def learn_one(self, ev):
        self.hist.setdefault(ev.user_id, []).append(self.catalog.index(ev.item_id) + 1)

    @torch.no_grad()
    def score(self, user_id):
        h = self.hist.get(user_id, [])[-self.max_len:]
        if not h:
            return np.zeros(len(self.catalog))
        X = torch.tensor([h + [0] * (self.max_len - len(h))])
        self.model.eval()
        s = self.model.full_sort_predict({"item_id_list": X, "item_length": torch.tensor([len(h)])})
        return s[0, 1:].double().numpy()


# ----------------------------------------------------------------------------- main


def train_loop(model, train, V, n, a):
    """RecBole's training loop (module doc); leaves the best epoch's weights in ``model``."""
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    g = torch.Generator().manual_seed(a.seed)
    X, L, Y = train
    best, best_ep, best_state, bad, hist = -math.inf, -1, None, 0, []
    t_train = time.time()
    for ep in range(a.epochs):
        model.train()
        perm = torch.randperm(len(Y), generator=g)
        tot = 0.0
        for b in range(0, len(Y), a.batch):
            idx = perm[b:b + a.batch]
            # trailing all-padding columns are dropped: with left-aligned sequences, the key-padding +
            # causal mask (SASRec) / left-to-right GRU make the output at position len-1 independent of them
            ml = int(L[idx].max())
            loss = model.calculate_loss({"item_id_list": X[idx, :ml], "item_length": L[idx], "item_id": Y[idx]})
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(idx)
        vn, vr = evaluate(model, V, n)
        hist.append((ep + 1, tot / len(Y), vn, vr))
        improved = vn > best
        if improved:
            best, best_ep, bad = vn, ep + 1, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
        log(f"epoch {ep + 1:3d} loss {tot / len(Y):.4f} valid ndcg@10 {vn:.4f} recall@10 {vr:.4f}"
            f"{' *' if improved else ''}  ({time.time() - t_train:.0f}s)")
        if bad >= a.patience:
            log(f"early stop: no improvement for {a.patience} epochs")
            break
        if a.time_cap and time.time() - t_train > a.time_cap:
            log("time cap reached")
            break
    model.load_state_dict(best_state)
    return best_ep, hist, time.time() - t_train


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--model", default="SASRec", choices=["SASRec", "GRU4Rec"])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time-cap", type=float, default=None, help="stop training after this many seconds")
    ap.add_argument("--no-recbole-check", action="store_true", help="skip the RecBole data-pipeline split check")
    ap.add_argument("--no-replay-check", action="store_true", help="skip the project replay_evaluate cross-check")
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    ap.add_argument("--protocol", default="leave-one-out", choices=["leave-one-out", "cold-start"])
    ap.add_argument("--cut", type=float, default=0.8, help="cold-start: share of events before the cut")
    ap.add_argument("--max-targets", type=int, default=None, help="cold-start: a seeded sample of the targets")
    ap.add_argument("--split-seed", type=int, default=0, help="cold-start: the target sample's seed (evaluate's --seed)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.time()
    if a.protocol == "cold-start":
        import peer_cold_start

        res = peer_cold_start.run(a, sys.modules[__name__])
        if a.out:
            Path(a.out).write_text(json.dumps(res, indent=2))
        print(json.dumps(res, indent=2))
        return

    ds = load_dataset(a.dataset)
    split = split_leave_one_out(ds)
    catalog = ItemCatalog(ds.items)
    n = len(catalog)
    log(f"dataset {a.dataset}: {len(ds.interactions)} events, {len(ds.users)} users, {n} items; {split}")

    train, valid, test, n_unused = build(ds, split, catalog, a.max_len)
    # check 1: what the loop uses decodes to the project's split
    ids = catalog.ids
    vm = sum(1 for u, _, t in valid if ids[t - 1] == split.valid[u].item_id)
    tm = sum(1 for u, _, t in test if ids[t - 1] == split.test[u].item_id)
    pre: dict[str, list[int]] = {}   # independent rebuild: every event of u before its test position
    for pos, ev in enumerate(split.events):
        if ev.user_id in split.test_pos and pos < split.test_pos[ev.user_id]:
            pre.setdefault(ev.user_id, []).append(catalog.index(ev.item_id) + 1)
    hm = sum(1 for u, h, t in test if pre.get(u) == h)
    log(f"check loop-vs-project: valid targets {vm}/{len(split.valid)}, test targets {tm}/{len(split.test)}, "
        f"test histories {hm}/{len(test)}; unused events after a validation target (not test): {n_unused}")
    assert vm == len(split.valid) and tm == len(split.test)

    rb = None
    if not a.no_recbole_check:
        rb = recbole_split_check(split, catalog, valid, test, a.max_len, a.model)
        for role, r in rb.items():
            log(f"check RecBole-pipeline-vs-project [{role}]: {r}")

    V = eval_tensors(valid, a.max_len, n)
    T = eval_tensors(test, a.max_len, n)
    log(f"targets ranked: valid {len(V['T'])} (skipped, already seen: {len(V['skipped'])}), "
        f"test {len(T['T'])} (skipped, already seen: {len(T['skipped'])}); train samples {len(train[2])}")

    model, cfg = make_model(a.model, n + 1, a.max_len, a.seed)
    log(f"model {type(model).__module__}.{type(model).__name__}: "
        f"{ {k: cfg[k] for k in cfg if k not in ('USER_ID_FIELD', 'ITEM_ID_FIELD', 'LIST_SUFFIX', 'ITEM_LIST_LENGTH_FIELD', 'NEG_PREFIX')} }")
    best_ep, hist, train_s = train_loop(model, train, V, n, a)
    vn, vr = evaluate(model, V, n)
    tn, tr = evaluate(model, T, n)
    res = {
        "dataset": a.dataset, "model": a.model, "recbole": recbole.__version__, "test_ndcg@10": tn,
        "test_recall@10": tr, "valid_ndcg@10": vn, "valid_recall@10": vr, "best_epoch": best_ep,
        "epochs_run": len(hist), "n_test": len(T["T"]), "n_valid": len(V["T"]),
        "test_skipped_seen": len(T["skipped"]), "valid_skipped_seen": len(V["skipped"]),
        "train_samples": len(train[2]), "train_seconds": train_s,
    }
    if rb:
        res["recbole_split_check"] = rb
    if not a.no_replay_check:
        m = replay_evaluate(Wrapped(model, catalog, a.max_len), split, catalog, k=K, progress=False,
                            measure=("valid", "test"))
        res["project_replay"] = {k: m[k] for k in ("ndcg@10", "recall@10", "valid_ndcg@10", "valid_recall@10",
                                                   "n_test", "n_valid", "n_test_skipped_seen",
                                                   "n_valid_skipped_seen")}
        same = all(abs(m[x] - y) < 1e-9 for x, y in (("ndcg@10", tn), ("recall@10", tr), ("valid_ndcg@10", vn)))
        log(f"check project replay_evaluate: {res['project_replay']}  -> {'IDENTICAL' if same else 'DIFFERENT'}")
        res["project_replay_identical"] = same
    res["wall_seconds"] = time.time() - t0
    log(f"RESULT {a.model} test NDCG@10 {tn:.4f} Recall@10 {tr:.4f} | valid NDCG@10 {vn:.4f} | "
        f"best epoch {best_ep} of {len(hist)} | wall {res['wall_seconds']:.0f}s")
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
