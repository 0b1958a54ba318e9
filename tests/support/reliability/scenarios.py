"""The reliability scenarios against a real broker and real worker processes: duplicates, forget,
keys and partitioners, rebalances under load (the fuzz one is in ``fuzzing``). Each returns an
``Outcome``; the tests assert ``outcome.ok``, the runner (``python -m tests.support.reliability``)
tabulates them."""
from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict

import orjson

from tests.support.reliability.clients import (Producer, TopicReader, by_key, committed_offsets,
                                               crc32_partition, fold_table, murmur2_partition, produce_all)
from tests.support.reliability.ledger import Ledger, Verdict, check_recommendations, latest_counts, wait_for_counts
from tests.support.reliability.outcome import (ITEM_IDS, REVIEWS, Outcome, all_exited, count_dead_letters, ev,
                                               expect_no_dead_letters, expect_running, start_pair, start_worker,
                                               stop_all)


def scenario_duplicates(bootstrap: str, worker) -> Outcome:
    """The same event_id sent again is applied once: in the same micro-batch, in a later one, and
    when the copy comes back around through re-routing (null key, wrong key, other partition)."""
    o, t0, since = Outcome("duplicate event ids"), time.monotonic(), int(time.time() * 1000)
    topic, ledger, tag = worker.topic("interactions"), Ledger(), uuid.uuid4().hex[:6]
    ua, ub = f"dup-a-{tag}", f"dup-b-{tag}"
    a = [ev(f"{ua}-{i}", ua, ITEM_IDS[i], 1000 + i, "rating" if i % 2 else "click") for i in range(3)]
    b = ev(f"{ub}-0", ub, ITEM_IDS[7], 1000, "favorite")

    def send(pairs, partitioner="murmur2_random"):
        for _, e in pairs:
            ledger.record(e)
        o.sent += len(pairs)
        produce_all(bootstrap, topic, [(k, orjson.dumps(e)) for k, e in pairs], partitioner)

    keyed = lambda e: (e["user_id"].encode(), e)  # noqa: E731
    reader = TopicReader(bootstrap, worker.topic("recommendations"))
    try:
        send([keyed(a[0]), keyed(a[1]), keyed(a[0]), keyed(b), keyed(a[2]), keyed(a[1]), keyed(b), keyed(b)])
        wait_for_counts(reader, ledger, timeout=60, stall=30, give_up=all_exited(worker))
        send([keyed(a[0]), keyed(a[2]), (None, a[1]), (b"someone-else", a[0]), (None, b)])
        send([keyed(b), keyed(a[2])], partitioner="consistent_random")
        time.sleep(2)  # re-routed copies are back on the user's partition before the next event
        send([keyed(ev(f"{ua}-3", ua, ITEM_IDS[3], 2000)), keyed(ev(f"{ub}-1", ub, ITEM_IDS[8], 2000))])
        o.add(check_recommendations(ledger, wait_for_counts(reader, ledger, timeout=60, stall=30, settle=2,
                                                                    give_up=all_exited(worker)),
                                    seen_prefix=False))
    finally:
        reader.close()
    expect_no_dead_letters(o, bootstrap, worker, since)
    expect_running(o, worker)
    o.seconds = time.monotonic() - t0
    return o


def forget_message(user: str, event_id: str, ts: int = 123) -> dict:
    return {"schema": "forget/v1", "type": "forget", "event_id": event_id, "user_id": user, "ts": ts}


def _forgotten_record(value: bytes | None) -> bool:
    """A user-state changelog value that is what a forget leaves (``UserState.forget``): no
    interest, no items, no count."""
    from models.state import UserState

    if value is None:
        return False
    st = UserState.from_bytes(value)
    return st.forgotten and not st.mean and not st.seen.recent and st.last_ts == -1


