"""The exactly-once verdict: ``Ledger`` (what was sent) against the recommendations read back
(lost / doubled per user, ``events_applied`` going backwards, seen items recommended), with
readable failure text."""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable

import orjson

from tests.support.reliability.clients import Delivery, TopicReader, by_key


# -- the exactly-once ledger and verdict ---------------------------------------------------------
class Ledger:
    """What was sent: per user, the distinct event ids in send order and the item of each."""

    def __init__(self):
        self.events: dict[str, dict[str, str]] = defaultdict(dict)
        self.where: dict[str, list[Delivery]] = defaultdict(list)  # event_id -> where its copies landed
        self.sent = 0
        self._lock = threading.Lock()

    def record(self, ev: dict, delivery: Delivery | None = None) -> None:
        with self._lock:
            self.sent += 1
            self.events[ev["user_id"]].setdefault(ev["event_id"], ev["item_id"])
            if delivery is not None:
                self.where[ev["event_id"]].append(delivery)

    def position(self, event_id: str) -> str:
        return ",".join(f"{d.partition}@{d.offset}" for d in self.where.get(event_id, [])) or "?"

    def expected(self) -> dict[str, int]:
        return {u: len(evs) for u, evs in self.events.items()}

    def items(self, user: str, first: int | None = None) -> set[str]:
        return set(list(self.events[user].values())[:first])


@dataclass
class Verdict:
    lost: dict[str, int] = field(default_factory=dict)  # user -> events never applied
    doubled: dict[str, int] = field(default_factory=dict)  # user -> events applied more than once
    backwards: dict[str, list] = field(default_factory=dict)  # user -> (earlier, later) events_applied
    seen: dict[str, list] = field(default_factory=dict)  # user -> seen items that were recommended
    missing: list[str] = field(default_factory=list)  # examples: event ids never listed in based_on_event_ids
    forgotten: list[str] = field(default_factory=list)  # lost users whose every event id was listed once
    extra: list[str] = field(default_factory=list)  # free-form problems

    @property
    def ok(self) -> bool:
        return not (self.lost or self.doubled or self.backwards or self.seen or self.extra)

    def explain(self, limit: int = 12) -> str:
        def some(d):
            items = sorted(d.items())
            return ", ".join(f"{k}: {v}" for k, v in items[:limit]) + (" ..." if len(items) > limit else "")

        parts = []
        if self.lost:
            parts.append(f"LOST {sum(self.lost.values())} events of {len(self.lost)} users ({some(self.lost)})")
            if self.missing:
                parts.append(f"  e.g. never in any list's based_on_event_ids: {', '.join(self.missing[:6])}")
            if self.forgotten:
                parts.append(f"  {len(self.forgotten)} of these users had EVERY event id listed in some list's "
                             f"based_on_event_ids: applied, then the state holding them was lost (e.g. a "
                             f"changelog write not flushed before the partition moved): {', '.join(self.forgotten[:6])}")
        if self.doubled:
            parts.append(f"DOUBLED {sum(self.doubled.values())} events of {len(self.doubled)} users "
                         f"({some(self.doubled)})")
        if self.backwards:
            parts.append(f"events_applied went BACKWARDS for {len(self.backwards)} users ({some(self.backwards)})")
        if self.seen:
            parts.append(f"already-seen items RECOMMENDED to {len(self.seen)} users ({some(self.seen)})")
        parts += self.extra
        return "\n".join(parts) or "ok"


def check_recommendations(ledger: Ledger, recs: dict[str | None, list], seen_prefix: bool = True,
                          users: Iterable[str] | None = None) -> Verdict:
    """The contract on the recommendations of ``users`` (default: every user in the ledger): the
    LAST message has ``events_applied`` == distinct event ids sent; ``events_applied`` never goes
    backwards (a tombstone resets it); no recommended item was interacted with. ``seen_prefix``:
    also check every intermediate list against the user's first ``events_applied`` events (only
    valid when a user's events are applied in send order). Users who lost events are reported as
    such and not checked for seen items (their state lacks the lost events' items)."""
    v = Verdict()
    for user in sorted(users if users is not None else ledger.events):
        want = len(ledger.events[user])
        msgs = recs.get(user, [])
        if not msgs or msgs[-1] is None:
            v.lost[user] = want
            continue
        got = msgs[-1]["events_applied"]
        if got < want:
            v.lost[user] = want - got
            claimed = {i for m in msgs if m for i in m.get("based_on_event_ids", [])}
            never = [f"{e} (sent to {ledger.position(e)})" for e in ledger.events[user] if e not in claimed]
            v.missing += never[:2]
            if not never:
                v.forgotten.append(user)
        elif got > want:
            v.doubled[user] = got - want
        prev = None
        for m in msgs:
            if m is None:
                prev = None
                continue
            n = m["events_applied"]
            if prev is not None and n < prev:
                v.backwards.setdefault(user, []).append(f"{prev}->{n} at {m.get('_at')}")
            prev = n
            if user in v.lost:
                continue
            forbidden = ledger.items(user, n) if seen_prefix and n <= want else (
                ledger.items(user) if m is msgs[-1] else set())
            bad = sorted({i["item_id"] for i in m["items"]} & forbidden)
            if bad:
                v.seen.setdefault(user, []).append((n, bad))
    return v


def latest_counts(recs: dict[str | None, list]) -> dict[str, int]:
    return {u: (ms[-1] or {}).get("events_applied", 0) for u, ms in recs.items() if u is not None and ms}


def wait_for_counts(reader: TopicReader, ledger: Ledger, timeout: float = 90.0, stall: float = 25.0,
                    settle: float = 2.0, give_up: Callable[[], bool] | None = None) -> dict[str | None, list]:
    """Read recommendations until every ledger user's latest ``events_applied`` reaches its count
    (or nothing new arrived for ``stall`` s, or ``timeout``), then ``settle`` s more for late
    re-sends; returns ``by_key`` of everything read."""
    want = ledger.expected()
    latest: dict[str, int] = {}
    folded = [0]

    def done(msgs):  # incremental: a consumer returns each partition in order
        for m in msgs[folded[0]:]:
            latest[m.key] = 0 if m.value is None else orjson.loads(m.value)["events_applied"]
        folded[0] = len(msgs)
        return all(latest.get(u, 0) >= n for u, n in want.items())

    if not reader.until(done, timeout, stall, give_up):
        settle = 0.0
    end = time.monotonic() + settle
    while time.monotonic() < end:
        reader.poll(0.2)
    return by_key(reader.messages)
