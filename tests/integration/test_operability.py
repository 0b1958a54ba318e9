"""What an operator sees: Prometheus metrics, the overview and the live page in a real headless
Chromium, against a real broker and a real worker process."""
from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.chromium import HeadlessPage, chromium_available
from tests.integration.kafka_io import produce, produce_json
from tests.integration.test_worker import ev, worker  # noqa: F401 (worker: the fixture, reused)

pytestmark = pytest.mark.broker
SCREENSHOT = Path(__file__).resolve().parents[2] / "artifacts" / "live-page.png"  # docs/ holds a copy


def get(port: int, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def wait_until(fn, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.2)
    raise TimeoutError(fn)


def test_metrics_count_applied_duplicate_and_dead_lettered(worker, kafka_bootstrap):
    events = [ev("m1", "mu", "sw4", 1000, value=5), ev("m2", "mu", "heat", 2000, value=2)]
    produce_json(kafka_bootstrap, worker.topic("interactions"), events + [events[0]], "user_id")
    produce(kafka_bootstrap, worker.topic("interactions"), [(b"mu", b"{not json")])

    def scraped():
        status, ctype, body = get(worker.port, "/metrics")
        text = body.decode()
        done = ('stream_reco_events_total{outcome="applied"} 2.0' in text
                and 'stream_reco_events_total{outcome="duplicate"} 1.0' in text
                and 'stream_reco_dead_letters_total{reason="malformed_json"} 1.0' in text)
        return (status, ctype, text) if done else None

    status, ctype, text = wait_until(scraped)
    assert status == 200 and ctype.startswith("text/plain")
    for name in ("stream_reco_batch_size_bucket", "stream_reco_batch_duration_seconds_bucket",
                 "stream_reco_event_latency_seconds_count", "stream_reco_encoder_texts_total",
                 "stream_reco_recommendations_total", "stream_reco_model_info{"):
        assert name in text, name
    model_s = re.search(r'stream_reco_hot_path_seconds_total\{step="model"\} (\S+)', text)
    assert model_s and float(model_s.group(1)) > 0, "the model thread's time is counted"
    overview = json.loads(get(worker.port, "/overview")[2])
    assert overview["dead_letters_by_reason"].get("malformed_json") == 1
    assert overview["model_version"] == worker.stats()["model_version"]


@pytest.mark.skipif(not chromium_available() and os.environ.get("CI", "").lower() != "true",
                    reason="needs Debian's chromium (in CI it is installed and required)")
def test_live_page_follows_a_user_through_kafka(worker, kafka_bootstrap):
    topic = worker.topic("interactions")
    produce_json(kafka_bootstrap, topic, [ev("p1", "page-user", "sw4", 1000, value=5)], "user_id")
    wait_until(lambda: get(worker.port, "/users/page-user")[0] == 200)
    with HeadlessPage(timeout=30) as page:
        page.open(f"http://127.0.0.1:{worker.port}/?user=page-user")
        page.wait_for("document.querySelectorAll('#rec-list li.rec').length > 0", timeout=30)
        before = page.eval("document.querySelector('#events-applied').textContent")
        first = page.eval("Array.from(document.querySelectorAll('#rec-list li.rec')).map(e => e.dataset.itemId)")
        assert "sw4" not in first  # seen items are not recommended
        produce_json(kafka_bootstrap, topic, [ev("p2", "page-user", "pride", 2000, value=5),
                                              ev("p3", "page-user", "emma", 3000, type_="favorite")], "user_id")
        page.wait_for(f"document.querySelector('#events-applied').textContent !== {json.dumps(before)}", timeout=30)
        page.wait_for("document.querySelector('#events-applied').textContent.includes('3')", timeout=30)
        after = page.eval("Array.from(document.querySelectorAll('#rec-list li.rec')).map(e => e.dataset.itemId)")
        assert "pride" not in after and "emma" not in after
        assert page.eval("document.querySelector('#weights').children.length") > 0
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(SCREENSHOT)
    assert SCREENSHOT.stat().st_size > 10_000
