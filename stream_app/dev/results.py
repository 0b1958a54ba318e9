"""What a replay measured: the result and its summary, which events have been answered
(coverage), and the live view of a few users' lists printed while it runs."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

# -- results -------------------------------------------------------------------------------------

@dataclass
class ReplayResult:
    """What one replay measured. Times are wall-clock seconds (``time.time()``)."""

    events_produced: int = 0
    events_covered: int = 0  # produced events reflected by a recommendation (or dead-lettered)
    recommendations: int = 0
    dead_letters: int = 0
    users: int = 0
    rate: float = 0.0  # requested events/s; 0 = as fast as possible
    first_produce: float = 0.0
    last_produce: float = 0.0
    last_recommendation: float = 0.0
    complete: bool = False  # every produced event was covered before the timeout
    latencies_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))

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

    def summary(self) -> dict:
        """JSON-friendly numbers."""
        return {"events_produced": self.events_produced, "events_covered": self.events_covered,
                "recommendations": self.recommendations, "dead_letters": self.dead_letters,
                "users": self.users, "rate": self.rate, "complete": self.complete,
                "produce_s": round(self.produce_s, 3), "duration_s": round(self.duration_s, 3),
                "events_per_s": round(self.events_per_s, 1),
                **{f"latency_p{q}_ms": round(self.latency_ms(q), 1) for q in (50, 95, 99)},
                "latency_max_ms": round(float(self.latencies_ms.max()), 1) if self.latencies_ms.size else None}


def format_summary(r: ReplayResult) -> str:
    rows = [
        ("events produced", f"{r.events_produced}"
                            + (f" at {r.rate:g}/s" if r.rate else " as fast as possible")
                            + f" in {r.produce_s:.1f} s"),
        ("events recommended on", f"{r.events_covered} of {r.events_produced}"
                                  + ("" if r.complete else " (stopped by the timeout)")),
        ("recommendations received", f"{r.recommendations} for {r.users} users"),
        ("dead letters seen", f"{r.dead_letters}"),
        ("sustained events/s", f"{r.events_per_s:.0f} (first produce -> last recommendation, {r.duration_s:.1f} s)"),
        ("latency p50 / p95 / p99", " / ".join(f"{r.latency_ms(q):.0f}" for q in (50, 95, 99))
                                    + " ms (event produced -> recommendation received)"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(["== replay summary =="] + [f"{k:<{width}}  {v}" for k, v in rows])


# -- coverage: which events have been answered ---------------------------------------------------

class Coverage:
    """Tracks which produced events some recommendation reflects.

    A recommendation lists at most the newest 50 event ids of its micro-batch, but a user's events
    are applied in order, so it also reflects every earlier event of that user. An event that was
    dead-lettered counts as answered too (no recommendation will ever name it)."""

    def __init__(self, events: Sequence[dict]):
        self.where: dict[str, tuple[str, int]] = {}  # event_id -> (user, position among the user's events)
        self.per_user: Counter[str] = Counter()
        for ev in events:
            u = ev["user_id"]
            self.where[ev["event_id"]] = (u, self.per_user[u])
            self.per_user[u] += 1
        self.total = len(events)
        self.done_upto: dict[str, int] = {}  # user -> events answered (a prefix of the user's events)
        self.covered = 0

    def answer(self, event_ids: Sequence[str]) -> None:
        for eid in event_ids:
            pos = self.where.get(eid)
            if pos is None:
                continue
            user, seq = pos
            before = self.done_upto.get(user, 0)
            if seq + 1 > before:
                self.done_upto[user] = seq + 1
                self.covered += seq + 1 - before

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


