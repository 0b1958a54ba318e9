"""``stream-app demo``: a local broker (unless KAFKA_BOOTSTRAP_SERVERS is set), one worker of its
own, a replay of a data set, then everything stopped again."""
from __future__ import annotations

import sys
import time
import uuid
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from stream_app.dev.replay import run_replay
from stream_app.settings import Settings


def demo_settings(settings: Settings, bootstrap_servers: str | None = None) -> Settings:
    """Settings for one demo run: a given local broker, or a unique topic prefix and app id on the
    configured cluster so the run starts from empty topics and state."""
    if bootstrap_servers:
        return replace(settings, bootstrap_servers=bootstrap_servers)
    run = uuid.uuid4().hex[:8]
    return replace(settings, topic_prefix=f"{settings.topic_prefix}demo-{run}-", app_id=f"{settings.app_id}-demo-{run}")


def demo_checkpoint(settings: Settings, dataset_path: str | Path, out: TextIO, progress: bool = True) -> Path:
    """The checkpoint the demo serves: ``settings.checkpoint`` when set, else one trained on the
    data set by ``stream-app train`` (cached by the data set's files and this package's code, so
    later demos reuse it). Prints the quality that checkpoint measured for itself."""
    import hashlib

    import orjson

    from models.offline.fused import train_checkpoint, use_encoder

    if settings.checkpoint:
        path = Path(settings.checkpoint)
    else:
        folder = Path(dataset_path).resolve()
        root = Path(__file__).resolve().parents[2]
        digest = hashlib.sha1()
        for f in sorted(folder.iterdir()) + sorted((root / "models").rglob("*.py")):
            if f.is_file():
                digest.update(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
        digest.update(settings.encoder.encode())  # the worker's encoder made the checkpoint's vectors
        cache = Path(settings.cache_dir) / "demo-checkpoints" / f"{folder.name}-{digest.hexdigest()[:12]}"
        found = sorted(p for p in cache.glob("*/config.json")) if cache.exists() else []
        if found:
            path = found[-1].parent
            print(f"serving the checkpoint trained earlier on {folder.name}: {path}", file=out, flush=True)
        else:
            print(f"training a checkpoint on {folder.name} (stream-app train; once, then cached) ...", file=out,
                  flush=True)
            use_encoder(settings.encoder, settings.static_encoder_path)
            path = train_checkpoint(folder, cache, budget_s=60.0, progress=progress, domain=settings.domain,
                                    sequence_budget_s=120.0)
    meta = orjson.loads((path / "config.json").read_bytes())
    m = meta.get("training", {}).get("measured")
    if m:
        def f(v) -> str:
            return "n/a" if v is None else f"{v:.4f}"

        print(f"model {meta['version']}: measured on {m['dataset']} (leave-one-out, full ranking, seen items "
              f"excluded): test NDCG@10 {f(m['ndcg@10'])}, Recall@10 {f(m['recall@10'])} over {m['n_test']} "
              f"users; validation NDCG@10 {f(m['valid_ndcg@10'])}", file=out, flush=True)
    else:
        print(f"model {meta['version']}: no measured quality recorded in its checkpoint", file=out, flush=True)
    return path


def run_demo(settings: Settings, dataset_path: str | Path, limit: int = 0, rate: float = 0.0,
             show_users: int = 3, *, progress: bool = True, idle_timeout: float = 30.0,
             out: TextIO | None = None, trained: bool = True) -> int:
    """``stream-app demo``: a broker (unless KAFKA_BOOTSTRAP_SERVERS is set), a trained checkpoint
    (``demo_checkpoint``; ``trained=False``: the untrained default), one worker serving it, a
    replay, then everything stopped again."""
    from stream_app.dev.broker import LocalKafka
    from stream_app.dev.local import LocalWorker

    out = out or sys.stdout
    t0 = time.monotonic()
    worker = None
    if trained:
        settings = replace(settings, checkpoint=str(demo_checkpoint(settings, dataset_path, out, progress)))
    with ExitStack() as stack:
        if settings.bootstrap_servers:
            settings = demo_settings(settings)
            print(f"using Kafka at {settings.bootstrap_servers}, topics {settings.topic_prefix}*", file=out, flush=True)
        else:
            print("starting a local Apache Kafka broker ...", file=out, flush=True)
            kafka = LocalKafka(partitions=settings.partitions)
            stack.callback(kafka.stop)
            kafka.start()
            settings = demo_settings(settings, kafka.bootstrap_servers)
            print(f"Kafka {kafka.version} at {settings.bootstrap_servers} ({time.monotonic() - t0:.1f} s)",
                  file=out, flush=True)
        worker = LocalWorker(settings)
        stack.callback(worker.stop)
        print(f"starting a worker (log {worker.log_path}) ...", file=out, flush=True)
        worker.start()
        print(f"worker ready on port {worker.port} ({time.monotonic() - t0:.1f} s)", file=out, flush=True)
        rc = run_replay(worker.settings, dataset_path, limit, rate, show_users, progress=progress,
                        idle_timeout=idle_timeout, out=out)
        if rc != 0:
            print(f"worker log {worker.log_path}:\n{worker.log()[-3000:]}", file=sys.stderr)
    print(f"demo finished in {time.monotonic() - t0:.1f} s (broker and worker stopped)", file=out, flush=True)
    return rc

