"""The micro-batch without Kafka: routing to the owner partition, per-event failure isolation,
de-duplication by event id, and forgetting a user."""
from __future__ import annotations

import numpy as np
import pytest

from models.engine import InterestModel
from stream_app.codec import Codec, Rejected, Source
from stream_app.processor import Forward, Processor, owner_partition, to_event


class TinyEncoder:
    dim = 4
    version = "all-MiniLM-L6-v2"  # stands in for the transformer's vectors

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


def poison(model, monkeypatch, fallback_fails: bool = False):
    """Ranking raises for users who have seen item "b" (alone and together); so does the
    popularity list with ``fallback_fails``."""
    many = model.recommend_many

    def alone(st, k):
        return many([st], k)[0]

    def recommend(st, k=10):
        if "b" in st.seen:  # the poisoned user
            raise FloatingPointError("boom")
        return alone(st, k)

    monkeypatch.setattr(model, "recommend", recommend)
    monkeypatch.setattr(model, "recommend_many", lambda states, k=10: [recommend(st, k) for st in states])
    if fallback_fails:
        monkeypatch.setattr("stream_app.processor.fallback", lambda model, st, k: 1 / 0)
    return alone


def test_a_user_whose_ranking_fails_gets_the_popularity_list_and_keeps_the_state(processor, monkeypatch):
    """The touched users are ranked together; when that fails, each is ranked alone, and the
    user whose ranking fails gets the popularity list: the events are applied, nothing is a
    dead letter, the state is kept."""
    alone = poison(processor.model, monkeypatch)
    batch = [ev("e1", "u1", "a"), ev("e2", "u2", "b"), ev("e3", "u3", "c"), ev("e4", "u2", "d")]
    res = processor.apply_batch(batch, {}, [(0, i) for i in range(4)])
    assert set(res.messages) == {"u1", "u2", "u3"} and res.failed == []
    assert (res.applied, res.duplicates) == (4, 0) and res.states["u2"].events == 2
    fallback = res.messages["u2"]
    assert fallback["dimension_weights"] == {"popularity": 1.0} and fallback["events_applied"] == 2
    assert {i["item_id"] for i in fallback["items"]}.isdisjoint({"b", "d"}) and len(fallback["items"]) == 3
    assert [i["item_id"] for i in res.messages["u1"]["items"]] == [r.item_id for r in alone(res.states["u1"], 3).items]


def test_without_any_list_the_events_are_dead_lettered_once_and_the_state_kept(processor, monkeypatch):
    poison(processor.model, monkeypatch, fallback_fails=True)
    batch = [ev("e1", "u1", "a"), ev("e2", "u2", "b"), ev("e3", "u3", "c"), ev("e4", "u2", "d")]
    res = processor.apply_batch(batch, {}, [(0, i) for i in range(4)])
    assert set(res.messages) == {"u1", "u3"} and res.forgotten == set()
    assert [i for i, _ in res.failed] == [1, 3] and all("ranking failed" in r for _, r in res.failed)
    assert res.states["u2"].events == 2  # kept (no tombstone): the events stay applied
    stored = {u: st.to_bytes() for u, st in res.states.items()}
    again = processor.apply_batch(batch, stored, [(0, i) for i in range(4)])  # read again after a crash
    assert again.failed == [] and again.states["u2"].events == 2 and again.duplicates == 4


def test_a_re_read_of_more_than_the_window_is_skipped_by_offset(processor):
    """300 events of one user applied, then the same 300 records read again (a crash before the
    commit): events_applied stays 300 (the event-id window alone holds 256)."""
    batch = [ev(f"e{i}", "u1", "abcdef"[i % 6], ts=i) for i in range(300)]
    at = [(1, 1000 + i) for i in range(300)]
    first = processor.apply_batch(batch, {}, at)
    stored = {"u1": first.states["u1"].to_bytes()}
    again = processor.apply_batch(batch, stored, at)
    assert again.messages["u1"]["events_applied"] == 300 and (again.applied, again.duplicates) == (0, 300)
    more = processor.apply_batch(batch[-3:] + [ev("new", "u1", "a", ts=400)], stored,
                                 [(1, 1300), (1, 1301), (1, 1302), (1, 1303)])  # retries at new offsets
    assert more.messages["u1"]["events_applied"] == 301 and (more.applied, more.duplicates) == (1, 3)


def test_a_forget_leaves_a_record_that_keeps_old_events_out(processor):
    stored = {"u1": processor.apply_batch([ev("e1", "u1", "a"), ev("e2", "u1", "b")], {}, [(0, 0), (0, 1)])
              .states["u1"].to_bytes()}
    forget = {"schema": "forget/v1", "type": "forget", "event_id": "f1", "user_id": "u1", "ts": 2}
    gone = processor.apply_batch([forget], stored, [(0, 2)])
    st = gone.states["u1"]
    assert gone.forgotten == {"u1"} and gone.messages == {} and st.forgotten
    assert st.seen.recent == [] and st.mean == {} and st.offsets == {0: 2}
    view = processor.recommendation("u1", st, st.last_ts, [], 0)  # what GET /users/u1 shows now
    assert view["items"] == [] and view["events_applied"] == 0
    stored = {"u1": st.to_bytes()}
    old = processor.apply_batch([ev("e1", "u1", "a"), ev("e2", "u1", "b"), forget], stored, [(0, 0), (0, 1), (0, 2)])
    assert old.forgotten == set() and old.states["u1"].events == 0 and old.states["u1"].forgotten
    retried = processor.apply_batch([ev("e2", "u1", "b"), ev("e3", "u1", "c")], stored, [(0, 7), (0, 8)])
    assert retried.messages["u1"]["events_applied"] == 1 and retried.states["u1"].seen.recent == ["c"]
    assert retried.messages["u1"]["based_on_event_ids"] == ["e2", "e3"]


def test_a_state_of_another_model_is_migrated_when_read(processor):
    """A state written by a model with another text size is read by this one: its count and
    recent items kept, the next event counted on."""
    other = InterestModel.untrained(text_dim=6, cf_dim=2)
    for i in "abcdef":
        other.add_item(i, np.eye(6)[ord(i) % 6])
    states: dict = {}
    other.fold([to_event(ev(f"e{i}", "u1", "abc"[i % 3], ts=i)) for i in range(5)], states)
    res = processor.apply_batch([ev("e5", "u1", "d", ts=5)], {"u1": states["u1"].to_bytes()})
    assert res.failed == [] and res.messages["u1"]["events_applied"] == 6
    assert res.states["u1"].seen.recent == ["c", "a", "b", "d"]
    assert res.states["u1"].fits(processor.model.dims, processor.model.items.dims)
