"""Training from the live topics on a real broker: a synthetic stream (with bad records and a
retried event) produced to ``catalog`` and ``interactions``, ``stream-app train --from-kafka``
writes a version whose metadata holds both models' figures on the recent slice and the data
window; later events come in, a deliberately worse model is refused (the pointer stays), and
``stream-app retrain`` publishes a better model than a randomised serving one."""
from __future__ import annotations

import uuid

import orjson
import pytest

from models import registry
from models.offline.loaders import load_dataset
from models.offline.retrain import RetrainConfig, retrain
from models.offline.synthetic import generate
from stream_app import cli
from stream_app.dev.messages import dataset_messages
from stream_app.settings import Settings
from stream_app.topic_data import load_from_kafka
from stream_app.topics import ensure_topics
from tests.integration.kafka_io import produce
from tests.support.bad_models import garbage_trainer, randomised

pytestmark = [pytest.mark.broker, pytest.mark.timeout(600)]

BUDGETS = ["--budget-s", "2", "--sequence-kind", "gru", "--sequence-budget-s", "3", "--warm-sequence-budget-s", "3",
           "--warm-epochs", "2", "--seed", "0"]
SMALL = RetrainConfig(budget_s=2.0, sequence_kind="gru", sequence_budget_s=3.0, warm_sequence_budget_s=3.0,
                      warm_epochs=2)


def _meta(models, version) -> dict:
    return orjson.loads((models / version / registry.METADATA).read_bytes())


def test_train_from_the_topics_then_refuse_a_worse_model_and_publish_a_better_one(kafka_bootstrap, tmp_path,
                                                                                  monkeypatch):
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "STREAM_RECO_TOPIC_PREFIX": f"rt{uuid.uuid4().hex[:8]}-",
           "STREAM_RECO_APP_ID": f"rt-{uuid.uuid4().hex[:6]}"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = Settings.from_env()
    ensure_topics(settings)
    ds = load_dataset(generate("ecommerce", tmp_path / "synth", seed=0, n_users=120, n_items=80, n_events=2000))
    catalog, events = dataset_messages(ds)
    cut = events[int(len(events) * 0.75)]["ts"]
    head, tail = [e for e in events if e["ts"] < cut], [e for e in events if e["ts"] >= cut]
    bad = [b"{not json", orjson.dumps({"event_id": "x", "type": "rating", "user_id": "u1", "item_id": "i", "ts": 1}),
           orjson.dumps(head[5])]  # malformed, a rating without its value, a retry of an event
    produce(kafka_bootstrap, settings.topic("catalog"),
            [(it["item_id"].encode(), orjson.dumps(it)) for it in catalog] + [(b"k", b"\x00\x01")])
    produce(kafka_bootstrap, settings.topic("interactions"),
            [(e["user_id"].encode(), orjson.dumps(e)) for e in head[:500]] + [(b"u1", b) for b in bad]
            + [(e["user_id"].encode(), orjson.dumps(e)) for e in head[500:]])
    models = tmp_path / "models"

    assert cli.main(["train", "--from-kafka", "--out", str(models), *BUDGETS]) == 0
    (v1,) = registry.versions(models)
    meta = _meta(models, v1)
    assert registry.current_version(models) == v1 and meta["gate"]["publish"]  # beats the untrained default
    read = meta["data"]["read"]
    assert read["records"] == {"catalog": len(catalog) + 1, "interactions": len(head) + len(bad)}
    assert read["bad"] == {"catalog/malformed_json": 1, "interactions/malformed_json": 1,
                           "interactions/schema_violation": 1} and read["duplicates"] == 1
    assert meta["data"]["events"] == len(head) and meta["data"]["items"] == len(catalog)
    assert meta["data"]["last_event_ts"] == head[-1]["ts"] and meta["data"]["train"]["first_ts"] == head[0]["ts"]
    assert meta["data"]["train"]["last_ts"] < meta["data"]["cutoff_ts"] <= meta["data"]["recent"]["first_ts"]
    for side in ("new", "serving"):
        assert meta["recent"][side]["n_ranked"] > 20 and 0.0 <= meta["recent"][side]["ndcg@10"] <= 1.0
        assert 0.0 <= meta["recent"][side]["hr@10"] <= 1.0
    assert meta["parent"]["version"] is None and meta["warm_start"] is None
    assert (models / v1 / "config.json").is_file() and orjson.loads((models / v1 / "config.json").read_bytes())[
        "version"] == v1

    produce(kafka_bootstrap, settings.topic("interactions"), [(e["user_id"].encode(), orjson.dumps(e)) for e in tail])
    data, stats = load_from_kafka(settings)
    assert len(data.interactions) == len(events) and stats.duplicates == 1
    worse = retrain(data, models, registry.current_checkpoint(models), SMALL, trainer=garbage_trainer)
    assert not worse["gate"]["publish"] and registry.current_version(models) == v1  # the pointer did not move
    assert worse["recent"]["new"]["ndcg@10"] < worse["recent"]["serving"]["ndcg@10"]
    assert worse["data"]["cutoff_ts"] > head[-1]["ts"]  # judged only on events v1 never saw

    bad_version = randomised(models / v1, models)
    registry.publish(models, bad_version)
    assert cli.main(["retrain", "--every", "1s", "--runs", "1", "--out", str(models), "--warm-start", *BUDGETS]) == 0
    newest = registry.versions(models)[-1]
    meta = _meta(models, newest)
    assert registry.current_version(models) == newest != bad_version and meta["gate"]["publish"]
    assert meta["recent"]["new"]["ndcg@10"] > meta["recent"]["serving"]["ndcg@10"]
    assert meta["parent"]["version"] == bad_version and meta["warm_start"]["from"] == bad_version


def test_a_stopped_retrain_leaves_no_partial_version(kafka_bootstrap, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
           "STREAM_RECO_TOPIC_PREFIX": f"rs{uuid.uuid4().hex[:8]}-"}
    settings = Settings.from_env(env)
    ensure_topics(settings)
    ds = load_dataset(generate("ecommerce", tmp_path / "synth", seed=1, n_users=60, n_items=40, n_events=600))
    catalog, events = dataset_messages(ds)
    produce(kafka_bootstrap, settings.topic("catalog"), [(it["item_id"].encode(), orjson.dumps(it)) for it in catalog])
    produce(kafka_bootstrap, settings.topic("interactions"), [(e["user_id"].encode(), orjson.dumps(e)) for e in events])
    models = tmp_path / "models"
    proc = subprocess.Popen([sys.executable, "-m", "stream_app.cli", "retrain", "--every", "1h", "--out", str(models),
                             "--budget-s", "30", "--sequence-kind", "gru", "--sequence-budget-s", "30"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not (models.is_dir() and any(p.name.endswith(".partial") for p in models.iterdir())):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()[-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert list(models.iterdir()) == [] and registry.current_version(models) is None
