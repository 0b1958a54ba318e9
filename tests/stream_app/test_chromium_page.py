"""The live page (stream_app/static) in a real headless Chromium, against fake endpoints.

This checks the page's JavaScript, not the worker: a stdlib HTTP server serves index.html at
``/`` and the static folder at ``/static/`` (the worker's layout) plus fake ``GET /users/{id}`` (JSON), ``GET /users/{id}/events`` (Server-Sent Events fed
by the test) and ``GET /overview``. Skipped when Chromium is missing, except with CI=true, where
a missing browser fails the test (install it with ``apt-get install -y chromium``).
"""
from __future__ import annotations

import json
import os
import queue
import re
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.chromium import HeadlessPage, JavaScriptError, chromium_available

STATIC = Path(__file__).resolve().parents[2] / "stream_app" / "static"
IN_CI = os.environ.get("CI", "").lower() == "true"
DIMS = ("content", "sentiment", "recency", "category", "collaborative")

pytestmark = pytest.mark.timeout(180)


def rec_message(user: str, events_applied: int, item_ids: list[str], titles: dict | None = None) -> dict:
    items = []
    for rank, item_id in enumerate(item_ids, start=1):
        reasons = {d: round(0.05 * (i + 1) - 0.01 * rank, 4) for i, d in enumerate(DIMS)}
        reasons["sentiment"] = -0.03 if rank == 2 else reasons["sentiment"]  # a negative bar
        items.append({"item_id": item_id, "score": round(sum(reasons.values()), 6), "rank": rank,
                      "reasons": reasons})
    msg = {
        "schema": "recommendation/v1", "user_id": user, "items": items,
        "dimension_weights": {"content": 0.34, "sentiment": 0.1, "recency": 0.14,
                              "category": 0.24, "collaborative": 0.18},
        "model_version": "attn-fusion-test", "based_on_event_ts": 1_700_000_000_000 + events_applied,
        "based_on_event_ids": [f"e{events_applied}"], "generated_at": int(time.time() * 1000),
        "events_applied": events_applied,
    }
    if titles:
        msg["item_titles"] = titles
    return msg


