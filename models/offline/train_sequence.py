"""Training the sequential dimension (``models.sequence``) by maximum likelihood (torch): causal
self-attention (``kind="attention"``, ``models.sequence.attention``; its layout and token segments
in ``models.offline.train_sequence_attention``) or a GRU (``kind="gru"``, ``models.sequence.gru``);
``train_best_sequence`` trains several and keeps the mix of them (``models.sequence.mix``; each
alone included) that does best on the holdout below.

Examples replay the log as the user state sees it: per user, the last ``window`` distinct items
(kept by a ``models.seen.SeenItems``, as ``UserState.seen`` keeps them), and every first
engagement of a consumption type (``TARGET_TYPES``) is a label with the window before it as input:

    L(theta) = - sum_e log softmax(W_out h(window_e) + b_out)[item_e]

(the self-attention model trains on the same labels, read as token segments). Full softmax over
the catalogue up to ``SAMPLED_ABOVE`` items; above, a sampled softmax (the batch's own targets
plus ``negatives`` uniform items, shared by the batch). Adam, dropout. Early stopping, as for
the attention fusion, on each user's last training label held out (NDCG@10 with seen items
excluded), with patience, within a maximum number of epochs (a seconds cap, ``budget_s``, is an
opt-in safety only: when it stops training, ``stopped_by_time`` says so, and the result then depends
on the machine's speed): the protocol's validation targets are left to the blend, which weighs this
component on them (choosing the epochs there too made the component look better on validation
than it is, and the blend trusted it too much). The validation NDCG is recorded per epoch, for
the report only. Test targets are never looked at.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
import torch

from models.offline.base import ItemCatalog
from models.blend import zscore
from models.offline.choose_blend import ndcg_of, simplex_grid
from models.offline.data import Interaction
from models.offline.protocol import Split
from models.offline.train_sequence_attention import SelfAttention, candidate_logits, walk
from models.sequence import GRUSequence, SequenceMix

log = logging.getLogger(__name__)

SAMPLED_ABOVE = 20_000  # catalogue size from which the softmax is sampled


@dataclass(frozen=True)
class SequenceConfig:
    kind: str = "attention"  # attention (models.sequence.attention) | gru (models.sequence.gru)
    window: int = 50  # last distinct items read (<= models.seen.RECENT_ITEMS)
    dim: int = 64  # item embedding
    hidden: int = 64  # GRU state (gru only)
    layers: int = 2  # attention only
    heads: int = 2  # attention only
    dropout: float = 0.5
    lr: float = 2e-3
    batch_size: int = 128  # examples (gru) or segments of up to ``window`` items (attention)
    epochs: int = 30  # at most (the best holdout epoch is kept)
    patience: int = 10
    negatives: int = 4096  # sampled softmax only
    budget_s: float | None = None  # opt-in seconds cap (machine-dependent results; recorded as stopped_by_time)
    seed: int = 0
    threads: int = 1  # one intra-op thread: the float summation order, so the result, does not depend on the cores


GRU_CONFIG = SequenceConfig(kind="gru", window=10, dim=128, hidden=128, dropout=0.25, lr=5e-3, batch_size=256,
                            epochs=12, patience=3)  # the settings the GRU was measured with
KINDS = ("auto", "attention", "gru")  # auto: both trained, mixed as the holdout says (models.sequence.mix)
MIX_STEP = 0.25  # grid step of the mixing weights
MIX_MAX_USERS = 3000  # holdout examples the weights are chosen on (a seeded sample beyond)


def sequence_configs(kind: str = "auto", budget_s: float | None = None,
                     epochs: int | None = None) -> tuple[SequenceConfig, ...]:
    """The default settings of ``kind`` (auto: of both kinds), each with its maximum number of
    epochs replaced when ``epochs`` is given and a seconds cap set when ``budget_s`` is given
    (opt-in: results then depend on the machine)."""
    if kind not in KINDS:
        raise ValueError(f"unknown sequence model kind {kind!r}; one of {KINDS}")
    bases = {"attention": (SequenceConfig(),), "gru": (GRU_CONFIG,)}.get(kind, (SequenceConfig(), GRU_CONFIG))
    bases = tuple(b if epochs is None else replace(b, epochs=int(epochs)) for b in bases)
    return tuple(b if budget_s is None else replace(b, budget_s=float(budget_s)) for b in bases)


def train_best_sequence(train: Sequence[Interaction], split: Split, catalog: ItemCatalog,
                        configs: Sequence[SequenceConfig], init: Callable | None = None):
    """``train_sequence`` for each config, then ``best_sequence`` of the trained models. ``init``:
    as for ``train_sequence``."""
    return best_sequence([train_sequence(train, split, catalog, cfg, init) for cfg in configs], train, catalog)


def best_sequence(trained: Sequence, train: Sequence[Interaction], catalog: ItemCatalog):
    """The mix of the trained models (``models.sequence.mix``; None entries, kinds without
    examples, dropped) with the best holdout NDCG@10 over a grid of weights (step ``MIX_STEP``;
    each model alone is a grid point, and wins ties, so a mix has to do better than every model
    alone). The holdout is the one the models were early-stopped on, each user's last training
    label; never the validation or test targets. ``info["candidates"]``: each kind's holdout
    score; ``info["mix_grid"]``: every grid point's. None without examples."""
    models = [m for m in trained if m is not None]
    if not models:
        return None
    scores = {m.info["kind"]: round(m.info["best_holdout_ndcg@10"], 5) for m in models}
    best = models[0]
    if len(models) > 1:
        best = _best_mix(models, training_examples(train, catalog, max(m.window for m in models), True)[1], catalog)
    best.info["candidates"] = scores
    return best


