"""Prometheus metrics for the worker, on a registry of their own, plus a rolling overview.

:class:`Metrics` owns a dedicated :class:`prometheus_client.CollectorRegistry` (never the
process-global one), so several workers or tests in one process never clash, and
:meth:`Metrics.render` gives the text exposition for a ``GET /metrics`` view::

    body, content_type = metrics.render()
    return web.bytes(body, content_type=content_type)      # in a Faust page

Metric names (``_total`` is added by prometheus-client to counters):

======================================== ========= =============================================
name                                     type      meaning
======================================== ========= =============================================
stream_reco_events_total{outcome}        counter   interaction events by outcome: applied,
                                                   duplicate, dead_lettered, rerouted
stream_reco_dead_letters_total{reason}   counter   dead letters by reason (malformed_json,
                                                   schema_violation, unknown_item, oversized,
                                                   processing_error, ...)
stream_reco_batch_size                   histogram events per micro-batch
stream_reco_batch_duration_seconds       histogram time to process one micro-batch
stream_reco_event_latency_seconds        histogram event produce timestamp -> its
                                                   recommendation published
stream_reco_consumer_lag{topic,partition} gauge    messages behind the log end
stream_reco_encoder_texts_total          counter   texts encoded
stream_reco_encoder_seconds_total        counter   seconds spent encoding; texts/s is
                                                   ``rate(texts) / rate(seconds)``
stream_reco_recommendations_total        counter   recommendation messages published
stream_reco_hot_path_seconds_total{step} counter   the interactions loop's time by step: fetch,
                                                   handle (of which model: the model thread),
                                                   deliver (waiting for room: at most 4
                                                   batches' acks and commits in flight), commit
                                                   (the commits' round trips, off the loop's path)
stream_reco_model_info{version,encoder,  info      the scoring model (value always 1)
device}
======================================== ========= =============================================

:class:`Overview` keeps the few numbers the web page shows (events/s over the last 10 s,
dead letters by reason, total lag, model version) without querying Prometheus; the recording
methods of :class:`Metrics` update both.

>>> m = Metrics()
>>> m.event("applied", 3)
>>> m.dead_letter("unknown_item")
>>> body, content_type = m.render()
>>> b'stream_reco_events_total{outcome="applied"} 3.0' in body
True
>>> b'stream_reco_dead_letters_total{reason="unknown_item"} 1.0' in body
True
>>> content_type.startswith("text/plain")
True

Each instance has its own registry, so a second one starts from zero:

>>> b'stream_reco_events_total{outcome="applied"} 0.0' in Metrics().render()[0]
True
"""
from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import Counter as Tally
from collections import deque
from typing import Callable, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.values import MutexValue

__all__ = ["DEAD_LETTER_REASONS", "OUTCOMES", "Metrics", "Overview"]

#: Outcomes of one interaction event.
OUTCOMES = ("applied", "duplicate", "dead_lettered", "rerouted")
#: Dead-letter reasons known in advance (others are accepted and appear when first used).
DEAD_LETTER_REASONS = ("malformed_json", "schema_violation", "unknown_item", "oversized",
                       "processing_error")

_BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
_BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                          5.0, 10.0, 30.0)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0)


