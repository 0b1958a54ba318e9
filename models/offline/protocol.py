"""The evaluation protocol: a leave-one-out split and a time-ordered replay.

Split (:func:`split_leave_one_out`). For every user, the events whose type expresses
consumption (``click``, ``favorite``, ``rating``: :data:`TARGET_TYPES`) are ordered by
time; the last one is the user's test target, the second-last the validation target, and
every other event (``review`` events included) is training data. Users with fewer than
three such events have no targets; all their events are training data.

Replay (:func:`replay_evaluate`). The model, already fitted on ``split.train``, is fed
every event of the log in time order. Before an event ``e`` of user ``u`` whose type is
in :data:`TARGET_TYPES`, the model scores all items for ``u``; the items ``u`` has
interacted with before are removed, and the rank of ``e``'s item among the remaining
items is taken (0 = best). Items with a higher score rank ahead, and so do items with an
equal score and a lower catalogue index, so constant scores earn nothing. If ``u`` has
already interacted with ``e``'s item, ``e`` is not ranked. Then ``model.learn_one(e)``
runs and the item joins ``u``'s seen set. With one relevant item, ``recall@k`` is the hit
rate ``rank < k`` and ``ndcg@k = 1 / log2(rank + 2)`` for a hit, 0 otherwise.
``prequential_hit@k`` averages the hit over every ranked event of the stream; the
validation and test metrics average over the users' targets.

>>> from models.offline.data import Dataset, Interaction, Item
>>> from models.offline.base import ItemCatalog
>>> from models.offline.baselines import Pop
>>> items = {i: Item(i, i, i, (), {}, None) for i in "abc"}
>>> log = [Interaction("u1", i, ts, "click") for ts, i in enumerate("abc")]
>>> split = split_leave_one_out(Dataset("toy", items, log))
>>> [ev.item_id for ev in split.train], split.valid["u1"].item_id, split.test["u1"].item_id
(['a'], 'b', 'c')
>>> catalog = ItemCatalog(items)
>>> model = Pop(); model.fit(split.train, catalog)
>>> m = replay_evaluate(model, split, catalog, k=1, progress=False)
>>> m["valid_recall@1"], m["recall@1"], m["n_test"], m["n_prequential"]
(1.0, 1.0, 1, 3)
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from models.offline.base import ItemCatalog, Recommender
from models.offline.data import Dataset, Interaction

__all__ = [
    "PROTOCOL",
    "TARGET_TYPES",
    "Split",
    "TuneResult",
    "rank_of",
    "replay_evaluate",
    "split_leave_one_out",
    "tune",
]

#: Event types that can be prediction targets (``review`` events only add history).
TARGET_TYPES: frozenset[str] = frozenset({"click", "favorite", "rating"})

#: One-line description of the protocol, written into reports.
PROTOCOL = (
    "leave-one-out per user (last consumption event = test, second-last = validation), "
    "time-ordered replay of all events, full ranking over the catalogue, "
    "previously seen items excluded"
)


@dataclass
class Split:
    """A leave-one-out split of a time-ordered log.

    ``valid``/``test`` map a user to its target event; ``valid_pos``/``test_pos`` give
    that event's position in ``events`` (the full log, in time order).
    """

    train: list[Interaction] = field(repr=False)
    valid: dict[str, Interaction] = field(repr=False)
    test: dict[str, Interaction] = field(repr=False)
    events: list[Interaction] = field(repr=False)
    valid_pos: dict[str, int] = field(repr=False)
    test_pos: dict[str, int] = field(repr=False)

    def __repr__(self) -> str:
        return (
            f"Split(n_events={len(self.events)}, n_train={len(self.train)}, "
            f"n_valid={len(self.valid)}, n_test={len(self.test)})"
        )


def split_leave_one_out(ds: Dataset) -> Split:
    """Split ``ds`` per user: last target-type event = test, second-last = validation."""
    events = sorted(ds.interactions, key=lambda ev: ev.ts)  # stable: keeps the log order on ties
    eligible: dict[str, list[int]] = {}
    for pos, ev in enumerate(events):
        if ev.type in TARGET_TYPES:
            eligible.setdefault(ev.user_id, []).append(pos)
    valid_pos: dict[str, int] = {}
    test_pos: dict[str, int] = {}
    for user, positions in eligible.items():
        if len(positions) >= 3:
            valid_pos[user] = positions[-2]
            test_pos[user] = positions[-1]
    held_out = set(valid_pos.values()) | set(test_pos.values())
    train = [ev for pos, ev in enumerate(events) if pos not in held_out]
    return Split(
        train=train,
        valid={u: events[p] for u, p in valid_pos.items()},
        test={u: events[p] for u, p in test_pos.items()},
        events=events,
        valid_pos=valid_pos,
        test_pos=test_pos,
    )


def rank_of(scores: np.ndarray, target: int) -> int:
    """0-based rank of ``target``: items scored higher, plus equal-scored items with a
    lower index. A NaN target score ranks last.

    >>> rank_of(np.array([0.5, 0.9, 0.5, 0.1]), 2)
    2
    >>> rank_of(np.zeros(5), 0), rank_of(np.zeros(5), 4)
    (0, 4)
    """
    t = scores[target]
    if math.isnan(t):
        return len(scores) - 1
    return int(np.count_nonzero(scores > t)) + int(np.count_nonzero(scores[:target] == t))


def _plan(split: Split, measure: Collection[str], max_prequential_events: int | None,
          seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Which events get ranked: (role per event: 1 valid target, 2 test target, 0 neither;
    prequential flag per event)."""
    unknown = set(measure) - {"valid", "test", "prequential"}
    if unknown:
        raise ValueError(f"unknown measure(s): {sorted(unknown)}")
    events = split.events
    role = np.zeros(len(events), dtype=np.int8)
    if "valid" in measure:
        role[list(split.valid_pos.values())] = 1
    if "test" in measure:
        role[list(split.test_pos.values())] = 2
    preq = np.zeros(len(events), dtype=bool)
    if "prequential" in measure:
        eligible = np.fromiter((ev.type in TARGET_TYPES for ev in events), dtype=bool, count=len(events))
        if max_prequential_events is not None and eligible.sum() > max_prequential_events:
            rng = np.random.default_rng(seed)
            chosen = rng.choice(np.flatnonzero(eligible), size=max_prequential_events, replace=False)
            eligible[:] = False
            eligible[chosen] = True
        preq = eligible
    return role, preq


