"""``stream-app train --from-kafka`` and ``stream-app retrain``: what they parse to, which model
they judge against, and the settings they take from the worker's environment (no broker)."""
from __future__ import annotations

import pytest

from models import registry
from stream_app.cli import build_parser, main
from stream_app.retrain import _config, serving_checkpoint
from stream_app.settings import Settings


def parse(*argv):
    return build_parser(Settings()).parse_args(list(argv))


def test_train_takes_a_data_set_or_the_topics_and_not_both():
    args = parse("train", "--from-kafka", "--out", "m", "--warm-start", "--holdout", "1d", "--since", "7d",
                 "--margin", "0.01", "--gate-metric", "hr@10")
    assert args.from_kafka and args.dataset is None and args.holdout == 86_400_000 and args.since == "7d"
    cfg = _config(Settings(), args)
    assert cfg.warm_start and cfg.holdout_ms == 86_400_000 and cfg.margin == 0.01 and cfg.metric == "hr@10"
    assert not parse("train", "--dataset", "d", "--out", "m").from_kafka
    for argv in (("train", "--out", "m"), ("train", "--dataset", "d", "--from-kafka", "--out", "m"),
                 ("retrain", "--out", "m"), ("retrain", "--every", "soon", "--out", "m")):
        with pytest.raises(SystemExit):
            parse(*argv)
    assert parse("retrain", "--every", "30m", "--out", "m", "--runs", "2").every == 1_800_000


def test_the_domain_is_the_workers_unless_named():
    assert _config(Settings(domain="news"), parse("train", "--from-kafka", "--out", "m")).domain == "news"
    assert _config(Settings(domain="news"), parse("train", "--from-kafka", "--out", "m", "--domain", "video")).domain \
        == "video"


def test_the_serving_model_is_the_named_one_then_the_published_one_then_the_setting(tmp_path):
    models = tmp_path / "models"
    assert serving_checkpoint(Settings(), models) is None
    assert str(serving_checkpoint(Settings(checkpoint="/ck"), models)) == "/ck"
    v = registry.new_version(models)
    (models / v).mkdir(parents=True)
    registry.publish(models, v)
    assert serving_checkpoint(Settings(checkpoint="/ck"), models) == models / v
    assert str(serving_checkpoint(Settings(checkpoint="/ck"), models, "/other")) == "/other"


def test_from_kafka_needs_the_bootstrap_servers(monkeypatch, tmp_path):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    with pytest.raises(SystemExit, match="KAFKA_BOOTSTRAP_SERVERS"):
        main(["train", "--from-kafka", "--out", str(tmp_path)])