class FakeApi:
    """The page's endpoints, fed by the test; SSE subscribers are counted per user."""

    def __init__(self):
        self.current: dict[str, dict] = {}
        self.overview = {"events_per_s": 0.0, "lag": 0, "dead_letters_by_reason": {},
                         "model_version": "attn-fusion-test"}
        self.subscribers: dict[str, list[queue.Queue]] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        api = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(STATIC), **kwargs)

            def log_message(self, *args):
                pass

            def translate_path(self, path):  # the worker's layout: "/" -> index.html, /static/*
                if path.startswith("/static/"):
                    path = path[len("/static"):]
                return super().translate_path(path)

            def _json(self, status: int, body) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path == "/overview":
                    return self._json(200, api.overview)
                m = re.fullmatch(r"/users/([^/]+)(/events)?", path)
                if not m:
                    return super().do_GET()
                user = m.group(1)
                if not m.group(2):
                    msg = api.current.get(user)
                    return self._json(200, msg) if msg else self._json(404, {"error": "unknown user"})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                q: queue.Queue = queue.Queue()
                with api.lock:
                    api.subscribers.setdefault(user, []).append(q)
                try:
                    self.wfile.write(b": subscribed\n\n")
                    self.wfile.flush()
                    while not api.stopping.is_set():
                        try:
                            msg = q.get(timeout=0.25)
                            chunk = b"data: " + json.dumps(msg).encode() + b"\n\n"
                        except queue.Empty:
                            chunk = b": ping\n\n"
                        self.wfile.write(chunk)
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with api.lock:
                        api.subscribers[user].remove(q)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_port}"

    def push(self, msg: dict) -> None:
        """Make ``msg`` the current state and stream it to the user's subscribers."""
        user = msg["user_id"]
        self.current[user] = msg
        with self.lock:
            for q in self.subscribers.get(user, []):
                q.put(msg)

    def wait_subscribed(self, user: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.subscribers.get(user):
                    return
            time.sleep(0.02)
        raise TimeoutError(f"the page never subscribed to /users/{user}/events")

    def close(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def page():
    if not chromium_available():
        if IN_CI:
            pytest.fail("Chromium is required in CI: apt-get install -y chromium")
        pytest.skip("no Chromium installed (apt-get install -y chromium)")
    with HeadlessPage(timeout=20) as p:
        yield p


@pytest.fixture
def api():
    a = FakeApi()
    yield a
    a.close()


def rec_ids(page: HeadlessPage) -> list[str]:
    return page.eval("[...document.querySelectorAll('#rec-list li.rec')].map(li => li.dataset.itemId)")


def text(page: HeadlessPage, selector: str) -> str:
    return page.eval(f"document.querySelector({json.dumps(selector)}).textContent")


def test_list_renders_and_follows_the_stream(page, api, tmp_path):
    api.push(rec_message("u1", 3, ["i1", "i2", "i3"], titles={"i1": "Alpha", "i2": "Beta"}))
    api.overview = {"events_per_s": 12.5, "lag": 7, "model_version": "attn-fusion-test",
                    "dead_letters_by_reason": {"unknown_item": 2, "oversized": 0}}

    page.open(f"{api.base}/?user=u1")
    page.wait_for("document.querySelectorAll('#rec-list li.rec').length > 0")
    assert rec_ids(page) == ["i1", "i2", "i3"]
    assert text(page, "#events-applied") == "3"
    assert page.eval("getComputedStyle(document.querySelector('main')).display") == "grid"  # CSS
    assert page.eval("document.querySelector('#user-input').value") == "u1"
    # titles from item_titles, else the item id
    assert page.eval("[...document.querySelectorAll('#rec-list li.rec .title')].map(e => e.textContent)") \
        == ["Alpha", "Beta", "i3"]
    # one bar per dimension contribution, one per dimension weight, negative ones marked
    assert page.eval("document.querySelectorAll('#rec-list li.rec[data-item-id=\"i1\"] .reasons .bar').length") == 5
    assert page.eval("document.querySelectorAll('#rec-list li.rec[data-item-id=\"i2\"] .bar.negative').length") == 1
    assert page.eval("[...document.querySelectorAll('#weights .bar')].map(b => b.dataset.dimension)") == list(DIMS)
    widths = page.eval("[...document.querySelectorAll('#weights .bar .fill')].map(f => parseFloat(f.style.width))")
    assert widths[0] == pytest.approx(100.0) and 0 < widths[1] < widths[0]

    # overview panel, polled from /overview
    page.wait_for("document.querySelector('#ov-rate').textContent === '12.5'")
    assert text(page, "#ov-lag") == "7"
    assert text(page, "#ov-dead") == "unknown_item: 2"
    assert "attn-fusion-test" in text(page, "#overview")

    # a newer message on the SSE stream replaces the list
    before = text(page, "#events-applied")
    api.wait_subscribed("u1")
    api.push(rec_message("u1", 4, ["i4", "i1", "i3"], titles={"i4": "Delta"}))
    page.wait_for(f"document.querySelector('#events-applied').textContent !== {json.dumps(before)}")
    assert text(page, "#events-applied") == "4"
    assert rec_ids(page) == ["i4", "i1", "i3"]
    assert text(page, "#rec-list li.rec[data-item-id='i4'] .title") == "Delta"
    assert text(page, "#rec-list li.rec[data-item-id='i1'] .title") == "Alpha"  # titles are kept

    # an older message (fewer events applied) is ignored; the next newer one is shown
    api.push(rec_message("u1", 2, ["old1"]))
    api.push(rec_message("u1", 5, ["i5", "i4"]))
    page.wait_for("document.querySelector('#events-applied').textContent === '5'")
    assert rec_ids(page) == ["i5", "i4"]

    shot = page.screenshot(tmp_path / "page.png")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    assert not [line for line in page.console if line.startswith("uncaught")], page.console


def test_user_box_switches_user_and_waits_for_unknown_one(page, api):
    api.push(rec_message("u1", 1, ["i1"]))
    page.open(f"{api.base}/")
    assert page.eval("document.querySelectorAll('#rec-list li.rec').length") == 0

    page.eval("document.querySelector('#user-input').value = 'u2'; "
              "document.querySelector('#user-go').click(); true")
    page.wait_for("document.querySelector('#user-message').textContent.includes('No list yet')")
    assert page.eval("new URLSearchParams(location.search).get('user')") == "u2"
    api.wait_subscribed("u2")
    api.push(rec_message("u2", 1, ["j1", "j2"]))
    page.wait_for("document.querySelectorAll('#rec-list li.rec').length === 2")
    assert rec_ids(page) == ["j1", "j2"]
    assert text(page, "#events-applied") == "1"

    # back to u1: its current list, and u2's stream is closed
    page.eval("document.querySelector('#user-input').value = 'u1'; "
              "document.querySelector('#user-go').click(); true")
    page.wait_for("document.querySelector('#rec-list li.rec')?.dataset.itemId === 'i1'")
    deadline = time.monotonic() + 10
    while api.subscribers.get("u2") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not api.subscribers.get("u2")


def online(hit_rate: float, by_version: dict) -> dict:
    return {"k": 10, "window": 1000, "judged": 400, "hits": int(400 * hit_rate), "hit_rate": hit_rate,
            "mrr": round(hit_rate / 2, 6), "by_version": by_version}


def test_the_model_the_online_hit_rate_and_the_recent_users_appear(page, api):
    api.overview = {"events_per_s": 3.0, "lag": 0, "dead_letters_by_reason": {}, "model_version": "20260101T000000000Z",
                    "model_watch": {"serving": "20260101T000000000Z", "swaps": 0, "last_swap_at": None, "refused": {}},
                    "online": online(0.125, {"20260101T000000000Z": {"judged": 400, "hits": 50, "hit_rate": 0.125,
                                                                     "mrr": 0.06}}),
                    "recent_users": ["u7", "u3"]}
    api.push(rec_message("u3", 2, ["i1", "i2"]))
    page.open(f"{api.base}/")
    page.wait_for("document.querySelector('#online-hit').textContent === '0.125'")
    assert text(page, "#online-mrr") == "0.063" and text(page, "#online-judged") == "400"
    assert text(page, "#ov-model") == "20260101T000000000Z" and text(page, "#ov-swaps").startswith("0")
    assert page.eval("[...document.querySelectorAll('#online-versions .bar')].map(b => b.dataset.dimension)") \
        == ["20260101T000000000Z"]
    assert page.eval("[...document.querySelectorAll('#recent-users button')].map(b => b.dataset.user)") == ["u7", "u3"]

    # a swap: the new version, the swap count and a mark on the chart; the hit rate by version
    api.overview = {**api.overview, "model_version": "20260101T000000001Z",
                    "model_watch": {"serving": "20260101T000000001Z", "swaps": 1, "last_swap_at": time.time(),
                                    "refused": {"20260101T000000002Z": "BadZipFile: not a zip file"}},
                    "online": online(0.25, {"20260101T000000000Z": {"judged": 300, "hits": 30, "hit_rate": 0.1,
                                                                    "mrr": 0.05},
                                             "20260101T000000001Z": {"judged": 100, "hits": 40, "hit_rate": 0.4,
                                                                     "mrr": 0.2}})}
    page.wait_for("document.querySelector('#online-hit').textContent === '0.250'")
    assert text(page, "#ov-model") == "20260101T000000001Z"
    assert text(page, "#ov-swaps").startswith("1 (last ") and "20260101T000000002Z" in text(page, "#ov-swaps")
    assert page.eval("document.querySelectorAll('#online-chart line.swap').length") == 1
    assert page.eval("Number(document.querySelector('#online-chart').dataset.points)") >= 2
    assert page.eval("[...document.querySelectorAll('#online-versions .bar')].map(b => b.dataset.value)") \
        == ["0.1", "0.4"]

    # a recent user picked from the landing view
    page.eval("document.querySelector('#recent-users button[data-user=\"u3\"]').click(); true")
    page.wait_for("document.querySelectorAll('#rec-list li.rec').length === 2")
    assert rec_ids(page) == ["i1", "i2"] and text(page, "#rec-model") == "attn-fusion-test"
    assert not [line for line in page.console if line.startswith("uncaught")], page.console


def test_headless_page_helpers(page, tmp_path):
    page.open("data:text/html,<p id=x>hi</p><script>console.log('ready')</script>")
    assert page.eval("document.getElementById('x').textContent") == "hi"
    assert page.eval("new Promise(r => setTimeout(() => r(41 + 1), 10))") == 42
    with pytest.raises(JavaScriptError, match="ReferenceError"):
        page.eval("no_such_name.x")
    with pytest.raises(TimeoutError, match="still not true"):
        page.wait_for("false", timeout=0.3)
    assert "console.log: ready" in page.console
    assert page.screenshot(tmp_path / "a" / "b.png").stat().st_size > 0
