"""The worker's Prometheus collectors, on a registry of their own, and their text exposition.

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

The model watcher (``stream_app.model_watch``: ``stream_reco_model_swaps_total{outcome}``,
``stream_reco_model_last_swap_timestamp_seconds``) and the online evaluation
(``stream_app.online_eval``: ``stream_reco_online_hit_rate{window,version}``,
``stream_reco_online_mrr{window,version}``, ``stream_reco_online_judged_total{version,outcome}``,
``stream_reco_online_reciprocal_rank_total{version}``) keep their collectors on this registry too.

What is counted, and when, is decided by ``stream_app.sensor.Sensor``, the one object the app
reports to: it keeps its own counters for ``/stats`` and ``/overview`` and mirrors each into these
collectors. Each instance has its own registry, so a second one starts from zero:

>>> m = Metrics()
>>> m.events.labels(outcome="applied").inc(3)
>>> body, content_type = m.render()
>>> b'stream_reco_events_total{outcome="applied"} 3.0' in body
True
>>> b'stream_reco_events_total{outcome="applied"} 0.0' in Metrics().render()[0]
True
>>> content_type.startswith("text/plain")
True
"""
from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally
from typing import Sequence

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

__all__ = ["DEAD_LETTER_REASONS", "OUTCOMES", "STEPS", "Metrics", "observe_many"]

#: Outcomes of one interaction event.
OUTCOMES = ("applied", "duplicate", "dead_lettered", "rerouted")
#: Dead-letter reasons known in advance (others are accepted and appear when first used).
DEAD_LETTER_REASONS = ("malformed_json", "schema_violation", "unknown_item", "oversized",
                       "processing_error")
#: Steps of the interactions loop whose seconds are summed (``stream_app.hotpath``).
STEPS = ("fetch", "handle", "model", "deliver", "commit")

_BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
_BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                          5.0, 10.0, 30.0)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0)


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
    """The worker's Prometheus collectors on a dedicated registry (recorded by the sensor)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
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
        for step in STEPS:
            self.hot_path_seconds.labels(step=step)
        self.cooc_pairs = Counter("stream_reco_cooc_pair_messages_total",
                                  "Co-engagement deltas sent (one per touched item per batch; a pair message carries several).", registry=r)
        self.cooc_engagements = Counter("stream_reco_cooc_first_engagements_total",
                                        "First engagements turned into pair messages.", registry=r)
        self.cooc_folded = Counter("stream_reco_cooc_rows_folded_total",
                                   "Co-engagement deltas folded into neighbour rows by the aggregator.", registry=r)
        self.cooc_followed = Counter("stream_reco_cooc_rows_followed_total",
                                     "Neighbour row records applied from the rows changelog.", registry=r)
        self.cooc_follow_lag = Gauge("stream_reco_cooc_follow_lag",
                                     "Rows changelog records not yet applied to this worker's model.", registry=r)

    def render(self) -> tuple[bytes, str]:
        """``(body, content_type)`` of the Prometheus text exposition of this registry."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