class Overview:
    """Rolling in-process summary for the web page; thread-safe.

    Events are counted in one-second buckets; ``events_per_s`` is the number of events in the
    last ``window_s`` seconds divided by the window (or by the time since the first event, when
    that is shorter, so the rate is not underestimated just after start; at least 1 s).

    >>> now = [100.0]
    >>> ov = Overview(clock=lambda: now[0])
    >>> ov.record_events(20)
    >>> now[0] = 104.0
    >>> ov.record_events(20)
    >>> ov.set_lag("interactions", 0, 7)
    >>> ov.set_lag("interactions", 1, 5)
    >>> ov.record_dead_letter("oversized")
    >>> snap = ov.snapshot()
    >>> snap["events_per_s"], snap["lag"], snap["dead_letters_by_reason"]
    (10.0, 12, {'oversized': 1})
    >>> now[0] = 125.0          # the window has moved past both batches
    >>> ov.snapshot()["events_per_s"]
    0.0
    """

    def __init__(self, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.window_s = float(window_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: deque[list] = deque()  # [second, count], oldest first
        self._first: float | None = None
        self._events_total = 0
        self._dead: dict[str, int] = {}
        self._lag: dict[tuple[str, int], int] = {}
        self.model_version: str | None = None

    def _trim(self, now: float) -> None:
        # A bucket [s, s + 1) counts while it overlaps the window (now - window_s, now].
        horizon = now - self.window_s
        while self._buckets and self._buckets[0][0] + 1 <= horizon:
            self._buckets.popleft()

    def record_events(self, n: int = 1) -> None:
        if n <= 0:
            return
        now = self._clock()
        sec = int(now)
        with self._lock:
            if self._first is None:
                self._first = now
            if self._buckets and self._buckets[-1][0] == sec:
                self._buckets[-1][1] += n
            else:
                self._buckets.append([sec, n])
            self._events_total += n
            self._trim(now)

    def record_dead_letter(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self._dead[reason] = self._dead.get(reason, 0) + n

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        with self._lock:
            self._lag[(topic, int(partition))] = max(0, int(lag))

    def events_per_s(self) -> float:
        now = self._clock()
        with self._lock:
            self._trim(now)
            if self._first is None:
                return 0.0
            n = sum(c for _, c in self._buckets)
            span = max(1.0, min(self.window_s, now - self._first))
        return round(n / span, 3)

    def snapshot(self) -> dict:
        """The JSON body of ``GET /overview``."""
        rate = self.events_per_s()
        with self._lock:
            return {
                "events_per_s": rate,
                "events_total": self._events_total,
                "lag": sum(self._lag.values()),
                "lag_by_partition": {f"{t}[{p}]": v for (t, p), v in sorted(self._lag.items())},
                "dead_letters_by_reason": dict(sorted(self._dead.items())),
                "model_version": self.model_version,
            }


def observe_many(histogram: Histogram, amounts: Sequence[float]) -> None:
    """``histogram.observe(a)`` for each of ``amounts`` in order, leaving the same sum and bucket
    counts to the last bit (the sum is added to one amount at a time, in order; the counts are
    whole numbers), with a few lock round trips per call instead of two per amount. An event's
    latency is observed per event, so this runs for every event. Value classes other than
    prometheus-client's in-process one (multiprocess mode) get plain ``observe`` calls.

    >>> a, b = Histogram("a", "", buckets=(0.1, 1.0)), Histogram("b", "", buckets=(0.1, 1.0))
    >>> xs = [0.05, 0.1, 0.3, 1.0, 7.0, 0.1 + 0.2]
    >>> observe_many(a, xs); _ = [b.observe(x) for x in xs]
    >>> def samples(h):
    ...     return [(s.name, s.labels, s.value) for s in h.collect()[0].samples if "created" not in s.name]
    >>> [v for _, _, v in samples(a)] == [v for _, _, v in samples(b)]
    True
    """
    total = getattr(histogram, "_sum", None)
    buckets = getattr(histogram, "_buckets", ())
    if type(total) is not MutexValue or any(type(b) is not MutexValue for b in buckets):
        for amount in amounts:
            histogram.observe(amount)
        return
    histogram._raise_if_not_observable()
    bounds = histogram._upper_bounds  # ascending, the last one +Inf: observe's first bound >= amount
    tally = Tally(bisect_left(bounds, amount) for amount in amounts)
    with total._lock:
        value = total._value
        for amount in amounts:
            value += amount
        total._value = value
    for i, n in tally.items():
        buckets[i].inc(n)


class Metrics:
    """The worker's Prometheus metrics on a dedicated registry, plus an :class:`Overview`.

    Use the recording methods (they keep the overview in step) or the metric objects directly.

    >>> m = Metrics()
    >>> m.batch(size=50, seconds=0.02)
    >>> m.encoded(texts=64, seconds=0.5)
    >>> m.set_lag("interactions", 3, 42)
    >>> m.set_model_info(version="attn-fusion-0.1.0", encoder="minilm", device="cpu")
    >>> body = m.render()[0].decode()
    >>> 'stream_reco_batch_size_count 1.0' in body
    True
    >>> 'stream_reco_consumer_lag{partition="3",topic="interactions"} 42.0' in body
    True
    >>> 'stream_reco_encoder_texts_total 64.0' in body
    True
    >>> 'stream_reco_model_info{device="cpu",encoder="minilm",version="attn-fusion-0.1.0"} 1.0' in body
    True
    >>> m.overview.snapshot()["model_version"]
    'attn-fusion-0.1.0'
    """

    def __init__(self, registry: CollectorRegistry | None = None, overview: Overview | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        self.overview = overview if overview is not None else Overview()
        r = self.registry
        self.events = Counter("stream_reco_events_total", "Interaction events by outcome.",
                              ["outcome"], registry=r)
        for outcome in OUTCOMES:
            self.events.labels(outcome=outcome)
        self.dead_letters = Counter("stream_reco_dead_letters_total", "Dead letters by reason.",
                                    ["reason"], registry=r)
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason=reason)
        self.batch_size = Histogram("stream_reco_batch_size", "Events per micro-batch.",
                                    buckets=_BATCH_SIZE_BUCKETS, registry=r)
        self.batch_duration = Histogram("stream_reco_batch_duration_seconds",
                                        "Time to process one micro-batch.",
                                        buckets=_BATCH_SECONDS_BUCKETS, registry=r)
        self.event_latency = Histogram("stream_reco_event_latency_seconds",
                                       "Event produce timestamp to recommendation published.",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.consumer_lag = Gauge("stream_reco_consumer_lag",
                                  "Messages between the committed position and the log end.",
                                  ["topic", "partition"], registry=r)
        self.encoder_texts = Counter("stream_reco_encoder_texts_total", "Texts encoded.",
                                     registry=r)
        self.encoder_seconds = Counter("stream_reco_encoder_seconds_total",
                                       "Seconds spent encoding texts.", registry=r)
        self.recommendations = Counter("stream_reco_recommendations_total",
                                       "Recommendation messages published.", registry=r)
        self.model_info = Info("stream_reco_model", "The scoring model in use.", registry=r)
        self.hot_path_seconds = Counter("stream_reco_hot_path_seconds_total",
                                        "Seconds of the interactions loop by step.", ["step"], registry=r)
        for step in ("fetch", "handle", "model", "deliver", "commit"):
            self.hot_path_seconds.labels(step=step)

    # -- recording ---------------------------------------------------------------------------
    def event(self, outcome: str, n: int = 1) -> None:
        """Count ``n`` events with ``outcome`` (one of :data:`OUTCOMES`)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
        if n <= 0:
            return
        self.events.labels(outcome=outcome).inc(n)
        self.overview.record_events(n)

    def dead_letter(self, reason: str, n: int = 1) -> None:
        """Count a dead letter (not the event outcome: call ``event("dead_lettered")`` for an
        interaction; catalogue dead letters have no event outcome)."""
        self.dead_letters.labels(reason=reason).inc(n)
        self.overview.record_dead_letter(reason, n)

    def batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_duration.observe(seconds)

    def published(self, n: int = 1, produce_ts_ms: list[int] | tuple[int, ...] = (),
                  now_ms: int | None = None) -> None:
        """Count ``n`` recommendation messages and observe the latency of each event they reflect
        (``produce_ts_ms``: the Kafka timestamps of those events)."""
        if n:
            self.recommendations.inc(n)
        if produce_ts_ms:
            now_ms = int(time.time() * 1000) if now_ms is None else now_ms
            observe_many(self.event_latency, [max(0.0, (now_ms - ts) / 1000.0) for ts in produce_ts_ms])

    def encoded(self, texts: int, seconds: float) -> None:
        self.encoder_texts.inc(texts)
        self.encoder_seconds.inc(max(0.0, seconds))

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag.labels(topic=topic, partition=str(partition)).set(lag)
        self.overview.set_lag(topic, partition, lag)

    def set_model_info(self, version: str, encoder: str, device: str) -> None:
        self.model_info.info({"version": str(version), "encoder": str(encoder),
                              "device": str(device)})
        self.overview.model_version = str(version)

    # -- exposition --------------------------------------------------------------------------
    def render(self) -> tuple[bytes, str]:
        """``(body, content_type)`` of the Prometheus text exposition of this registry."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
