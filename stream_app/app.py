"""The Faust application: app, then topics, then tables, then agents, then web views.

Follow one event: ``interactions`` topic -> ``score_interactions`` (micro-batch: check, encode
review text, update each touched user's state in the ``user-state`` table, rank) ->
``recommendations`` topic, one message per touched user per micro-batch. Bad messages go to
``dead-letters`` with the reason. Item upserts arrive on ``catalog`` and are encoded in batches by
``index_catalog`` into the ``catalog-items`` global table, which every worker reads.

Nothing runs on import: ``create_app(settings)`` builds everything; ``stream-app worker`` runs it.
"""
from __future__ import annotations

import asyncio
import tempfile
import logging
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import faust
import faust.streams
import orjson

from stream_app.codec import Rejected, dead_letter
from stream_app.processor import Misrouted, Processor, Source
from stream_app.settings import Settings

log = logging.getLogger(__name__)


@contextmanager
def event_context(event):
    """Make ``event`` the current event while writing a table inside ``take_events``.

    Faust routes a table write to the changelog partition of the *current* event, a context
    variable that only per-event stream iteration sets (faust-streaming #497). A micro-batch
    writes after the batch is taken, so we set it for each write ourselves. This uses the
    private name ``faust.streams._current_event`` of the pinned faust-streaming version;
    tests/integration cover it (state written in a batch is recovered after a restart)."""
    token = faust.streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        faust.streams._current_event.reset(token)


def create_app(settings: Settings, processor: Processor) -> faust.App:
    datadir = Path(tempfile.gettempdir()) / "stream-reco-faust" / settings.app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=settings.broker_url,
        store="memory://",
        # Faust's per-app working folder; kept out of the current directory.
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        table_standby_replicas=0,
        topic_replication_factor=settings.replication_factor,
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        producer_linger_ms=5,
        producer_max_batch_size=262_144,
        stream_buffer_maxsize=max(4096, 2 * settings.batch_max),
        consumer_max_fetch_size=4 * 1024 * 1024,
        broker_commit_interval=1.0,
        # A worker that dies without leaving the group blocks a rebalance until this expires.
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(1.0, settings.session_timeout_s / 3),
        # Do not wait on shutdown for buffered-but-unprocessed events to be acked (take_events
        # never acks those): they are re-read after restart and the state update is idempotent.
        stream_wait_empty=False,
    )

    # -- topics ----------------------------------------------------------------------------
    # internal=True: the worker creates its topics (with the tables' partition count) at start.
    raw = {"key_serializer": "raw", "value_serializer": "raw", "partitions": settings.partitions,
           "internal": True, "replicas": settings.replication_factor}
    interactions = app.topic(settings.topic("interactions"), **raw)
    catalog = app.topic(settings.topic("catalog"), **raw)
    recommendations = app.topic(settings.topic("recommendations"), **raw)
    dead_letters = app.topic(settings.topic("dead_letters"), **raw)

    # -- tables ----------------------------------------------------------------------------
    # Keys and values are bytes we encode ourselves (key_type=bytes selects the raw codec).
    users = app.Table("user-state", key_type=bytes, value_type=bytes, partitions=settings.partitions)
    items = app.GlobalTable("catalog-items", key_type=bytes, value_type=bytes, partitions=settings.partitions)

    # One thread for all model work: it keeps the loop free and the catalogue single-writer.
    model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
    stats = {"events": 0, "batches": 0, "recommendations": 0, "dead_letters": 0, "rerouted": 0,
             "started_at": time.time()}

    async def run_model(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(model_thread, fn, *args)

    async def sync_catalog() -> None:
        """Bring the in-memory catalogue up to the global table (after recovery or when another
        worker indexed items)."""
        if len(items) > len(processor.model.items):
            missing = [v for k, v in items.items() if k.decode() not in processor.model.items]
            await run_model(lambda: [processor.restore_item(v) for v in missing])

    async def reject(src: Source, reason: Rejected) -> None:
        stats["dead_letters"] += 1
        log.warning("dead letter %s[%d]@%d: %s: %s", src.topic, src.partition, src.offset,
                    reason.error_type, reason.error)
        await dead_letters.send(key=src.key, value=orjson.dumps(
            dead_letter(src.value, reason, src.topic, src.partition, src.offset, src.key)))

    def source(event) -> Source:
        m = event.message
        return Source(m.topic, m.partition, m.offset, m.key, m.value)

    # -- agents ----------------------------------------------------------------------------
    @app.agent(catalog)
    async def index_catalog(stream):
        async for batch in stream.take_events(settings.encoder_batch * 4, within=settings.batch_within_s):
            good, last = [], {}
            for event in batch:
                src = source(event)
                parsed = processor.parse_item(src)
                if isinstance(parsed, Rejected):
                    await reject(src, parsed)
                    continue
                good.append(parsed)
                last[parsed["item_id"]] = event
            try:
                records = await run_model(processor.index_items, good)
            except Exception as exc:  # keep serving: the batch goes to the dead-letter topic
                log.exception("catalog batch failed")
                for event in last.values():
                    await reject(source(event), Rejected("processing_error", repr(exc)))
                continue
            for item_id, record in records:
                with event_context(last[item_id]):
                    items[item_id.encode()] = record
            for item_id in {it["item_id"] for it in good if it.get("deleted")}:
                with event_context(last[item_id]):
                    items.pop(item_id.encode(), None)

    @app.agent(interactions)
    async def score_interactions(stream):
        async for batch in stream.take_events(settings.batch_max, within=settings.batch_within_s):
            await sync_catalog()
            good, good_events, last = [], [], {}
            for event in batch:
                src = source(event)
                parsed = processor.parse_event(src)
                if isinstance(parsed, Rejected):
                    await reject(src, parsed)
                elif isinstance(parsed, Misrouted):
                    stats["rerouted"] += 1
                    await interactions.send(key=parsed.event["user_id"].encode(), value=src.value)
                else:
                    good.append((parsed, src.offset))
                    good_events.append(event)
                    last[parsed["user_id"]] = event
            stats["events"] += len(batch)
            stats["batches"] += 1
            if not good:
                continue
            stored = {u: users.get(u.encode()) for u in last}
            try:
                result = await run_model(processor.apply_batch, good, stored)
            except Exception as exc:
                log.exception("interaction batch failed")
                for event in good_events:  # the others were already dead-lettered or re-routed
                    await reject(source(event), Rejected("processing_error", repr(exc)))
                continue
            for user, st in result.states.items():
                with event_context(last[user]):
                    users[user.encode()] = st.to_bytes()
            for user, msg in result.messages.items():
                await recommendations.send(key=user.encode(), value=orjson.dumps(msg))
            stats["recommendations"] += len(result.messages)

    # -- web views -------------------------------------------------------------------------
    @app.page("/stats")
    async def get_stats(web, request):
        return web.json({**stats, "items": len(processor.model.items), "users": len(users),
                         "model_version": processor.model.version,
                         "uptime_s": round(time.time() - stats["started_at"], 1)})

    @app.page("/users/{user_id}")
    async def get_user(web, request, user_id):
        raw_state = users.get(user_id.encode())
        if raw_state is None:
            return web.json({"error": f"unknown user {user_id!r}"}, status=404)
        from models.state import UserState

        st = UserState.from_bytes(raw_state)
        return web.json(processor.recommendation(user_id, st, st.last_ts, [], int(time.time() * 1000)))

    app.stats = stats  # for the CLI and tests
    return app
