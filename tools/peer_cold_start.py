"""``--protocol cold-start`` of ``tools/peer_sasrec.py``: the peer on exactly the split of
``stream-app evaluate --protocol cold-start`` (run through ``peer_sasrec.py``, not on its own).

* Split: the project's own ``split_cold_start(dataset, cut, max_targets, split_seed)`` on the data set
  loaded and catalogued as ``stream-app evaluate`` does (``load_dataset``, ``ItemCatalog.from_dataset``;
  ``--split-seed`` 0 = evaluate's default ``--seed``, which draws the ``--max-targets`` sample).
* Training data: the project's ``cs.split.train`` (every event before the cut but each user's
  validation target), per user in time order, prefix-augmented as in leave-one-out; every event type
  the log holds is a sequence step (as in leave-one-out). Checked: the sequences decode back to
  ``cs.split.train``, event for event.
* Early stopping: only data before the cut. Validation = the project's cold-start validation
  (``cs.split.valid``: each user's last consumption event before the cut), ranked as the project's
  replay ranks it: history = every earlier event of the user, items the user has seen and items not
  yet available at the target's time (``cs.available_from``) masked, a target already seen skipped.
* Scoring: the trained model is wrapped as a project ``Recommender`` (``peer_sasrec.Wrapped``: its
  history grows with every replayed event, trained parameters fixed) and scored by the project's own
  ``replay_cold_start``: NDCG@10 / Recall@10 for all / new-item / old-item / cold-user targets, the
  mean rank share, the validation (which must equal the training loop's own: check printed).
* New items (no event before the cut): the vocabulary is the whole catalogue, as RecBole's id
  remapping of a log holding the later events would make it. A new item's embedding row (SASRec and
  GRU4Rec share it between input and output) never enters a training sequence and is never a
  training target; with the CE loss over all items it only ever receives gradients as a negative,
  so it is pushed down, not learned: the model cannot rank a new item from what it knows of it
  (``rank_pct_new`` shows where they land; 0.5 = chance). After the cut the row is used as the
  input embedding when the item enters a user's history. A user with no earlier event gets all-zero
  scores (catalogue order).
"""

from __future__ import annotations

import math
import time

import numpy as np

from models.offline.base import ItemCatalog
from models.offline.cold_start import GROUPS, replay_cold_start, split_cold_start
from models.offline.loaders import load_dataset


def cold_start_data(cs, catalog):
    """(training sequences of catalogue ids + 1, validation rows (user, history, target, masked ids))."""
    events = cs.events
    n_before = sum(ev.ts < cs.cut_ts for ev in events)
    held = set(cs.split.valid_pos.values())
    train_pos = [p for p in range(n_before) if p not in held]
    if [events[p] for p in train_pos] != list(cs.split.train):
        raise AssertionError("training positions do not decode to the project's cold-start training events")
    seqs: dict[str, list[int]] = {}
    for p in train_pos:
        seqs.setdefault(events[p].user_id, []).append(catalog.index(events[p].item_id) + 1)
    big = int(np.iinfo(np.int64).max)
    avail = np.array([cs.available_from.get(i, big) for i in catalog.ids], dtype=np.int64)
    last = max(cs.split.valid_pos.values(), default=-1)
    hist: dict[str, list[int]] = {}
    valid = []
    for p in range(last + 1):
        ev = events[p]
        if cs.split.valid_pos.get(ev.user_id) == p:
            h = list(hist.get(ev.user_id, []))
            valid.append((ev.user_id, h, catalog.index(ev.item_id) + 1, (np.flatnonzero(avail > ev.ts) + 1).tolist()))
        hist.setdefault(ev.user_id, []).append(catalog.index(ev.item_id) + 1)
    return list(seqs.values()), valid


def run(a, peer):
    """Train the peer (module ``peer``: tools/peer_sasrec.py) before the cut, score it on the cut."""
    import torch

    t0 = time.time()
    ds = load_dataset(a.dataset)
    catalog = ItemCatalog.from_dataset(ds)
    cs = split_cold_start(ds, a.cut, a.max_targets, a.split_seed)
    n = len(catalog)
    n_new_t = sum(cs.events[p].item_id in cs.new_items for p in cs.targets)
    peer.log(f"dataset {a.dataset}: {len(ds.interactions)} events, {len(ds.users)} users, {n} items; {cs}; "
             f"targets {len(cs.targets)}, on new items {n_new_t}")
    seqs, valid = cold_start_data(cs, catalog)
    peer.log(f"check training-sequences-vs-project: {sum(map(len, seqs))} events = cs.split.train "
             f"({len(cs.split.train)}); validation rows {len(valid)} of {len(cs.split.valid)}")
    train = peer.augment(seqs, a.max_len)
    V = peer.eval_tensors(valid, a.max_len, n)
    peer.log(f"targets ranked: valid {len(V['T'])} (skipped, already seen: {len(V['skipped'])}); "
             f"train samples {len(train[2])}")
    model, cfg = peer.make_model(a.model, n + 1, a.max_len, a.seed)
    peer.log(f"model {type(model).__module__}.{type(model).__name__}: lr {a.lr}, batch {a.batch}, "
             f"max_len {a.max_len}, patience {a.patience}, seed {a.seed}")
    best_ep, hist, train_s = peer.train_loop(model, train, V, n, a)
    vn, vr = peer.evaluate(model, V, n)
    t1 = time.time()
    m = replay_cold_start(peer.Wrapped(model, catalog, a.max_len), cs, catalog, k=peer.K, progress=False)
    same = abs(m["valid_ndcg@10"] - vn) < 1e-9 and m["n_valid"] == len(V["T"])
    peer.log(f"check project replay_cold_start validation {m['valid_ndcg@10']:.6f} (n {m['n_valid']}) vs loop "
             f"{vn:.6f} (n {len(V['T'])}) -> {'IDENTICAL' if same else 'DIFFERENT'}")
    res = {"dataset": a.dataset, "protocol": "cold-start", "model": a.model, "cut": a.cut,
           "max_targets": a.max_targets, "split_seed": a.split_seed, "cut_ts": cs.cut_ts,
           "n_new_items": len(cs.new_items), "n_targets": len(cs.targets), "n_targets_new_items": n_new_t,
           "best_epoch": best_ep, "epochs_run": len(hist), "valid_ndcg@10_loop": vn, "valid_recall@10_loop": vr,
           "train_samples": len(train[2]), "train_seconds": train_s, "replay_seconds": time.time() - t1,
           "replay_valid_identical": same, "threads": torch.get_num_threads()}
    res.update({k: v for k, v in m.items() if not isinstance(v, float) or not math.isnan(v)})
    res["wall_seconds"] = time.time() - t0
    row = " | ".join(f"{g} {m['ndcg@10' + ('' if g == 'all' else '_' + g)]:.4f} / "
                     f"{m['recall@10' + ('' if g == 'all' else '_' + g)]:.4f}" for g in GROUPS)
    peer.log(f"RESULT {a.model} cold start NDCG@10 / Recall@10: {row} | rank share new "
             f"{m.get('rank_pct_new', float('nan')):.2f} | n {m['n_test']} (new {m['n_test_new']}, cold users "
             f"{m['n_test_cold_user']}) | valid {m['valid_ndcg@10']:.4f} | best epoch {best_ep} of {len(hist)} "
             f"| wall {res['wall_seconds']:.0f}s")
    return res
