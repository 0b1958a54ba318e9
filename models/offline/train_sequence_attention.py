"""Training the self-attention sequence model (``models.sequence.attention``) in torch.

Training on every example separately (its own window of up to 50 items through the transformer)
costs ~50 token passes per label. As SASRec does, this trains on token sequences instead: per
user, the items in the order the user state's recent list receives them, one causal pass per
segment, a label at every position whose next item is a training label. A user's tokens form one
chain while each new recent list is the previous one plus the new item; a re-engagement (the
item moves to the newest place) starts a new chain from the list as it then stands, so every
label sees the items its serving window holds, in order. Chains longer than the window are cut
into segments of ``window`` tokens that overlap by half; a label counts in the segment where at
least half a window of its history precedes it (in the first segment: all of it). Positions are
numbered from the oldest token of the segment, as the serving window numbers them from its
oldest item. About two token passes per label.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from models.offline.base import ItemCatalog
from models.offline.data import Interaction
from models.offline.protocol import TARGET_TYPES
from models.seen import SeenItems
from models.sequence.attention import AttentionSequence


def walk(events: Sequence[Interaction], catalog: ItemCatalog, window: int, take,
         keep_seen: bool = False) -> Iterator[tuple[int, int, tuple | None, SeenItems]]:
    """Replay ``events`` (time order) as the user state sees them: for every event about a
    catalogued item, (position, row, label, the user's recent items with the event added, as
    ``UserState.seen`` keeps them). ``label``: None, or for a first engagement of a consumption
    type that ``take(pos, ev)`` accepts, (the user's last ``window`` rows before it, oldest first;
    with ``keep_seen``, every row the user engaged with before it)."""
    recent: dict[str, SeenItems] = {}
    seen: dict[str, set[int]] = {}  # every row engaged with (labels are first engagements)
    for pos, ev in enumerate(events):
        j = catalog.get(ev.item_id)
        if j is None:
            continue
        r = recent.setdefault(ev.user_id, SeenItems())
        s = seen.setdefault(ev.user_id, set())
        label = None
        if j not in s and ev.type in TARGET_TYPES and take(pos, ev):
            label = ([catalog.get(i) for i in reversed(r.newest(window))],
                     np.fromiter(s, dtype=np.int64, count=len(s)) if keep_seen else None)
        r.add(ev.item_id)
        s.add(j)
        yield pos, j, label, r


def token_chains(events: Sequence[Interaction], catalog: ItemCatalog, window: int,
                 skip: set[int]) -> list[tuple[list[int], list[int]]]:
    """(tokens, labels) per chain: ``labels[j]`` is the item that follows token j as a training
    label (a first engagement of a consumption type, position not in ``skip``), or -1."""
    current: dict[str, tuple[list[int], list[int]]] = {}
    out = []
    for pos, j, label, r in walk(events, catalog, window, lambda pos, ev: pos not in skip):
        user = events[pos].user_id
        chain = current.get(user)
        if chain is not None and label is not None:
            chain[1][-1] = j
        win = [catalog.get(i) for i in reversed(r.newest(window))]  # oldest first
        if chain is not None and chain[0][max(len(chain[0]) - window + 1, 0):] + [j] == win:
            chain[0].append(j)
            chain[1].append(-1)
        else:
            if chain is not None:
                out.append(chain)
            current[user] = (list(win), [-1] * len(win))
    out.extend(current.values())
    return [c for c in out if max(c[1]) >= 0]


def segments(chains: Sequence[tuple[list[int], list[int]]], window: int) -> tuple[np.ndarray, np.ndarray]:
    """((S, window) tokens, (S, window) labels), right-padded with -1; each label in exactly one segment.

    >>> x, y = segments([(list(range(7)), [1, 2, 3, 4, 5, 6, -1])], window=4)
    >>> x.tolist()
    [[0, 1, 2, 3], [2, 3, 4, 5]]
    >>> y.tolist()
    [[1, 2, 3, 4], [-1, -1, 5, 6]]
    """
    stride = max(window // 2, 1)
    xs, ys = [], []
    for tokens, labels in chains:
        start = 0
        while True:
            x = np.full(window, -1, dtype=np.int64)
            y = np.full(window, -1, dtype=np.int64)
            t = tokens[start:start + window]
            x[: len(t)] = t
            y[: len(t)] = labels[start:start + window]
            if start > 0:
                y[: window - stride] = -1
            xs.append(x)
            ys.append(y)
            if start + window >= len(tokens):
                break
            start += stride
    keep = [k for k, y in enumerate(ys) if (y >= 0).any()]
    if not keep:
        return np.zeros((0, window), np.int64), np.zeros((0, window), np.int64)
    return np.stack([xs[k] for k in keep]), np.stack([ys[k] for k in keep])


def candidate_logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, y: torch.Tensor,
                     negatives: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) of a softmax over every item, or with ``negatives``, over the batch's own
    targets plus that many uniform items shared by the batch; ``h`` (B, D), ``weight`` (N, D)."""
    if negatives is None:
        return h @ weight.T + bias, y  # (B, N)
    cand, inv = torch.unique(torch.cat([y, torch.randint(len(weight), (negatives,))]), return_inverse=True)
    return h @ weight[cand].T + bias[cand], inv[: len(y)]  # (B, C)


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.gelu(x, approximate="tanh")


