"""The sequential dimension as causal self-attention over the user's last items (numpy only; serving core).

The same job as the GRU of ``models.sequence.gru`` (what comes next, given the last items in order),
done the way SASRec does it: the user's last ``window`` distinct items (``UserState.seen.newest``,
at most ``models.seen.RECENT_ITEMS``), oldest first, each an item embedding plus a position
embedding (0 = the oldest item in the window), go through a few post-norm transformer blocks (2)
in which a position attends only to itself and the items before it; the output at the newest
item scores every item against the same item embeddings::

    x_0 = LayerNorm(E[items] + P[0..L-1])                       # (L, D)
    x_l = LayerNorm(y + FFN(y)),  y = LayerNorm(x_{l-1} + CausalMHA(x_{l-1}))
    score = E @ x_last[L-1] + b                                 # (V,)

With no recent item the score is ``b``, a learned popularity prior. Items added to the catalogue
after training have no embedding: as an input they are skipped, as a candidate they get the mean
score (``models.components.SequenceScores`` does that). The last block is evaluated at the newest position only (the
others need every position, for the keys and values); users are run in groups of similar
window length. Weights are exported from ``models.offline.train_sequence_attention`` (torch's ``TransformerEncoderLayer`` with the tanh form of GELU), and a
score here equals torch's to float32 rounding.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> V, D, W = 5, 4, 3
>>> blocks = [{k: rng.normal(size=s).astype(np.float32) for k, s in AttentionSequence.block_shapes(D, 8).items()}]
>>> m = AttentionSequence(list("abcde"), rng.normal(size=(V, D)), rng.normal(size=(W, D)), np.ones(D), np.zeros(D),
...                       blocks, np.zeros(V), heads=2, window=W)
>>> m.scores([]).tolist()                    # no history: the bias alone
[0.0, 0.0, 0.0, 0.0, 0.0]
>>> bool(np.allclose(m.scores(["b", "a", "c"]), m.scores(["b", "a", "c", "d"])))   # only the last 3 count
True
>>> bool(np.allclose(m.scores_many([["b", "zzz", "a"], ["c"]])[0], m.scores(["b", "a"]), atol=1e-5))
True
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

KIND = "attention"


def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def _gelu(x: np.ndarray) -> np.ndarray:
    """GELU, tanh form (as trained), in place of ``x``."""
    t = x * x
    t *= 0.044715 * 0.7978845608028654
    t += 0.7978845608028654
    t *= x
    np.tanh(t, out=t)
    t += 1.0
    x *= 0.5
    x *= t
    return x


class AttentionSequence:
    """Weights as float32 arrays; ``blocks``: one dict per block (``block_shapes``); ``ids``: the
    trained vocabulary, the rows of ``emb``."""

    @staticmethod
    def block_shapes(d: int, inner: int) -> dict[str, tuple[int, ...]]:
        return {"w_qkv": (3 * d, d), "b_qkv": (3 * d,), "w_o": (d, d), "b_o": (d,), "ln1_g": (d,), "ln1_b": (d,),
                "w_1": (inner, d), "b_1": (inner,), "w_2": (d, inner), "b_2": (d,), "ln2_g": (d,), "ln2_b": (d,)}

    def __init__(self, ids: Sequence[str], emb: np.ndarray, pos: np.ndarray, ln_g: np.ndarray, ln_b: np.ndarray,
                 blocks: Sequence[dict], bias: np.ndarray, heads: int, window: int, info: dict | None = None):
        f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
        self.ids = list(ids)
        self.index = {i: r for r, i in enumerate(self.ids)}
        self.emb, self.pos, self.bias = f32(emb), f32(pos), f32(bias)  # (V, D), (W, D), (V,)
        self.ln_g, self.ln_b = f32(ln_g), f32(ln_b)
        self.blocks = [{k: f32(v) for k, v in b.items()} for b in blocks]
        # (in, out) copies of the weight matrices: x @ W.T on a transposed view is several times slower
        self._t = [{k: f32(b[k].T) for k in ("w_qkv", "w_o", "w_1", "w_2")} for b in self.blocks]
        self._embT = f32(self.emb.T)  # (D, V)
        self.heads = int(heads)
        self.window = min(int(window), len(self.pos))
        self.info = dict(info or {})

    @property
    def dim(self) -> int:
        return self.emb.shape[1]

    def _attend(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """q (B, Q, D), k/v (B, T, D), mask (Q, T) or (B, Q, T), 0 = may attend, -inf = not -> (B, Q, D)."""
        B, Q, D = q.shape
        T, h, dh = k.shape[1], self.heads, D // self.heads
        heads = lambda x: np.ascontiguousarray(x.reshape(B, x.shape[1], h, dh).transpose(0, 2, 1, 3))  # noqa: E731
        att = heads(q) @ heads(k).transpose(0, 1, 3, 2)  # (B, h, Q, T)
        att *= 1.0 / np.sqrt(dh)
        att += mask[:, None] if mask.ndim == 3 else mask
        att -= att.max(-1, keepdims=True)
        np.exp(att, out=att)
        att /= att.sum(-1, keepdims=True)
        return (att @ heads(v)).transpose(0, 2, 1, 3).reshape(B, Q, D)

    def _block(self, x: np.ndarray, blk: dict, wt: dict, last: np.ndarray | None) -> np.ndarray:
        """One post-norm block over (B, T, D), causal; with ``last`` (B,), only each row's position
        ``last`` is computed -> (B, 1, D)."""
        B, T, D = x.shape
        qkv = (x.reshape(B * T, D) @ wt["w_qkv"] + blk["b_qkv"]).reshape(B, T, 3 * D)
        q, k, v = qkv[..., :D], qkv[..., D:2 * D], qkv[..., 2 * D:]
        mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)  # (T, T) causal
        if last is not None:
            rows = np.arange(B)
            q, x, mask = q[rows, last][:, None], x[rows, last][:, None], mask[last][:, None]  # (B, 1, .)
        n = x.shape[1]
        a = self._attend(q, k, v, mask).reshape(B * n, D) @ wt["w_o"] + blk["b_o"]
        y = _layer_norm(x.reshape(B * n, D) + a, blk["ln1_g"], blk["ln1_b"])
        f = _gelu(y @ wt["w_1"] + blk["b_1"]) @ wt["w_2"] + blk["b_2"]
        return _layer_norm(y + f, blk["ln2_g"], blk["ln2_b"]).reshape(B, n, D)

    def states(self, windows: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """((B, D) output at each user's newest item, (B,) whether the user has any known item).
        Users are run in groups of similar window length (up to 1, 2, 4, ... items), so a batch of
        short histories does not pay for one long one."""
        rows = [[r for r in map(self.index.get, w[: self.window]) if r is not None][::-1] for w in windows]
        lengths = np.array([len(r) for r in rows], dtype=np.int64)  # (B,)
        out = np.zeros((len(rows), self.dim), dtype=np.float32)
        bucket = np.ceil(np.log2(np.maximum(lengths, 1))).astype(np.int64)  # (B,) group of each user
        for g in np.unique(bucket[lengths > 0]):
            idx = np.flatnonzero((bucket == g) & (lengths > 0))
            out[idx] = self._run([rows[i] for i in idx], lengths[idx])
        return out, lengths > 0

    def _run(self, rows: list[list[int]], lengths: np.ndarray) -> np.ndarray:
        """(b, D) outputs at the newest item of each (non-empty) list of vocabulary rows."""
        B, T = len(rows), int(lengths.max())
        table = np.zeros((B, T), dtype=np.int64)  # (B, T) left-aligned; the padding after is never attended
        for b, r in enumerate(rows):
            table[b, : len(r)] = r
        x = _layer_norm(self.emb[table] + self.pos[:T], self.ln_g, self.ln_b)  # (B, T, D)
        last = lengths - 1
        for i, (blk, wt) in enumerate(zip(self.blocks, self._t)):
            x = self._block(x, blk, wt, last if i == len(self.blocks) - 1 else None)
        return x[:, 0]

    def scores(self, newest_first: Sequence[str]) -> np.ndarray:
        """(V,) score of every vocabulary item, given the user's recent items (newest first)."""
        return self.scores_many([newest_first])[0]

    def scores_many(self, windows: Sequence[Sequence[str]]) -> np.ndarray:
        """(B, V) scores of several users."""
        h, known = self.states(windows)
        return np.where(known[:, None], h @ self._embT, np.float32(0.0)) + self.bias

    def save(self, path: str | Path) -> None:
        import orjson

        arrays = {f"b{i}_{k}": v for i, b in enumerate(self.blocks) for k, v in b.items()}
        np.savez(path, kind=np.array(KIND), ids=np.array(self.ids, dtype=object).astype(str), emb=self.emb,
                 pos=self.pos, ln_g=self.ln_g, ln_b=self.ln_b, bias=self.bias, heads=np.int64(self.heads),
                 window=np.int64(self.window), n_blocks=np.int64(len(self.blocks)),
                 info=np.frombuffer(orjson.dumps(self.info), dtype=np.uint8), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "AttentionSequence":
        import orjson

        with np.load(path) as z:
            blocks = [{k: z[f"b{i}_{k}"] for k in cls.block_shapes(1, 1)} for i in range(int(z["n_blocks"]))]
            return cls(z["ids"].tolist(), z["emb"], z["pos"], z["ln_g"], z["ln_b"], blocks, z["bias"],
                       heads=int(z["heads"]), window=int(z["window"]), info=orjson.loads(z["info"].tobytes()))
