"""Build the processor (encoder, model, schemas) and run the Faust worker."""
from __future__ import annotations

import gc
import logging
import sys
import time

from stream_app.settings import Settings, SettingsError, unknown_variables

log = logging.getLogger(__name__)


def build_processor(settings: Settings):
    from models import fold_jit
    from models.encoder import build_encoder
    from models.engine import InterestModel
    from models.features import TextSentiment
    from stream_app.codec import Codec
    from stream_app.model_watch import start_version
    from stream_app.processor import Processor

    from models.engine import EncoderMismatch
    from models.static_encoder import StaticEncoderMissing

    try:
        encoder = build_encoder(device=settings.device, batch_size=settings.encoder_batch,
                                threads=settings.torch_threads, kind=settings.encoder,
                                static_path=settings.static_encoder_path)
    except StaticEncoderMissing as exc:
        raise SystemExit(f"STREAM_RECO_ENCODER=static: {exc}") from None
    # the published version, if any (one trained with another encoder is refused, logged)
    model, _ = start_version(settings.models_dir, settings.domain, encoder=encoder)
    if model is None:
        model = InterestModel.load(settings.checkpoint or None, domain=settings.domain, text_dim=encoder.dim)
        try:
            model.check_encoder(encoder.version, encoder.dim)
        except EncoderMismatch as exc:
            raise SystemExit(f"STREAM_RECO_CHECKPOINT={settings.checkpoint}: {exc}") from None
        model.encoder = encoder.version
    t0 = time.perf_counter()
    fold_jit.warm_up()
    log.info("state update %s (%.1f s)", "compiled" if fold_jit.available else "in numpy rounds (no numba)",
             time.perf_counter() - t0)
    log.info("encoder on %s; model %s; domain %s (event weights %s, dimensions %s)", encoder.device,
             model.version, model.domain.name, model.event_weights, ",".join(model.dim_names))
    return Processor(model, encoder, TextSentiment(),
                     Codec.load(settings.schemas_dir, max_bytes=settings.max_message_bytes), top_k=settings.top_k)


def run_worker(settings: Settings) -> int:
    """Blocks until the worker is stopped (SIGTERM / SIGINT); returns the exit code: 0 after a
    normal stop, non-zero when it stopped because something failed (the reason is printed)."""
    import asyncio

    from stream_app import catalog
    from stream_app.app import create_app
    from stream_app.kafka_clients import security_options
    from stream_app.topics import ClusterWatch, ensure_topics

    if not settings.bootstrap_servers:
        raise SystemExit("KAFKA_BOOTSTRAP_SERVERS is not set: point it at your Kafka cluster "
                         "(host:port[,host:port]), or start a local broker with `stream-app broker`")
    for name in unknown_variables():
        log.warning("unknown setting %s is ignored", name)
    try:
        ensure_topics(settings, timeout_s=30.0)
    except SettingsError as exc:  # the broker refused the login: the message names the settings
        raise SystemExit(f"cannot use Kafka at {settings.bootstrap_servers}: {exc}") from None
    except Exception as exc:  # aiokafka raises several kinds for "no broker there"
        raise SystemExit(f"cannot reach Kafka at {settings.bootstrap_servers} ({type(exc).__name__}: {exc}). "
                         "Check KAFKA_BOOTSTRAP_SERVERS and that the broker is running "
                         "(`stream-app broker` starts a local one on 127.0.0.1:9092).") from None
    cluster_id = asyncio.run(ClusterWatch(settings.bootstrap_servers, security=security_options(settings)).current())
    app = create_app(settings, build_processor(settings), cluster_id=cluster_id)
    # Everything built so far (torch, transformers, the model) lives as long as the process: out
    # of the collector's sight, a full collection no longer walks millions of objects (it paused
    # the hot path for ~200 ms every few seconds under load).
    gc.freeze()
    catalog.FREEZE_AFTER_READ = True  # and the catalogue, once read (stream_app.catalog)
    try:
        worker_class()(app, loglevel=settings.log_level).execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    else:
        code = 0
    from stream_app import fatal

    reason = getattr(app, "crash_reason", None) or fatal.reason()
    if reason is not None:
        print(f"stream-app worker stopped: {reason!r}", file=sys.stderr)
        return code or 1
    return code


def worker_class():
    """faust.Worker whose log handlers rate-limit repeated warnings and errors (during an outage
    each kind of message is logged a few times per 10 s, with a count of the rest)."""
    import faust

    from stream_app import logs

    class Worker(faust.Worker):
        def on_setup_root_logger(self, logger, level):
            super().on_setup_root_logger(logger, level)
            logs.install(logger)

    return Worker
