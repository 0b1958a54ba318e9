"""An item's catalogue records land on its own changelog partition whatever partition the producer
chose: an upsert on one partition of ``catalog`` and its deletion on another end deleted, on this
worker and on one restarted from the changelog."""
from __future__ import annotations

import time

import orjson
import pytest
from confluent_kafka import Producer

from stream_app.catalog import item_partition
from stream_app.topics import TopicNames
from tests.integration.kafka_io import consume_until, produce_json
from tests.integration.test_worker import CATALOG, ev, load_catalog
from tests.support.reliability.clients import TopicReader

pytestmark = pytest.mark.broker


def send(bootstrap: str, topic: str, item: dict, partition: int) -> None:
    """One catalogue message on an explicit partition, by an independent client (librdkafka)."""
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    p.produce(topic, key=item["item_id"].encode(), value=orjson.dumps(item), partition=partition)
    assert p.flush(30) == 0


def dead_lettered(bootstrap: str, topic: str, event_id: str, timeout: float = 60.0) -> list:
    got = consume_until(bootstrap, topic, lambda msgs: any(event_id in v["original"] for _, v, _ in msgs), timeout)
    return [v["error_type"] for _, v, _ in got if event_id in v["original"]]


def test_an_upsert_and_a_later_deletion_on_other_partitions_end_deleted(worker_factory, kafka_bootstrap):
    w = worker_factory().start()
    load_catalog(w, kafka_bootstrap)
    item = next(i for i in (f"churn-{k}" for k in range(100)) if item_partition(i, 4) not in (0, 1))
    catalog, changelog = w.topic("catalog"), TopicNames.from_settings(w.settings).catalog_items_changelog
    reader = TopicReader(kafka_bootstrap, changelog)
    try:
        send(kafka_bootstrap, catalog, {"item_id": item, "title": "Churned", "text": "here today"}, partition=0)
        assert reader.until(lambda ms: any(m.key == item for m in ms), timeout=60), w.log()[-3000:]
        time.sleep(1.0)  # served; the deletion comes later, from another partition
        send(kafka_bootstrap, catalog, {"item_id": item, "title": "Churned", "deleted": True}, partition=1)
        assert reader.until(lambda ms: any(m.key == item and m.value is None for m in ms), timeout=60)
        mine = [m for m in reader.messages if m.key == item]
    finally:
        reader.close()
    assert [m.value is None for m in mine] == [False, True]  # the upsert, then the tombstone
    assert {m.partition for m in mine} == {item_partition(item, 4)}, [(m.partition, m.offset) for m in mine]

    interactions, dead = w.topic("interactions"), w.topic("dead_letters")
    produce_json(kafka_bootstrap, interactions, [ev("gone-1", "erin", item, 1000, "click")], "user_id")
    assert dead_lettered(kafka_bootstrap, dead, "gone-1") == ["unknown_item"], w.log()[-3000:]
    w.stop()

    w2 = worker_factory(prefix=w.prefix).start()  # restores the catalogue from its changelog
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (w2.stats() or {}).get("items", 0) < len(CATALOG):
        time.sleep(0.2)
    produce_json(kafka_bootstrap, interactions, [ev("gone-2", "erin", item, 2000, "click"),
                                                 ev("live-2", "erin", "heat", 3000, "click")], "user_id")
    assert dead_lettered(kafka_bootstrap, dead, "gone-2") == ["unknown_item"], w2.log()[-3000:]
    recs = consume_until(kafka_bootstrap, w2.topic("recommendations"),
                         lambda got: any("live-2" in v["based_on_event_ids"] for k, v, _ in got if k == "erin"), 60)
    final = [v for k, v, _ in recs if k == "erin" and "live-2" in v["based_on_event_ids"]][-1]
    assert item not in [i["item_id"] for i in final["items"]]
