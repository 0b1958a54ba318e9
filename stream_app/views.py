"""The worker's web views: ``GET /stats`` (counters, catalogue size, model version) and
``GET /users/{user_id}`` (the current list of a user held by this worker)."""
from __future__ import annotations

import time

from models.state import UserState
from stream_app.agents import Context


async def stats(ctx: Context, web):
    s = ctx.stats
    return web.json({**s, "items": len(ctx.processor.model.items), "users": len(ctx.tables.users),
                     "model_version": ctx.processor.model.version,
                     "uptime_s": round(time.time() - s["started_at"], 1)})


async def user(ctx: Context, web, user_id: str):
    raw_state = ctx.tables.users.get(user_id.encode())
    if raw_state is None:
        return web.json({"error": f"unknown user {user_id!r}"}, status=404)
    st = UserState.from_bytes(raw_state)
    msg = await ctx.run_model(ctx.processor.recommendation, user_id, st, st.last_ts, [], int(time.time() * 1000))
    return web.json(msg)


def register(app, ctx: Context) -> None:
    @app.page("/stats")
    async def stats_view(web, request):
        return await stats(ctx, web)

    @app.page("/users/{user_id}")
    async def user_view(web, request, user_id):
        return await user(ctx, web, user_id)
