"""The worker serves exactly what the offline model computes: same checkpoint, same events,
same top-K."""
from __future__ import annotations

import time

import numpy as np
import pytest

from models.offline.base import ItemCatalog
from models.offline.data import Dataset, Interaction, Item
from models.offline.fused import FusedRecommender, encoder
from models.offline.train import TrainConfig
from models.features import item_text
from stream_app.dev.messages import catalog_message, interaction_message
from tests.integration.kafka_io import consume_until, produce_json

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
            items[iid] = Item(iid, f"{topic.title()} story {j}", plot.capitalize() + ".", (topic,), {}, None)
    events, ts = [], 0
    for u in range(24):
        fav = list(TOPICS)[u % 4]
        pool = [i for i in items if i.startswith(fav)] * 3 + list(items)
        for i in rng.choice(len(pool), size=10, replace=False):
            ts += 1000
            iid = pool[i]
            events.append(Interaction(f"u{u}", iid, ts, "rating", float(5 if iid.startswith(fav) else rng.integers(1, 4))))
    return Dataset("synthetic", items, events)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    ds = synthetic_dataset()
    catalog = ItemCatalog.from_dataset(ds)
    texts = [item_text(it.title, it.text, it.categories) for it in catalog.items]  # the worker's definition too
    rec = FusedRecommender("fused", item_vectors=encoder().encode(texts), progress=False,
                           config=TrainConfig(epochs=3, d_model=16, d_attn=8, batch_size=64))
    rec.fit(sorted(ds.interactions, key=lambda e: e.ts), catalog)
    rec.scorer.version = "fusion-synthetic-test"
    path = rec.save(tmp_path_factory.mktemp("ck") / "fusion-synthetic-test")
    return ds, rec, path


def test_worker_top_k_equals_offline_top_k(trained, worker_factory, kafka_bootstrap):
    ds, rec, path = trained
    w = worker_factory(extra_env={"STREAM_RECO_CHECKPOINT": str(path)}).start()
    produce_json(kafka_bootstrap, w.topic("catalog"), [catalog_message(it) for it in ds.items.values()], "item_id")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (w.stats() or {}).get("items", 0) < len(ds.items):
        time.sleep(0.2)
    assert w.stats()["model_version"] == "fusion-synthetic-test"

    history = [
        Interaction("newbie", "space-0", 1_000, "rating", 5.0),
        Interaction("newbie", "romance-1", 2_000, "rating", 1.0),
        Interaction("newbie", "space-3", 3_000, "click"),
        Interaction("newbie", "crime-2", 4_000, "favorite"),
    ]
    produce_json(kafka_bootstrap, w.topic("interactions"),
                 [interaction_message(e, f"eq-{i}") for i, e in enumerate(history)], "user_id")
    msgs = consume_until(kafka_bootstrap, w.topic("recommendations"),
                         lambda got: any(v["events_applied"] == 4 for k, v, _ in got if k == "newbie"), timeout=60)
    served = [v for k, v, _ in msgs if k == "newbie" and v["events_applied"] == 4][-1]

    offline = rec.model  # the trained InterestModel, fed the same events through the same update
    st = offline.new_state()
    for i, e in enumerate(history):
        offline.apply(st, e.event(f"eq-{i}"))
    expected = offline.recommend(st, k=10)

    assert [i["item_id"] for i in served["items"]] == [r.item_id for r in expected.items]
    np.testing.assert_allclose([i["score"] for i in served["items"]], [r.score for r in expected.items],
                               rtol=1e-3, atol=1e-3)
    for name, weight in expected.dimension_weights.items():
        assert served["dimension_weights"][name] == pytest.approx(weight, abs=1e-3)
    assert served["model_version"] == "fusion-synthetic-test"