def scenario_forget(bootstrap: str, worker) -> Outcome:
    """A forget message: tombstone on recommendations, the forgotten record (no interest, no items,
    no count: only offsets and event-id hashes) last in the user-state changelog, a retry of an
    event from before the forget is not applied again, and the next event starts the user from
    events_applied == 1 (another user is untouched)."""
    o, t0, since = Outcome("forget"), time.monotonic(), int(time.time() * 1000)
    topic, tag = worker.topic("interactions"), uuid.uuid4().hex[:6]
    gone, kept = f"forget-{tag}", f"keep-{tag}"
    ledger = Ledger()
    first = [ev(f"{u}-{i}", u, ITEM_IDS[10 + i], 1000 + i, "rating") for u in (gone, kept) for i in range(3)]
    for e in first:
        ledger.record(e)
    recs = TopicReader(bootstrap, worker.topic("recommendations"))
    changelog = TopicReader(bootstrap, f"{worker.settings.app_id}-user-state-changelog")
    try:
        produce_all(bootstrap, topic, [(e["user_id"].encode(), orjson.dumps(e)) for e in first])
        o.add(check_recommendations(ledger, wait_for_counts(recs, ledger, timeout=60,
                                                                    give_up=all_exited(worker))), "before forget: ")
        [d] = produce_all(bootstrap, topic, [(gone.encode(), orjson.dumps(forget_message(gone, f"{gone}-forget")))])
        if not recs.until(lambda ms: by_key(ms).get(gone, [{}])[-1] is None, timeout=30,
                          give_up=all_exited(worker)):
            o.problems.append(f"no TOMBSTONE for {gone} on recommendations after its forget message "
                              f"(last: {str(by_key(recs.messages).get(gone, [None])[-1])[:200]})")
        if not changelog.until(lambda ms: _forgotten_record(fold_table(ms).get(gone)), timeout=30,
                               give_up=all_exited(worker)):
            table = fold_table(changelog.to_end())
            now = "<absent>" if gone not in table else f"{len(table[gone] or b'')} bytes"
            o.problems.append(f"user-state changelog {changelog.topic}: {gone!r} maps to {now} "
                              f"(expected the forgotten record); {kept!r} present: {table.get(kept) is not None}")
        retry = [first[0]]  # an event of the forgotten user's old life, sent again (same event id)
        after = [ev(f"{u}-after", u, ITEM_IDS[20], 5000, "click") for u in (gone, kept)]
        produce_all(bootstrap, topic, [(e["user_id"].encode(), orjson.dumps(e)) for e in retry + after])
        o.sent = len(first) + 1 + len(retry) + len(after)
        want = {gone: 1, kept: 4}
        recs.until(lambda ms: all(latest_counts(by_key(ms)).get(u, 0) >= n and
                                  f"{u}-after" in (by_key(ms)[u][-1] or {}).get("based_on_event_ids", [])
                                  for u, n in want.items()), timeout=30, give_up=all_exited(worker))
        got = {u: latest_counts(by_key(recs.messages)).get(u) for u in want}
        if got != want:
            o.problems.append(f"after forget, events_applied is {got}, expected {want} ({gone} must start "
                              f"again from 1, its old event not re-applied; {kept} must keep counting)")
            o.lost += max(0, want[kept] - (got[kept] or 0))  # the forgotten user's count is in the text
            o.doubled += max(0, (got[kept] or 0) - want[kept])
        dls = count_dead_letters(bootstrap, worker, since)
        o.dead_lettered = len(dls)
        for x in dls:
            which = "the forget message" if (x.get("partition"), x.get("offset")) == (d.partition, d.offset) \
                else f"valid event at {x.get('partition')}@{x.get('offset')}"
            o.problems.append(f"{which} was DEAD-LETTERED: {x.get('error_type')}: {str(x.get('error'))[:200]}")
    finally:
        recs.close()
        changelog.close()
    expect_running(o, worker)
    o.seconds = time.monotonic() - t0
    return o


# -- keys and partitioners -------------------------------------------------------------------------
ROUTES = ("null_key", "wrong_key", "crc32", "murmur2", "mixed")


def _route_users(route: str, tag: str, n: int) -> list[str]:
    """User ids whose CRC32 partition differs from their murmur2 partition (so a CRC32-partitioned
    event really lands where the worker's table does not expect that user)."""
    out, i = [], 0
    while len(out) < n:
        u = f"key-{route}-{tag}-{i}"
        if crc32_partition(u.encode()) != murmur2_partition(u.encode()):
            out.append(u)
        i += 1
    return out


def _send_routed(o: Outcome, bootstrap: str, topic: str, plan: list[tuple[str, dict]]) -> list[tuple]:
    producers = {"murmur2_random": Producer(bootstrap, "murmur2_random"),
                 "consistent_random": Producer(bootstrap, "consistent_random")}  # librdkafka's default
    out = []
    for route, e in plan:
        u = e["user_id"].encode()
        key, part = {"null_key": (None, "murmur2_random"), "wrong_key": (b"not-" + u, "murmur2_random"),
                     "crc32": (u, "consistent_random"), "murmur2": (u, "murmur2_random")}[route]
        out.append((route, e, producers[part].send(topic, key, orjson.dumps(e))))
    for p in producers.values():
        p.flush()
    o.sent += len(plan)
    return out


