"""The worker's web views (Faust's web server, aiohttp underneath): what people and scripts see
of a running worker without reading Kafka.

- ``GET /``: the live page (``stream_app/static/``): pick a user, watch their list change;
- ``GET /users/{user_id}``: the current list of a user, a ``user_view/v1`` document
  (``schemas/user_view.v1.json``: a recommendation plus the items' titles); asked on a worker
  that does not hold the user, the request is forwarded to the one that does
  (``stream_app.owners``);
- ``GET /users/{user_id}/events``: Server-Sent Events, one ``user_view/v1`` document per update
  (``{"forgotten": true}`` when the user was forgotten);
- ``GET /overview``: events/s, lag, dead letters by reason, model version and swaps, the online
  hit rate, recently active users (JSON, for the page: ``overview``);
- ``GET /metrics``: Prometheus text format;
- ``GET /stats``: counters, catalogue size, model version and swaps, the online hit rate, domain (JSON);
- ``GET /cooc/{item_id}``: the item's co-engagement row learned online, as this worker follows it
  (``stream_app.cooc_stream``: ``n``, ``ts`` and the neighbours' weights, without decay applied);
- ``GET /health``: ``{"status": "ok"}`` while the web server runs (never asks for the token).

With ``STREAM_RECO_HTTP_TOKEN`` set, every data view answers 401 unless the request carries
``Authorization: Bearer <token>`` (or ``?token=<token>``: the page's ``EventSource`` cannot set a
header); the page and its static files hold no data and load without it (the page asks for the
token and keeps it in the browser's session storage). Workers pass the token on when they forward.

Every count they show is read from the sensor (``stream_app.sensor``).
"""
from __future__ import annotations

import asyncio
import functools
import hmac
import time
from pathlib import Path

import faust
import orjson

from models.state import UserState
from stream_app.context import Context
from stream_app.forward import Forwarder
from stream_app.kafka_clients import security_options
from stream_app.owners import Owners
from stream_app.processor import owner_partition
from stream_app.topics import hot_group

STATIC = Path(__file__).resolve().parent / "static"
_CONTENT_TYPES = {".html": "text/html", ".js": "application/javascript", ".css": "text/css"}
KEEPALIVE_S = 15.0


def stats(ctx: Context) -> dict:
    """The body of ``GET /stats``: the sensor's counters, and what the worker holds."""
    cooc = ctx.processor.model.cooc
    online = {"online_rows": len(cooc.online), "online_bytes": cooc.online.nbytes()} if cooc is not None else {}
    out = ctx.sensor.stats()
    return {**out, "cooc": {**out["cooc"], **online}, "items": len(ctx.processor.model.items),
            "users": len(ctx.hot.store) if ctx.hot else 0,
            "model_version": ctx.processor.model.version, "domain": ctx.processor.model.domain.name,
            "partitions": sorted(ctx.hot.owned) if ctx.hot else [],
            "model_watch": ctx.models.status() if ctx.models else None,
            "online": ctx.evaluator.stats() if ctx.evaluator else None}


def overview(ctx: Context) -> dict:
    """The body of ``GET /overview``: the sensor's summary, the serving model's swaps
    (``stream_app.model_watch``), the online hit rate and the recently active users
    (``stream_app.online_eval``)."""
    ev = ctx.evaluator
    return {**ctx.sensor.overview(), "model_watch": ctx.models.status() if ctx.models else None,
            "online": ev.overview() if ev else None, "recent_users": ev.recent_users() if ev else []}


async def current_list(ctx: Context, user_id: str) -> dict | None:
    """The user's list now as a ``user_view/v1`` document, ranked in the model thread (never on
    the loop while it mutates); None when this worker holds no state of the user."""
    raw_state = ctx.hot.store.find(user_id) if ctx.hot else None
    if raw_state is None:
        return None
    st = UserState.from_bytes(raw_state)
    msg = await ctx.run_model(ctx.processor.recommendation, user_id, st, st.last_ts, [], int(time.time() * 1000))
    return user_view(ctx, msg)


def user_view(ctx: Context, recommendation: dict) -> dict:
    """A ``recommendation/v1`` message as a ``user_view/v1`` document: the same fields, and the
    title of each listed item the catalogue knows."""
    titles = ctx.catalog.titles if ctx.catalog else {}
    listed = (i["item_id"] for i in recommendation["items"])
    return {**recommendation, "schema": "user_view/v1", "item_titles": {i: titles[i] for i in listed if i in titles}}


