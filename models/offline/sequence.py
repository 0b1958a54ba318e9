"""Training the sequential dimension (``models.sequence``) by maximum likelihood (torch).

Examples replay the log as the user state sees it: per user, the last ``window`` distinct items
(kept by a ``models.seen.SeenItems``, as ``UserState.seen`` keeps them), and every first
engagement of a consumption type (``TARGET_TYPES``) is a label with the window before it as input:

    L(theta) = - sum_e log softmax(W_out h(window_e) + b_out)[item_e]

Full softmax over the catalogue up to ``SAMPLED_ABOVE`` items; above, a sampled softmax (the
batch's own targets plus ``negatives`` uniform items, shared by the batch). Adam, dropout on
the embeddings and on the last hidden state. Early stopping, as for the attention fusion, on each
user's last training label held out (NDCG@10 with seen items excluded), with patience, inside a
wall-clock budget: the protocol's validation targets are left to the blend, which weighs this
component on them (choosing the epochs there too made the component look better on validation
than it is, and the blend trusted it too much). The validation NDCG is recorded per epoch, for
the report only. Test targets are never looked at.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from models.offline.base import ItemCatalog
from models.offline.data import Interaction
from models.offline.protocol import TARGET_TYPES, Split
from models.seen import SeenItems
from models.sequence import SequenceModel

log = logging.getLogger(__name__)

SAMPLED_ABOVE = 20_000  # catalogue size from which the softmax is sampled


@dataclass(frozen=True)
class SequenceConfig:
    window: int = 10  # last distinct items read (<= models.seen.RECENT_ITEMS)
    dim: int = 128  # item embedding
    hidden: int = 128  # GRU state
    dropout: float = 0.25
    lr: float = 5e-3
    batch_size: int = 256
    epochs: int = 30
    patience: int = 3
    negatives: int = 4096  # sampled softmax only
    budget_s: float = 180.0
    seed: int = 0
    threads: int = 1


@dataclass
class SeqExamples:
    windows: np.ndarray  # (M, window) catalogue rows, oldest first, right-padded with -1
    lengths: np.ndarray  # (M,)
    target: np.ndarray  # (M,)
    seen: list[np.ndarray] | None = None  # rows engaged with before each example (for NDCG)
    users: list[str] | None = None
    where: list[int] | None = None  # position of each example's event in the replayed events

    def __len__(self) -> int:
        return len(self.target)

    def take(self, mask: np.ndarray) -> "SeqExamples":
        idx = np.flatnonzero(mask)
        return SeqExamples(self.windows[idx], self.lengths[idx], self.target[idx],
                           None if self.seen is None else [self.seen[k] for k in idx],
                           None if self.users is None else [self.users[k] for k in idx],
                           None if self.where is None else [self.where[k] for k in idx])


def _walk(events: Sequence[Interaction], catalog: ItemCatalog, window: int, take, keep_seen: bool) -> SeqExamples:
    """Replay ``events`` (time order); ``take(pos, ev)`` says whether a first engagement is a label."""
    recent: dict[str, SeenItems] = {}  # the window, by the user state's own rule
    seen: dict[str, set[int]] = {}  # every row engaged with (labels are first engagements)
    wins, lens, tgts, seens, users, where = [], [], [], [], [], []
    for pos, ev in enumerate(events):
        j = catalog.get(ev.item_id)
        if j is None:
            continue
        r = recent.setdefault(ev.user_id, SeenItems())
        s = seen.setdefault(ev.user_id, set())
        if j not in s and ev.type in TARGET_TYPES and take(pos, ev):
            rows = [catalog.get(i) for i in reversed(r.newest(window))]
            row = np.full(window, -1, dtype=np.int64)
            row[: len(rows)] = rows
            wins.append(row)
            lens.append(len(rows))
            tgts.append(j)
            users.append(ev.user_id)
            where.append(pos)
            if keep_seen:
                seens.append(np.fromiter(s, dtype=np.int64, count=len(s)))
        r.add(ev.item_id)
        s.add(j)
    if not tgts:
        return SeqExamples(np.zeros((0, window), np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
                           [] if keep_seen else None, [], [])
    return SeqExamples(np.stack(wins), np.asarray(lens), np.asarray(tgts), seens if keep_seen else None, users,
                       where)


def training_examples(train: Sequence[Interaction], catalog: ItemCatalog, window: int,
                      holdout: bool = False) -> tuple[SeqExamples, SeqExamples | None]:
    """(examples, holdout): with ``holdout``, each user's last example (of users with two or more)
    moves to the holdout, which also records the items seen before it."""
    events = sorted(train, key=lambda e: e.ts)
    ex = _walk(events, catalog, window, lambda pos, ev: True, False)
    if not holdout:
        return ex, None
    last: dict[str, int] = {}
    count: dict[str, int] = {}
    for u, pos in zip(ex.users, ex.where):
        last[u] = pos
        count[u] = count.get(u, 0) + 1
    held = {pos for u, pos in last.items() if count[u] > 1}
    keep = np.fromiter((pos not in held for pos in ex.where), dtype=bool, count=len(ex))
    return ex.take(keep), _walk(events, catalog, window, lambda pos, ev: pos in held, True)


def validation_examples(split: Split, catalog: ItemCatalog, window: int) -> SeqExamples:
    """One example per validation target not already seen, with everything before it as history."""
    vpos = set(split.valid_pos.values())
    last = max(vpos) + 1 if vpos else 0
    return _walk(split.events[:last], catalog, window, lambda pos, ev: pos in vpos, True)


class _GRU(torch.nn.Module):
    def __init__(self, n_items: int, cfg: SequenceConfig):
        super().__init__()
        self.emb = torch.nn.Embedding(n_items + 1, cfg.dim, padding_idx=n_items)  # last row: padding
        torch.nn.init.normal_(self.emb.weight, std=0.1)
        self.gru = torch.nn.GRU(cfg.dim, cfg.hidden, batch_first=True)
        self.out = torch.nn.Linear(cfg.hidden, n_items)
        self.drop = torch.nn.Dropout(cfg.dropout)
        self.n_items = n_items

    def hidden(self, windows: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, H) last hidden state; an empty window gives zeros."""
        x = torch.where(windows < 0, self.n_items, windows)  # (B, W)
        packed = torch.nn.utils.rnn.pack_padded_sequence(self.drop(self.emb(x)), lengths.clamp(min=1).cpu(),
                                                         batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)  # (1, B, H)
        return torch.where((lengths > 0).unsqueeze(1), h[0], 0.0)

    def export(self, ids: Sequence[str], window: int, info: dict) -> SequenceModel:
        with torch.no_grad():
            g = self.gru
            in_proj = self.emb.weight[: self.n_items] @ g.weight_ih_l0.T + g.bias_ih_l0  # (V, 3H)
            return SequenceModel(ids, in_proj.numpy(), g.weight_hh_l0.numpy(), g.bias_hh_l0.numpy(),
                                 self.out.weight.numpy(), self.out.bias.numpy(), window=window, info=info)


