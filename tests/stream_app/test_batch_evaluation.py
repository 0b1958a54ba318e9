"""A batch's applied consumption events (Processor.apply_batch -> BatchResult.consumed) judged by
the online evaluation, and a model switched in between two batches of a real Processor."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from models import registry
from models.engine import InterestModel
from models.state import UserState
from stream_app.codec import Codec
from stream_app.model_watch import ModelWatcher
from stream_app.online_eval import OnlineEval
from stream_app.processor import Processor
from tests.stream_app.test_processor import TinyEncoder


def ev(eid: str, user: str, item: str, type_: str = "click", **kw) -> dict:
    return {"event_id": eid, "type": type_, "user_id": user, "item_id": item, "ts": 1_000 + int(eid[1:]), **kw}


def processor() -> Processor:
    p = Processor(InterestModel.untrained(text_dim=4, cf_dim=2), TinyEncoder(), lambda text: 0.5, Codec.load(),
                  top_k=3)
    p.index_items([{"item_id": i, "title": f"Item {i}"} for i in "abcdefgh"])
    return p


def apply(p: Processor, events: list[dict], states: dict) -> object:
    result = p.apply_batch(events, {u: states.get(u) for u in {e["user_id"] for e in events}})
    states.update({u: st.to_bytes() for u, st in result.states.items()})
    return result


def test_consumed_are_the_applied_clicks_favorites_and_ratings_in_order():
    p, states = processor(), {}
    result = apply(p, [ev("e1", "u", "a"), ev("e2", "u", "b", "review", text="fine"),
                       ev("e3", "v", "c", "rating", value=5), ev("e4", "u", "d", "favorite"),
                       ev("e1", "u", "a")], states)  # e1 again: a duplicate
    assert result.consumed == [("u", "a"), ("v", "c"), ("u", "d")]
    ev_ = OnlineEval(top_k=3, windows=(10,))
    ev_.observe(result.consumed, result.messages, result.forgotten)
    assert ev_.judged == 0  # no list before this batch
    listed = result.messages["u"]["items"][0]["item_id"]
    second = apply(p, [ev("e5", "u", listed), ev("e6", "v", "a", "review", text="meh")], states)
    assert second.consumed == [("u", listed)]
    ev_.observe(second.consumed, second.messages, second.forgotten)
    assert (ev_.judged, ev_.hits) == (1, 1)
    assert ev_.stats()["windows"]["10"]["by_version"][p.model.version]["mrr"] == 1.0


def test_a_model_switched_in_between_two_batches_ranks_the_next_one(tmp_path):
    p, states = processor(), {}
    first = apply(p, [ev("e1", "u", "a"), ev("e2", "u", "b")], states)
    assert first.messages["u"]["model_version"] == "default-untrained"
    new = InterestModel.untrained(text_dim=4, cf_dim=3)  # other spaces: the user's state is migrated
    assert not UserState.from_bytes(states["u"]).fits(new.dims, new.items.dims)
    new.attention.version = "20260101T000000000Z"
    new.attention.save(tmp_path / "20260101T000000000Z")
    registry.publish(tmp_path, "20260101T000000000Z")
    pool = ThreadPoolExecutor(max_workers=1)

    async def run_model(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    try:
        watcher = ModelWatcher(tmp_path, p, run_model, serving=p.model.version)
        assert asyncio.run(watcher.poll()) == "swapped"
    finally:
        pool.shutdown()
    assert sorted(p.model.items.index) == list("abcdefgh")
    second = apply(p, [ev("e3", "u", "c"), ev("e2", "u", "b")], states)  # e2 again: not applied twice
    msg = second.messages["u"]
    assert msg["model_version"] == "20260101T000000000Z" and msg["events_applied"] == 3
    assert second.applied == 1 and second.duplicates == 1
    assert not {i["item_id"] for i in msg["items"]} & {"a", "b", "c"}
    assert np.isfinite([i["score"] for i in msg["items"]]).all()
