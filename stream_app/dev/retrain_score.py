"""The pure parts of ``stream_app.dev.retrain_bench``: where the time cuts fall, the online hit@K
recomputed from the recommendations topic alone, and the exactly-once count of events.

The hit@K here is computed the way the worker's ``stream_app.online_eval`` defines it, but from
what a separate consumer of ``recommendations`` reads: each ``recommendation/v1`` names the count
of the user's events it reflects (``events_applied``), so the user's i-th event (in the order sent,
one partition per user) was applied in the batch of the first list whose count reaches i, and is
judged against the list published before that one (none: the user's first batch, not judged).

>>> lists = [Published(2, "A", ["x", "y"], ["e1", "e2"]), Published(3, "B", ["z", "x"], ["e3"])]
>>> sent = [("e1", "x", "rating"), ("e2", "q", "rating"), ("e3", "y", "rating")]
>>> [(j.event_id, j.version, j.rank) for j in judge_user(sent, lists, k=10)]
[('e3', 'A', 2)]
"""
from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from typing import Iterable, NamedTuple, Sequence

CONSUMPTION = frozenset({"click", "favorite", "rating"})  # as stream_app.online_eval judges
NAMED_MAX = 50  # a list names the newest this many events of its batch (stream_app.processor)


class Published(NamedTuple):
    """One list as read from the recommendations topic."""

    events_applied: int
    version: str
    items: list[str]
    based_on: list[str]


class Judged(NamedTuple):
    event_id: str
    version: str  # the model version that made the list judged
    rank: int  # 1-based rank of the event's item in that list; 0: a miss


def time_cuts(n: int, fractions: Sequence[float]) -> list[int]:
    """The index of each cut in ``n`` events sorted by time: events [0, cut) come before it.

    >>> time_cuts(1000, (0.6, 0.7, 0.8, 0.9))
    [600, 700, 800, 900]
    >>> time_cuts(7, (0.5,))
    [4]
    """
    if any(not 0.0 < f < 1.0 for f in fractions) or list(fractions) != sorted(fractions):
        raise ValueError(f"cuts must rise within (0, 1): {fractions}")
    return [min(n, max(0, int(round(n * f)))) for f in fractions]


def judge_user(sent: Sequence[tuple[str, str, str]], lists: Sequence[Published], k: int) -> list[Judged]:
    """The judged events of one user: ``sent`` is (event_id, item_id, type) in the order sent,
    ``lists`` the user's lists in the order published. Events not yet applied are not judged."""
    counts = [p.events_applied for p in lists]
    out = []
    for i, (event_id, item, kind) in enumerate(sent, start=1):
        j = bisect_left(counts, i)  # the batch that applied it
        if j >= len(lists) or j == 0 or kind not in CONSUMPTION:
            continue
        before = lists[j - 1].items[:k]
        out.append(Judged(event_id, lists[j - 1].version, before.index(item) + 1 if item in before else 0))
    return out


def judge_all(events: Sequence[dict], lists: dict[str, list[Published]], k: int) -> dict[str, Judged]:
    """Every judged event of a line, by event id (``events``: the messages sent, in order)."""
    by_user: dict[str, list[tuple[str, str, str]]] = {}
    for ev in events:
        by_user.setdefault(ev["user_id"], []).append((ev["event_id"], ev["item_id"], ev["type"]))
    out: dict[str, Judged] = {}
    for user, sent in by_user.items():
        for j in judge_user(sent, lists.get(user, []), k):
            out[j.event_id] = j
    return out


def hit_rates(judged: Iterable[Judged]) -> dict:
    """judged, hits, hit@K and MRR@K overall and per model version."""
    tally: dict[str, list] = {}
    for j in judged:
        for key in ("all", j.version):
            t = tally.setdefault(key, [0, 0, 0.0])
            t[0] += 1
            t[1] += j.rank > 0
            t[2] += 1.0 / j.rank if j.rank else 0.0
    return {v: {"judged": n, "hits": h, "hit_rate": h / n if n else 0.0, "mrr": rr / n if n else 0.0}
            for v, (n, h, rr) in tally.items()}


def exactly_once(events: Sequence[dict], lists: dict[str, list[Published]], named_max: int = NAMED_MAX) -> dict:
    """Per user, from the lists alone: ``lost`` / ``doubled``: events sent and never counted /
    counted beyond those sent (the last ``events_applied`` against the distinct events sent);
    ``named_twice``: event ids named by more than one list (the extra times); ``misnamed``: ids a
    list names that are not the newest ``named_max`` events of its batch, or batch events it
    leaves out (both sides counted); ``regressions``: lists whose ``events_applied`` did not rise."""
    sent: dict[str, dict[str, None]] = {}
    for ev in events:
        sent.setdefault(ev["user_id"], {})[ev["event_id"]] = None
    lost = doubled = twice = misnamed = regressions = 0
    wrong_count = 0
    for user, ids in sent.items():
        order, got = list(ids), lists.get(user, [])
        named = Counter(i for p in got for i in p.based_on)
        twice += sum(c - 1 for c in named.values() if c > 1)
        prev = 0
        for p in got:
            regressions += p.events_applied <= prev
            expected = set(order[prev:p.events_applied][-named_max:])
            misnamed += len(expected.symmetric_difference(p.based_on))
            prev = max(prev, p.events_applied)
        last = got[-1].events_applied if got else 0
        lost += max(0, len(order) - last)
        doubled += max(0, last - len(order))
        wrong_count += last != len(order)
    return {"users": len(sent), "events": sum(len(c) for c in sent.values()), "lost": lost, "doubled": doubled,
            "named_twice": twice, "misnamed": misnamed, "regressions": regressions,
            "users_with_wrong_count": wrong_count}


def counter_delta(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict[str, dict]:
    """The worker's own ``stream_reco_online_judged_total`` between two reads of ``/metrics``
    (version -> outcome -> count), as judged / hits / hit@K per version and overall."""
    out: dict[str, dict] = {}
    for version in after:
        got = {o: after[version].get(o, 0.0) - before.get(version, {}).get(o, 0.0) for o in ("hit", "miss")}
        n = int(got["hit"] + got["miss"])
        if n:
            out[version] = {"judged": n, "hits": int(got["hit"]), "hit_rate": got["hit"] / n}
    n, h = sum(v["judged"] for v in out.values()), sum(v["hits"] for v in out.values())
    out["all"] = {"judged": n, "hits": h, "hit_rate": h / n if n else 0.0}
    return out


def parse_judged_counters(metrics_text: str) -> dict[str, dict[str, float]]:
    """version -> outcome -> count from ``stream_reco_online_judged_total`` lines of /metrics.

    >>> parse_judged_counters('stream_reco_online_judged_total{version="A",outcome="hit"} 3.0\\n')
    {'A': {'hit': 3.0}}
    """
    out: dict[str, dict[str, float]] = {}
    for line in metrics_text.splitlines():
        if not line.startswith("stream_reco_online_judged_total{"):
            continue
        labels, value = line[line.index("{") + 1:].rsplit("}", 1)
        pairs = dict(p.split("=", 1) for p in labels.split(","))
        version, outcome = pairs["version"].strip('"'), pairs["outcome"].strip('"')
        out.setdefault(version, {})[outcome] = float(value)
    return out
