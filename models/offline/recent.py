"""The most recent slice of time: what a retrained model is judged on before it may serve.

``split_recent`` cuts a time-ordered log at one timestamp: the events from the cut on (the last
``fraction`` of the events, or those within ``holdout_ms`` of the newest) are the *recent slice*,
never trained on; everything before it is the training log. Events with the cut's timestamp all
fall into the recent slice, so no moment is split between the two.

``evaluate_recent`` measures any ``InterestModel`` (the new one, the one serving) the same way:
every user starts from an empty state, the training log is folded in (as a worker that had
streamed it would hold the states), then the recent slice is replayed in time order; before each
of its consumption events (``TARGET_TYPES``) whose item the user has not engaged with before, the
model ranks the whole live catalogue for the user (already-seen and deleted items excluded) and
the event's item's rank is taken. ``hr@k`` is the share of those ranked in the top k, ``ndcg@k``
the mean of ``1 / log2(rank + 2)`` over hits. ``max_ranked`` ranks a seeded sample of them.

>>> from models.offline.data import Interaction
>>> log = [Interaction("u", str(i), ts, "click") for i, ts in enumerate([1, 2, 3, 4, 4, 5, 6, 7, 8, 9])]
>>> s = split_recent(log, fraction=0.25)
>>> s.cutoff_ts, len(s.before), len(s.recent)
(8, 8, 2)
>>> s = split_recent(log, holdout_ms=5)
>>> s.cutoff_ts, [e.ts for e in s.recent]
(5, [5, 6, 7, 8, 9])
>>> split_recent(log, fraction=0.5, after_ts=7).cutoff_ts  # only what came after ts 7
8
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from models.engine import InterestModel, TextFeatures
from models.offline.data import Interaction
from models.offline.protocol import TARGET_TYPES, rank_of


@dataclass
class TimeSplit:
    """``before``: the training log; ``recent``: the slice from ``cutoff_ts`` on (time order)."""

    before: list[Interaction]
    recent: list[Interaction]
    cutoff_ts: int

    def window(self) -> dict:
        """The time span of each part, for the checkpoint's metadata."""
        def span(evs: Sequence[Interaction]) -> dict:
            return {"events": len(evs), "first_ts": evs[0].ts if evs else None, "last_ts": evs[-1].ts if evs else None}

        return {"cutoff_ts": self.cutoff_ts, "train": span(self.before), "recent": span(self.recent)}


def split_recent(events: Sequence[Interaction], fraction: float = 0.1, holdout_ms: int | None = None,
                 after_ts: int | None = None) -> TimeSplit:
    """Cut ``events`` at one timestamp (see the module doc); ``holdout_ms`` wins over
    ``fraction``; ``after_ts``: the cut is later than this (the recent slice holds only newer
    events). Raises ``ValueError`` when either side would be empty."""
    evs = sorted(events, key=lambda e: e.ts)  # stable
    if not evs:
        raise ValueError("no events to split")
    if holdout_ms is not None:
        if holdout_ms <= 0:
            raise ValueError(f"holdout must be positive, not {holdout_ms} ms")
        cutoff = evs[-1].ts - holdout_ms + 1
    else:
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"the recent fraction must be in (0, 1), not {fraction}")
        cutoff = evs[min(len(evs) - 1, math.ceil(len(evs) * (1.0 - fraction)))].ts
    if after_ts is not None:
        cutoff = max(cutoff, after_ts + 1)
    cut = next((i for i, e in enumerate(evs) if e.ts >= cutoff), len(evs))
    if cut == len(evs):
        raise ValueError(f"no event at or after the cut (ts {cutoff}): nothing to judge on")
    if cut == 0:
        raise ValueError(f"every event is at or after the cut (ts {cutoff}): nothing left to train on")
    return TimeSplit(evs[:cut], evs[cut:], cutoff)


def _chosen(model: InterestModel, split: TimeSplit, max_ranked: int | None, seed: int) -> np.ndarray:
    """Which recent events are ranked: consumption events of catalogue items the user has not
    engaged with before (a sample of ``max_ranked`` of them when there are more)."""
    seen: dict[str, set[str]] = {}
    for e in split.before:
        seen.setdefault(e.user_id, set()).add(e.item_id)
    pick = np.zeros(len(split.recent), dtype=bool)
    for i, e in enumerate(split.recent):
        s = seen.setdefault(e.user_id, set())
        pick[i] = e.type in TARGET_TYPES and e.item_id in model.items and e.item_id not in s
        s.add(e.item_id)
    if max_ranked is not None and pick.sum() > max_ranked:
        keep = np.random.default_rng(seed).choice(np.flatnonzero(pick), size=max_ranked, replace=False)
        pick[:] = False
        pick[keep] = True
    return pick


def evaluate_recent(model: InterestModel, split: TimeSplit, text_features: TextFeatures | None = None, k: int = 10,
                    learn_before: Callable[[Interaction], bool] | None = None, max_ranked: int | None = None,
                    seed: int = 0) -> dict:
    """HR@k and NDCG@k of ``model`` on ``split.recent`` (see the module doc). ``learn_before(ev)``
    False: a training-log event does not update the co-engagement counts (they hold it already).
    The model's counts end up updated by every event it learned from."""
    t0 = time.perf_counter()
    flags = [True if learn_before is None else bool(learn_before(e)) for e in split.before]
    states: dict = {}
    model.fold([e.event(str(i)) for i, e in enumerate(split.before)], states, text_features,
               learn=lambda ev: flags[int(ev.event_id)])
    pick = _chosen(model, split, max_ranked, seed)
    seen: dict[str, set[int]] = {}
    for e in split.before:
        row = model.items.index.get(e.item_id)
        if row is not None:
            seen.setdefault(e.user_id, set()).add(row)
    deleted = model.items.deleted
    hits, gains = [], []
    log2 = np.log2(np.arange(2, k + 2, dtype=np.float64))
    for i, e in enumerate(split.recent):
        row = model.items.index.get(e.item_id)
        if pick[i]:
            st = states.get(e.user_id) or model.new_state()
            s = np.array(model.scores(st), dtype=np.float64)
            s[list(seen.get(e.user_id, ()))] = -np.inf
            s[deleted] = -np.inf
            rank = rank_of(s, row)
            hits.append(rank < k)
            gains.append(1.0 / log2[rank] if rank < k else 0.0)
        model.fold([e.event(f"r{i}")], states, text_features)
        if row is not None:
            seen.setdefault(e.user_id, set()).add(row)
    n = len(hits)
    return {f"hr@{k}": float(np.mean(hits)) if n else float("nan"),
            f"ndcg@{k}": float(np.mean(gains)) if n else float("nan"),
            "n_ranked": n, "n_recent": len(split.recent), "seconds": round(time.perf_counter() - t0, 1)}
