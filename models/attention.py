"""The attention fusion, serving form (numpy only): several interest dimensions -> one user
vector, with weights that explain it, scored against every item of the catalogue.

For a user with dimension means x_d (each in its own space: text, cf or category):

    h_d   = W_d x_d + c_d                           # (n_dims, D)  each dimension in a shared space
    q     = q_0 + W_q mean_d(h_d)                   # (A,)         what this user's profile asks for
    a_d   = softmax_d(q . W_k h_d / sqrt(A) + b_d)  # (n_dims,)    masked where a dimension is empty
    u     = sum_d a_d h_d                           # (D,)         the fused interest vector
    e_i   = V_text t_i + V_cat g_i + V_cf f_i + E_id[i]              # (N, D) item tower
    score = u . e_i + bias_i                        # (N,)

so score_i = bias_i + sum_d a_d (h_d . e_i): the per-dimension terms are the reasons for item i,
and a_d are the dimension weights. The weights are learned by maximum likelihood offline
(``models.offline.train_attention`` holds the identical torch module and the loop); this file is
all the stream worker needs, and it never imports torch. ``models.components.AttentionScores``
serves it as the blend's ``attention`` component.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import orjson

from models.dimensions import Dimension
from models.items import GROWTH, ItemVectors

ITEM_BLOCK = 1024  # catalogue rows per product of the item tower (``AttentionFusion._tower_rows``)


@dataclass(frozen=True)
class FusionConfig:
    dims: tuple[Dimension, ...]
    space_dims: Mapping[str, int] = field(
        default_factory=lambda: {"text": 384, "cf": 64, "category": 256, "hybrid": 448})
    d_model: int = 64  # D
    d_attn: int = 32  # A
    item_spaces: tuple[str, ...] = ("text", "category", "cf")  # what the item tower reads
    item_ids: tuple[str, ...] = ()  # items that get a learned id embedding and bias

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dims"] = [asdict(x) for x in self.dims]
        d["space_dims"] = dict(self.space_dims)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FusionConfig":
        d = dict(d)
        d["dims"] = tuple(Dimension(**x) for x in d["dims"])
        d["item_spaces"] = tuple(d["item_spaces"])
        d["item_ids"] = tuple(d["item_ids"])
        return cls(**d)


class AttentionFusion:
    """Numpy serving form of ``AttentionFusionModule``: user vectors, scores over the catalogue, reasons."""

    def __init__(self, cfg: FusionConfig, weights: Mapping[str, np.ndarray], version: str = "default"):
        self.cfg = cfg
        self.w = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
        self.version = version
        self.dim_names = [d.name for d in cfg.dims]
        self._id_row = {iid: i for i, iid in enumerate(cfg.item_ids)}
        self._cache: _ItemCache | None = None  # the item tower's rows (``item_matrix``)
        self._direct: str | None = None  # the space an identity tower copies ("" : none; None: not known yet)
        self._zeros = np.zeros(0, np.float32)  # the bias of a tower without learned ids
        ib = self.w.get("item_bias")
        self._median_bias = float(np.median(ib)) if ib is not None and ib.size else 0.0

    @classmethod
    def default(cls, dims: Sequence[Dimension], space_dims: Mapping[str, int]) -> "AttentionFusion":
        """Untrained fallback: every text-space dimension is the identity into the encoder space,
        other spaces are ignored, and the attention is uniform over dimensions with evidence."""
        D = space_dims["text"]
        cfg = FusionConfig(dims=tuple(dims), space_dims=dict(space_dims), d_model=D, d_attn=1,
                           item_spaces=("text",))
        w: dict[str, np.ndarray] = {}
        for d in dims:
            W = np.eye(D, dtype=np.float32) if d.space == "text" else np.zeros((D, space_dims[d.space]), np.float32)
            w[f"proj.{d.name}.weight"], w[f"proj.{d.name}.bias"] = W, np.zeros(D, np.float32)
        w["w_q.weight"], w["w_q.bias"] = np.zeros((1, D), np.float32), np.zeros(1, np.float32)
        w["w_k.weight"] = np.zeros((1, D), np.float32)
        w["dim_bias"] = np.array([0.0 if d.space == "text" else -1e9 for d in dims], np.float32)
        w["item_proj.text.weight"] = np.eye(D, dtype=np.float32)
        w["item_emb"], w["item_bias"] = np.zeros((0, D), np.float32), np.zeros(0, np.float32)
        return cls(cfg, w, version="default-untrained")

    # -- user side ---------------------------------------------------------------------------
    def user(self, means: Mapping[str, np.ndarray], norms: Mapping[str, float]):
        """-> u (D,), alpha (n_dims,), h (n_dims, D) of one user (``users`` of one)."""
        u, alpha, h = self.users([means], [norms])
        return u[0], alpha[0], h[0]

    def users(self, means: Sequence[Mapping[str, np.ndarray]], norms: Sequence[Mapping[str, float]]):
        """Several users at once: -> u (B, D), alpha (B, n_dims), h (B, n_dims, D). A user with
        no evidence in any dimension gets u = 0 and alpha = 0."""
        w, names = self.w, self.dim_names
        h = np.stack([np.stack([m[n] for m in means]).astype(np.float32) @ w[f"proj.{n}.weight"].T
                      + w[f"proj.{n}.bias"] for n in names], axis=1)  # (B, n, D)
        mask = np.array([[nm[n] > 0 for n in names] for nm in norms]).reshape(len(norms), len(names))  # (B, n)
        some = mask.any(axis=1)  # (B,)
        count = np.maximum(mask.sum(axis=1, keepdims=True), 1).astype(np.float32)
        ctx = (h * mask[:, :, None]).sum(axis=1) / count  # (B, D)
        q = ctx @ w["w_q.weight"].T + w["w_q.bias"]  # (B, A)
        k = h @ w["w_k.weight"].T  # (B, n, A)
        logits = np.einsum("bna,ba->bn", k, q) / math.sqrt(self.cfg.d_attn) + w["dim_bias"]  # (B, n)
        logits = np.where(mask, logits, -np.inf)
        top = np.where(some, logits.max(axis=1, initial=-np.inf), 0.0)[:, None]
        alpha = np.exp(logits - top)
        alpha = (alpha / np.maximum(alpha.sum(axis=1, keepdims=True), 1e-30)).astype(np.float32)  # (B, n)
        u = np.einsum("bn,bnd->bd", alpha, h)  # (B, D)
        return u, alpha, h

    # -- item side ---------------------------------------------------------------------------
    def item_matrix(self, items: ItemVectors) -> tuple[np.ndarray, np.ndarray]:
        """-> E (N, D), bias (N,): the item tower over the catalogue, kept in step with it row by
        row (``ItemVectors.changed_since``: an added, updated, freed or reused row is recomputed,
        nothing else). The arrays are views of buffers updated in place: valid until the
        catalogue changes. A tower that is the identity on one space (the untrained default)
        keeps no copy: E is that space of the catalogue itself."""
        direct = self._direct_space()
        if direct is not None:
            if self._zeros.size < len(items):
                self._zeros = np.zeros(max(len(items), int(self._zeros.size * 1.25)), np.float32)
            return items.space(direct), self._zeros[: len(items)]
        c = self._cache
        if c is None or c.of is not items:
            c = self._cache = _ItemCache(items, self.cfg.d_model)
            rows = np.arange(len(items))
        elif c.version == items.version:
            return c.E[: len(items)], c.bias[: len(items)]
        else:
            rows = items.changed_since(c.version)
        c.reserve(len(items))
        for group in _by_place(rows):
            self._tower_rows(items, group, c)
        c.version = items.version
        return c.E[: len(items)], c.bias[: len(items)]

    def _direct_space(self) -> str | None:
        """The one space the item tower copies unchanged, if it does that (and learned no ids)."""
        if self._direct is None:
            spaces = self.cfg.item_spaces
            W = self.w.get(f"item_proj.{spaces[0]}.weight") if len(spaces) == 1 else None
            same = (W is not None and not self._id_row and W.shape[0] == W.shape[1]
                    and np.array_equal(W, np.eye(W.shape[0], dtype=W.dtype)))
            self._direct = spaces[0] if same else ""
        return self._direct or None

    def _tower_rows(self, items: ItemVectors, rows: np.ndarray, c: "_ItemCache") -> None:
        """E and bias of catalogue ``rows`` (each at another place, ``_by_place``), into ``c``.
        Every product has ``ITEM_BLOCK`` rows, and row r sits at place r % ``ITEM_BLOCK`` of it
        (the places no row takes hold the first row again). A BLAS may round a row by its place
        in the product (its Haswell kernels do, by the row's place in a tile), so a row's bits
        depend on nothing but its own vectors: an update gives what a fresh build gives."""
        w, n = self.w, rows.size
        place = rows % ITEM_BLOCK
        block = np.full(ITEM_BLOCK, rows[0], dtype=rows.dtype)
        block[place] = rows
        spaces = items.row_spaces()
        E = sum(spaces[s].take(block, axis=0) @ w[f"item_proj.{s}.weight"].T for s in self.cfg.item_spaces)
        E = np.asarray(E, dtype=np.float32)[place]
        bias = np.zeros(n, np.float32)
        if len(self._id_row):
            ids = items.ids
            at = np.array([self._id_row.get(ids[r], -1) for r in rows.tolist()], dtype=np.int64)
            known = at >= 0
            E[known] += w["item_emb"][at[known]]
            bias[known] = w["item_bias"][at[known]]
            bias[~known] = self._median_bias  # new items: a typical prior
        c.E[rows], c.bias[rows] = E, bias

    def item_matrix_nbytes(self) -> int:
        """Bytes the item tower's cache holds (0 for a tower that keeps no copy)."""
        return 0 if self._cache is None else int(self._cache.E.nbytes + self._cache.bias.nbytes)

    def scores(self, means, norms, items: ItemVectors) -> np.ndarray:
        u, _, _ = self.user(means, norms)
        E, b = self.item_matrix(items)
        return E @ u + b  # (N,)

    def explain(self, alpha: np.ndarray, h: np.ndarray, E_rows: np.ndarray) -> np.ndarray:
        """Per-dimension contribution a_d (h_d . e_i) for a few items of each of B users:
        alpha (B, n_dims), h (B, n_dims, D), E_rows (B, k, D) -> (B, k, n_dims)"""
        return np.einsum("bkd,bnd->bkn", E_rows, h) * alpha[:, None, :]

    # -- checkpoint --------------------------------------------------------------------------
    def save(self, out_dir: str | Path, extra: Mapping | None = None) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / "fusion.npz", **self.w)
        meta = {"version": self.version, "config": self.cfg.to_dict(), **(extra or {})}
        (out / "config.json").write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
        return out

    @classmethod
    def load(cls, path: str | Path) -> "AttentionFusion":
        path = Path(path)
        meta = orjson.loads((path / "config.json").read_bytes())
        with np.load(path / "fusion.npz") as z:
            weights = {k: z[k] for k in z.files}
        return cls(FusionConfig.from_dict(meta["config"]), weights, version=meta["version"])


