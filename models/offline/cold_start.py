"""The cold-start protocol: a global time cut, new items and new users after it.

Cut (:func:`split_cold_start`). The events are ordered by time (stable); the cut time ``t_cut`` is
the time of the event at position ``floor(fraction * n)`` (default ``fraction = 0.8``: about 80% of
the events lie before it). Events with ``ts < t_cut`` are *before* the cut, all others after it, so
events with the cut's own timestamp all fall after it. Models are trained on the events before the
cut only:

* validation (what any tuning ranks) is before the cut: for every user with at least three
  consumption events (:data:`TARGET_TYPES`) before the cut, the last of them; it is left out of the
  training events (as in leave-one-out);
* test targets are the consumption events after the cut, every one of them (or a seeded sample of
  ``max_targets``), replayed in time order with the user's history growing as in the stream: the
  model is asked for the user's ranking right before the event, then folds it in (trained
  parameters stay as fitted; streaming state and counters follow the log, as the worker does).

An item is **new** when it has no event before the cut (its catalogue text is known, its behaviour
is not), **old** otherwise. An item is *available* from ``min(published_ts, first event)``
(``published_ts`` when the catalogue has it, e.g. news publishing times; MovieLens release years
are earlier than the log and change nothing): at a target's time, items not yet available are not
ranked, for every model alike. A target's user is a **cold user** when the log holds at most
:data:`COLD_USER_EVENTS` earlier events of that user (of any type, before and after the cut).
Ranking is over the available catalogue, the user's already-seen items excluded (a target item the
user has seen is not ranked), NDCG@10 / Recall@10 with one relevant item, as in
:mod:`models.offline.protocol`.

>>> from models.offline.data import Dataset, Interaction, Item
>>> items = {i: Item(i, i, i, (), {}, None) for i in "abcde"}
>>> log = [Interaction(u, i, t, "click") for t, (u, i) in enumerate(
...     [("u1", "a"), ("u1", "b"), ("u1", "e"), ("u2", "a"), ("u1", "c"), ("u2", "d")])]
>>> cs = split_cold_start(Dataset("toy", items, log), fraction=0.7)
>>> cs.cut_ts, [e.item_id for e in cs.split.train], cs.split.valid["u1"].item_id
(4, ['a', 'b', 'a'], 'e')
>>> [cs.events[p].item_id for p in cs.targets]
['c', 'd']
>>> sorted(cs.new_items), cs.groups(cs.targets[0]), cs.groups(cs.targets[1])
(['c', 'd'], ('new',), ('new', 'cold_user'))
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from models.offline.base import ItemCatalog, Recommender
from models.offline.data import Dataset, Interaction
from models.offline.protocol import TARGET_TYPES, Split, rank_of

__all__ = ["COLD_USER_EVENTS", "GROUPS", "ColdStartSplit", "cold_start_protocol", "replay_cold_start",
           "split_cold_start"]

#: A target's user is cold when the log holds at most this many earlier events of the user.
COLD_USER_EVENTS = 2
#: The target groups every metric is reported for ("all" = every ranked target).
GROUPS = ("all", "new", "old", "cold_user")


def cold_start_protocol(fraction: float) -> str:
    """One-line description written into reports."""
    return (f"cold start: global time cut at the {fraction:.0%} event, models trained before it "
            "(validation = each user's last consumption event before the cut); every consumption event "
            "after the cut is a target, replayed in time order; new item = no event before the cut; "
            f"cold user = at most {COLD_USER_EVENTS} earlier events; ranking over items available at the "
            "target's time, seen items excluded")


@dataclass
class ColdStartSplit:
    """The cut and its targets. ``split`` is what training and tuning see (``train``: events before
    the cut minus the validation targets; ``valid``: before the cut; ``test`` empty; ``events``: the
    whole log in time order). ``targets``: positions in ``events`` of the test targets."""

    fraction: float
    cut_ts: int
    split: Split = field(repr=False)
    targets: list[int] = field(repr=False)
    new_items: frozenset[str] = field(repr=False)
    available_from: dict[str, int] = field(repr=False)
    earlier_events: list[int] = field(repr=False)  # per position: the user's events before it

    @property
    def events(self) -> list[Interaction]:
        return self.split.events

    def groups(self, pos: int) -> tuple[str, ...]:
        """The groups (besides ``all``) the target at ``pos`` counts in."""
        ev = self.events[pos]
        g = ("new",) if ev.item_id in self.new_items else ("old",)
        return g + (("cold_user",) if self.earlier_events[pos] <= COLD_USER_EVENTS else ())

    def __repr__(self) -> str:
        n_new = sum(self.events[p].item_id in self.new_items for p in self.targets)
        return (f"ColdStartSplit(cut at {self.fraction:.0%}: ts {self.cut_ts}, n_train={len(self.split.train)}, "
                f"n_valid={len(self.split.valid)}, n_targets={len(self.targets)} of which new items {n_new}, "
                f"new items {len(self.new_items)})")


def split_cold_start(ds: Dataset, fraction: float = 0.8, max_targets: int | None = None,
                     seed: int = 0) -> ColdStartSplit:
    """The cut at ``fraction`` of the events (module doc); ``max_targets``: a seeded sample of the
    targets (the replay still feeds every event)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError("fraction must be in (0, 1)")
    events = sorted(ds.interactions, key=lambda ev: ev.ts)
    if not events:
        raise ValueError("empty log")
    cut_ts = events[min(int(fraction * len(events)), len(events) - 1)].ts
    n_before = sum(ev.ts < cut_ts for ev in events)
    first: dict[str, int] = {}
    per_user: dict[str, list[int]] = {}
    earlier: list[int] = []
    count: dict[str, int] = {}
    for pos, ev in enumerate(events):
        first.setdefault(ev.item_id, ev.ts)
        earlier.append(count.get(ev.user_id, 0))
        count[ev.user_id] = earlier[-1] + 1
        if pos < n_before and ev.type in TARGET_TYPES:
            per_user.setdefault(ev.user_id, []).append(pos)
    valid_pos = {u: ps[-1] for u, ps in per_user.items() if len(ps) >= 3}
    held = set(valid_pos.values())
    train = [ev for pos, ev in enumerate(events[:n_before]) if pos not in held]
    targets = [p for p in range(n_before, len(events)) if events[p].type in TARGET_TYPES]
    if max_targets is not None and len(targets) > max_targets:
        rng = np.random.default_rng(seed)
        targets = sorted(rng.choice(targets, size=max_targets, replace=False).tolist())
    new_items = frozenset(i for i, ts in first.items() if ts >= cut_ts)
    available = {}
    for item_id, item in ds.items.items():
        cands = [t for t in (item.published_ts, first.get(item_id)) if t is not None]
        available[item_id] = min(cands) if cands else int(np.iinfo(np.int64).max)
    split = Split(train=train, valid={u: events[p] for u, p in valid_pos.items()}, test={}, events=events,
                  valid_pos=valid_pos, test_pos={})
    return ColdStartSplit(fraction, cut_ts, split, targets, new_items, available, earlier)