def online_row(model, item_id: str) -> dict | None:
    """The body of ``GET /cooc/{item_id}``: the item's online row (``OnlineRows.snapshot``), or
    None when the model has no co-engagement counts or none for the item."""
    cooc = model.cooc
    row = None if cooc is None else cooc.index.get(item_id)
    if row is None:
        return None
    return {"item_id": item_id, **cooc.online.snapshot(row, cooc.counts.ids)}


async def user(ctx: Context, web, owners: Owners, forwarder: Forwarder, user_id: str, forwarded: bool):
    msg = await current_list(ctx, user_id)
    if msg is not None:
        return web.json(msg)
    url = await owners.url_of(owner_partition(user_id, ctx.settings.partitions))
    if url and url != str(ctx.app.conf.canonical_url) and not forwarded:
        status, body = await forwarder.user_view(url, user_id)  # only to an allowed worker, checked
        return web.json(body, status=status)
    return web.json({"error": f"unknown user {user_id!r}"}, status=404)


def authorized(request, token: str) -> bool:
    """Whether ``request`` carries ``token`` (constant-time comparison); always when no token is set."""
    if not token:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        given = request.query.get("token", "")
    return hmac.compare_digest(given.strip().encode(), token.encode())


async def user_events(ctx: Context, request, user_id: str):
    """Server-Sent Events: every new list of ``user_id`` published by this worker."""
    from aiohttp import web as aioweb

    resp = aioweb.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    q = ctx.subscribers.subscribe(user_id)
    try:
        await resp.write(b": subscribed\n\n")
        while True:
            try:
                value = await asyncio.wait_for(q.get(), timeout=KEEPALIVE_S)
            except asyncio.TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            msg = orjson.loads(value)
            if "items" in msg:
                msg = user_view(ctx, msg)
            await resp.write(b"data: " + orjson.dumps(msg) + b"\n\n")
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        ctx.subscribers.unsubscribe(user_id, q)
    return resp


def static_file(web, name: str):
    path = (STATIC / name).resolve()
    if path.parent != STATIC or not path.is_file() or path.suffix not in _CONTENT_TYPES:
        return web.json({"error": f"no such file {name!r}"}, status=404)
    return web.bytes(path.read_bytes(), content_type=_CONTENT_TYPES[path.suffix])


def register(app: faust.App, ctx: Context) -> None:
    owners = Owners(ctx.settings.bootstrap_servers, hot_group(ctx.settings), ctx.topics.interactions,
                    security=security_options(ctx.settings))
    forwarder = Forwarder(ctx.settings)
    token = ctx.settings.http_token

    def guarded(view):
        """``view`` answered only to a request with the token (when one is set)."""
        @functools.wraps(view)
        async def check(web, request, **kw):
            if not authorized(request, token):
                return web.json({"error": "missing or wrong token: send Authorization: Bearer "
                                          "<STREAM_RECO_HTTP_TOKEN>"},
                                status=401, headers={"WWW-Authenticate": 'Bearer realm="stream-reco"'})
            return await view(web, request, **kw)
        return check

    @app.page("/")
    async def page_view(web, request):
        return static_file(web, "index.html")

    @app.page("/static/{name}")
    async def static_view(web, request, name):
        return static_file(web, name)

    @app.page("/health")
    async def health_view(web, request):
        return web.json({"status": "ok"})

    @app.page("/stats")
    @guarded
    async def stats_view(web, request):
        return web.json(stats(ctx))

    @app.page("/overview")
    @guarded
    async def overview_view(web, request):
        return web.json(overview(ctx))

    @app.page("/metrics")
    @guarded
    async def metrics_view(web, request):
        body, content_type = ctx.sensor.render()
        return web.bytes(body, content_type=content_type.split(";")[0])

    @app.page("/cooc/{item_id}")
    @guarded
    async def cooc_view(web, request, item_id):
        body = await ctx.run_model(online_row, ctx.processor.model, item_id)
        if body is None:
            return web.json({"error": f"no co-engagement row for item {item_id!r}"}, status=404)
        return web.json(body)

    @app.page("/users/{user_id}")
    @guarded
    async def user_view(web, request, user_id):
        """Answered by the worker that holds the user: asked elsewhere, the request is forwarded."""
        return await user(ctx, web, owners, forwarder, user_id, forwarded="forwarded" in request.query)

    @app.page("/users/{user_id}/events")
    @guarded
    async def user_events_view(web, request, user_id):
        return await user_events(ctx, request, user_id)
