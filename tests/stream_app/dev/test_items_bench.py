"""``stream-app bench --items N`` end to end at a tiny N: a real broker, real worker processes; the
table and the JSON carry every measurement (no timing is asserted: timings belong in tables)."""
from __future__ import annotations

import json
import math

import pytest

from stream_app import cli

pytestmark = pytest.mark.broker


def test_bench_items_end_to_end(kafka_bootstrap, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    out = tmp_path / "items.json"
    assert cli.main(["bench", "--items", "120", "--events", "600", "--encode-max", "80", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| items | events | answered | 1 worker ev/s |" in printed
    assert "PROJECTED" in printed  # 40 of the 120 items were not encoded: the full-N time is a projection

    report = json.loads(out.read_text())
    (run,) = report["runs"]
    assert run["items"] == 120 and run["events"] == 600
    ix = run["indexing"]
    assert ix["encoded_items"] == 80 and ix["changelog_items"] == 40 and ix["worker_items"] == 120
    assert not ix["measured_for_all_items"] and ix["projected_all_items_s"] > 0
    full, half, restore = run["full"], run["half"], run["restore"]
    assert full["events_covered"] == 600 and full["complete"] and full["dead_letters"] == 0
    assert full["events_per_s"] > 0 and full["regressions"] == 0
    assert half["events_covered"] == 300 and half["complete"] and 0 < half["rate"] < full["events_per_s"]
    assert math.isfinite(full["latency_p99_ms"]) and math.isfinite(half["latency_p99_ms"])
    assert restore["items_when_answering"] == 120 and restore["probe_answered"] == restore["probe_events"]
    assert 0 < restore["ready_s"] <= restore["first_answer_s"]
    for w in ("worker_1_memory", "worker_2_memory"):
        assert run[w]["peak_rss_bytes"] >= run[w]["rss_bytes"] > 50 * 2**20
    assert 0.0 <= run["recall"]["recall@10 vs exact"] <= 1.0
    for key in ("loadavg_start", "loadavg_end"):
        assert key in run
    assert all("loadavg_1m" in run[k] for k in ("indexing", "full", "half", "restore", "recall"))
