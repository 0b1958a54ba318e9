"""Shared helpers of the real-broker reliability tests (tests/integration/test_reliability.py) and of
the standalone runner (``python -m stream_app.dev.reliability``).

Independent Kafka clients (confluent-kafka / librdkafka, not the project's aiokafka/Faust code):

- ``Producer``: sends with a chosen librdkafka partitioner and records where each message landed;
- ``TopicReader``: a group-less reader (``assign()`` from the beginning, never joins a group, never
  commits) that accumulates everything a topic holds;
- ``Ledger`` + ``check_recommendations``: the exactly-once verdict (lost / doubled per user,
  ``events_applied`` going backwards, seen items recommended), with readable failure text;
- ``murmur2_partition`` / ``crc32_partition``: Java's and librdkafka's default key partitioners.

The scenarios themselves (what the tests and the runner both run) are at the end of this module,
so the runner and the tests share exactly one copy of each.
"""
from __future__ import annotations

import threading
import time
import uuid
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka import Producer as _RdProducer

PARTITIONS = 4  # what tests/conftest.py's WorkerProcess configures
MAX_DEAD_LETTER_BYTES = 1_000_000  # "a dead letter must never exceed 1 MB"


# -- partitioners --------------------------------------------------------------------------------
def murmur2(data: bytes) -> int:
    """Kafka's Java ``Utils.murmur2`` (what the Java client, aiokafka and librdkafka's
    ``murmur2_random`` use for keyed messages), as an unsigned 32-bit value."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(length // 4):
        k = int.from_bytes(data[4 * i:4 * i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail, extra = length & ~3, length % 4
    if extra == 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def murmur2_partition(key: bytes, partitions: int = PARTITIONS) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def crc32_partition(key: bytes, partitions: int = PARTITIONS) -> int:
    """librdkafka's ``consistent``/``consistent_random`` (the confluent-kafka default)."""
    return zlib.crc32(key) % partitions


# -- producing -----------------------------------------------------------------------------------
@dataclass
class Delivery:
    partition: int | None = None
    offset: int | None = None
    error: str | None = None
    size_too_large: bool = False


class Producer:
    """confluent-kafka producer; ``send`` returns a ``Delivery`` filled in once the broker answers."""

    def __init__(self, bootstrap: str, partitioner: str = "murmur2_random", **conf):
        self._p = _RdProducer({"bootstrap.servers": bootstrap, "partitioner": partitioner, "linger.ms": 5,
                               "enable.idempotence": True, "message.max.bytes": 1_048_588, **conf})

    def send(self, topic: str, key: bytes | None, value: bytes | None) -> Delivery:
        d = Delivery()

        def done(err, msg, d=d):
            if err is not None:
                d.error = str(err)
                d.size_too_large = err.code() == KafkaError.MSG_SIZE_TOO_LARGE
            else:
                d.partition, d.offset = msg.partition(), msg.offset()

        while True:
            try:
                self._p.produce(topic, key=key, value=value, on_delivery=done)
                break
            except BufferError:
                self._p.poll(0.05)
        self._p.poll(0)
        return d

    def flush(self, timeout: float = 60.0) -> None:
        left = self._p.flush(timeout)
        if left:
            raise TimeoutError(f"{left} messages not delivered within {timeout}s")