def _best_mix(models: list, holdout: "SeqExamples", catalog: ItemCatalog):
    """The model alone or ``SequenceMix`` of ``models`` best on ``holdout`` (grid order wins ties,
    the one-model points first)."""
    if len(holdout) > MIX_MAX_USERS:  # bounds memory: H x M x V float32
        pick = np.zeros(len(holdout), dtype=bool)
        pick[np.random.default_rng(0).choice(len(holdout), MIX_MAX_USERS, replace=False)] = True
        holdout = holdout.take(pick)
    wins = [[catalog.ids[r] for r in row[:n][::-1]] for row, n in zip(holdout.windows, holdout.lengths)]
    Z = np.stack([_zscores(m, wins) for m in models], axis=1)  # (H, M, V)
    seen = np.zeros((len(holdout), len(catalog)), dtype=bool)  # (H, V)
    for b, rows in enumerate(holdout.seen):
        seen[b, rows] = True
    grid = simplex_grid(len(models), MIX_STEP)
    grid = grid[np.argsort(~(grid == 1).any(1), kind="stable")]  # one-model points first
    ndcg = [float(ndcg_of(Z, seen, holdout.target, w).mean()) for w in grid]
    g = int(np.argmax(ndcg))
    table = {",".join(f"{w:g}" for w in point): round(v, 5) for point, v in zip(grid.tolist(), ndcg)}
    if (grid[g] == 1).any():
        model = models[int(np.argmax(grid[g]))]
        model.info["mix_grid"] = table
        return model
    kinds = [m.info["kind"] for m in models]
    info = {"kind": "+".join(kinds), "weights": dict(zip(kinds, grid[g].tolist())), "best_holdout_ndcg@10": ndcg[g],
            "mix_grid": table, "members": [{k: v for k, v in m.info.items() if k != "config"} for m in models]}
    return SequenceMix(models, grid[g].tolist(), info=info)