def scenario_keys(bootstrap: str, factory, per_route: int = 4, events: int = 6) -> Outcome:
    """Events with a null key, a key that is not their user_id, keyed by user_id but placed by
    librdkafka's CRC32 partitioner or by Java's murmur2, and users mixing all four: each event is
    applied exactly once, before and after a restart (the state must not split over partitions)."""
    o, t0, since = Outcome("keys and partitioners"), time.monotonic(), int(time.time() * 1000)
    tag = uuid.uuid4().hex[:6]
    users = {r: _route_users(r, tag, 2 * per_route if r == "mixed" else per_route) for r in ROUTES}
    plan, ledger = [], Ledger()
    for i in range(events):
        for r, us in users.items():
            for j, u in enumerate(us):
                e = ev(f"{u}-{i}", u, ITEM_IDS[(7 * j + i) % len(ITEM_IDS)], 1000 + i, "rating" if i % 3 else "click")
                ledger.record(e)
                plan.append((ROUTES[(i + j) % 4] if r == "mixed" else r, e))
    w = start_worker(factory, bootstrap)
    workers = [w]
    recs = TopicReader(bootstrap, w.topic("recommendations"))
    try:
        placed = {"crc32": crc32_partition, "murmur2": murmur2_partition}
        off = [(r, e["user_id"], d.partition) for r, e, d in _send_routed(o, bootstrap, w.topic("interactions"), plan)
               if r in placed and d.partition != placed[r](e["user_id"].encode())]
        if off:  # the test's own assumption about the partitioners, not the worker's fault
            o.problems.append(f"HARNESS: partitions not as computed for {off[:4]}")
        folded = wait_for_counts(recs, ledger, timeout=60, stall=30, give_up=all_exited(workers[-1]))
        for r, us in users.items():
            o.add(check_recommendations(ledger, folded, seen_prefix=False, users=us), f"route {r}: ")
        w.stop()  # SIGTERM; a new worker with the same group restores the user states
        w2 = start_worker(factory, bootstrap, prefix=w.prefix, load=False)
        workers.append(w2)
        more = [("murmur2", ev(f"{u}-late", u, ITEM_IDS[59], 9000)) for us in users.values() for u in us]
        for _, e in more:
            ledger.record(e)
        _send_routed(o, bootstrap, w.topic("interactions"), more)
        folded = wait_for_counts(recs, ledger, timeout=60, stall=30, give_up=all_exited(workers[-1]))
        for r, us in users.items():
            o.add(check_recommendations(ledger, folded, seen_prefix=False, users=us),
                  f"route {r}, after a restart and one more murmur2-keyed event each: ")
        expect_no_dead_letters(o, bootstrap, w2, since)
        expect_running(o, w2)
    finally:
        recs.close()
        stop_all(workers)
    o.seconds = time.monotonic() - t0
    return o


# -- rebalance under load --------------------------------------------------------------------------
class LoadProducer(threading.Thread):
    """Keyed events at ``rate``/s for ``seconds`` over ``users`` users, placed by ``partitioner``
    (librdkafka's name: ``murmur2_random`` like Java and aiokafka, ``consistent_random`` its
    default, CRC32); about ``dup_share`` of the messages re-send an earlier event of the same user."""

    def __init__(self, bootstrap: str, topic: str, rate: float = 500, seconds: float = 20, users: int = 200,
                 dup_share: float = 0.02, seed: int = 1, partitioner: str = "murmur2_random"):
        super().__init__(daemon=True, name="load-producer")
        import random

        self.bootstrap, self.topic, self.rate, self.seconds = bootstrap, topic, rate, seconds
        self.partitioner = partitioner
        tag = uuid.uuid4().hex[:4]
        self.users = [f"load-{tag}-{i}" for i in range(users)]
        self.dup_share, self.r = dup_share, random.Random(seed)
        self.ledger, self.error, self.started_at = Ledger(), None, None
        self._history: dict[str, list[bytes]] = defaultdict(list)

    def _next(self, n: int) -> tuple[bytes, bytes, dict]:
        r = self.r
        user = r.choice(self.users)
        past = self._history[user]
        if past and r.random() < self.dup_share:
            value = r.choice(past[-20:])
        else:
            kind = r.choices(["click", "favorite", "rating", "review"], [55, 10, 33, 2])[0]
            extra = {"value": r.randint(1, 5)} if kind == "rating" else (
                {"text": r.choice(REVIEWS)} if kind == "review" else {})
            value = orjson.dumps(ev(f"{user}-{n}", user, r.choice(ITEM_IDS), 1_700_000_000_000 + n, kind, **extra))
            past.append(value)
        return user.encode(), value, orjson.loads(value)

    def run(self) -> None:
        try:
            p = Producer(self.bootstrap, self.partitioner)
            self.started_at = t0 = time.monotonic()
            n = 0
            while (elapsed := time.monotonic() - t0) < self.seconds:
                while n < elapsed * self.rate:
                    key, value, event = self._next(n)
                    self.ledger.record(event, p.send(self.topic, key, value))
                    n += 1
                time.sleep(0.01)
            p.flush()
            failed = [d.error for ds in self.ledger.where.values() for d in ds if d.error]
            if failed:
                raise RuntimeError(f"{len(failed)} events not delivered: {failed[:3]}")
        except Exception as exc:  # reported by the scenario
            self.error = exc


