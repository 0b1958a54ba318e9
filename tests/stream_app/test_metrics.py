"""Latencies observed a batch at a time leave the histogram exactly as one ``observe`` per event."""
from __future__ import annotations

import random

from stream_app.metrics import Metrics


def exposition(m: Metrics) -> list[str]:
    return [line for line in m.render()[0].decode().splitlines() if "_created" not in line]


def test_published_latencies_match_one_observe_per_event():
    rng = random.Random(11)
    batched, single = Metrics(), Metrics()
    now = 1_800_000_000_000
    for _ in range(200):
        ts = [now - rng.choice([0, 1, 7, 100, 250, 999, 1000, 2500, 10_000, 60_000, 10**7]) - rng.randrange(50)
              for _ in range(rng.randrange(0, 300))] + [now + 5]  # one from the future: latency 0
        batched.published(3, ts, now_ms=now)
        single.recommendations.inc(3)
        for t in ts:
            single.event_latency.observe(max(0.0, (now - t) / 1000.0))
        now += rng.randrange(1, 2000)
    assert batched.event_latency._sum.get() == single.event_latency._sum.get()  # same float, bit for bit
    assert exposition(batched) == exposition(single)
    assert any(line.startswith("stream_reco_event_latency_seconds_sum") for line in exposition(batched))
