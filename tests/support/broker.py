"""pytest plugin: one Kafka broker per test session (the ``kafka_bootstrap`` fixture).

Broker choice: KAFKA_BOOTSTRAP_SERVERS if set; else testcontainers' Kafka when a Docker engine
answers; else a genuine Apache Kafka (KRaft) started from Maven Central jars. With CI=true a test
that needs the broker never skips: failing to start one is an error.
"""
from __future__ import annotations

import os

import pytest

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

    kafka = _start_or_skip(LocalKafka(partitions=4), "no Kafka broker available")
    try:
        yield kafka.bootstrap_servers
    finally:
        kafka.stop()


def _start_or_skip(kafka, why: str):
    """``kafka`` started; without Java/Maven here: skipped locally, an error in CI."""
    try:
        return kafka.start()
    except Exception as exc:
        if IN_CI:
            raise
        pytest.skip(f"{why}: {exc}")


SASL_USERS = {"admin": "admin-secret", "alice": "alice-secret"}


@pytest.fixture(scope="session")
def sasl_kafka():
    """A second, local broker whose client port asks for a SASL login (PLAIN and SCRAM-SHA-256/512,
    users ``SASL_USERS``); started only for the tests that ask for it. Yields its bootstrap address."""
    from stream_app.dev.broker import LocalKafka

    kafka = _start_or_skip(LocalKafka(partitions=4, sasl_users=SASL_USERS), "no local Kafka broker with SASL available")
    try:
        yield kafka.bootstrap_servers
    finally:
        kafka.stop()
