"""Warm start: a retrain that begins from the serving checkpoint instead of from scratch.

What carries over from the checkpoint (``WarmStart.load``):

* the attention fusion's weights: every projection and attention weight as it is, and the
  learned id embedding and bias of each item by its id (``init_attention``). An item the
  checkpoint has never seen gets a zero id embedding and bias, so it starts as the item tower
  reads its text vector, categories and collaborative factors (what an unseen item is when
  served). Training then goes on from there on the newest examples (a smaller budget: fewer
  epochs, fewer examples), early-stopped on the same holdout, with the starting point itself a
  candidate (never worse on that holdout than where it started);
* the collaborative factors of the items the checkpoint knows (the attention's weights were
  learned on them; a fresh factorisation would rotate the space under them); an unseen item's
  factors come from its text vector, by a ridge regression from text vectors to factors fitted on
  the known items (``cf_factors``);
* the co-engagement parameters (no search; the counts are refitted on the log, which is cheap);
* the blend's gate by item engagement count (no search: its edges, and the weights and shifts of
  its buckets for items with little behaviour and for items the model does not know; the blend
  for the rest is chosen again, as every retrain chooses it). A checkpoint served without a gate
  gives a model without one;
* the sequence model: the same kind, trained on within the smaller budget from the served
  weights, items by id, unseen items from their text vectors (``models.offline.warm_sequence``).

New users need nothing: a user is a state folded from events, not a trained parameter.
The checkpoint must have the dimensions and vector sizes of the model being trained
(``compatible``); otherwise the retrain starts from scratch and says why.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import orjson

from models.attention import AttentionFusion
from models.blend import GatedBlend
from models.cf import load_factors
from models.cooc import CoocParams
from models.sequence import load_sequence

log = logging.getLogger(__name__)


@dataclass
class WarmStart:
    attention: AttentionFusion
    cf: dict[str, np.ndarray]
    cooc_params: CoocParams | None
    sequence_kind: str | None  # attention | gru (a mix: its members' kinds, "auto")
    version: str
    sequence: object = None  # the served sequence model (models.offline.warm_sequence starts from it)
    gate: dict | None = None  # the served blend's gate (GatedBlend.config()), None: served without one

    @classmethod
    def load(cls, checkpoint: str | Path) -> "WarmStart":
        path = Path(checkpoint)
        attention = AttentionFusion.load(path)
        cf = load_factors(path / "cf.npz") if (path / "cf.npz").exists() else {}
        cooc = cooc_params(path / "cooc.npz") if (path / "cooc.npz").exists() else None
        meta = orjson.loads((path / "config.json").read_bytes())
        kind = (meta.get("training", {}).get("selection", {}).get("sequence") or {}).get("kind")
        kind = kind if kind in ("attention", "gru") else ("auto" if kind else None)
        seq = load_sequence(path / "sequence.npz") if (path / "sequence.npz").exists() else None
        return cls(attention, cf, cooc, kind, attention.version, seq, meta.get("blend_gate"))

    def compatible(self, dims: Sequence, space_dims: dict, d_model: int, d_attn: int,
                   item_spaces: Sequence[str]) -> str | None:
        """None when the checkpoint's attention fusion has this shape, else why not."""
        cfg = self.attention.cfg
        if [d.name for d in cfg.dims] != [d.name for d in dims]:
            return f"dimensions {[d.name for d in cfg.dims]} != {[d.name for d in dims]}"
        for s in ("text", "cf", "category"):
            if cfg.space_dims.get(s) != space_dims.get(s):
                return f"{s} vectors of size {cfg.space_dims.get(s)} != {space_dims.get(s)}"
        if (cfg.d_model, cfg.d_attn) != (d_model, d_attn) or tuple(cfg.item_spaces) != tuple(item_spaces):
            return "another attention layout"
        if not self.cf:
            return "no collaborative factors"
        return None


def cooc_params(path: Path) -> CoocParams:
    """The co-engagement parameters of a saved ``CoocModel`` (``CoocModel.save``'s ``params``
    entry), without restoring its counts."""
    import ast

    with np.load(path) as z:
        return CoocParams(**ast.literal_eval(str(z["params"][0])))


