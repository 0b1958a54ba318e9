"""The sequential dimension as a GRU over the user's last distinct items (numpy only; serving core).

What comes next depends on what came just before, in order: episode 2 after episode 1, a case
after the phone. This component reads the user's last ``window`` distinct items, oldest first
(``UserState.seen.newest``: the same bounded list the co-engagement dimension reads, so the user
state carries nothing more), runs a single-layer GRU over their learned embeddings from a zero
hidden state, and scores every item from the last hidden state::

    h_0 = 0
    h_t = GRU(h_{t-1}, e[item_t])                  # t = 1 .. L <= window,  (H,)
    score = W_out @ h_L + b_out                    # (V,) over the trained vocabulary

With no recent item the score is ``b_out``: a learned popularity prior. The input projection
``e[i] @ W_ih.T + b_ih`` is tabulated per item, so a step is one (3H x H) mat-vec. Items added to
the catalogue after training have no embedding: as an input they are skipped, as a candidate
they get the mean score (neutral in the blend's z-scores).

Trained by maximum likelihood of the next first engagement given the window before it
(``models.offline.train_sequence.train_sequence``); a score is a pure function of the weights and the
user's recent items, so the worker and the offline replay agree exactly.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> H, V = 4, 3
>>> m = GRUSequence(["a", "b", "c"], rng.normal(size=(V, 3 * H)), rng.normal(size=(3 * H, H)),
...                 np.zeros(3 * H), rng.normal(size=(V, H)), np.zeros(V), window=2)
>>> m.scores([]).tolist()                    # no history: the bias alone
[0.0, 0.0, 0.0]
>>> bool(np.allclose(m.scores(["b", "a"]), m.scores(["b", "a", "c"])))   # only the last 2 count
True
>>> m.scores(["b", "zzz"]).shape             # an unknown item is skipped
(3,)
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

KIND = "gru"


class GRUSequence:
    """GRU weights in torch's gate order (r, z, n), float32; ``ids``: the trained vocabulary."""

    def __init__(self, ids: Sequence[str], in_proj: np.ndarray, w_hh: np.ndarray, b_hh: np.ndarray,
                 w_out: np.ndarray, b_out: np.ndarray, window: int = 20, info: dict | None = None):
        self.ids = list(ids)
        self.index = {i: r for r, i in enumerate(self.ids)}
        self.in_proj = np.ascontiguousarray(in_proj, dtype=np.float32)  # (V, 3H)
        self.w_hh = np.ascontiguousarray(w_hh, dtype=np.float32)  # (3H, H)
        self.b_hh = np.asarray(b_hh, dtype=np.float32)  # (3H,)
        self.w_out = np.ascontiguousarray(w_out, dtype=np.float32)  # (V, H)
        self.b_out = np.asarray(b_out, dtype=np.float32)  # (V,)
        self.window = int(window)
        self.info = dict(info or {})
        # The step, rearranged for few numpy calls: sigmoid(x) = 0.5 + 0.5 * tanh(x / 2), so the
        # r and z rows are pre-halved, and their hidden bias is folded into the input table.
        H = self.hidden
        half = np.ones(3 * H, dtype=np.float32)
        half[: 2 * H] = 0.5
        self._gi = self.in_proj * half  # (V, 3H)
        self._gi[:, : 2 * H] += half[: 2 * H] * self.b_hh[: 2 * H]
        self._w = self.w_hh * half[:, None]  # (3H, H)
        self._wT = np.ascontiguousarray(self._w.T)  # (H, 3H)
        self._b_n = self.b_hh[2 * H:]  # (H,)

    @property
    def hidden(self) -> int:
        return self.w_hh.shape[1]

    def state(self, newest_first: Sequence[str]) -> np.ndarray:
        """(H,) hidden state after the last ``window`` known items of ``newest_first``, oldest first."""
        return self.states([newest_first])[0]

    def states(self, windows: Sequence[Sequence[str]]) -> np.ndarray:
        """(B, H) hidden states of several users (each a list of recent items, newest first),
        stepped together: user b's items are the last L_b of T steps, its state stays 0 before."""
        H, B = self.hidden, len(windows)
        rows = [[r for r in map(self.index.get, w[: self.window]) if r is not None][::-1] for w in windows]
        T = max(map(len, rows), default=0)
        h = np.zeros((B, H), dtype=np.float32)
        if T == 0:
            return h
        table = np.full((B, T), -1, dtype=np.int64)  # (B, T) input rows, right-aligned; -1: no step
        for b, r in enumerate(rows):
            if r:
                table[b, T - len(r):] = r
        for t in range(T):
            live = table[:, t] >= 0
            idx = np.flatnonzero(live) if not live.all() else slice(None)
            gi = self._gi[table[idx, t]]  # (b, 3H)
            hb = h[idx]
            gh = hb @ self._wT  # (b, 3H)
            rz = np.tanh(gi[:, : 2 * H] + gh[:, : 2 * H])
            rz *= 0.5
            rz += 0.5  # (b, 2H) reset and update gates
            n = gh[:, 2 * H:] + self._b_n
            n *= rz[:, :H]
            n += gi[:, 2 * H:]
            np.tanh(n, out=n)  # (b, H) candidate
            hb -= n
            hb *= rz[:, H:]
            hb += n  # (1 - z) * n + z * h
            h[idx] = hb
        return h

    def scores(self, newest_first: Sequence[str]) -> np.ndarray:
        """(V,) score of every vocabulary item, given the user's recent items (newest first)."""
        return self.scores_many([newest_first])[0]

    def scores_many(self, windows: Sequence[Sequence[str]]) -> np.ndarray:
        """(B, V) scores of several users."""
        return self.states(windows) @ self.w_out.T + self.b_out

    def save(self, path: str | Path) -> None:
        import orjson

        np.savez(path, ids=np.array(self.ids, dtype=object).astype(str), in_proj=self.in_proj, w_hh=self.w_hh,
                 b_hh=self.b_hh, w_out=self.w_out, b_out=self.b_out, window=np.int64(self.window),
                 info=np.frombuffer(orjson.dumps(self.info), dtype=np.uint8))

    @classmethod
    def load(cls, path: str | Path) -> "GRUSequence":
        import orjson

        with np.load(path) as z:
            return cls(z["ids"].tolist(), z["in_proj"], z["w_hh"], z["b_hh"], z["w_out"], z["b_out"],
                       window=int(z["window"]), info=orjson.loads(z["info"].tobytes()))

