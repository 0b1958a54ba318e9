"""Several sequence models as one: their per-user z-scores, mixed by fixed weights (numpy only).

Sequence models of different shapes err on different users: on MovieLens the mix of the
self-attention model and the GRU beats both of them alone (BENCHMARKS.md). A ``SequenceMix`` has
the interface of one sequence model (``ids``, ``index``, ``window``, ``scores_many``, ``save``), so
it serves wherever one does. It z-scores as the blend does (``models.blend.zscore``)::

    z_m = (s_m - mean(s_m)) / std(s_m)             # member m's scores, per user, over the vocabulary
    score = sum_m w_m * z_m                         # (V,), w_m >= 0 summing to 1

Each member reads its own window of the user's recent items; the mix reads the longest. The
weights are chosen offline on the holdout the members were early-stopped on
(``models.offline.train_sequence.train_best_sequence``). A member with constant scores for a user (no
known recent item) contributes nothing for that user, as in the blend.

>>> import numpy as np
>>> from models.sequence.gru import GRUSequence
>>> rng = np.random.default_rng(0)
>>> def gru(window):
...     return GRUSequence(["a", "b", "c"], rng.normal(size=(3, 6)), rng.normal(size=(6, 2)), np.zeros(6),
...                        rng.normal(size=(3, 2)), np.zeros(3), window=window)
>>> one, two = gru(1), gru(3)
>>> mix = SequenceMix([one, two], [0.5, 0.5])
>>> mix.window
3
>>> z = lambda s: (s - s.mean()) / s.std()
>>> bool(np.allclose(mix.scores(["b", "a"]), 0.5 * z(one.scores(["b", "a"])) + 0.5 * z(two.scores(["b", "a"]))))
True
>>> mix.scores([]).tolist()                  # no history: every member is constant
[0.0, 0.0, 0.0]
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np

from models.blend import zscore

KIND = "mix"


class SequenceMix:
    def __init__(self, members: Sequence, weights: Sequence[float], info: dict | None = None):
        if len(members) != len(weights) or not members:
            raise ValueError("a mix needs one weight per member, and at least one member")
        ids = list(members[0].ids)
        if any(list(m.ids) != ids for m in members[1:]):
            raise ValueError("the members of a mix must share one vocabulary, in one order")
        self.members = list(members)
        self.weights = [float(w) for w in weights]
        self.ids = ids
        self.index = members[0].index
        self.window = max(m.window for m in members)
        self.info = dict(info or {})

    def scores(self, newest_first: Sequence[str]) -> np.ndarray:
        """(V,) mixed score of every vocabulary item, given the user's recent items (newest first)."""
        return self.scores_many([newest_first])[0]

    def scores_many(self, windows: Sequence[Sequence[str]]) -> np.ndarray:
        """(B, V) mixed scores of several users."""
        out = np.zeros((len(windows), len(self.ids)), dtype=np.float32)
        for m, w in zip(self.members, self.weights):
            if w > 0:
                out += zscore(m.scores_many(windows), w)[0]
        return out

    def save(self, path: str | Path) -> None:
        import orjson

        blobs = {}
        for k, m in enumerate(self.members):
            buf = io.BytesIO()
            m.save(buf)
            blobs[f"member{k}"] = np.frombuffer(buf.getvalue(), dtype=np.uint8)
        np.savez(path, kind=np.array(KIND), weights=np.asarray(self.weights), n_members=np.int64(len(self.members)),
                 info=np.frombuffer(orjson.dumps(self.info), dtype=np.uint8), **blobs)

    @classmethod
    def load(cls, path: str | Path, load_member) -> "SequenceMix":
        """``load_member``: reads one member from a binary file (``models.sequence.load_sequence``)."""
        import orjson

        with np.load(path) as z:
            members = [load_member(io.BytesIO(z[f"member{k}"].tobytes())) for k in range(int(z["n_members"]))]
            return cls(members, z["weights"].tolist(), info=orjson.loads(z["info"].tobytes()))