def text_rows(ids: Sequence[str], text_vectors: np.ndarray, known: dict[str, np.ndarray],
              ridge: float = 1.0) -> tuple[np.ndarray, int]:
    """((N, k) rows in ``ids`` order, how many items were new): the known items' rows as they are,
    the others predicted from their text vectors by a ridge regression fitted on the known items
    (zeros when none is known)."""
    ids = list(ids)
    k = len(next(iter(known.values())))
    have = np.array([i in known for i in ids], dtype=bool)
    F = np.zeros((len(ids), k), dtype=np.float32)
    if have.any():
        F[have] = np.stack([known[i] for i, h in zip(ids, have) if h])
    if (~have).any() and have.any():
        X = text_vectors[have].astype(np.float64)
        W = np.linalg.solve(X.T @ X + ridge * np.eye(X.shape[1]), X.T @ F[have].astype(np.float64))
        F[~have] = (text_vectors[~have].astype(np.float64) @ W).astype(np.float32)
    return F, int((~have).sum())


def cf_factors(ids: Sequence[str], text_vectors: np.ndarray, known: dict[str, np.ndarray],
               ridge: float = 1.0) -> tuple[list[str], np.ndarray, int]:
    """(ids, (N, k) unit-norm factors, how many items were new): ``text_rows`` of the known
    factors, the predicted ones scaled to unit norm as factors are."""
    ids = list(ids)
    F, new = text_rows(ids, text_vectors, known, ridge)
    fresh = np.array([i not in known for i in ids], dtype=bool)
    F[fresh] /= np.linalg.norm(F[fresh], axis=1, keepdims=True) + 1e-8
    return ids, F, new


def init_attention(state: dict, warm: AttentionFusion, item_ids: Sequence[str]) -> dict:
    """A torch ``state_dict`` of ``AttentionFusionModule`` for ``item_ids`` (tensors, modified in
    place) started from ``warm``'s weights; returns the counts of items carried over and new."""
    import torch

    for name, t in state.items():
        if name in ("item_emb", "item_bias") or name not in warm.w:
            continue
        w = warm.w[name]
        if tuple(w.shape) != tuple(t.shape):
            raise ValueError(f"warm start: {name} has shape {w.shape}, the model {tuple(t.shape)}")
        t.copy_(torch.from_numpy(np.ascontiguousarray(w)))
    rows = {iid: i for i, iid in enumerate(warm.cfg.item_ids)}
    old = [rows.get(i, -1) for i in item_ids]
    new_rows = np.array([j for j, r in enumerate(old) if r >= 0], dtype=np.int64)
    old_rows = np.array([r for r in old if r >= 0], dtype=np.int64)
    emb, bias = state["item_emb"], state["item_bias"]
    emb.zero_()
    bias.zero_()
    if len(new_rows):
        emb[torch.from_numpy(new_rows)] = torch.from_numpy(warm.w["item_emb"][old_rows])
        bias[torch.from_numpy(new_rows)] = torch.from_numpy(warm.w["item_bias"][old_rows])
    return {"items_carried": int(len(new_rows)), "items_new": int(len(item_ids) - len(new_rows))}


def warm_gate(warm: WarmStart, blend: dict[str, float]) -> tuple:
    """(the blend to serve, a report) for a warm retrain: the served gate with ``blend`` (just
    chosen on validation) for its last bucket, the items with the most behaviour; ``blend`` alone
    where the served model had no gate.

    >>> w = WarmStart(None, {}, None, None, "v1", gate={"edges": [2.0], "shifts": [1.5, 0.0],
    ...               "weights": [{"attention": 1.0}, {"attention": 0.5, "co-engagement": 0.5}]})
    >>> g, report = warm_gate(w, {"attention": 0.2, "co-engagement": 0.8})
    >>> g.buckets, g.shifts, report
    (({'attention': 1.0}, {'attention': 0.2, 'co-engagement': 0.8}), (1.5, 0.0), {'from': 'v1'})
    >>> warm_gate(WarmStart(None, {}, None, None, "v0"), {"attention": 1.0})
    ({'attention': 1.0}, {'from': 'v0', 'gate': None})
    """
    if not warm.gate:
        return blend, {"from": warm.version, "gate": None}
    g = warm.gate
    return GatedBlend(g["edges"], list(g["weights"][:-1]) + [dict(blend)], g.get("shifts"),
                      g.get("untrained")), {"from": warm.version}
