"""The web views of a worker with ``STREAM_RECO_HTTP_TOKEN``: 401 without the token, 200 with it;
and ``GET /users/{id}`` is never forwarded to a URL that a foreign member of the consumer group
advertises unless its host is allowed."""
from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from stream_app.processor import owner_partition
from stream_app.topics import hot_group

pytestmark = pytest.mark.broker

TOKEN = "tok-" + "x" * 28


def get(port: int, path: str, token: str | None = None) -> tuple[int, dict | bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, body = r.status, r.read(256) if path.endswith("/events") else r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    try:
        return status, orjson.loads(body)
    except orjson.JSONDecodeError:
        return status, body


@pytest.fixture(scope="module")
def worker(worker_factory):
    w = worker_factory(extra_env={"STREAM_RECO_HTTP_TOKEN": TOKEN})
    w.settings = replace(w.settings, http_token=TOKEN)  # what its /stats asks for (start waits on it)
    return w.start()


def test_views_ask_for_the_token(worker):
    for path in ("/stats", "/overview", "/metrics", "/users/u1", "/users/u1/events"):
        assert get(worker.port, path)[0] == 401, path
        assert get(worker.port, path, token="wrong")[0] == 401, path
    status, body = get(worker.port, "/stats", token=TOKEN)
    assert status == 200 and "partitions" in body
    assert get(worker.port, "/overview", token=TOKEN)[0] == 200
    assert get(worker.port, "/users/nobody", token=TOKEN)[0] == 404
    assert get(worker.port, f"/stats?token={TOKEN}")[0] == 200  # what the page's event stream sends
    assert get(worker.port, "/health") == (200, {"status": "ok"})  # for health checks, no token
    assert get(worker.port, "/")[0] == 200  # the page holds no data: it asks for the token


class _Recorder(BaseHTTPRequestHandler):
    hits: list = []

    def do_GET(self):
        self.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_a_group_member_advertising_a_host_that_is_not_allowed_is_not_asked(worker, kafka_bootstrap):
    trap = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=trap.serve_forever, daemon=True).start()
    url = f"http://localhost:{trap.server_address[1]}"  # the worker's own host is 127.0.0.1
    joined, leave, owned = threading.Event(), threading.Event(), set()

    async def member():
        from aiokafka import AIOKafkaConsumer

        c = AIOKafkaConsumer(worker.topic("interactions"), bootstrap_servers=kafka_bootstrap,
                             group_id=hot_group(worker.settings), client_id=f"{worker.settings.app_id} {url}",
                             enable_auto_commit=False)
        await c.start()
        try:
            while not leave.is_set():
                await c.getmany(timeout_ms=200)
                owned.clear()
                owned.update(tp.partition for tp in c.assignment())
                if owned:
                    joined.set()
        finally:
            await c.stop()

    thread = threading.Thread(target=lambda: asyncio.run(member()), daemon=True)
    thread.start()
    try:
        assert joined.wait(60), "the foreign member got no partition"
        user = next(u for u in (f"user-{i}" for i in range(1000))
                    if owner_partition(u, worker.settings.partitions) in owned)
        deadline = time.monotonic() + 30
        status, body = get(worker.port, f"/users/{user}", token=TOKEN)
        while status == 404 and time.monotonic() < deadline:  # until the group's description names it
            time.sleep(0.5)
            status, body = get(worker.port, f"/users/{user}", token=TOKEN)
        assert status == 502, (status, body)
        assert url in body["error"] and "STREAM_RECO_FORWARD_ALLOW" in body["error"], body
        assert _Recorder.hits == []
    finally:
        leave.set()
        thread.join(30)
        trap.shutdown()
