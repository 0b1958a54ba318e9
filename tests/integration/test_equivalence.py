"""The worker serves exactly what the offline model computes: ``stream-app train``'s checkpoint
(attention fusion, CF factors, co-engagement counts and parameters, blend weights), the same
events, the same top-K, scores, reasons and weights. The data set has categories, items without
text and review events with text (tags). The worker's co-engagement counts learn through Kafka
(``stream_app.cooc_stream``), so its list is compared once it has settled (every pair message
folded and every row followed: then it holds what the offline replay applied locally), ranked at
request time by ``GET /users/{id}``."""
from __future__ import annotations

import time

import numpy as np
import pytest

from models.engine import InterestModel
from models.features import TextSentiment, item_text
from models.offline.data import Dataset, Interaction, Item, write_jsonl_dataset
from models.offline.fused import encoder, train_checkpoint
from stream_app.dev.messages import catalog_message, interaction_message
from tests.integration.kafka_io import consume_until, produce_json
from tests.support.cooc import get, online_rows, wait_settled

pytestmark = pytest.mark.broker

TOPICS = {
    "space": ["starship battle in deep space", "alien planet exploration", "rebels fight a galactic empire",
              "astronauts stranded on mars", "robot uprising on a space station"],
    "romance": ["two lovers meet in paris", "a wedding goes wrong", "letters between distant sweethearts",
                "a summer romance by the sea", "rivals fall in love at a ball"],
    "crime": ["detective hunts a serial killer", "bank heist in los angeles", "mafia family feud",
              "a con artist fools a city", "kidnapping in snowy minnesota"],
    "cooking": ["chef opens a tiny restaurant", "baking contest in london", "street food across asia",
                "a family recipe is lost", "wine tasting in the countryside"],
}


def synthetic_dataset(seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    items = {}
    for topic, plots in TOPICS.items():
        for j, plot in enumerate(plots):
            iid = f"{topic}-{j}"
            text = "" if j == 4 else plot.capitalize() + "."  # one item per topic has no text
            items[iid] = Item(iid, f"{topic.title()} story {j}", text, (topic,), {}, None)
    events, ts = [], 0
    for u in range(24):
        fav = list(TOPICS)[u % 4]
        pool = [i for i in items if i.startswith(fav)] * 3 + list(items)
        for n, i in enumerate(rng.choice(len(pool), size=10, replace=False)):
            ts += 1000 * (n % 2)  # pairs of events share a timestamp
            iid = pool[i]
            events.append(Interaction(f"u{u}", iid, ts, "rating", float(5 if iid.startswith(fav) else rng.integers(1, 4))))
            if n % 4 == 1:
                events.append(Interaction(f"u{u}", iid, ts, "review", None, "loved it" if iid.startswith(fav) else "dull"))
    return Dataset("synthetic", items, events)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    ds = synthetic_dataset()
    folder = write_jsonl_dataset(ds, tmp_path_factory.mktemp("data") / "synthetic")
    path = train_checkpoint(folder, tmp_path_factory.mktemp("ck"), budget_s=5.0, progress=False, sequence_budget_s=5.0)
    return ds, path


def offline_model(ds: Dataset, path) -> InterestModel:
    """The checkpoint loaded the way the worker loads it, its catalogue encoded the worker's way."""
    model = InterestModel.load(path)
    items = list(ds.items.values())
    vecs = encoder().encode([item_text(it.title, it.text, it.categories) for it in items])
    for it, v in zip(items, vecs):
        model.add_item(it.item_id, v, it.categories, it.attributes)
    return model


def test_worker_top_k_equals_offline_top_k(trained, worker_factory, kafka_bootstrap):
    ds, path = trained
    offline = offline_model(ds, path)
    assert offline.cooc is not None and offline.blend and (path / "cooc.npz").exists()
    assert offline.sequence is not None and (path / "sequence.npz").exists()
    w = worker_factory(extra_env={"STREAM_RECO_CHECKPOINT": str(path)}).start()
    produce_json(kafka_bootstrap, w.topic("catalog"), [catalog_message(it) for it in ds.items.values()], "item_id")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (w.stats() or {}).get("items", 0) < len(ds.items):
        time.sleep(0.2)
    assert w.stats()["model_version"] == path.name

    history = [
        Interaction("newbie", "space-0", 1_000, "rating", 5.0),
        Interaction("newbie", "romance-1", 2_000, "rating", 1.0),
        Interaction("newbie", "space-3", 3_000, "click"),
        Interaction("newbie", "space-3", 3_000, "review", None, "loved it"),  # a tag, same timestamp
        Interaction("newbie", "crime-2", 4_000, "favorite"),
    ]
    produce_json(kafka_bootstrap, w.topic("interactions"),
                 [interaction_message(e, f"eq-{i}") for i, e in enumerate(history)], "user_id")
    msgs = consume_until(kafka_bootstrap, w.topic("recommendations"),
                         lambda got: any(v["events_applied"] == len(history) for k, v, _ in got if k == "newbie"), timeout=60)
    assert [v for k, v, _ in msgs if k == "newbie" and v["events_applied"] == len(history)]
    wait_settled(kafka_bootstrap, [w])
    learned = online_rows(w, ["space-0", "space-3", "crime-2"])
    assert all(r and r["neighbours"] for r in learned.values()), learned  # the pairs went through Kafka
    served = get(w, "/users/newbie")
    assert served["events_applied"] == len(history)

    feats = {"loved it": (TextSentiment()("loved it"), encoder().encode(["loved it"])[0])}
    st = offline.new_state()  # the same events through the same update (co-engagement counts too)
    for i, e in enumerate(history):
        offline.apply(st, e.event(f"eq-{i}"), feats)
    expected = offline.recommend(st, k=10)

    assert [i["item_id"] for i in served["items"]] == [r.item_id for r in expected.items]
    np.testing.assert_allclose([i["score"] for i in served["items"]], [r.score for r in expected.items],
                               rtol=1e-3, atol=1e-3)
    for got, want in zip(served["items"], expected.items):
        assert set(got["reasons"]) == set(want.reasons) >= {"co-engagement", "recency", "bias"}
        assert sum(got["reasons"].values()) == pytest.approx(got["score"], abs=1e-3)
        for name, v in want.reasons.items():
            assert got["reasons"][name] == pytest.approx(v, abs=1e-3)
    for name, weight in expected.dimension_weights.items():
        assert served["dimension_weights"][name] == pytest.approx(weight, abs=1e-3)
    assert sum(served["dimension_weights"].values()) == pytest.approx(1.0, abs=1e-3)
    assert served["model_version"] == path.name