def lost_offsets_note(bootstrap: str, worker, ledger: Ledger, folded: dict, verdict: Verdict) -> str:
    """Where the never-applied events sit, beside the group's committed offsets: a lost event below
    the committed offset was committed without being applied."""
    first: dict[int, int] = {}
    for user in verdict.lost:
        claimed = {i for m in folded.get(user, []) if m for i in m.get("based_on_event_ids", [])}
        for e in ledger.events[user]:
            if e not in claimed:
                for d in ledger.where.get(e, []):
                    first[d.partition] = min(first.get(d.partition, d.offset), d.offset)
    if not first:
        return "  (every lost event was listed once: the state holding it was lost, see above)"
    try:
        committed = committed_offsets(bootstrap, f"{worker.settings.app_id}-interactions", worker.topic("interactions"), sorted(first))
    except Exception as exc:  # diagnostics only
        return f"  (committed offsets unavailable: {exc!r})"
    def why(p):
        done, end = committed.get(p, (None, None))
        if done is None or done < 0:
            return "nothing committed"
        return ("committed past them WITHOUT applying them" if done > first[p]
                else "not committed either: nobody consumed them (a stuck or idle partition owner?)")

    return "  never-applied events by partition: " + "; ".join(
        f"partition {p}: first at offset {first[p]}, group {worker.settings.app_id}-interactions committed "
        f"{committed.get(p, (None,))[0]} of {committed.get(p, (None, None))[1]}: {why(p)}" for p in sorted(first))


def scenario_rebalance(bootstrap: str, factory, mode: str, rate: float = 500, seconds: float = 20,
                       users: int = 200, partitioner: str = "murmur2_random") -> Outcome:
    """Two workers in one group under load; midway the second one leaves (``leave``: SIGTERM),
    dies (``crash``: SIGKILL) or, in ``join``, is started only then. After the load, every user's
    last list counts each distinct event once, lists never go backwards, no seen item is listed.
    With ``partitioner="consistent_random"`` (CRC32) most events land off their user's partition:
    applied where they land or re-routed, across the rebalance."""
    assert mode in ("leave", "crash", "join"), mode
    name = f"rebalance: {mode}" + ("" if partitioner == "murmur2_random" else f", {partitioner}")
    o, t0, since = Outcome(name), time.monotonic(), int(time.time() * 1000)
    workers = start_pair(factory, bootstrap) if mode != "join" else [start_worker(factory, bootstrap)]
    w1 = workers[0]
    try:
        recs = TopicReader(bootstrap, w1.topic("recommendations"))
        load = LoadProducer(bootstrap, w1.topic("interactions"), rate, seconds, users, partitioner=partitioner)
        load.start()
        time.sleep(seconds / 2)
        if mode == "leave":
            code = workers[1].stop()
            if code not in (0, -15):
                o.problems.append(f"second worker exited with {code} on SIGTERM; log {workers[1].log_path}")
        elif mode == "crash":
            workers[1].proc.kill()
            workers[1].proc.wait()
        else:
            workers.append(start_worker(factory, bootstrap, prefix=w1.prefix, load=False))
        load.join()
        if load.error is not None:
            o.problems.append(f"HARNESS: load producer failed: {load.error!r}")
        o.sent = load.ledger.sent
        try:
            folded = wait_for_counts(recs, load.ledger, timeout=120, stall=30, settle=2,
                                     give_up=all_exited(*workers))
        finally:
            recs.close()
        verdict = check_recommendations(load.ledger, folded)
        o.add(verdict, f"after the second worker's {mode}: ")
        if verdict.lost:
            o.problems.append(lost_offsets_note(bootstrap, w1, load.ledger, folded, verdict))
        expect_no_dead_letters(o, bootstrap, w1, since)
        expect_running(o, *([w1] if mode != "join" else workers))
    finally:
        stop_all(workers)
    o.seconds = time.monotonic() - t0
    return o