class SelfAttention(torch.nn.Module):
    """SASRec's layout: item + position embeddings, post-norm causal transformer blocks, scores
    against the item embeddings (plus a per-item bias)."""

    def __init__(self, n_items: int, cfg):
        super().__init__()
        d = cfg.dim
        self.n_items, self.heads = n_items, cfg.heads
        self.emb = torch.nn.Embedding(n_items + 1, d, padding_idx=n_items)  # last row: padding
        self.pos = torch.nn.Embedding(cfg.window, d)
        self.norm = torch.nn.LayerNorm(d, eps=1e-12)
        self.drop = torch.nn.Dropout(cfg.dropout)
        layer = torch.nn.TransformerEncoderLayer(d, cfg.heads, 4 * d, cfg.dropout, activation=_gelu,
                                                 batch_first=True, layer_norm_eps=1e-12)
        self.blocks = torch.nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.bias = torch.nn.Parameter(torch.zeros(n_items))
        for m in self.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
                torch.nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, torch.nn.Linear) and m.bias is not None:
                torch.nn.init.zeros_(m.bias)

    @staticmethod
    def training_data(ex, events, catalog, cfg, skip) -> tuple[np.ndarray, ...]:
        return segments(token_chains(events, catalog, cfg.window, skip), cfg.window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) item rows, left-aligned, -1 after the end -> (B, T, D)."""
        T = x.shape[1]
        h = self.emb(torch.where(x < 0, self.n_items, x)) + self.pos.weight[:T]
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)  # True: may not attend
        return self.blocks(self.drop(self.norm(h)), mask=causal)

    def scores(self, windows: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, N); an empty window gives the bias alone."""
        T = max(int(lengths.max()), 1)
        h = self.forward(windows[:, :T])[torch.arange(len(lengths)), (lengths - 1).clamp(min=0)]  # (B, D)
        return torch.where((lengths > 0).unsqueeze(1), h @ self.emb.weight[: self.n_items].T, 0.0) + self.bias

    def loss(self, batch: Sequence[np.ndarray], negatives: int | None) -> tuple[torch.Tensor, int]:
        x, y = (torch.from_numpy(a) for a in batch)
        T = int((x >= 0).sum(1).max())
        h = self.forward(x[:, :T])  # (B, T, D)
        at = y[:, :T] >= 0
        logits, labels = candidate_logits(h[at], self.emb.weight[: self.n_items], self.bias, y[:, :T][at], negatives)
        return torch.nn.functional.cross_entropy(logits, labels), len(labels)

    def export(self, ids: Sequence[str], window: int, info: dict) -> AttentionSequence:
        np_ = lambda t: t.detach().numpy().copy()  # noqa: E731
        blocks = []
        for layer in self.blocks.layers:
            a = layer.self_attn
            blocks.append({"w_qkv": np_(a.in_proj_weight), "b_qkv": np_(a.in_proj_bias), "w_o": np_(a.out_proj.weight),
                           "b_o": np_(a.out_proj.bias), "ln1_g": np_(layer.norm1.weight), "ln1_b": np_(layer.norm1.bias),
                           "w_1": np_(layer.linear1.weight), "b_1": np_(layer.linear1.bias),
                           "w_2": np_(layer.linear2.weight), "b_2": np_(layer.linear2.bias),
                           "ln2_g": np_(layer.norm2.weight), "ln2_b": np_(layer.norm2.bias)})
        return AttentionSequence(ids, np_(self.emb.weight[: self.n_items]), np_(self.pos.weight), np_(self.norm.weight),
                                 np_(self.norm.bias), blocks, np_(self.bias), heads=self.heads, window=window, info=info)
