"""RecBole's own data pipeline against the project's leave-one-out split (check (2) of
``tools/peer_sasrec.py``; run there, not on its own). Needs RecBole on the path (``.peer-site``)."""

from __future__ import annotations

import tempfile
from pathlib import Path


def log(*a):
    print(*a, flush=True)


def recbole_split_check(split, catalog, valid, test, max_len, model_name):
    """Run RecBole's own dataset + LS split on an atomic file whose timestamps are the project's
    time ranks; compare its validation/test (history, target) with ours, user by user."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    import logging

    events = split.events
    if len(events) >= 2 ** 24:
        log("WARNING: more than 2^24 events; float32 time ranks would not be exact")
    tmp = Path(tempfile.mkdtemp(prefix="peer_rb_"))
    name = "peerdata"  # never 'ml-100k': RecBole would read its bundled copy
    (tmp / name).mkdir()
    with open(tmp / name / f"{name}.inter", "w") as fh:
        fh.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for pos, ev in enumerate(events):
            fh.write(f"{ev.user_id}\t{ev.item_id}\t{pos}\n")
    cfg = {
        "data_path": str(tmp), "dataset": name, "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "MAX_ITEM_LIST_LENGTH": max_len, "train_neg_sample_args": None, "loss_type": "CE",
        "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",
        "device": "cpu", "use_gpu": False, "show_progress": False, "save_dataset": False,
        "save_dataloaders": False, "checkpoint_dir": str(tmp / "saved"), "seed": 2020,
        "log_wandb": False, "state": "ERROR",
    }
    config = Config(model=model_name, config_dict=cfg)
    logging.getLogger().setLevel(logging.ERROR)
    dataset = create_dataset(config)
    _, vdata, tdata = data_preparation(config, dataset)

    def targets(dl):
        d = dl._dataset if hasattr(dl, "_dataset") else dl.dataset
        f = d.inter_feat
        users = d.id2token("user_id", f["user_id"].numpy())
        tg = d.id2token("item_id", f["item_id"].numpy())
        seqs = f["item_id_list"].numpy()
        lens = f["item_length"].numpy()
        out = {}
        for u, t, s, l in zip(users, tg, seqs, lens):
            out[str(u)] = (str(t), [str(x) for x in d.id2token("item_id", s[:l])])
        return out

    ids = catalog.ids
    res = {}
    for role, rows, dl in (("valid", valid, vdata), ("test", test, tdata)):
        rb = targets(dl)
        ours = {u: (ids[t - 1], [ids[i - 1] for i in h[-max_len:]]) for u, h, t in rows}
        tgt_match = sum(1 for u, (t, _) in ours.items() if u in rb and rb[u][0] == t)
        hist_match = sum(1 for u, v in ours.items() if u in rb and rb[u] == v)
        extra = sorted(set(rb) - set(ours))
        # users in the project's split with no RecBole target of this role (RecBole's sequential LS split
        # leaves no validation sample to users with exactly 3 events: min(2, n_samples - 1) = 1)
        res[role] = dict(project_targets=len(ours), recbole_targets=len(rb), target_match=tgt_match,
                         target_and_history_match=hist_match, recbole_only_users=len(extra))
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)
    return res
