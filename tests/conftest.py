"""Shared fixtures: one Kafka broker per test session, and worker processes on it.

Broker choice: KAFKA_BOOTSTRAP_SERVERS if set; else testcontainers' Kafka when a Docker engine
answers; else a genuine Apache Kafka (KRaft) started from Maven Central jars. With CI=true a test
that needs the broker never skips: failing to start one is an error.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("STREAM_RECO_DATA_ROOT", REPO.parent / "shared" / "data"))
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
    from stream_app.broker import LocalKafka

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


class WorkerProcess:
    """``stream-app worker`` in a subprocess with its own topics, group and web port."""

    def __init__(self, bootstrap: str, prefix: str, tmp: Path, extra_env: dict | None = None):
        from stream_app.broker import free_port

        self.prefix = prefix
        self.port = free_port()
        self.env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "STREAM_RECO_APP_ID": prefix + "app",
                    "STREAM_RECO_TOPIC_PREFIX": prefix, "STREAM_RECO_WEB_PORT": str(self.port),
                    "STREAM_RECO_PARTITIONS": "4", "STREAM_RECO_LOG_LEVEL": "info",
                    "STREAM_RECO_BATCH_WITHIN_S": "0.05", **(extra_env or {})}
        self.log_path = tmp / f"worker-{prefix}-{uuid.uuid4().hex[:6]}.log"
        self.proc: subprocess.Popen | None = None

    def topic(self, name: str) -> str:
        return self.prefix + {"dead_letters": "dead-letters"}.get(name, name)

    def start(self, timeout: float = 120.0) -> "WorkerProcess":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "stream_app.cli", "worker"], cwd=REPO,
                                     env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited {self.proc.returncode}:\n{self.log()[-5000:]}")
            if self.stats() is not None and b"Ready" in self.log_path.read_bytes():
                return self
            time.sleep(0.5)
        raise TimeoutError(f"worker not ready in {timeout}s:\n{self.log()[-5000:]}")

    def stats(self) -> dict | None:
        import urllib.request

        import orjson

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=1) as r:
                return orjson.loads(r.read())
        except Exception:
            return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()


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