def _availability(cs: ColdStartSplit, catalog: ItemCatalog) -> tuple[np.ndarray, np.ndarray]:
    """(item indices sorted by availability time, those times)."""
    big = int(np.iinfo(np.int64).max)
    t = np.array([cs.available_from.get(i, big) for i in catalog.ids], dtype=np.int64)
    order = np.argsort(t, kind="stable")
    return order, t[order]


def replay_cold_start(model: Recommender, cs: ColdStartSplit, catalog: ItemCatalog, k: int = 10,
                      progress: bool = True) -> dict[str, Any]:
    """Replay the whole log through ``model`` (fitted on ``cs.split.train``), ranking the validation
    targets and the test targets before they are folded in. Returns, for every group ``g`` of
    :data:`GROUPS` (``all`` without a suffix), ``ndcg@k[_g]``, ``recall@k[_g]``, ``n_test[_g]`` and
    ``rank_pct[_g]`` (the mean rank as a share of the ranked candidates: 0 first, 1 last, about 0.5
    for a model that ranks at chance);
    ``valid_ndcg@k``, ``valid_recall@k``, ``n_valid``; ``prequential_hit@k`` (the hit rate over
    every ranked target: the post-cut stream), ``n_test_skipped_seen`` and ``eval_seconds``."""
    t0 = time.perf_counter()
    events, n = cs.events, len(catalog)
    role = np.zeros(len(events), dtype=np.int8)
    role[list(cs.split.valid_pos.values())] = 1
    role[cs.targets] = 2
    last = int(np.flatnonzero(role).max()) + 1 if role.any() else 0
    order, times = _availability(cs, catalog)
    unavailable = np.ones(n, dtype=bool)
    opened = 0
    seen: dict[str, set[int]] = {}  # per user, the rows consumed
    hits: dict[str, list] = {g: [] for g in ("valid", *GROUPS)}
    gains: dict[str, list] = {g: [] for g in ("valid", *GROUPS)}
    pcts: dict[str, list] = {g: [] for g in GROUPS}
    skipped = 0
    log2 = np.log2(np.arange(2, k + 2, dtype=np.float64))
    for pos in tqdm(range(last), disable=not progress, desc=f"cold-start {model.name}", mininterval=1.0,
                    leave=False):
        ev = events[pos]
        j = catalog.get(ev.item_id)
        if j is None:
            continue
        while opened < n and times[opened] <= ev.ts:
            unavailable[order[opened]] = False
            opened += 1
        had = seen.get(ev.user_id)
        if had is None:
            had = seen[ev.user_id] = set()
        if role[pos] and j in had:
            skipped += int(role[pos] == 2)
        elif role[pos]:
            s = np.array(model.score(ev.user_id), dtype=np.float64)
            if s.shape != (n,):
                raise ValueError(f"{model.name}.score returned shape {s.shape}, expected ({n},)")
            out = unavailable.copy()
            out[np.fromiter(had, np.intp, len(had))] = True
            s[out] = -np.inf
            rank = rank_of(s, j)
            gain = 1.0 / log2[rank] if rank < k else 0.0
            for g in (("valid",) if role[pos] == 1 else ("all", *cs.groups(pos))):
                hits[g].append(rank < k)
                gains[g].append(gain)
                if g != "valid":
                    pcts[g].append(rank / max(n - int(np.count_nonzero(out)) - 1, 1))
        model.learn_one(ev)
        had.add(j)
    return _metrics(hits, gains, pcts, k, skipped, time.perf_counter() - t0)


def _metrics(hits: dict, gains: dict, pcts: dict, k: int, skipped: int, seconds: float) -> dict[str, Any]:
    def mean(xs: list) -> float:
        return float(np.mean(xs)) if xs else float("nan")

    out: dict[str, Any] = {}
    for g in GROUPS:
        suffix = "" if g == "all" else f"_{g}"
        out[f"ndcg@{k}{suffix}"] = mean(gains[g])
        out[f"recall@{k}{suffix}"] = mean(hits[g])
        out[f"n_test{suffix}"] = len(hits[g])
        out[f"rank_pct{suffix}"] = mean(pcts[g])
    out.update({f"valid_ndcg@{k}": mean(gains["valid"]), f"valid_recall@{k}": mean(hits["valid"]),
                "n_valid": len(hits["valid"]), f"prequential_hit@{k}": mean(hits["all"]),
                "n_test_skipped_seen": skipped, "eval_seconds": seconds})
    return out
