"""The attention fusion (``models.attention``) trained by maximum likelihood on logged behaviour
(torch): ``AttentionFusionModule`` is the same arithmetic as the served ``AttentionFusion``,
differentiable, and ``train_attention`` fits it and returns its serving form (a test checks that
both give equal scores).

Examples come from replaying each user's training events through the *same* incremental
``InterestModel.replay`` the stream worker runs: before each event we snapshot the user's
dimension means, and the event's item is the label. The loss is the full-softmax
cross-entropy of that item against the whole catalogue:

    L(theta) = - sum_i log softmax(score(state_i))[item_i]

Each user's last training event is held out for early stopping (the evaluation protocol's own
validation and test targets are never seen here).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from models.attention import AttentionFusion, FusionConfig
from models.engine import InterestModel, TextFeatures
from models.offline.data import Interaction

log = logging.getLogger(__name__)


class AttentionFusionModule(nn.Module):
    """The attention fusion's arithmetic in torch (see ``models.attention`` for the equations),
    batched over users and differentiable."""

    def __init__(self, cfg: FusionConfig):
        super().__init__()
        self.cfg = cfg
        D, A = cfg.d_model, cfg.d_attn
        self.proj = nn.ModuleDict({d.name: nn.Linear(cfg.space_dims[d.space], D) for d in cfg.dims})
        self.w_q = nn.Linear(D, A)
        self.w_k = nn.Linear(D, A, bias=False)
        self.dim_bias = nn.Parameter(torch.zeros(len(cfg.dims)))
        self.item_proj = nn.ModuleDict({s: nn.Linear(cfg.space_dims[s], D, bias=False) for s in cfg.item_spaces})
        n = len(cfg.item_ids)
        self.item_emb = nn.Parameter(torch.zeros(n, D))
        self.item_bias = nn.Parameter(torch.zeros(n))

    def user(self, x: Mapping[str, torch.Tensor], mask: torch.Tensor):
        """x: name -> (B, space_dim); mask: (B, n_dims) bool, True where the dimension has evidence."""
        h = torch.stack([self.proj[d.name](x[d.name]) for d in self.cfg.dims], dim=1)  # (B, n, D)
        m = mask.to(h.dtype).unsqueeze(-1)  # (B, n, 1)
        ctx = (h * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, D)
        q = self.w_q(ctx)  # (B, A)
        k = self.w_k(h)  # (B, n, A)
        logits = (k @ q.unsqueeze(-1)).squeeze(-1) / math.sqrt(self.cfg.d_attn) + self.dim_bias  # (B, n)
        logits = logits.masked_fill(~mask, -1e9)
        alpha = torch.softmax(logits, dim=-1) * mask.any(-1, keepdim=True)  # (B, n); all-empty -> 0
        u = (alpha.unsqueeze(-1) * h).sum(1)  # (B, D)
        return u, alpha, h

    def items(self, feats: Mapping[str, torch.Tensor]):
        """feats: space -> (N, space_dim) for the training catalogue, rows aligned with item_ids."""
        e = sum(self.item_proj[s](feats[s]) for s in self.cfg.item_spaces) + self.item_emb  # (N, D)
        return e, self.item_bias

    def forward(self, x, mask, feats):
        u, alpha, _ = self.user(x, mask)
        e, b = self.items(feats)
        return u @ e.T + b  # (B, N)


def to_serving(module: AttentionFusionModule, version: str) -> AttentionFusion:
    """The numpy serving form of a trained module."""
    return AttentionFusion(module.cfg, {k: v.detach().cpu().numpy().astype(np.float32)
                                        for k, v in module.state_dict().items()}, version)


@dataclass(frozen=True)
class TrainConfig:
    d_model: int = 64
    d_attn: int = 32
    epochs: int = 20
    batch_size: int = 512
    lr: float = 3e-3
    weight_decay: float = 1e-5
    id_l2: float = 1e-4  # extra L2 on the per-item embeddings and biases
    patience: int = 2
    mask_seen: bool = True  # softmax over items the user has not seen yet (what serving ranks)
    max_examples: int = 150_000
    newest_examples: bool = False  # above max_examples keep the newest (a warm start's fine-tuning), else a sample
    seed: int = 0
    threads: int = 1  # >1 collapses (10x slower) when another process shares the cores


@dataclass
class Examples:
    x: dict[str, np.ndarray]  # dimension -> (M, space_dim) means before the event
    mask: np.ndarray  # (M, n_dims) bool
    target: np.ndarray  # (M,) catalogue row of the event's item
    seen: list[np.ndarray]  # rows the user had seen before each example (for masked evaluation)

    def __len__(self) -> int:
        return len(self.target)

    def take(self, idx: np.ndarray) -> "Examples":
        return Examples({k: v[idx] for k, v in self.x.items()}, self.mask[idx], self.target[idx],
                        [self.seen[i] for i in idx])


def build_examples(model: InterestModel, events: Sequence[Interaction], text_features: TextFeatures | None = None,
                   progress: bool = True) -> tuple[Examples, Examples]:
    """Replay ``events`` (time-ordered) through ``model``; return (train, holdout) examples, the
    holdout being each user's last event. Only consumption events are labels."""
    last_of_user = {ev.user_id: i for i, ev in enumerate(events) if ev.type != "review"}
    rows: dict[str, list] = {n: [] for n in model.dim_names}
    masks, targets, seen, is_holdout = [], [], [], []
    stream = (ev.event(str(i)) for i, ev in enumerate(events))
    bar = tqdm(total=len(events), desc="replay train log", disable=not progress, mininterval=1.0)
    for i, (ev, st) in enumerate(model.replay(stream, {}, text_features)):
        bar.update()
        if ev.type != "review" and st.events > 0 and ev.item_id in model.items:
            for n in model.dim_names:
                rows[n].append(st.mean[n])
            masks.append([st.norm[n] > 0 for n in model.dim_names])
            targets.append(model.items.index[ev.item_id])
            seen.append(model.seen_rows(st))
            is_holdout.append(last_of_user[ev.user_id] == i)
    bar.close()
    x = {n: np.stack(v).astype(np.float32) for n, v in rows.items()}
    all_ex = Examples(x, np.array(masks, dtype=bool), np.array(targets, dtype=np.int64), seen)
    hold = np.array(is_holdout)
    return all_ex.take(np.flatnonzero(~hold)), all_ex.take(np.flatnonzero(hold))