def _ndcg(module: _GRU, ex: SeqExamples, k: int = 10, batch: int = 1024) -> float:
    """Validation NDCG@k, seen items excluded; a tie goes to the lower row (the protocol's rule)."""
    if len(ex) == 0:
        return float("nan")
    module.eval()
    total = 0.0
    with torch.inference_mode():
        for s in range(0, len(ex), batch):
            sl = slice(s, s + batch)
            h = module.hidden(torch.from_numpy(ex.windows[sl]), torch.from_numpy(ex.lengths[sl]))
            scores = module.out(h)  # (B, N)
            for b, seen in enumerate(ex.seen[sl]):
                if seen.size:
                    scores[b, torch.from_numpy(seen)] = -torch.inf
            y = torch.from_numpy(ex.target[sl])
            t = scores.gather(1, y.unsqueeze(1))
            lower = torch.arange(scores.shape[1]).unsqueeze(0) < y.unsqueeze(1)
            rank = (scores > t).sum(1) + ((scores == t) & lower).sum(1)
            total += float(torch.where(rank < k, 1.0 / torch.log2(rank.float() + 2.0), 0.0).sum())
    module.train()
    return total / len(ex)


def train_sequence(train: Sequence[Interaction], split: Split, catalog: ItemCatalog,
                   cfg: SequenceConfig = SequenceConfig()) -> SequenceModel | None:
    """Fit the GRU on the training events, early-stopped on a holdout of each user's last training
    label; None without examples."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    ex, holdout = training_examples(train, catalog, cfg.window, holdout=True)
    valid = validation_examples(split, catalog, cfg.window)
    n = len(catalog)
    if len(ex) == 0:
        return None
    module = _GRU(n, cfg)
    opt = torch.optim.Adam(module.parameters(), lr=cfg.lr)
    sampled = n > SAMPLED_ABOVE
    best, best_state, bad, history = -math.inf, None, 0, []
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        order = rng.permutation(len(ex))
        total = 0.0
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            h = module.drop(module.hidden(torch.from_numpy(ex.windows[idx]), torch.from_numpy(ex.lengths[idx])))
            y = torch.from_numpy(ex.target[idx])
            if sampled:  # the batch's targets and shared uniform negatives
                cand, y = torch.unique(torch.cat([y, torch.randint(n, (cfg.negatives,))]), return_inverse=True)
                y = y[: len(idx)]
                logits = h @ module.out.weight[cand].T + module.out.bias[cand]  # (B, C)
            else:
                logits = module.out(h)  # (B, N)
            loss = torch.nn.functional.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        score = _ndcg(module, holdout)
        history.append({"epoch": epoch + 1, "loss": round(total / len(ex), 4), "holdout_ndcg@10": round(score, 5),
                        "valid_ndcg@10": round(_ndcg(module, valid), 5), "seconds": round(time.perf_counter() - t0, 1)})
        log.info("sequence epoch %d loss %.4f holdout ndcg@10 %.4f (valid %.4f)", epoch + 1, total / len(ex), score,
                 history[-1]["valid_ndcg@10"])
        if score > best or best_state is None:
            best, bad = score, 0
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            bad += 1
        if bad >= cfg.patience or time.perf_counter() - t0 > cfg.budget_s:
            break
    module.load_state_dict(best_state)
    info = {"history": history, "best_holdout_ndcg@10": best, "train_examples": len(ex),
            "holdout_examples": len(holdout), "valid_examples": len(valid),
            "sampled_softmax": sampled, "train_seconds": round(time.perf_counter() - t0, 1),
            "config": {k: v for k, v in cfg.__dict__.items()}}
    return module.export(catalog.ids, cfg.window, info)
