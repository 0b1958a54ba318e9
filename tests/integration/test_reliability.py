"""Reliability against a real broker and real worker processes: exactly-once application per user,
bad input dead-lettered with its reason, keys and partitioners, forgetting a user, rebalances.

Each test runs one scenario of ``tests/support/reliability/`` (the standalone runner
``python -m tests.support.reliability`` repeats the same scenarios) and fails with the scenario's
report: which users lost or doubled how many events, which bad messages were not dead-lettered, ...
Reading the outputs uses confluent-kafka consumers that never join a group.
"""
from __future__ import annotations

import pytest

from tests.support import reliability as h

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def worker(worker_factory, kafka_bootstrap):
    """One worker with the test catalogue, shared by the scenarios that bring their own users."""
    w = h.start_worker(worker_factory, kafka_bootstrap)
    yield w
    w.stop()


@pytest.fixture
def live_worker(worker):
    assert worker.running(), f"the shared worker died in an earlier test; log {worker.log_path}:\n{worker.log()[-3000:]}"
    return worker


def check(outcome: h.Outcome) -> None:
    print(outcome.report())
    assert outcome.ok, outcome.report()


@pytest.mark.timeout(150)
def test_the_same_event_id_is_applied_once(live_worker, kafka_bootstrap):
    check(h.scenario_duplicates(kafka_bootstrap, live_worker))


@pytest.mark.timeout(150)
def test_forget_leaves_tombstones_and_starts_the_user_afresh(live_worker, kafka_bootstrap):
    check(h.scenario_forget(kafka_bootstrap, live_worker))


@pytest.mark.timeout(400)
def test_every_bad_message_is_dead_lettered_and_valid_ones_applied_once(live_worker, kafka_bootstrap):
    check(h.scenario_fuzz(kafka_bootstrap, live_worker))


@pytest.mark.timeout(300)
def test_null_wrong_and_differently_partitioned_keys_are_applied_once(worker_factory, kafka_bootstrap):
    check(h.scenario_keys(kafka_bootstrap, worker_factory))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["leave", "join", "crash"])
def test_exactly_once_through_a_rebalance_under_load(mode, worker_factory, kafka_bootstrap):
    check(h.scenario_rebalance(kafka_bootstrap, worker_factory, mode))


@pytest.mark.timeout(300)
def test_exactly_once_through_a_crash_with_keys_placed_by_crc32(worker_factory, kafka_bootstrap):
    """librdkafka's default partitioner: most events land off their user's partition, and are
    applied where they land or re-routed; a worker dies midway."""
    check(h.scenario_rebalance(kafka_bootstrap, worker_factory, "crash", partitioner="consistent_random"))