def _zscores(model, windows: list[list[str]], batch: int = 512) -> np.ndarray:
    """(H, V) the model's scores per holdout example, z-scored per row as the mix serves them."""
    return np.concatenate([zscore(model.scores_many(windows[k:k + batch]))[0] for k in range(0, len(windows), batch)])


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
    wins, lens, tgts, seens, users, where = [], [], [], [], [], []
    for pos, j, label, _ in walk(events, catalog, window, take, keep_seen):
        if label is None:
            continue
        rows, seen = label
        row = np.full(window, -1, dtype=np.int64)
        row[: len(rows)] = rows
        wins.append(row)
        lens.append(len(rows))
        tgts.append(j)
        users.append(events[pos].user_id)
        where.append(pos)
        if keep_seen:
            seens.append(seen)
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

    @staticmethod
    def training_data(ex: SeqExamples, events, catalog, cfg, skip) -> tuple[np.ndarray, ...]:
        return ex.windows, ex.lengths, ex.target

    def hidden(self, windows: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, H) last hidden state; an empty window gives zeros."""
        x = torch.where(windows < 0, self.n_items, windows)  # (B, W)
        packed = torch.nn.utils.rnn.pack_padded_sequence(self.drop(self.emb(x)), lengths.clamp(min=1).cpu(),
                                                         batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)  # (1, B, H)
        return torch.where((lengths > 0).unsqueeze(1), h[0], 0.0)

    def scores(self, windows: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(windows, lengths))  # (B, N)

    def loss(self, batch: Sequence[np.ndarray], negatives: int | None) -> tuple[torch.Tensor, int]:
        windows, lengths, target = (torch.from_numpy(a) for a in batch)
        h = self.drop(self.hidden(windows, lengths))
        logits, y = candidate_logits(h, self.out.weight, self.out.bias, target, negatives)
        return torch.nn.functional.cross_entropy(logits, y), len(y)

    def export(self, ids: Sequence[str], window: int, info: dict) -> GRUSequence:
        with torch.no_grad():
            g = self.gru
            in_proj = self.emb.weight[: self.n_items] @ g.weight_ih_l0.T + g.bias_ih_l0  # (V, 3H)
            return GRUSequence(ids, in_proj.numpy(), g.weight_hh_l0.numpy(), g.bias_hh_l0.numpy(),
                                 self.out.weight.numpy(), self.out.bias.numpy(), window=window, info=info)


def _ndcg(module: torch.nn.Module, ex: SeqExamples, k: int = 10, batch: int = 1024) -> float:
    """Validation NDCG@k, seen items excluded; a tie goes to the lower row (the protocol's rule)."""
    if len(ex) == 0:
        return float("nan")
    module.eval()
    total = 0.0
    with torch.inference_mode():
        for s in range(0, len(ex), batch):
            sl = slice(s, s + batch)
            scores = module.scores(torch.from_numpy(ex.windows[sl]), torch.from_numpy(ex.lengths[sl]))  # (B, N)
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
                   cfg: SequenceConfig = SequenceConfig(), init: Callable | None = None):
    """Fit the sequence model (``cfg.kind``) on the training events, early-stopped on a holdout of
    each user's last training label; None without examples. Returns a ``models.sequence.GRUSequence``
    (gru) or a ``models.sequence.AttentionSequence`` (attention). ``init(module, kind)``: sets the
    starting weights (a warm start, ``models.offline.warm_sequence``) and returns what it did; the
    starting point is then a candidate of the early stopping too."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    ex, holdout = training_examples(train, catalog, cfg.window, holdout=True)
    valid = validation_examples(split, catalog, cfg.window)
    n = len(catalog)
    if len(ex) == 0:
        return None
    kinds = {"gru": _GRU, "attention": SelfAttention}
    if cfg.kind not in kinds:
        raise ValueError(f"unknown sequence model kind {cfg.kind!r}; one of {sorted(kinds)}")
    module = kinds[cfg.kind](n, cfg)
    warm = init(module, cfg.kind) if init is not None else {}
    events = sorted(train, key=lambda e: e.ts)  # the order training_examples replays
    data = module.training_data(ex, events, catalog, cfg, set(holdout.where))
    opt = torch.optim.Adam(module.parameters(), lr=cfg.lr)
    negatives = cfg.negatives if n > SAMPLED_ABOVE else None
    best, best_state, bad, history = -math.inf, None, 0, []
    if warm and "skipped" not in warm:
        best = warm["start_holdout_ndcg@10"] = _ndcg(module, holdout)
        best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    t0, stopped_by_time = time.perf_counter(), False
    for epoch in range(cfg.epochs):
        order = rng.permutation(len(data[0]))
        total, labels = 0.0, 0
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            loss, m = module.loss([a[idx] for a in data], negatives)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, labels = total + float(loss.detach()) * m, labels + m
        score = _ndcg(module, holdout)
        history.append({"epoch": epoch + 1, "loss": round(total / max(labels, 1), 4),
                        "holdout_ndcg@10": round(score, 5), "valid_ndcg@10": round(_ndcg(module, valid), 5),
                        "seconds": round(time.perf_counter() - t0, 1)})
        log.info("sequence epoch %d loss %.4f holdout ndcg@10 %.4f (valid %.4f)", epoch + 1, history[-1]["loss"],
                 score, history[-1]["valid_ndcg@10"])
        if score > best or best_state is None:
            best, bad = score, 0
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            bad += 1
        if bad >= cfg.patience:
            break
        if cfg.budget_s is not None and time.perf_counter() - t0 > cfg.budget_s and epoch + 1 < cfg.epochs:
            stopped_by_time = True
            log.warning("sequence model %s stopped by time after %d epochs (results depend on the machine)",
                        cfg.kind, epoch + 1)
            break
    module.load_state_dict(best_state)
    module.eval()
    info = {"kind": cfg.kind, "history": history, "best_holdout_ndcg@10": best, "train_examples": len(ex),
            "holdout_examples": len(holdout), "valid_examples": len(valid),
            "sampled_softmax": negatives is not None, "train_seconds": round(time.perf_counter() - t0, 1),
            "epochs_run": len(history), "stopped_by_time": stopped_by_time,
            "config": {k: v for k, v in cfg.__dict__.items()}, **({"warm_start": warm} if warm else {})}
    return module.export(catalog.ids, cfg.window, info)
