"""Build the processor (encoder, model, schemas) and run the Faust worker."""
from __future__ import annotations

import logging

from stream_app.settings import Settings, unknown_variables

log = logging.getLogger(__name__)


def build_processor(settings: Settings):
    from models.encoder import build_encoder
    from models.engine import InterestModel
    from models.features import TextSentiment
    from stream_app.codec import Codec
    from stream_app.processor import Processor

    encoder = build_encoder(device=settings.device, batch_size=settings.encoder_batch,
                            threads=settings.torch_threads)
    model = InterestModel.load(settings.checkpoint or None)
    log.info("encoder on %s; model %s", encoder.device, model.version)
    return Processor(model, encoder, TextSentiment(),
                     Codec.load(settings.schemas_dir, max_bytes=settings.max_message_bytes), top_k=settings.top_k)


def run_worker(settings: Settings) -> int:
    """Blocks until the worker is stopped (SIGTERM / SIGINT); returns the exit code."""
    import faust

    from stream_app.app import create_app
    from stream_app.topics import ensure_topics

    if not settings.bootstrap_servers:
        raise SystemExit("KAFKA_BOOTSTRAP_SERVERS is not set: point it at your Kafka cluster "
                         "(host:port[,host:port]), or start a local broker with `stream-app broker`")
    for name in unknown_variables():
        log.warning("unknown setting %s is ignored", name)
    try:
        ensure_topics(settings, timeout_s=30.0)
    except Exception as exc:  # aiokafka raises several kinds for "no broker there"
        raise SystemExit(f"cannot reach Kafka at {settings.bootstrap_servers} ({type(exc).__name__}: {exc}). "
                         "Check KAFKA_BOOTSTRAP_SERVERS and that the broker is running "
                         "(`stream-app broker` starts a local one on 127.0.0.1:9092).") from None
    app = create_app(settings, build_processor(settings))
    faust.Worker(app, loglevel=settings.log_level).execute_from_commandline()
    return 0
