"""Attention fusion, training form (torch): the same arithmetic as ``models.scorer.FusedScorer``
(see that module for the equations), batched over users and differentiable.

``FusionModule(cfg)`` is trained by ``models.offline.train``; ``to_scorer(module, version)`` turns
it into the numpy scorer the worker serves. A test checks that both give equal scores.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch
from torch import nn

from models.scorer import FusedScorer, FusionConfig


class FusionModule(nn.Module):
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


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)




def to_scorer(module: FusionModule, version: str) -> FusedScorer:
    """The numpy serving form of a trained module."""
    return FusedScorer(module.cfg, {k: _np(v) for k, v in module.state_dict().items()}, version)