def _tensors(ex: Examples, idx: np.ndarray):
    return ({k: torch.from_numpy(v[idx]) for k, v in ex.x.items()}, torch.from_numpy(ex.mask[idx]),
            torch.from_numpy(ex.target[idx]))


def _seen_coords(ex: Examples, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) of every already-seen item in a batch, the label itself excepted."""
    rows, cols = [], []
    for j, i in enumerate(idx):
        s = ex.seen[i]
        s = s[s != ex.target[i]]
        rows.append(np.full(s.size, j))
        cols.append(s)
    if not rows:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.from_numpy(np.concatenate(rows)).long(), torch.from_numpy(np.concatenate(cols)).long()


def masked_ndcg(module: AttentionFusionModule, feats, ex: Examples, k: int = 10, batch: int = 1024) -> float:
    """NDCG@k of the label with already-seen items excluded (the holdout metric)."""
    module.eval()
    total = 0.0
    with torch.inference_mode():
        for s in range(0, len(ex), batch):
            idx = np.arange(s, min(s + batch, len(ex)))
            x, m, y = _tensors(ex, idx)
            scores = module(x, m, feats)  # (B, N)
            r, c = _seen_coords(ex, idx)
            scores[r, c] = -torch.inf
            tgt = scores.gather(1, y.unsqueeze(1))  # (B, 1)
            rank = (scores > tgt).sum(1)  # (B,)
            total += float(torch.where(rank < k, 1.0 / torch.log2(rank.float() + 2.0), 0.0).sum())
    return total / max(1, len(ex))


def train_attention(model: InterestModel, train_ex: Examples, holdout: Examples, cfg: TrainConfig,
                    version: str, item_spaces: Sequence[str] = ("text", "category", "cf"),
                    progress: bool = True, init: AttentionFusion | None = None) -> tuple[AttentionFusion, dict]:
    """Fit an ``AttentionFusionModule`` for ``model``'s dimensions and catalogue; returns its
    serving form. ``init``: start from these weights (``models.offline.warm.init_attention``);
    the starting point is then scored on the holdout first and kept unless an epoch beats it."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    space_dims = dict(model.items.dims)
    item_spaces = tuple(item_spaces)
    fcfg = FusionConfig(dims=model.dims, space_dims=space_dims, d_model=cfg.d_model, d_attn=cfg.d_attn,
                        item_spaces=item_spaces, item_ids=tuple(model.items.ids))
    module = AttentionFusionModule(fcfg)
    feats = {s: torch.from_numpy(np.ascontiguousarray(model.items.space(s))) for s in item_spaces}
    if len(train_ex) > cfg.max_examples:  # examples are in event order
        keep = (np.arange(len(train_ex) - cfg.max_examples, len(train_ex)) if cfg.newest_examples
                else np.sort(rng.choice(len(train_ex), cfg.max_examples, replace=False)))
        train_ex = train_ex.take(keep)
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best, best_state, bad, history = -1.0, None, 0, []
    warm: dict = {}
    if init is not None:
        from models.offline.warm import init_attention

        with torch.no_grad():
            warm = init_attention(dict(module.state_dict()), init, fcfg.item_ids)
        best = warm["start_holdout_ndcg@10"] = masked_ndcg(module, feats, holdout)
        best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        module.train()
        order = rng.permutation(len(train_ex))
        total = 0.0
        for s in tqdm(range(0, len(order), cfg.batch_size), desc=f"{version} epoch {epoch + 1}",
                      disable=not progress, leave=False, mininterval=1.0):
            idx = order[s:s + cfg.batch_size]
            x, m, y = _tensors(train_ex, idx)
            logits = module(x, m, feats)  # (B, N)
            if cfg.mask_seen:
                r, c = _seen_coords(train_ex, idx)
                logits = logits.index_put((r, c), torch.tensor(-1e9))
            loss = torch.nn.functional.cross_entropy(logits, y)
            reg = cfg.id_l2 * (module.item_emb.pow(2).sum(1).mean() + module.item_bias.pow(2).mean())
            opt.zero_grad()
            (loss + reg).backward()
            opt.step()
            total += float(loss.detach()) * len(y)
        score = masked_ndcg(module, feats, holdout)
        history.append({"epoch": epoch + 1, "loss": total / len(order), "holdout_ndcg@10": score})
        log.info("%s epoch %d loss %.4f holdout ndcg@10 %.4f", version, epoch + 1, total / len(order), score)
        if score > best:
            best, bad = score, 0
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    module.load_state_dict(best_state)
    info = {"history": history, "best_holdout_ndcg@10": best, "train_examples": len(train_ex), **({"warm_start": warm} if warm else {}),
            "holdout_examples": len(holdout), "train_seconds": round(time.perf_counter() - t0, 1)}
    return to_serving(module, version), info
