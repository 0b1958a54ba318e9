"""The micro-batch without Kafka: routing to the owner partition, per-event failure isolation,
de-duplication by event id, and forgetting a user."""
from __future__ import annotations

import numpy as np
import pytest

from models.engine import InterestModel
from stream_app.codec import Codec, Rejected, Source
from stream_app.processor import Forward, Processor, owner_partition


class TinyEncoder:
    dim = 4

    def encode(self, texts, batch_size=None):
        out = np.zeros((len(texts), 4), np.float32)
        for i, t in enumerate(texts):
            out[i, len(t) % 4] = 1.0
        return out


@pytest.fixture()
def processor():
    model = InterestModel.untrained(text_dim=4, cf_dim=2)
    p = Processor(model, TinyEncoder(), lambda text: 0.5, Codec.load(), top_k=3)
    p.index_items([{"item_id": i, "title": f"Item {i}"} for i in "abcdef"])
    return p


def ev(eid, user, item, ts=1, **kw):
    return {"event_id": eid, "type": "click", "user_id": user, "item_id": item, "ts": ts, **kw}


def src(value: bytes, partition: int, key: bytes | None = b"u1") -> Source:
    return Source("interactions", partition, 0, key, value)


def test_owner_partition_is_the_keyed_murmur2_partition():
    from aiokafka.partitioner import DefaultPartitioner  # a port of the Java client's murmur2 partitioner

    keyed = DefaultPartitioner()
    for i in range(200):
        user = f"user-{i}"
        assert owner_partition(user, 4) == keyed(user.encode(), [0, 1, 2, 3], [0, 1, 2, 3])
    assert {owner_partition(f"user-{i}", 4) for i in range(100)} == {0, 1, 2, 3}
    for i in range(200):  # answered again (from the cache), and for other partition counts
        user = f"user-{i}"
        for n in (4, 1, 3, 12):
            assert owner_partition(user, n) == keyed(user.encode(), list(range(n)), list(range(n)))


def test_events_on_a_foreign_partition_are_forwarded_whatever_their_key(processor):
    value = b'{"event_id":"e1","type":"click","user_id":"u1","item_id":"a","ts":1}'
    owner = owner_partition("u1", 4)
    other = (owner + 1) % 4
    assert isinstance(processor.parse_event(src(value, owner, key=None), 4), dict)  # right place: used as is
    fwd = processor.parse_event(src(value, other, key=b"u1"), 4)
    assert isinstance(fwd, Forward) and fwd.partition == owner
    assert isinstance(processor.parse_event(src(value, other, key=b"someone-else"), 4), Forward)


def test_one_failing_event_does_not_take_its_batch_down(processor):
    events = [ev("e1", "u1", "a"), ev("e2", "u1", "b"), ev("e3", "u2", "c")]
    processor.model.delete_item("b")  # retired between parse and apply
    result = processor.apply_batch(events, {})
    assert [i for i, _ in result.failed] == [1] and "KeyError" in result.failed[0][1]
    assert result.states["u1"].events == 1 and result.states["u2"].events == 1
    assert set(result.messages) == {"u1", "u2"}


def test_the_same_event_id_is_applied_once(processor):
    first = processor.apply_batch([ev("e1", "u1", "a"), ev("e1", "u1", "a")], {})
    assert first.applied == 1 and first.states["u1"].events == 1
    stored = {"u1": first.states["u1"].to_bytes()}
    again = processor.apply_batch([ev("e1", "u1", "a"), ev("e2", "u1", "c")], stored)
    assert again.applied == 1 and again.messages["u1"]["events_applied"] == 2


def test_forget_erases_the_state_and_later_events_start_afresh(processor):
    stored = {"u1": processor.apply_batch([ev("e1", "u1", "a")], {}).states["u1"].to_bytes()}
    forget = {"schema": "forget/v1", "type": "forget", "event_id": "f1", "user_id": "u1", "ts": 2}
    gone = processor.apply_batch([forget], stored)
    assert gone.forgotten == {"u1"} and gone.messages == {} and gone.states["u1"].events == 0
    again = processor.apply_batch([forget, ev("e9", "u1", "d", ts=3)], stored)
    assert again.messages["u1"]["events_applied"] == 1 and again.states["u1"].seen.recent == ["d"]


def test_unknown_items_and_bad_json_are_rejected_with_a_reason(processor):
    bad = processor.parse_event(src(b'{"event_id":"e1","type":"click","user_id":"u1","item_id":"zz","ts":1}', 0), 4)
    assert isinstance(bad, Rejected) and bad.error_type == "unknown_item"
    assert processor.parse_event(src(b"\xff\xfe{", 0), 4).error.startswith("not UTF-8 text")


def test_a_user_whose_ranking_fails_is_dead_lettered_alone(processor, monkeypatch):
    """The touched users are ranked together; when that fails, each is ranked alone, and only the
    events of the user whose ranking fails become dead letters."""
    model = processor.model
    many = model.recommend_many

    def alone(st, k):
        return many([st], k)[0]

    def recommend(st, k=10):
        if "b" in st.seen:  # the poisoned user
            raise FloatingPointError("boom")
        return alone(st, k)

    def recommend_many(states, k=10):
        return [recommend(st, k) for st in states]

    monkeypatch.setattr(model, "recommend", recommend)
    monkeypatch.setattr(model, "recommend_many", recommend_many)
    batch = [ev("e1", "u1", "a"), ev("e2", "u2", "b"), ev("e3", "u3", "c"), ev("e4", "u2", "d")]
    res = processor.apply_batch(batch, {})
    assert set(res.messages) == {"u1", "u3"}
    assert [i for i, _ in res.failed] == [1, 3] and all("ranking failed" in r for _, r in res.failed)
    assert (res.applied, res.duplicates) == (2, 0)  # u2's events are dead letters only, not applied too
    assert [i["item_id"] for i in res.messages["u1"]["items"]] == [r.item_id for r in alone(res.states["u1"], 3).items]
