"""Warm start of the sequence models (``models.offline.train_sequence``) from a serving one.

Every weight of the served model is put back into the torch module of the same kind, and each
item's rows by its id: its input embedding and its output row (self-attention: the shared
embedding and the item bias; GRU: the output weights and bias). An item the served model never
saw starts from its text vector: its rows are predicted by a ridge regression from text vectors
to rows, fitted on the items it knows (``models.offline.warm.text_rows``).

The GRU is exported with its input embedding and input weights multiplied out (one (V, 3H) table,
``in_proj = emb @ W_ih.T + b_ih``); they are recovered exactly up to an invertible change of basis,
which the GRU does not see: ``b_ih`` is the table's mean row, and the centred table (of rank at
most ``dim``) is split by its SVD into ``emb`` (V, dim) and ``W_ih`` (3H, dim).

A served model of another kind, or of other sizes, is not used (the model then trains from its
usual random start; the reason is returned).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from models.offline.warm import text_rows
from models.sequence import AttentionSequence, GRUSequence, SequenceMix


def _member(served, kind: str):
    members = served.members if isinstance(served, SequenceMix) else [served]
    wanted = {"gru": GRUSequence, "attention": AttentionSequence}[kind]
    return next((m for m in members if isinstance(m, wanted)), None)


def split_in_proj(in_proj: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(emb (V, dim), W_ih (3H, dim), b_ih (3H,)) with ``emb @ W_ih.T + b_ih == in_proj`` (to
    rounding) when the centred table has rank <= dim."""
    b = in_proj.mean(axis=0)
    U, S, Vt = np.linalg.svd((in_proj - b).astype(np.float64), full_matrices=False)
    r = min(dim, len(S))
    emb = np.zeros((len(in_proj), dim))
    W = np.zeros((in_proj.shape[1], dim))
    emb[:, :r] = U[:, :r] * np.sqrt(S[:r])
    W[:, :r] = Vt[:r].T * np.sqrt(S[:r])
    return emb.astype(np.float32), W.astype(np.float32), b.astype(np.float32)


def _set(t: torch.Tensor, value: np.ndarray, name: str) -> None:
    if tuple(t.shape) != tuple(value.shape):
        raise ValueError(f"{name}: served {value.shape}, model {tuple(t.shape)}")
    t.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))


def _items(module, rows: np.ndarray, name: str) -> None:
    """The first V rows of an (V + 1, d) embedding (the last is padding) or all rows of (V, d)."""
    _set(module[: len(rows)] if module.shape[0] == len(rows) + 1 else module, rows, name)


def _gru(module, served: GRUSequence, ids: Sequence[str], text: np.ndarray) -> int:
    dim = module.emb.weight.shape[1]
    emb, w_ih, b_ih = split_in_proj(served.in_proj, dim)
    table = np.concatenate([emb, served.w_out, served.b_out[:, None]], axis=1)
    rows, new = text_rows(ids, text, dict(zip(served.ids, table)))
    _items(module.emb.weight, rows[:, :dim], "emb")
    _set(module.gru.weight_ih_l0, w_ih, "w_ih")
    _set(module.gru.bias_ih_l0, b_ih, "b_ih")
    _set(module.gru.weight_hh_l0, served.w_hh, "w_hh")
    _set(module.gru.bias_hh_l0, served.b_hh, "b_hh")
    _set(module.out.weight, rows[:, dim:-1], "w_out")
    _set(module.out.bias, rows[:, -1], "b_out")
    return new


def _attention(module, served: AttentionSequence, ids: Sequence[str], text: np.ndarray) -> int:
    d = served.dim
    table = np.concatenate([served.emb, served.bias[:, None]], axis=1)
    rows, new = text_rows(ids, text, dict(zip(served.ids, table)))
    _items(module.emb.weight, rows[:, :d], "emb")
    _set(module.bias, rows[:, d], "bias")
    _set(module.pos.weight, served.pos, "pos")
    _set(module.norm.weight, served.ln_g, "ln_g")
    _set(module.norm.bias, served.ln_b, "ln_b")
    layers = module.blocks.layers
    if len(layers) != len(served.blocks):
        raise ValueError(f"{len(served.blocks)} served blocks, {len(layers)} in the model")
    for layer, b in zip(layers, served.blocks):
        a = layer.self_attn
        for t, k in ((a.in_proj_weight, "w_qkv"), (a.in_proj_bias, "b_qkv"), (a.out_proj.weight, "w_o"),
                     (a.out_proj.bias, "b_o"), (layer.norm1.weight, "ln1_g"), (layer.norm1.bias, "ln1_b"),
                     (layer.linear1.weight, "w_1"), (layer.linear1.bias, "b_1"), (layer.linear2.weight, "w_2"),
                     (layer.linear2.bias, "b_2"), (layer.norm2.weight, "ln2_g"), (layer.norm2.bias, "ln2_b")):
            _set(t, b[k], k)
    return new


def init_sequence(module: torch.nn.Module, kind: str, served, ids: Sequence[str], text: np.ndarray) -> dict:
    """Start ``module`` (``kind``: gru | attention; catalogue ``ids`` with their text vectors
    ``text``) from the ``served`` model (see the module doc). Returns what was carried over, or
    ``{"skipped": why}`` with the module left as it was."""
    member = _member(served, kind) if served is not None else None
    if member is None:
        return {"skipped": f"the serving model has no {kind} sequence model"}
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    try:
        with torch.no_grad():
            new = (_gru if kind == "gru" else _attention)(module, member, ids, text)
    except ValueError as exc:
        module.load_state_dict(before)
        return {"skipped": str(exc)}
    return {"items_carried": len(ids) - new, "items_new": new}
