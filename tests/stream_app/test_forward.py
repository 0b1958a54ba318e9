"""``stream_app.forward``: a ``/users/{id}`` request is forwarded only to an allowed worker URL,
without following redirects, within a byte and time limit, and only a ``user_view/v1`` document
of the user asked for is passed on; the web token travels with it."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import web

from stream_app.forward import MAX_BODY, Forwarder, allow_patterns, refusal
from stream_app.settings import Settings

VIEW = json.loads((Path(__file__).resolve().parents[2] / "schemas/examples/user_view/top3.json").read_text())
USER = VIEW["user_id"]


def serve(routes: dict, seen: list):
    """A local HTTP server: path -> handler; every request's path and Authorization is recorded."""
    async def start():
        async def handle(request):
            seen.append((request.path, request.headers.get("Authorization")))
            return await routes.get(request.path, json_answer({"error": "unknown user"}, 404))(request)

        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, site._server.sockets[0].getsockname()[1]
    return start


def ask(routes: dict, settings: Settings, host: str = "127.0.0.1"):
    seen: list = []

    async def go():
        runner, port = await serve(routes, seen)()
        try:
            return await Forwarder(settings).user_view(f"http://{host}:{port}", USER)
        finally:
            await runner.cleanup()

    status, body = asyncio.run(go())
    return status, body, seen


def json_answer(obj, status=200):
    async def h(request):
        return web.json_response(obj, status=status)
    return h


USER_PATH = f"/users/{USER}"


def test_an_allowed_owner_answer_is_passed_on_with_the_token():
    status, body, seen = ask({USER_PATH: json_answer(VIEW)}, Settings(http_token="s3cret"))
    assert (status, body) == (200, VIEW)
    assert seen == [(USER_PATH, "Bearer s3cret")]


def test_a_host_that_is_not_allowed_gets_no_request():
    status, body, seen = ask({USER_PATH: json_answer(VIEW)}, Settings(), host="localhost")
    assert status == 502 and "STREAM_RECO_FORWARD_ALLOW" in body["error"], body
    assert seen == []
    status, body, seen = ask({USER_PATH: json_answer(VIEW)}, Settings(forward_allow="localhost"), host="localhost")
    assert status == 200 and len(seen) == 1


def test_redirects_are_not_followed():
    async def redirect(request):
        raise web.HTTPFound("/elsewhere")
    status, body, seen = ask({USER_PATH: redirect, "/elsewhere": json_answer(VIEW)}, Settings())
    assert status == 502 and "HTTP 302" in body["error"], body
    assert [p for p, _ in seen] == [USER_PATH]


@pytest.mark.parametrize("answer", [
    {"error": "anything"},
    {**VIEW, "user_id": "someone-else"},
    {**VIEW, "items": "not a list"},
])
def test_an_answer_that_is_not_the_users_view_is_refused(answer):
    status, body, _ = ask({USER_PATH: json_answer(answer)}, Settings())
    assert status == 502 and "user_view/v1" in body["error"], body


def test_an_oversized_answer_is_refused():
    async def big(request):
        return web.Response(body=b"x" * (MAX_BODY + 10), content_type="application/json")
    status, body, _ = ask({USER_PATH: big}, Settings())
    assert status == 503 and "limit" in body["error"], body


def test_a_slow_owner_is_given_up_on():
    async def slow(request):
        await asyncio.sleep(5)
        return web.json_response(VIEW)
    status, body, _ = ask({USER_PATH: slow}, Settings())
    assert status == 503 and "within 2 s" in body["error"], body


def test_unknown_user_at_the_owner_is_a_404():
    status, body, _ = ask({}, Settings())
    assert status == 404 and USER in body["error"]


def test_patterns():
    assert allow_patterns(Settings()) == ("127.0.0.1",)
    assert allow_patterns(Settings(forward_allow="W1.example, *.workers")) == ("w1.example", "*.workers")
    for bad in ("https://127.0.0.1:1", "http://127.0.0.1", "http://u:p@127.0.0.1:1", "http://127.0.0.1:1/x",
                "http://127.0.0.1:99999", "file:///etc/passwd", "http://127.0.0.1.evil:1"):
        assert refusal(bad, ("127.0.0.1",)) is not None, bad