def _metrics(hits: dict[str, list], ndcgs: dict[str, list], k: int, skipped: int, seconds: float,
             skipped_test: int = 0, skipped_valid: int = 0) -> dict[str, Any]:
    def mean(xs: list) -> float:
        return float(np.mean(xs)) if xs else float("nan")

    return {
        f"recall@{k}": mean(hits["test"]),
        f"ndcg@{k}": mean(ndcgs["test"]),
        f"valid_recall@{k}": mean(hits["valid"]),
        f"valid_ndcg@{k}": mean(ndcgs["valid"]),
        f"prequential_hit@{k}": mean(hits["preq"]),
        "n_test": len(hits["test"]),
        "n_valid": len(hits["valid"]),
        "n_prequential": len(hits["preq"]),
        "n_skipped_seen": skipped,
        "n_test_skipped_seen": skipped_test,
        "n_valid_skipped_seen": skipped_valid,
        "eval_seconds": seconds,
    }


def replay_evaluate(
    model: Recommender,
    split: Split,
    catalog: ItemCatalog,
    k: int = 10,
    progress: bool = True,
    max_prequential_events: int | None = None,
    seed: int = 0,
    measure: Collection[str] = ("valid", "test", "prequential"),
) -> dict[str, Any]:
    """Replay ``split.events`` through a model fitted on ``split.train``; see the module doc.

    ``measure`` picks which metrics to compute (any of ``"valid"``, ``"test"``,
    ``"prequential"``); the replay stops after the last event that needs a score, so
    asking only for ``"valid"`` is cheaper (used for tuning). ``max_prequential_events``
    ranks only that many of the stream's target-type events for the prequential metric,
    drawn with ``seed``; targets are always ranked.

    Returns ``recall@k`` and ``ndcg@k`` (test), ``valid_recall@k``, ``valid_ndcg@k``,
    ``prequential_hit@k``, the counts ``n_test``, ``n_valid``, ``n_prequential``,
    ``n_skipped_seen`` (targets or stream events not ranked because already seen; of them
    ``n_test_skipped_seen`` / ``n_valid_skipped_seen`` test / validation targets) and
    ``eval_seconds``. A metric with nothing to average is NaN.
    """
    return replay_evaluate_shared([model], split, catalog, k, progress, max_prequential_events, seed, measure)[0]


