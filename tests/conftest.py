"""The suite's shared fixtures live in tests/support/ and are loaded as pytest plugins: one Kafka
broker per test session (``kafka_bootstrap``) and worker processes on it (``worker_factory``)."""

pytest_plugins = ["tests.support.broker", "tests.support.workers"]
