"""What a replay measured: the result and its summary, which events have been answered
(coverage), and the live view of a few users' lists printed while it runs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

# -- results -------------------------------------------------------------------------------------

@dataclass
class ReplayResult:
    """What one replay measured. Times are wall-clock seconds (``time.time()``)."""

    events_produced: int = 0
    events_covered: int = 0  # produced events that a recommendation's events_applied counts
    recommendations: int = 0
    dead_letters: int = 0
    users: int = 0
    rate: float = 0.0  # requested events/s; 0 = as fast as possible
    first_produce: float = 0.0
    last_produce: float = 0.0
    last_recommendation: float = 0.0
    complete: bool = False  # every produced event was covered before the timeout
    latencies_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))  # one per covered event
    sent_s: np.ndarray = field(default_factory=lambda: np.zeros(0))  # each latency's produce time - first_produce
    regressions: int = 0  # recommendations whose events_applied went down for their user

    @property
    def produce_s(self) -> float:
        return max(0.0, self.last_produce - self.first_produce)

    @property
    def duration_s(self) -> float:
        """First produce -> last recommendation."""
        return max(0.0, self.last_recommendation - self.first_produce)

    @property
    def events_per_s(self) -> float:
        """Sustained throughput: covered events over first produce -> last recommendation."""
        return self.events_covered / self.duration_s if self.duration_s > 0 else 0.0

    def latency_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms.size else float("nan")

    def tail_windows(self, q: float = 99.0, width_s: float = 0.5, top: int = 5) -> list[list[float]]:
        """Where the slowest events were produced: the ``top`` windows of ``width_s`` seconds (by
        produce time after the first produce) holding the most events slower than the ``q``-th
        percentile, as [window start s, such events, their worst ms]. One window holding most of
        them is one stall; many small ones is a load that the worker only just keeps up with."""
        if not self.latencies_ms.size or self.sent_s.size != self.latencies_ms.size:
            return []
        slow = self.latencies_ms > np.percentile(self.latencies_ms, q)
        lat, bins = self.latencies_ms[slow], (self.sent_s[slow] // width_s).astype(np.int64)
        out = [[round(float(b * width_s), 1), int((bins == b).sum()), round(float(lat[bins == b].max()), 1)]
               for b in np.unique(bins)]
        return sorted(out, key=lambda w: -w[1])[:top]

    def summary(self) -> dict:
        """JSON-friendly numbers."""
        return {"events_produced": self.events_produced, "events_covered": self.events_covered,
                "recommendations": self.recommendations, "dead_letters": self.dead_letters,
                "users": self.users, "rate": self.rate, "complete": self.complete,
                "produce_s": round(self.produce_s, 3), "duration_s": round(self.duration_s, 3),
                "events_per_s": round(self.events_per_s, 1),
                **{f"latency_p{q}_ms": round(self.latency_ms(q), 1) for q in (50, 95, 99)},
                "latency_max_ms": round(float(self.latencies_ms.max()), 1) if self.latencies_ms.size else None,
                "latency_samples": int(self.latencies_ms.size), "regressions": self.regressions,
                "latency_tail_windows": self.tail_windows()}


def format_summary(r: ReplayResult) -> str:
    rows = [
        ("events produced", f"{r.events_produced}"
                            + (f" at {r.rate:g}/s" if r.rate else " as fast as possible")
                            + f" in {r.produce_s:.1f} s"),
        ("events applied", f"{r.events_covered} of {r.events_produced} (from each user's events_applied)"
                           + ("" if r.complete else " (stopped by the timeout)")),
        ("recommendations received", f"{r.recommendations} for {r.users} users"),
        ("dead letters seen", f"{r.dead_letters}"),
        ("sustained events/s", f"{r.events_per_s:.0f} (first produce -> last recommendation, {r.duration_s:.1f} s)"),
        ("latency p50 / p95 / p99", " / ".join(f"{r.latency_ms(q):.0f}" for q in (50, 95, 99))
                                    + f" ms per event ({r.latencies_ms.size} events: produced -> first"
                                    + " recommendation that counts it)"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(["== replay summary =="] + [f"{k:<{width}}  {v}" for k, v in rows])


# -- coverage: which events have been answered ---------------------------------------------------

class Coverage:
    """Which produced events the worker has applied, from the recommendations themselves.

    A user's events are applied in order, and every recommendation says how many of the user's
    events its state holds (``events_applied``). A message with ``events_applied = n`` therefore
    shows that the user's first n events were applied; the first such message is the moment
    each of those events took effect (its per-event latency). Nothing is assumed: an event no
    recommendation has counted is not covered, and a dead letter does not count as applied.

    >>> cov = Coverage([{"event_id": "a", "user_id": "u"}, {"event_id": "b", "user_id": "u"}])
    >>> cov.applied("u", 1), cov.applied("u", 1), cov.applied("u", 2), cov.complete
    (['a'], [], ['b'], True)
    """

    def __init__(self, events: Sequence[dict]):
        self.ids_of: dict[str, list[str]] = {}  # user -> event ids in send order
        for ev in events:
            self.ids_of.setdefault(ev["user_id"], []).append(ev["event_id"])
        self.total = len(events)
        self.done_upto: dict[str, int] = {}  # user -> events applied (a prefix of the user's events)
        self.covered = 0
        self.regressions = 0  # messages whose events_applied was below one seen before for the user

    def applied(self, user: str, n: int) -> list[str]:
        """A recommendation for ``user`` with ``events_applied = n``: the event ids it newly covers."""
        before = self.done_upto.get(user, 0)
        if n < before:
            self.regressions += 1
            return []
        n = min(n, len(self.ids_of.get(user, ())))
        if n <= before:
            return []
        self.done_upto[user] = n
        self.covered += n - before
        return self.ids_of[user][before:n]

    @property
    def complete(self) -> bool:
        return self.covered >= self.total


# -- live view -----------------------------------------------------------------------------------

class LiveView:
    """Prints the latest recommendations of a few users at a few points of the run."""

    def __init__(self, users: Sequence[str], titles: dict[str, str], items: int = 5,
                 milestones: Sequence[float] = (0.25, 0.5, 0.75), write: Callable[[str], None] | None = None):
        self.users = list(users)
        self.titles = titles
        self.items = items
        self.milestones = sorted(milestones)
        self.latest: dict[str, dict] = {}
        self.write = write or (lambda s: print(s, flush=True))

    def update(self, user: str, msg: dict) -> None:
        if user in self.users:
            self.latest[user] = msg

    def progress(self, fraction: float) -> None:
        """Print once per milestone passed (fraction of events answered)."""
        shown = False
        while self.milestones and fraction >= self.milestones[0]:
            passed = self.milestones.pop(0)
            if not shown:
                self.show(f"{passed:.0%} of the events answered")
                shown = True

    def show(self, when: str) -> None:
        if not self.latest:
            return
        lines = [f"-- live recommendations, {when} --"]
        for user in self.users:
            msg = self.latest.get(user)
            if msg is not None:
                lines.extend(self.render(user, msg))
        self.write("\n".join(lines))

    def render(self, user: str, msg: dict) -> list[str]:
        weights = " ".join(f"{k} {v:.2f}" for k, v in sorted(msg.get("dimension_weights", {}).items(),
                                                              key=lambda kv: -kv[1]))
        out = [f"user {user} after {msg.get('events_applied', '?')} events; dimension weights: {weights}"]
        for it in msg.get("items", [])[: self.items]:
            reasons = it.get("reasons") or {}
            top = max(reasons, key=reasons.get) if reasons else "-"
            title = self.titles.get(it["item_id"], it["item_id"])
            out.append(f"  {it['rank']:>2}. {title[:48]:<48} score {it['score']:+.4f}  top reason: {top}")
        return out


