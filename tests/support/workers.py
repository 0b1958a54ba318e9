"""pytest plugin: ``stream-app worker`` processes on the session's broker (``WorkerProcess`` and
the ``worker_factory`` fixture); the reliability runner starts the same ``WorkerProcess``."""
from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from stream_app.dev.local import LocalWorker
from stream_app.settings import Settings


class WorkerProcess(LocalWorker):
    """``stream-app worker`` in a subprocess with its own topics, group and web port."""

    def __init__(self, bootstrap: str, prefix: str, tmp: Path, extra_env: dict | None = None):
        settings = replace(Settings.from_env(), bootstrap_servers=bootstrap, app_id=prefix + "app",
                           topic_prefix=prefix, partitions=4, log_level="info", batch_within_s=0.05,
                           check_output=True)  # a recommendation that breaks its schema stops the test
        super().__init__(settings, log_path=tmp / f"worker-{prefix}-{uuid.uuid4().hex[:6]}.log",
                         extra_env=extra_env)
        self.prefix = prefix

    def topic(self, name: str) -> str:
        return self.settings.topic(name)


@pytest.fixture(scope="module")
def worker_factory(kafka_bootstrap, tmp_path_factory):
    started: list[WorkerProcess] = []
    tmp = tmp_path_factory.mktemp("workers")

    def make(prefix: str | None = None, extra_env: dict | None = None) -> WorkerProcess:
        w = WorkerProcess(kafka_bootstrap, prefix or f"t{uuid.uuid4().hex[:8]}-", tmp, extra_env)
        started.append(w)
        return w

    yield make
    for w in started:
        w.stop()
