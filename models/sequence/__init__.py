"""The sequential dimension: what a user engages with next, given the last items in order.

Several models of it exist because each errs on different users: a GRU (``gru``), causal
self-attention (``attention``) and a fixed-weight mix of them (``mix``). All three read a user's
recent items newest first (``UserState.seen.newest``) and score their trained vocabulary with
``scores_many(windows) -> (B, V)``; ``models.components.SequenceScores`` serves any of them as a
blend component over the catalogue. A checkpoint's ``sequence.npz`` says which it holds, and
``load_sequence`` reads it back (numpy only; serving core).
"""
from __future__ import annotations

import numpy as np

from models.sequence.attention import KIND as ATTENTION, AttentionSequence
from models.sequence.gru import KIND as GRU, GRUSequence
from models.sequence.mix import KIND as MIX, SequenceMix

__all__ = ["AttentionSequence", "GRUSequence", "SequenceMix", "load_sequence"]


def load_sequence(path):
    """The sequence model saved at ``path`` (a path or a binary file): a ``GRUSequence`` (a file
    without a kind), an ``AttentionSequence`` or a ``SequenceMix`` of several."""
    with np.load(path) as z:
        kind = str(z["kind"]) if "kind" in z.files else GRU
    if hasattr(path, "seek"):
        path.seek(0)
    if kind == MIX:
        return SequenceMix.load(path, load_sequence)
    classes = {GRU: GRUSequence, ATTENTION: AttentionSequence}
    if kind not in classes:
        raise ValueError(f"{path}: unknown sequence model kind {kind!r}")
    return classes[kind].load(path)
