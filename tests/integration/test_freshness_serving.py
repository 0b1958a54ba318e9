"""A news worker serves item freshness (``models.freshness``) as the offline model computes it: a
checkpoint whose blend weighs freshness, the catalogue's publishing times through Kafka, the same
events, the same top-K, scores and reasons; an item published after the events is not lifted; a
worker restarted after a kill -9 serves the same freshness before its first event."""
from __future__ import annotations

import time

import numpy as np
import orjson
import pytest

from models.engine import InterestModel
from models.features import item_text
from models.offline.data import Interaction
from models.offline.fused import encoder, train_checkpoint
from models.offline.loaders import load_dataset
from models.offline.synthetic import generate
from stream_app.dev.messages import catalog_message, interaction_message
from tests.integration.kafka_io import consume_until, produce_json
from tests.support.cooc import get, wait_settled

pytestmark = [pytest.mark.broker, pytest.mark.timeout(600)]

BLEND = {"attention": 0.3, "co-engagement": 0.2, "popularity": 0.1, "freshness": 0.4}


@pytest.fixture(scope="module")
def news_checkpoint(tmp_path_factory):
    folder = generate("news", tmp_path_factory.mktemp("data") / "news", seed=0)
    path = train_checkpoint(folder, tmp_path_factory.mktemp("ck"), budget_s=5.0, progress=False, domain="news",
                            sequence_budget_s=5.0)
    config = orjson.loads((path / "config.json").read_bytes())  # a blend that weighs freshness, ungated
    config["blend"] = BLEND
    config.pop("blend_gate", None)
    (path / "config.json").write_bytes(orjson.dumps(config))
    return load_dataset(folder), path


def test_a_news_worker_serves_freshness_as_the_offline_model(news_checkpoint, worker_factory, kafka_bootstrap):
    ds, path = news_checkpoint
    items = list(ds.items.values())
    assert all(it.published_ts is not None for it in items)
    offline = InterestModel.load(path, domain="news")
    vecs = encoder().encode([item_text(it.title, it.text, it.categories) for it in items])
    for it, v in zip(items, vecs):
        offline.add_item(it.item_id, v, it.categories, it.attributes, it.published_ts)
    assert offline.blend == BLEND

    w = worker_factory(extra_env={"STREAM_RECO_CHECKPOINT": str(path), "STREAM_RECO_DOMAIN": "news"}).start()
    produce_json(kafka_bootstrap, w.topic("catalog"), [catalog_message(it) for it in items], "item_id")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (w.stats() or {}).get("items", 0) < len(items):
        time.sleep(0.2)
    assert w.stats()["items"] == len(items)

    by_time = sorted(items, key=lambda it: it.published_ts)
    now = by_time[len(items) // 2].published_ts + 3_600_000  # half the catalogue is out, half is not yet
    history = [Interaction("reader", it.item_id, now - 60_000 * (4 - k), "click") for k, it in enumerate(by_time[60:64])]
    produce_json(kafka_bootstrap, w.topic("interactions"),
                 [interaction_message(e, f"fresh-{i}") for i, e in enumerate(history)], "user_id")
    consume_until(kafka_bootstrap, w.topic("recommendations"),
                  lambda got: any(v["events_applied"] == len(history) for k, v, _ in got if k == "reader"), timeout=60)
    wait_settled(kafka_bootstrap, [w])
    served = get(w, "/users/reader")
    assert served["events_applied"] == len(history)

    st = offline.new_state()  # the same events through the same update
    for i, e in enumerate(history):
        offline.apply(st, e.event(f"fresh-{i}"))
    expected = offline.recommend(st, k=10)

    assert [i["item_id"] for i in served["items"]] == [r.item_id for r in expected.items]
    np.testing.assert_allclose([i["score"] for i in served["items"]], [r.score for r in expected.items],
                               rtol=1e-3, atol=1e-3)
    for got, want in zip(served["items"], expected.items):
        for name, v in want.reasons.items():
            assert got["reasons"][name] == pytest.approx(v, abs=1e-3)
    assert served["dimension_weights"]["freshness"] == pytest.approx(expected.dimension_weights["freshness"], abs=1e-3)
    published = {it.item_id: it.published_ts for it in items}
    fresh = {i["item_id"]: i["reasons"]["freshness"] for i in served["items"]}
    assert len(set(np.round(list(fresh.values()), 6))) > 1  # it weighs in, item by item
    for a in fresh:  # by publishing time among the items out; one not out yet scores as the oldest
        for b in fresh:
            if published[a] > now:
                assert fresh[a] <= fresh[b] + 1e-9
            elif published[b] <= now and published[a] > published[b]:
                assert fresh[a] > fresh[b]

    w.proc.kill()  # kill -9; the restarted worker answers before any new event, its freshness clock from
    w.proc.wait()  # the co-engagement rows it reads at start (every worker's events are in them)
    again = worker_factory(prefix=w.prefix, extra_env={"STREAM_RECO_CHECKPOINT": str(path),
                                                       "STREAM_RECO_DOMAIN": "news"}).start()
    wait_settled(kafka_bootstrap, [again])
    restored = get(again, "/users/reader")
    assert restored["events_applied"] == len(history)
    assert [i["item_id"] for i in restored["items"]] == [i["item_id"] for i in served["items"]]
    for got, want in zip(restored["items"], served["items"]):
        assert got["reasons"]["freshness"] == pytest.approx(want["reasons"]["freshness"], abs=1e-3)