def replay_evaluate_shared(
    models: Sequence[Recommender],
    split: Split,
    catalog: ItemCatalog,
    k: int = 10,
    progress: bool = True,
    max_prequential_events: int | None = None,
    seed: int = 0,
    measure: Collection[str] = ("valid", "test", "prequential"),
) -> list[dict[str, Any]]:
    """``replay_evaluate`` of each of ``models``, which share their user state: each event is
    learned once, by ``models[0]``, and every model scores the same targets from it (variants
    of one trained model that differ only in how they score). Each model's metrics are what its
    own replay gives; ``eval_seconds`` is the shared replay's."""
    events = split.events
    n_items = len(catalog)
    start_time = time.perf_counter()
    role, preq = _plan(split, measure, max_prequential_events, seed)
    needs_score = preq | (role > 0)
    last = int(np.flatnonzero(needs_score).max()) + 1 if needs_score.any() else 0

    seen: dict[str, set[int]] = {}  # per user, the rows consumed (memory by events, not users x items)
    hits = [{"valid": [], "test": [], "preq": []} for _ in models]
    ndcgs = [{"valid": [], "test": []} for _ in models]
    skipped = 0
    skipped_role = [0, 0, 0]  # by role: neither, valid, test
    checked_shape = False
    log2 = np.log2(np.arange(2, k + 2, dtype=np.float64))

    bar = tqdm(total=last, disable=not progress, desc=f"replay {'+'.join(m.name for m in models)}", mininterval=1.0,
               leave=False)
    for pos in range(last):
        ev = events[pos]
        j = catalog.get(ev.item_id)
        if j is None:
            continue
        had = seen.get(ev.user_id)
        if had is None:
            had = seen[ev.user_id] = set()
        if needs_score[pos]:
            if j in had:
                skipped += 1
                skipped_role[role[pos]] += 1
            else:
                mask = np.fromiter(had, np.intp, len(had))
                for model, h, g in zip(models, hits, ndcgs):
                    s = np.array(model.score(ev.user_id), dtype=np.float64)
                    if not checked_shape and s.shape != (n_items,):
                        raise ValueError(f"{model.name}.score returned shape {s.shape}, expected ({n_items},)")
                    s[mask] = -np.inf
                    rank = rank_of(s, j)
                    hit = rank < k
                    gain = 1.0 / log2[rank] if hit else 0.0
                    if preq[pos]:
                        h["preq"].append(hit)
                    r = role[pos]
                    if r == 1:
                        h["valid"].append(hit)
                        g["valid"].append(gain)
                    elif r == 2:
                        h["test"].append(hit)
                        g["test"].append(gain)
                checked_shape = True
        models[0].learn_one(ev)
        had.add(j)
        bar.update(1)
    bar.close()

    seconds = time.perf_counter() - start_time
    return [_metrics(h, g, k, skipped, seconds, skipped_test=skipped_role[2], skipped_valid=skipped_role[1])
            for h, g in zip(hits, ndcgs)]


@dataclass
class TuneResult:
    """Outcome of :func:`tune`: the best parameters and every grid point's metrics."""

    best_params: dict[str, Any]
    best_score: float
    results: list[tuple[dict[str, Any], dict[str, Any]]]


def tune(
    make_model: Callable[..., Recommender],
    grid: Mapping[str, Sequence[Any]],
    split: Split,
    catalog: ItemCatalog,
    metric: str = "valid_ndcg@10",
    k: int = 10,
    progress: bool = False,
) -> TuneResult:
    """Grid search on the validation targets only.

    Every combination of ``grid`` is built with ``make_model(**params)``, fitted on
    ``split.train`` and replayed up to the last validation target; the combination with
    the highest ``metric`` wins (the first one on ties).

    >>> from models.offline.data import Dataset, Interaction, Item
    >>> from models.offline.baselines import ItemKNN
    >>> items = {i: Item(i, i, i, (), {}, None) for i in "abcd"}
    >>> log = [Interaction(u, i, t, "click") for t, (u, i) in enumerate(
    ...     [(u, i) for u in ("u1", "u2", "u3") for i in "abc"])]
    >>> split = split_leave_one_out(Dataset("toy", items, log))
    >>> res = tune(ItemKNN, {"k": [1, 2], "shrink": [0.0]}, split, ItemCatalog(items))
    >>> res.best_params, len(res.results)
    ({'k': 1, 'shrink': 0.0}, 2)
    """
    names = list(grid)
    results: list[tuple[dict[str, Any], dict[str, Any]]] = []
    best_params: dict[str, Any] | None = None
    best_score = -math.inf
    for values in itertools.product(*(grid[n] for n in names)):
        params = dict(zip(names, values))
        model = make_model(**params)
        model.fit(split.train, catalog)
        metrics = replay_evaluate(model, split, catalog, k=k, progress=progress, measure=("valid",))
        results.append((params, metrics))
        score = metrics[metric]
        if best_params is None or (not math.isnan(score) and score > best_score):
            best_params, best_score = params, score
    if best_params is None:
        raise ValueError("empty grid")
    return TuneResult(best_params=best_params, best_score=best_score, results=results)
