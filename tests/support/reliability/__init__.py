"""The reliability scenarios against a real broker and real worker processes, shared by the tests
(tests/integration/test_reliability.py) and the standalone runner (``python -m tests.support.reliability``,
``cli``), so that both run exactly one copy of each:

- ``clients``: independent Kafka clients (confluent-kafka / librdkafka, not the project's
  aiokafka/Faust code) and Java's and librdkafka's key partitioners;
- ``ledger``: what was sent, and the exactly-once verdict on the recommendations read back;
- ``outcome``: the test catalogue, starting workers with it, the ``Outcome`` of one run;
- ``scenarios`` (duplicates, forget, keys, rebalances under load) and ``fuzzing`` (the fuzz corpus).
"""
from tests.support.reliability.fuzzing import scenario_fuzz
from tests.support.reliability.outcome import Outcome, start_worker
from tests.support.reliability.scenarios import (scenario_duplicates, scenario_forget, scenario_keys,
                                                 scenario_rebalance)

__all__ = ["Outcome", "scenario_duplicates", "scenario_forget", "scenario_fuzz", "scenario_keys",
           "scenario_rebalance", "start_worker"]
