"""Shared fixtures: one Kafka broker per test session, and worker processes on it.

Broker choice: KAFKA_BOOTSTRAP_SERVERS if set; else testcontainers' Kafka when a Docker engine
answers; else a genuine Apache Kafka (KRaft) started from Maven Central jars. With CI=true a test
that needs the broker never skips: failing to start one is an error.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from stream_app.dev.local import LocalWorker
from stream_app.settings import Settings

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() == "true"


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap():
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as kc:
            yield kc.get_bootstrap_server()
        return
    from stream_app.dev.broker import LocalKafka

    try:
        kafka = LocalKafka(partitions=4).start()
    except Exception as exc:  # no Java/Maven here: skip locally, fail in CI
        if IN_CI:
            raise
        pytest.skip(f"no Kafka broker available: {exc}")
    try:
        yield kafka.bootstrap_servers
    finally:
        kafka.stop()


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
