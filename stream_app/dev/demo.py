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


def run_demo(settings: Settings, dataset_path: str | Path, limit: int = 0, rate: float = 0.0,
             show_users: int = 3, *, progress: bool = True, idle_timeout: float = 30.0,
             out: TextIO | None = None) -> int:
    """``stream-app demo``: a broker (unless KAFKA_BOOTSTRAP_SERVERS is set) and one worker of its
    own, a replay, then both stopped again."""
    from stream_app.dev.broker import LocalKafka
    from stream_app.dev.local import LocalWorker

    out = out or sys.stdout
    t0 = time.monotonic()
    worker = None
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

