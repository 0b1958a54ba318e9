"""Latencies observed a batch at a time leave the histogram exactly as one ``observe`` per event."""
from __future__ import annotations

import random

import pytest

from stream_app.metrics import Metrics
from stream_app.sensor import Sensor


def exposition(m: Metrics | Sensor) -> list[str]:
    return [line for line in m.render()[0].decode().splitlines() if "_created" not in line]


def test_published_latencies_match_one_observe_per_event():
    rng = random.Random(11)
    batched, single = Sensor(), Metrics()
    now = 1_800_000_000_000
    for _ in range(200):
        ts = [now - rng.choice([0, 1, 7, 100, 250, 999, 1000, 2500, 10_000, 60_000, 10**7]) - rng.randrange(50)
              for _ in range(rng.randrange(0, 300))] + [now + 5]  # one from the future: latency 0
        batched.on_published(3, ts, now_ms=now)
        single.recommendations.inc(3)
        for t in ts:
            single.event_latency.observe(max(0.0, (now - t) / 1000.0))
        now += rng.randrange(1, 2000)
    assert batched.metrics.event_latency._sum.get() == single.event_latency._sum.get()  # same float, bit for bit
    assert exposition(batched) == exposition(single)
    assert any(line.startswith("stream_reco_event_latency_seconds_sum") for line in exposition(batched))


def test_stats_overview_and_metrics_read_the_same_counts():
    """One report per happening: ``/stats``, ``/overview`` and ``/metrics`` agree, and a
    dead-lettered interaction is one event (one outcome), a catalogue dead letter none."""
    s = Sensor()
    s.on_batch(5, 0.01)
    s.on_event("applied", 2)
    s.on_event("duplicate", 1)
    s.on_event("rerouted")
    s.on_dead_letter("malformed_json")
    s.on_dead_letter("schema_violation", event=False)
    s.on_off_partition()
    s.on_published(2, [1, 2], now_ms=1000)
    s.on_step_seconds("model", 0.5)
    stats, overview, text = s.stats(), s.overview(), "\n".join(exposition(s))
    assert {k: stats[k] for k in ("events", "batches", "recommendations", "dead_letters", "rerouted",
                                  "off_partition")} == {"events": 5, "batches": 1, "recommendations": 2,
                                                        "dead_letters": 2, "rerouted": 1, "off_partition": 1}
    assert overview["events_total"] == stats["events"] == sum(s.outcomes.values())
    assert overview["dead_letters_by_reason"] == {"malformed_json": 1, "schema_violation": 1}
    assert stats["hot_path_seconds"]["model"] == 0.5
    for line in ('stream_reco_events_total{outcome="dead_lettered"} 1.0', 'stream_reco_events_total{outcome="rerouted"} 1.0',
                 'stream_reco_dead_letters_total{reason="schema_violation"} 1.0', "stream_reco_batch_size_sum 5.0",
                 "stream_reco_recommendations_total 2.0", 'stream_reco_hot_path_seconds_total{step="model"} 0.5'):
        assert line in text, line
    with pytest.raises(ValueError):
        s.on_event("lost")
