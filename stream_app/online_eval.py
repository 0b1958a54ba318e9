"""Online evaluation: how good the lists a worker publishes are, measured on what users do next.

Every applied consumption event (``click``, ``favorite``, ``rating``: ``CONSUMPTION``, the types
the offline protocol ranks, ``models.offline.protocol.TARGET_TYPES``) is judged against the last
list this worker published for its user *before* the event's batch: a hit when the event's item
is in it, at rank r (1-based). ``hit@K`` is the share of judged events that are hits, ``MRR@K``
the mean of 1/r over judged events (0 for a miss); K is the list length (``STREAM_RECO_TOP_K``).
Each judged event counts for the model version that made the list judged, so after a swap the
old and the new model are compared on the same stream. A re-consumption of an item the user had
already engaged with is judged too (and is always a miss: lists never hold seen items).

Windows: the last 1,000 and the last 10,000 judged events (``WINDOWS``), by count, not time, so a
quiet period keeps the last figures instead of emptying the window; in each window hit@K and
MRR@K overall and per model version (``/stats`` ``online``, ``/overview``, ``/metrics``
``stream_reco_online_hit_rate{window,version}`` / ``stream_reco_online_mrr{window,version}``).
The sums are kept exactly (1/r as a whole number of 1/lcm(1..K), for K up to 20), so a window's
figures after any number of events equal a fresh count over its contents; a batch costs a few
array operations per window, not a step per event. Counters since start:
``stream_reco_online_judged_total{version,outcome=hit|miss}`` and
``stream_reco_online_reciprocal_rank_total{version}``.

Where the last lists live: in memory, in a map bounded to the ``capacity`` users with the most
recent lists (least recently published dropped first). After a restart, a rebalance that moves a
user here, or once a user has been dropped from the map, the user's next event is not judged
(no list known); neither is an event whose user was forgotten in the same batch. The same map
gives the live page its recently active users (``recent_users``).

>>> ev = OnlineEval(top_k=3, windows=(2, 4))
>>> ev.observe([], {"u": {"model_version": "A", "items": [{"item_id": "x"}, {"item_id": "y"}]}})
>>> ev.observe([("u", "y"), ("u", "z"), ("v", "x")], {})  # rank 2, a miss, no list for v
>>> w = ev.stats()["windows"]["4"]
>>> w["judged"], w["hit_rate"], w["mrr"], w["by_version"]["A"]["hits"]
(2, 0.5, 0.25, 1)
"""
from __future__ import annotations

import math
from collections import OrderedDict
from itertools import islice
from typing import Iterable, Mapping

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

CONSUMPTION = frozenset({"click", "favorite", "rating"})
WINDOWS = (1_000, 10_000)
CAPACITY = 50_000  # users whose last list is kept
EXACT_RANKS = 20  # 1/rank is kept exactly for ranks up to this (a longer list's deeper ranks: to 1/lcm(1..20))


