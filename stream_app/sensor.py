"""The one place the worker counts anything: every counter behind ``/stats``, ``/overview`` and
``/metrics``.

The hot path, the catalogue indexer, the fetch loop and the model thread report what happened to
one ``Sensor`` (``ctx.sensor``), one ``on_...`` call per happening; the sensor keeps the counts
and mirrors each into its Prometheus collectors (``stream_app.metrics``), and the views read it
(``stats``, ``overview``, ``render``). Each interaction record read is counted once by
``on_batch`` (``events``) and, as an outcome, once by ``on_event``: applied, duplicate,
dead-lettered or re-routed (a forget request has no outcome; an event that is re-routed is read
again where it belongs, and counted there again). The co-engagement stream (``stream_app.cooc_stream``)
reports pair messages sent (``on_pairs_sent``), pair messages folded into rows
(``on_rows_folded``) and rows applied from their changelog with the follower's lag
(``on_rows_followed``), shown under ``cooc`` in ``/stats``. The sensor is used on the event loop, except
``on_encoded``, which the model thread calls and which touches only the (thread-safe) collectors.

>>> now = [100.0]
>>> s = Sensor(clock=lambda: now[0])
>>> s.on_batch(3, 0.01); s.on_event("applied", 2); s.on_dead_letter("malformed_json")
>>> now[0] = 104.0
>>> s.on_lag("interactions", 0, 7); s.on_lag("interactions", 1, 5)
>>> {k: s.stats()[k] for k in ("events", "batches", "dead_letters")}
{'events': 3, 'batches': 1, 'dead_letters': 1}
>>> ov = s.overview()
>>> ov["events_per_s"], ov["events_total"], ov["lag"], ov["dead_letters_by_reason"]
(0.75, 3, 12, {'malformed_json': 1})
>>> b'stream_reco_events_total{outcome="dead_lettered"} 1.0' in s.render()[0]
True
"""
from __future__ import annotations

import time
from collections import deque
from typing import Callable, Sequence

from stream_app.metrics import OUTCOMES, STEPS, Metrics, observe_many

Clock = Callable[[], float]


class Rate:
    """Events per second over the last ``window_s`` seconds, counted in one-second buckets
    (divided by the time since the first event when that is shorter, so the rate is not
    underestimated just after start; at least 1 s).

    >>> now = [100.0]
    >>> r = Rate(clock=lambda: now[0])
    >>> r.add(20); now[0] = 104.0; r.add(20)
    >>> r.per_s()
    10.0
    >>> now[0] = 125.0          # the window has moved past both
    >>> r.per_s()
    0.0
    """

    def __init__(self, window_s: float = 10.0, clock: Clock = time.monotonic):
        self.window_s, self._clock = float(window_s), clock
        self._buckets: deque[list] = deque()  # [second, count], oldest first
        self._first: float | None = None

    def _trim(self, now: float) -> None:
        # A bucket [s, s + 1) counts while it overlaps the window (now - window_s, now].
        horizon = now - self.window_s
        while self._buckets and self._buckets[0][0] + 1 <= horizon:
            self._buckets.popleft()

    def add(self, n: int) -> None:
        now = self._clock()
        sec = int(now)
        if self._first is None:
            self._first = now
        if self._buckets and self._buckets[-1][0] == sec:
            self._buckets[-1][1] += n
        else:
            self._buckets.append([sec, n])
        self._trim(now)

    def per_s(self) -> float:
        now = self._clock()
        self._trim(now)
        if self._first is None:
            return 0.0
        span = max(1.0, min(self.window_s, now - self._first))
        return round(sum(c for _, c in self._buckets) / span, 3)


