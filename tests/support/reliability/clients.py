"""Independent Kafka clients of the reliability scenarios (confluent-kafka / librdkafka, not the
project's aiokafka/Faust code):

- ``Producer``: sends with a chosen librdkafka partitioner and records where each message landed;
- ``TopicReader``: a group-less reader (``assign()`` from the beginning, never joins a group, never
  commits) that accumulates everything a topic holds;
- ``murmur2_partition`` / ``crc32_partition``: Java's and librdkafka's default key partitioners.
"""
from __future__ import annotations

import time
import uuid
import zlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka import Producer as _RdProducer

PARTITIONS = 4  # what tests/support/workers.py's WorkerProcess configures


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
