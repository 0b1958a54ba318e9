"""The Faust application: it runs the worker (lifecycle, signals, logging), the web views and
the timers, and hosts the services that consume the topics (``stream_app.services.register``).
This module only assembles them around one ``stream_app.context.Context``.

Follow one event: ``interactions`` topic -> ``stream_app.hotpath`` (read in bulk by a consumer of
its own; a batch is checked, review texts encoded, each event folded into its user's state, and
each touched user ranked once: ``stream_app.processor.Processor.apply_batch``) -> the user's state
to ``stream_app.store`` and its changelog -> ``recommendations`` topic, one message per touched
user per batch -> offsets committed (``stream_app.checkpoint``). Bad messages go to
``dead-letters`` with the reason (``stream_app.dead_letters``). Item upserts arrive on ``catalog``
and are encoded in batches by ``stream_app.catalog.CatalogIndexer`` into the catalogue changelog,
which every worker follows.

Nothing runs on import: ``create_app(settings, processor)`` builds everything;
``stream-app worker`` (``stream_app.worker``) runs it.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import faust

from stream_app import services, topics, views
from stream_app.context import Context
from stream_app.forward import advertised_host
from stream_app.kafka_clients import faust_credentials
from stream_app.model_watch import ModelWatcher
from stream_app.online_eval import OnlineEval
from stream_app.processor import Processor
from stream_app.settings import Settings


def create_app(settings: Settings, processor: Processor, cluster_id: str | None = None) -> faust.App:
    app = faust.App(settings.app_id, **faust_options(settings))
    ctx = Context(app, settings, topics.TopicNames.from_settings(settings), processor, cluster_id=cluster_id)
    processor.sensor = ctx.sensor
    encoder = (getattr(processor.encoder, "version", "?"), getattr(processor.encoder, "device", "?"))
    ctx.sensor.on_model(processor.model.version, *encoder)
    registry = ctx.sensor.metrics.registry
    ctx.evaluator = OnlineEval(settings.top_k, registry=registry)
    if settings.models_dir:  # the version serving now is not loaded again; any other one `current` names is
        ctx.models = ModelWatcher(settings.models_dir, processor, ctx.run_model, serving=processor.model.version,
                                  domain=settings.domain, registry=registry,
                                  on_swap=lambda model: ctx.sensor.on_model(model.version, *encoder))
    services.register(app, ctx)
    views.register(app, ctx)
    return app


def faust_options(settings: Settings) -> dict:
    datadir = Path(tempfile.gettempdir()) / "stream-reco-faust" / settings.app_id
    datadir.mkdir(parents=True, exist_ok=True)
    return dict(
        broker=settings.broker_url,
        broker_credentials=faust_credentials(settings),  # the same protocol and login as every other client
        store="memory://",
        datadir=str(datadir),  # Faust's per-app working folder; kept out of the current directory
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        table_standby_replicas=0,
        topic_replication_factor=settings.replication_factor,
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        # How the other workers reach this one's web views (/users/{id} is forwarded to the owner).
        canonical_url=f"http://{advertised_host(settings.web_host)}:{settings.web_port}",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(1.0, settings.session_timeout_s / 3),
    )