class Sensor:
    """All of the worker's counters; see the module's docstring."""

    def __init__(self, metrics: Metrics | None = None, window_s: float = 10.0, clock: Clock = time.monotonic):
        self.metrics = metrics if metrics is not None else Metrics()
        self.started_at = time.time()
        self.events = 0  # interaction records read (a re-routed one twice: where it landed, where it belongs)
        self.batches = 0
        self.recommendations = 0
        self.off_partition = 0  # applied where they landed, on a partition other than their user's
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.dead_letters: dict[str, int] = {}  # by reason, catalogue messages included
        self.step_seconds = dict.fromkeys(STEPS, 0.0)  # the interactions loop's time by step
        self.lag: dict[tuple[str, int], int] = {}
        self.model_version: str | None = None
        self.rate = Rate(window_s, clock)  # events with an outcome
        # co-engagement learned online (stream_app.cooc_stream)
        self.cooc = {"pair_messages": 0, "first_engagements": 0, "rows_folded": 0, "rows_written": 0,
                     "rows_followed": 0, "follow_lag": 0, "apply_gap_s": 0.0}
        self.cooc_applied: dict[int, int] = {}  # rows changelog partition -> next offset applied to the model

    # -- what happened -----------------------------------------------------------------------
    def on_batch(self, size: int, seconds: float) -> None:
        """One batch of ``size`` interaction records handled in ``seconds``."""
        self.events += size
        self.batches += 1
        self.metrics.batch_size.observe(size)
        self.metrics.batch_duration.observe(seconds)

    def on_event(self, outcome: str, n: int = 1) -> None:
        """``n`` interaction events ended with ``outcome`` (one of ``OUTCOMES``)."""
        if outcome not in self.outcomes:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
        if n <= 0:
            return
        self.outcomes[outcome] += n
        self.metrics.events.labels(outcome=outcome).inc(n)
        self.rate.add(n)

    def on_off_partition(self) -> None:
        """An event on a partition other than its user's, applied where it landed."""
        self.off_partition += 1

    def on_dead_letter(self, reason: str, event: bool = True) -> None:
        """A message sent to the dead letters with ``reason``; ``event``: an interaction (its
        outcome is ``dead_lettered``), not a catalogue message."""
        self.dead_letters[reason] = self.dead_letters.get(reason, 0) + 1
        self.metrics.dead_letters.labels(reason=reason).inc()
        if event:
            self.on_event("dead_lettered")

    def on_published(self, n: int, produce_ts_ms: Sequence[int] = (), now_ms: int | None = None) -> None:
        """``n`` recommendation messages sent, reflecting events produced at ``produce_ts_ms``
        (their Kafka timestamps): one latency observed per event."""
        self.recommendations += n
        if n:
            self.metrics.recommendations.inc(n)
        if produce_ts_ms:
            now_ms = int(time.time() * 1000) if now_ms is None else now_ms
            observe_many(self.metrics.event_latency, [max(0.0, (now_ms - ts) / 1000.0) for ts in produce_ts_ms])

    def on_step_seconds(self, step: str, seconds: float) -> None:
        """Time of one step of the interactions loop (one of ``STEPS``)."""
        self.step_seconds[step] += seconds
        self.metrics.hot_path_seconds.labels(step=step).inc(seconds)

    def on_lag(self, topic: str, partition: int, lag: int) -> None:
        self.lag[(topic, int(partition))] = max(0, int(lag))
        self.metrics.consumer_lag.labels(topic=topic, partition=str(partition)).set(lag)

    def on_pairs_sent(self, messages: int, engagements: int) -> None:
        """A batch's deltas sent (``messages``, one per touched item, bundled into pair messages
        by partition), made of ``engagements`` first engagements."""
        self.cooc["pair_messages"] += messages
        self.cooc["first_engagements"] += engagements
        self.metrics.cooc_pairs.inc(messages)
        self.metrics.cooc_engagements.inc(engagements)

    def on_rows_folded(self, messages: int, rows: int) -> None:
        """The aggregator folded ``messages`` pair messages into ``rows`` rows it wrote."""
        self.cooc["rows_folded"] += messages
        self.cooc["rows_written"] += rows
        self.metrics.cooc_folded.inc(messages)

    def on_rows_followed(self, records: int, applied: dict[int, int], lag: int, gap_s: float | None = None) -> None:
        """``records`` rows changelog records applied to the model, up to the offsets ``applied``
        (partition -> next offset); ``lag``: records read but not applied, or not read yet;
        ``gap_s``: seconds between two rounds of them now."""
        self.cooc["rows_followed"] += records
        if gap_s is not None:
            self.cooc["apply_gap_s"] = round(gap_s, 3)
        self.cooc_applied.update(applied)
        self.on_follow_lag(lag)
        if records:
            self.metrics.cooc_followed.inc(records)

    def on_follow_lag(self, lag: int) -> None:
        self.cooc["follow_lag"] = max(0, int(lag))
        self.metrics.cooc_follow_lag.set(self.cooc["follow_lag"])

    def on_encoded(self, texts: int, seconds: float) -> None:
        """Texts encoded (called in the model thread)."""
        self.metrics.encoder_texts.inc(texts)
        self.metrics.encoder_seconds.inc(max(0.0, seconds))

    def on_model(self, version: str, encoder: str, device: str) -> None:
        self.model_version = str(version)
        self.metrics.model_info.info({"version": str(version), "encoder": str(encoder), "device": str(device)})

    # -- what the views read -----------------------------------------------------------------
    def stats(self) -> dict:
        """The counters of ``GET /stats``."""
        return {"events": self.events, "batches": self.batches, "recommendations": self.recommendations,
                "dead_letters": sum(self.dead_letters.values()), "rerouted": self.outcomes["rerouted"],
                "off_partition": self.off_partition, "started_at": self.started_at,
                "uptime_s": round(time.time() - self.started_at, 1),
                "hot_path_seconds": {k: round(v, 3) for k, v in self.step_seconds.items()},
                "cooc": {**self.cooc, "applied_offsets": {str(p): o for p, o in sorted(self.cooc_applied.items())}}}

    def overview(self) -> dict:
        """The JSON body of ``GET /overview`` (the live page's panel)."""
        return {"events_per_s": self.rate.per_s(), "events_total": sum(self.outcomes.values()),
                "lag": sum(self.lag.values()),
                "lag_by_partition": {f"{t}[{p}]": v for (t, p), v in sorted(self.lag.items())},
                "dead_letters_by_reason": dict(sorted(self.dead_letters.items())),
                "model_version": self.model_version}

    def render(self) -> tuple[bytes, str]:
        """``(body, content_type)`` of ``GET /metrics``."""
        return self.metrics.render()