def produce_all(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]],
                partitioner: str = "murmur2_random") -> list[Delivery]:
    p = Producer(bootstrap, partitioner)
    out = [p.send(topic, k, v) for k, v in records]
    p.flush()
    bad = [d.error for d in out if d.error]
    if bad:
        raise RuntimeError(f"{len(bad)} of {len(out)} messages not delivered: {bad[:3]}")
    return out


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: Iterable[int]) -> dict[int, tuple]:
    """partition -> (the group's committed offset, high watermark); read-only (an offset fetch:
    this consumer never subscribes, so it never joins ``group``)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        got = {tp.partition: tp.offset for tp in c.committed(tps, timeout=10)}
        return {p: (got.get(p), c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]) for p in got}
    finally:
        c.close()


def topic_max_message_bytes(bootstrap: str, topic: str) -> int:
    from confluent_kafka.admin import AdminClient, ConfigResource

    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the answer is in
    cfg = admin.describe_configs([res])[res].result(timeout=30)
    return int(cfg["max.message.bytes"].value)


# -- reading -------------------------------------------------------------------------------------
@dataclass
class Msg:
    partition: int
    offset: int
    key: str | None
    value: bytes | None

    def obj(self):
        return None if self.value is None else orjson.loads(self.value)


class TopicReader:
    """Everything ``topic`` holds, from offset 0, read without a consumer group (assign, no commits;
    librdkafka insists on a ``group.id`` string, which assign-only consumers never use)."""

    def __init__(self, bootstrap: str, topic: str):
        self.topic = topic
        self._c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"unused-{uuid.uuid4().hex}",
                            "enable.auto.commit": False, "enable.auto.offset.store": False,
                            "fetch.max.bytes": 8_000_000, "max.partition.fetch.bytes": 2_000_000,
                            "receive.message.max.bytes": 10_000_000})
        meta = self._c.list_topics(topic, timeout=30).topics[topic]
        self.partitions = sorted(meta.partitions) or list(range(PARTITIONS))
        self._c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in self.partitions])
        self.messages: list[Msg] = []
        self.last_new = time.monotonic()

    def poll(self, timeout: float = 0.3) -> list[Msg]:
        new = []
        for m in self._c.consume(num_messages=5000, timeout=timeout):
            if m.error():
                if m.error().code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"reading {self.topic}: {m.error()}")
                continue
            key = m.key()
            new.append(Msg(m.partition(), m.offset(), key.decode("utf-8", "replace") if key is not None else None,
                           m.value()))
        if new:
            self.messages.extend(new)
            self.last_new = time.monotonic()
        return new

    def until(self, done: Callable[[list[Msg]], bool], timeout: float, stall: float | None = None,
              give_up: Callable[[], bool] | None = None) -> bool:
        """Poll until ``done(all messages)``, ``timeout`` seconds, ``stall`` seconds without a new
        message, or ``give_up()`` (e.g. every worker has exited: after a last read); True when
        ``done`` held."""
        deadline = time.monotonic() + timeout
        self.last_new = time.monotonic()
        while True:
            over = give_up is not None and give_up()
            self.poll()
            if done(self.messages):
                return True
            now = time.monotonic()
            if over or now > deadline or (stall is not None and now - self.last_new > stall):
                return False

    def to_end(self, timeout: float = 30.0) -> list[Msg]:
        """Read up to the high watermarks as they are now."""
        ends = {p: self._c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1]
                for p in self.partitions}
        pos = lambda: {tp.partition: tp.offset for tp in self._c.position(  # noqa: E731
            [TopicPartition(self.topic, p) for p in self.partitions])}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if all(ends[p] == 0 or pos().get(p, -1) >= ends[p] for p in self.partitions):
                break
        return self.messages

    def close(self) -> None:
        self._c.close()


def by_key(msgs: Iterable[Msg]) -> dict[str | None, list]:
    """key -> decoded values in topic order (None for a tombstone), each dict with its position
    added as ``_at`` ("partition@offset"). Recommendations are keyed by user, so one user's
    messages are in one partition and this is their order on the topic."""
    out: dict = defaultdict(list)
    for m in sorted(msgs, key=lambda m: (m.partition, m.offset)):
        obj = m.obj()
        if isinstance(obj, dict):
            obj["_at"] = f"{m.partition}@{m.offset}"
        out[m.key].append(obj)
    return out


def fold_table(msgs: Iterable[Msg]) -> dict[str | None, bytes | None]:
    """A compacted changelog folded into its final key -> value (None: tombstone). Folded per
    partition first: a key whose last value is live in ANY partition is live (a state split over
    partitions must not hide behind a tombstone in another one)."""
    per_partition: dict = {}
    for m in sorted(msgs, key=lambda m: (m.partition, m.offset)):
        per_partition[(m.partition, m.key)] = m.value
    out: dict = {}
    for (_, key), value in per_partition.items():
        if out.get(key) is None:
            out[key] = value
    return out


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


# -- catalogue, workers, outcomes ----------------------------------------------------------------
_GENRES = [("Sci-Fi", "space opera with starships and rebels"), ("Romance", "period romance about love and marriage"),
           ("Crime", "crime thriller about detectives and bank robbers"), ("Food", "cooking show about bread and pastry"),
           ("Sports", "football documentary about a season in the league"), ("Horror", "horror film in a haunted house"),
           ("Comedy", "comedy of errors at a family wedding"), ("History", "history documentary about ancient Rome")]


def catalog(n: int = 60) -> list[dict]:
    """``n`` items over 8 genres (enough that a user with ~50 events still has unseen items)."""
    out = []
    for i in range(n):
        cat, text = _GENRES[i % len(_GENRES)]
        out.append({"item_id": f"it{i:02d}", "title": f"{cat} #{i}", "categories": [cat],
                    "text": f"Episode {i // len(_GENRES) + 1}: a {text}, part {i}."})
    return out


CATALOG = catalog()
ITEM_IDS = [it["item_id"] for it in CATALOG]


def wait_items(worker, n: int, timeout: float = 120.0, strict: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (worker.stats() or {}).get("items", 0) < n:
        time.sleep(0.2)
    if strict and (worker.stats() or {}).get("items", 0) < n:
        raise AssertionError(f"worker has {(worker.stats() or {}).get('items')} of {n} catalogue items after "
                             f"{timeout:.0f}s; log {worker.log_path}:\n{worker.log()[-3000:]}")


def start_worker(factory, bootstrap: str, prefix: str | None = None, load: bool = True, **kw):
    """A started worker (``factory`` like tests/conftest.py's ``worker_factory``) with the catalogue:
    produced to a fresh prefix (``load``), or restored from the changelog of an existing one (a
    worker may bring the restored catalogue into its model only when events arrive: up to 30 s of
    waiting for ``/stats`` to show it, then the events themselves tell)."""
    w = factory(prefix, **kw).start()
    if load:
        produce_all(bootstrap, w.topic("catalog"), [(it["item_id"].encode(), orjson.dumps(it)) for it in CATALOG])
        wait_items(w, len(CATALOG))
    else:
        wait_items(w, len(CATALOG), timeout=30, strict=False)
    return w


def start_pair(factory, bootstrap: str) -> list:
    """Two workers of one group (same prefix: same topics, group and changelogs; each its own web
    port), started side by side, then the catalogue; both serve it before this returns."""
    ws = [factory(None)]
    ws.append(factory(ws[0].prefix))
    while ws[1].port == ws[0].port:  # LocalWorker picks a free port when constructed: never the same
        ws[1] = factory(ws[0].prefix)
    errors: list[BaseException] = []

    def start(w):
        try:
            w.start()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(w,)) for w in ws]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for w in ws:
            w.stop()
        raise errors[0]
    produce_all(bootstrap, ws[0].topic("catalog"), [(it["item_id"].encode(), orjson.dumps(it)) for it in CATALOG])
    for w in ws:
        wait_items(w, len(CATALOG))
    return ws


@dataclass
class Outcome:
    """One scenario run: the runner's table row, and the tests' assertion text."""

    scenario: str
    sent: int = 0  # messages produced to `interactions` (valid, duplicates and bad ones)
    lost: int = 0
    doubled: int = 0
    dead_lettered: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, verdict: Verdict, label: str = "") -> None:
        self.lost += sum(verdict.lost.values())
        self.doubled += sum(verdict.doubled.values())
        if not verdict.ok:
            self.problems.append(f"{label}{verdict.explain()}")

    def report(self) -> str:
        head = (f"{self.scenario}: {self.sent} sent, {self.lost} lost, {self.doubled} doubled, "
                f"{self.dead_lettered} dead-lettered in {self.seconds:.0f}s")
        return "\n".join([head, *self.problems])


def ev(event_id: str, user: str, item: str, ts: int, type_: str = "click", **kw) -> dict:
    e = {"event_id": event_id, "type": type_, "user_id": user, "item_id": item, "ts": ts, **kw}
    if type_ == "rating" and "value" not in e:
        e["value"] = 4
    return e


def count_dead_letters(bootstrap: str, worker, since_ms: int, settle: float = 1.0) -> list[dict]:
    """Dead letters of ``worker``'s interactions topic received since ``since_ms``."""
    r = TopicReader(bootstrap, worker.topic("dead_letters"))
    try:
        time.sleep(settle)
        msgs = r.to_end()
    finally:
        r.close()
    topic = worker.topic("interactions")
    out = []
    for m in msgs:
        d = m.obj() or {}
        if d.get("topic") == topic and d.get("received_at", 0) >= since_ms:
            out.append(d)
    return out


def expect_no_dead_letters(o: Outcome, bootstrap: str, worker, since_ms: int) -> None:
    dls = count_dead_letters(bootstrap, worker, since_ms)
    o.dead_lettered = len(dls)
    if dls:
        reasons = sorted({f"{d.get('error_type')}: {str(d.get('error'))[:120]}" for d in dls})
        o.problems.append(f"{len(dls)} valid messages were DEAD-LETTERED: {reasons[:5]}")


def stop_all(workers) -> None:
    """SIGTERM every worker at once, then wait for each (LocalWorker.stop does both, one by one)."""
    threads = [threading.Thread(target=w.stop) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def all_exited(*workers) -> Callable[[], bool]:
    return lambda: not any(w.running() for w in workers)


def expect_running(o: Outcome, *workers) -> None:
    for w in workers:
        if not w.running():
            o.problems.insert(0, f"worker {w.port} EXITED with {w.proc.returncode}; log {w.log_path}:\n"
                              f"{w.log()[-2000:]}")


# -- scenarios (each returns an Outcome; the tests assert ``outcome.ok``) --------------------------
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


def scenario_forget(bootstrap: str, worker) -> Outcome:
    """A forget message: tombstone on recommendations, tombstone last in the user-state changelog,
    and the next event starts the user from events_applied == 1 (another user is untouched)."""
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
        if not changelog.until(lambda ms: fold_table(ms).get(gone, b"") is None, timeout=30,
                               give_up=all_exited(worker)) and gone in fold_table(changelog.to_end()):
            table = fold_table(changelog.messages)  # (absent after reading to the end is fine too)
            now = "<absent>" if gone not in table else f"{len(table[gone] or b'')} bytes"
            o.problems.append(f"user-state changelog {changelog.topic}: {gone!r} still maps to {now} "
                              f"(expected a final tombstone); {kept!r} present: {table.get(kept) is not None}")
        after = [ev(f"{u}-after", u, ITEM_IDS[20], 5000, "click") for u in (gone, kept)]
        produce_all(bootstrap, topic, [(e["user_id"].encode(), orjson.dumps(e)) for e in after])
        o.sent = len(first) + 1 + len(after)
        want = {gone: 1, kept: 4}
        recs.until(lambda ms: all(latest_counts(by_key(ms)).get(u, 0) >= n and
                                  f"{u}-after" in (by_key(ms)[u][-1] or {}).get("based_on_event_ids", [])
                                  for u, n in want.items()), timeout=30, give_up=all_exited(worker))
        got = {u: latest_counts(by_key(recs.messages)).get(u) for u in want}
        if got != want:
            o.problems.append(f"after forget, events_applied is {got}, expected {want} "
                              f"({gone} must start again from 1, {kept} must keep counting)")
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


# -- fuzz ------------------------------------------------------------------------------------------
_REVIEWS = ["Loved it, a wonderful story with great acting.", "Terrible: boring, slow and far too long.",
            "Pretty good, I would watch it again.", "Not for me, the ending was awful."]
_EXPECTED_ERROR_TYPES = {"malformed": {"malformed_json", "schema_violation"}, "schema": {"schema_violation"},
                         "unknown_item": {"unknown_item"}, "oversized": {"oversized"}}


def fuzz_sequence(seed: int, big_bytes: int, users: int = 30, per_user: int = 10) -> list:
    """The fuzz corpus with ``users * per_user`` valid events shuffled in (each user's events stay in
    order) and one valid event last: a list of ``fuzz.Bad`` and event dicts."""
    import random

    from tests.integration.fuzz import corpus

    r = random.Random(seed)
    bad = corpus(ITEM_IDS, seed, big_bytes)
    valid = []
    for i in range(per_user):
        for u in range(users):
            kind = r.choice(["click", "click", "favorite", "rating", "review"])
            extra = {"text": r.choice(_REVIEWS)} if kind == "review" else {}
            valid.append(ev(f"fz-{u}-{i}", f"fz-{u}", r.choice(ITEM_IDS), 10_000 + i, kind,
                            **({"value": r.choice([1, 2, 3, 4, 5])} if kind == "rating" else {}), **extra))
    out, bi, vi = [], 0, 0
    while bi < len(bad) or vi < len(valid):
        if vi < len(valid) and r.random() < (len(valid) - vi) / (len(bad) - bi + len(valid) - vi):
            out.append(valid[vi])
            vi += 1
        else:
            out.append(bad[bi])
            bi += 1
    out.append(ev("fz-last", "fz-0", ITEM_IDS[-1], 99_999))
    return out


def _check_one_dead_letter(bad, m: Msg, d: dict, validator) -> list[str]:
    """What is wrong with dead letter ``d`` (raw message ``m``) of bad message ``bad``."""
    import base64
    import hashlib

    from tests.integration.fuzz import INPUT_LIMIT

    wrong = []
    if not d.get("error_type") or not d.get("error"):
        wrong.append("no reason (error_type/error)")
    elif d["error_type"] not in _EXPECTED_ERROR_TYPES[bad.expect]:
        wrong.append(f"error_type {d['error_type']!r} for a {bad.expect} message ({d['error'][:80]})")
    if len(m.value) > MAX_DEAD_LETTER_BYTES:
        wrong.append(f"dead letter is {len(m.value)} bytes (> {MAX_DEAD_LETTER_BYTES})")
    errors = sorted(validator.iter_errors(d), key=str)
    if errors:
        wrong.append(f"breaks dead_letter schema: {errors[0].message[:120]}")
    key = bad.key.decode() if bad.key is not None else None
    if d.get("key") != key:
        wrong.append(f"key {str(d.get('key'))[:40]!r} != original key {key!r}")
    raw = bad.value or b""
    try:
        text = d.get("original") or ""
        got = text.encode() if d.get("original_encoding") == "utf-8" else base64.b64decode(text, validate=True)
    except Exception as exc:
        return wrong + [f"original does not decode: {exc}"]
    if len(raw) > INPUT_LIMIT or "original_bytes" in d or "original_sha256" in d:  # a prefix, described
        if d.get("original_bytes") != len(raw) or d.get("original_sha256") != hashlib.sha256(raw).hexdigest():
            wrong.append(f"{len(raw)}-byte original without correct original_bytes/original_sha256 "
                         f"(got {d.get('original_bytes')!r}, {str(d.get('original_sha256'))[:16]!r})")
        if not raw.startswith(got) or (len(raw) > INPUT_LIMIT and len(got) >= len(raw)):
            wrong.append(f"original is not a bounded prefix of the {len(raw)}-byte message ({len(got)} bytes)")
    elif got != raw:
        wrong.append(f"original ({len(got)} bytes) is not the message ({len(raw)} bytes)")
    return wrong


def _check_dead_letters(o: Outcome, dl: TopicReader, topic: str, bad_at: dict, valid_at: set) -> None:
    import json
    from collections import Counter
    from pathlib import Path

    import jsonschema

    schema = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "dead_letter.v1.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    found: dict[tuple, list] = defaultdict(list)
    for m in dl.messages:
        d = m.obj() if m.value else None
        if isinstance(d, dict) and d.get("topic") == topic:
            found[(d.get("partition"), d.get("offset"))].append((m, d))
    o.dead_lettered = sum(len(found[p]) for p in bad_at if p in found)
    missing = Counter(b.kind for p, b in bad_at.items() if p not in found)
    if missing:
        o.problems.append(f"{sum(missing.values())} of {len(bad_at)} bad messages NOT DEAD-LETTERED, by kind: "
                          f"{dict(missing.most_common())}")
    wrong: dict[str, Counter] = defaultdict(Counter)
    for p, b in bad_at.items():
        for m, d in found.get(p, []):
            for w in _check_one_dead_letter(b, m, d, validator):
                wrong[w][b.kind] += 1
    for w, kinds in sorted(wrong.items(), key=lambda kv: -sum(kv[1].values())):
        o.problems.append(f"{sum(kinds.values())} dead letters: {w}; kinds {dict(kinds.most_common(6))}")
    valid_dl = [d for p in valid_at for _, d in found.get(p, [])]
    if valid_dl:
        o.problems.append(f"{len(valid_dl)} VALID events dead-lettered: "
                          f"{sorted({(d.get('error_type'), str(d.get('error'))[:80]) for d in valid_dl})[:4]}")


def scenario_fuzz(bootstrap: str, worker, seed: int = 7) -> Outcome:
    """>= 1,000 bad messages of 50+ kinds with valid events interleaved: every bad one dead-lettered
    (reason, source position, bounded size), every valid one applied exactly once, worker alive."""
    from collections import Counter

    o, t0 = Outcome("fuzz corpus"), time.monotonic()
    topic = worker.topic("interactions")
    big = 1_000_000 if topic_max_message_bytes(bootstrap, topic) >= 1_000_000 + 1024 else 900_000
    seq = fuzz_sequence(seed, big)
    ledger, p, sent = Ledger(), Producer(bootstrap, "murmur2_random"), []
    for item in seq:
        if isinstance(item, dict):
            sent.append((item, p.send(topic, item["user_id"].encode(), orjson.dumps(item))))
            ledger.record(item, sent[-1][1])
        else:
            sent.append((item, p.send(topic, item.key, item.value)))
    p.flush()
    o.sent = len(sent)
    refused = [(x.kind, len(x.value or b""), d.error) for x, d in sent if d.error]
    if refused:
        o.problems.append(f"the broker refused {len(refused)} messages: {refused[:3]}")
    bad_at = {(d.partition, d.offset): x for x, d in sent if not isinstance(x, dict) and not d.error}
    valid_at = {(d.partition, d.offset) for x, d in sent if isinstance(x, dict)}
    recs, dl = TopicReader(bootstrap, worker.topic("recommendations")), TopicReader(bootstrap, worker.topic("dead_letters"))
    try:
        folded = wait_for_counts(recs, ledger, timeout=120, stall=40, give_up=all_exited(worker))
        o.add(check_recommendations(ledger, folded), "valid events among the bad ones: ")
        applied = Counter(u.rsplit("-", 1)[0][4:] for u in folded if u and u.startswith("bad-"))
        if applied:
            o.problems.append(f"bad messages were APPLIED (recommendations for their users), by kind: {dict(applied)}")

        seen_at, upto = set(), [0]

        def all_there(msgs):  # incremental: only the messages read since the last call
            for m in msgs[upto[0]:]:
                d = m.obj() if m.value else None
                if isinstance(d, dict):
                    seen_at.add((d.get("partition"), d.get("offset")))
            upto[0] = len(msgs)
            return all(pos in seen_at for pos in bad_at)

        dl.until(all_there, timeout=120, stall=40, give_up=all_exited(worker))
        _check_dead_letters(o, dl, topic, bad_at, valid_at)
    finally:
        recs.close()
        dl.close()
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
                {"text": r.choice(_REVIEWS)} if kind == "review" else {})
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