def _by_place(rows: np.ndarray) -> list[np.ndarray]:
    """``rows`` (ascending) in groups, ascending each, no two of a group at the same place
    r % ``ITEM_BLOCK``: the i-th row of a place goes to group i (consecutive rows: groups of
    ``ITEM_BLOCK``, as aligned blocks of the catalogue).

    >>> [g.tolist() for g in _by_place(np.array([1, 5, ITEM_BLOCK + 1, ITEM_BLOCK + 2]))]
    [[1, 5, 1026], [1025]]
    """
    if not rows.size:
        return []
    place = rows % ITEM_BLOCK
    order = np.lexsort((rows, place))  # by place, then row
    sizes = np.bincount(place[order])
    sizes = sizes[sizes > 0]
    nth = np.arange(rows.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # i-th row of its place
    group = np.empty(rows.size, dtype=np.int64)
    group[order] = nth
    by_group = np.lexsort((rows, group))  # by group, then row
    return np.split(rows[by_group], np.flatnonzero(np.diff(group[by_group])) + 1)


class _ItemCache:
    """The item tower's E (rows, D) and bias (rows,) over a catalogue, at its ``version``; the
    buffers grow as the catalogue's rows do (by ``models.items.GROWTH``)."""

    def __init__(self, items: ItemVectors, d: int):
        self.of, self.version = items, -1
        self.E, self.bias = np.zeros((0, d), np.float32), np.zeros(0, np.float32)

    def reserve(self, n: int) -> None:
        if n > len(self.bias):
            cap = max(n, int(len(self.bias) * GROWTH))
            E, bias = np.zeros((cap, self.E.shape[1]), np.float32), np.zeros(cap, np.float32)
            E[: len(self.E)], bias[: len(self.bias)] = self.E, self.bias
            self.E, self.bias = E, bias