class Window:
    """The last ``size`` judged events, each (version, rank; 0 for a miss), in a ring buffer, with
    the judged events, hits and reciprocal-rank sums per version, kept exactly: 1/rank in units of
    1/``unit`` (``unit`` a multiple of every rank that counts), so adding and evicting in any
    order leaves the sums a recount would give.

    >>> w = Window(2, unit=6)
    >>> w.add_many(["A", "A", "B"], [1, 0, 3])
    >>> w.figures()
    {'judged': 2, 'hits': 1, 'hit_rate': 0.5, 'mrr': 0.166667}
    >>> w.figures("A"), w.versions()
    ({'judged': 1, 'hits': 0, 'hit_rate': 0.0, 'mrr': 0.0}, ['A', 'B'])
    """

    def __init__(self, size: int, unit: int):
        self.size, self.unit = int(size), int(unit)
        self._version = np.zeros(self.size, dtype=np.int64)  # the ring: version id of each event
        self._rr = np.zeros(self.size, dtype=np.int64)  # and its 1/rank in units (0: a miss)
        self._start = self._count = 0
        self._ids: dict[str, int] = {}
        self._names: list[str] = []
        self._sums = np.zeros((3, 0), dtype=np.int64)  # judged, hits, rr units; per version id

    def _id(self, version: str) -> int:
        i = self._ids.get(version)
        if i is None:
            i = self._ids[version] = len(self._names)
            self._names.append(version)
            self._sums = np.concatenate([self._sums, np.zeros((3, 1), dtype=np.int64)], axis=1)
        return i

    def _move(self, ids: np.ndarray, rr: np.ndarray, sign: int) -> None:
        np.add.at(self._sums[0], ids, sign)
        np.add.at(self._sums[1], ids, sign * (rr > 0))
        np.add.at(self._sums[2], ids, sign * rr)

    def add(self, version: str, rank: int) -> None:
        self.add_many([version], [rank])

    def add_many(self, versions: list[str], ranks: list[int]) -> None:
        """Judged events in order: ``versions[i]`` made the list, ``ranks[i]`` (0: a miss)."""
        if not ranks:
            return
        names = {v: self._id(v) for v in set(versions)}
        ids = np.fromiter((names[v] for v in versions), dtype=np.int64, count=len(versions))[-self.size:]
        r = np.asarray(ranks, dtype=np.int64)[-self.size:]
        rr = np.where(r > 0, self.unit // np.maximum(r, 1), 0)
        m = len(rr)
        drop = max(0, self._count + m - self.size)
        if drop:
            at = (self._start + np.arange(drop)) % self.size
            self._move(self._version[at], self._rr[at], -1)
            self._start, self._count = (self._start + drop) % self.size, self._count - drop
        at = (self._start + self._count + np.arange(m)) % self.size
        self._version[at], self._rr[at] = ids, rr
        self._count += m
        self._move(ids, rr, +1)

    def versions(self) -> list[str]:
        """The versions with events in the window."""
        return sorted(self._names[i] for i in np.flatnonzero(self._sums[0]).tolist())

    def figures(self, version: str | None = None) -> dict:
        """judged, hits, hit@K and MRR@K of the window, or of its events of ``version``."""
        if version is None:
            judged, hits, rr = (int(x) for x in self._sums.sum(axis=1))
        elif version in self._ids:
            judged, hits, rr = (int(x) for x in self._sums[:, self._ids[version]])
        else:
            judged = hits = rr = 0
        return {"judged": judged, "hits": hits, "hit_rate": round(hits / judged, 6) if judged else 0.0,
                "mrr": round(rr / self.unit / judged, 6) if judged else 0.0}


class OnlineEval:
    """The last published list per user, and the windows of judged events (module doc).
    Used on the event loop only."""

    def __init__(self, top_k: int = 10, windows: Iterable[int] = WINDOWS, capacity: int = CAPACITY,
                 registry: CollectorRegistry | None = None):
        self.top_k, self.capacity = int(top_k), int(capacity)
        unit = math.lcm(*range(1, min(self.top_k, EXACT_RANKS) + 1))
        self.windows = {int(n): Window(n, unit) for n in windows}
        self.lists: OrderedDict[str, tuple[str, list[str]]] = OrderedDict()  # user -> (version, item ids)
        self.judged = self.hits = 0
        self._shown: set[tuple[str, str]] = set()  # (window, version) labels on the gauges
        r = registry if registry is not None else CollectorRegistry()
        self.m_judged = Counter("stream_reco_online_judged_total", "Consumption events judged against the "
                                "user's last published list, by the list's model version.", ["version", "outcome"],
                                registry=r)
        self.m_rr = Counter("stream_reco_online_reciprocal_rank_total", "Sum of 1/rank of the judged events' "
                            "items in the lists (0 for a miss), by model version.", ["version"], registry=r)
        self.m_hit = Gauge("stream_reco_online_hit_rate", "hit@K over the last `window` judged events.",
                           ["window", "version"], registry=r)
        self.m_mrr = Gauge("stream_reco_online_mrr", "MRR@K over the last `window` judged events.",
                           ["window", "version"], registry=r)

    def observe(self, consumed: Iterable[tuple[str, str]], messages: Mapping[str, dict],
                forgotten: Iterable[str] = ()) -> None:
        """One batch: ``consumed``, its applied consumption events as (user, item) in order, judged
        against the lists before the batch (a user forgotten in it: not judged); then
        ``messages`` (user -> the ``recommendation/v1`` just published) become the users' lists."""
        gone = set(forgotten)
        lists = self.lists
        versions, ranks = [], []
        for user, item in consumed:
            known = lists.get(user)
            if known is None or user in gone:
                continue
            ids = known[1]
            versions.append(known[0])
            ranks.append(ids.index(item) + 1 if item in ids else 0)
        for user in gone:
            lists.pop(user, None)
        k = self.top_k
        for user, msg in messages.items():
            lists[user] = (msg["model_version"], [i["item_id"] for i in msg["items"][:k]])
            lists.move_to_end(user)
        while len(lists) > self.capacity:
            lists.popitem(last=False)
        if ranks:
            self._count(versions, ranks)

    def _count(self, versions: list[str], ranks: list[int]) -> None:
        for w in self.windows.values():
            w.add_many(versions, ranks)
        tally: dict[str, list] = {}
        for version, rank in zip(versions, ranks):
            t = tally.get(version)
            if t is None:
                t = tally[version] = [0, 0, 0.0]
            t[0] += 1
            if rank:
                t[1] += 1
                t[2] += 1.0 / rank
        for version, (n, hits, rr) in tally.items():
            self.judged += n
            self.hits += hits
            self.m_judged.labels(version=version, outcome="hit").inc(hits)
            self.m_judged.labels(version=version, outcome="miss").inc(n - hits)
            self.m_rr.labels(version=version).inc(rr)
        self._gauges()

    def _gauges(self) -> None:
        shown = set()
        for n, w in self.windows.items():
            for version in (None, *w.versions()):
                f = w.figures(version)
                labels = (str(n), version or "all")
                self.m_hit.labels(*labels).set(f["hit_rate"])
                self.m_mrr.labels(*labels).set(f["mrr"])
                shown.add(labels)
        for labels in self._shown - shown:  # versions that left every window
            self.m_hit.remove(*labels)
            self.m_mrr.remove(*labels)
        self._shown = shown

    def recent_users(self, n: int = 20) -> list[str]:
        """The ``n`` users with the most recent lists, newest first."""
        return list(islice(reversed(self.lists), n))

    def overview(self) -> dict:
        """``/overview`` ``online``, for the live page: the smallest window's figures, overall and
        per model version."""
        n = min(self.windows)
        w = self.windows[n]
        return {"k": self.top_k, "window": n, **w.figures(), "by_version": {v: w.figures(v) for v in w.versions()}}

    def stats(self) -> dict:
        """``/stats`` ``online``: the windows' figures, overall and per model version."""
        return {"k": self.top_k, "judged": self.judged, "hits": self.hits, "users_with_list": len(self.lists),
                "windows": {str(n): {**w.figures(), "by_version": {v: w.figures(v) for v in w.versions()}}
                            for n, w in self.windows.items()}}
