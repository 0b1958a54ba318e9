"""The serialised user state: size at every cap, round trips, format 2 states, seen items."""
from __future__ import annotations

import struct

from dataclasses import replace

import numpy as np
import orjson
import pytest

from models.cooc import CoocModel, CoocParams
from models.engine import Event, InterestModel
from models.seen import GENERATION, HASH_BITS, MAX_SEEN, RECENT_ITEMS, SeenItems
from models.state import DEDUP_WINDOW, UserState
from stream_app.dev.bench import worst_case_state_bytes


def full_state(model: InterestModel, seed: int = 0) -> UserState:
    rng = np.random.default_rng(seed)
    st = model.new_state()
    for name in st.mean:
        st.mean[name] = rng.normal(size=st.mean[name].shape).astype(np.float16)
        st.norm[name] = float(np.float32(rng.uniform(0.1, 500.0)))
    n = 0
    while not st.seen.full:  # MAX_SEEN distinct ids, a few more where hashes collide
        st.seen.add(f"item-{n:07d}")
        n += 1
    st.recent = rng.integers(0, 2**48, size=DEDUP_WINDOW).tolist()
    st.events, st.last_ts = 123_456, 1_700_000_000_123
    return st


def v2_bytes(st: UserState, seen: list[str]) -> bytes:
    """The format 2 writer as it was: every seen id verbatim in the orjson header."""
    names = list(st.mean)
    head = orjson.dumps({"v": 2, "dims": names, "sizes": [int(st.mean[n].size) for n in names],
                         "norm": [st.norm[n] for n in names], "ts": st.last_ts,
                         "n": st.events, "seen": seen, "recent": len(st.recent)})
    body = b"".join(st.mean[n].astype(np.float16).tobytes() for n in names)
    return struct.pack(">I", len(head)) + head + body + np.array(st.recent, dtype=">u8").tobytes()


def assert_same(a: UserState, b: UserState) -> None:
    assert (a.norm, a.last_ts, a.events, a.recent, a.seen) == (b.norm, b.last_ts, b.events, b.recent, b.seen)
    assert list(a.mean) == list(b.mean)
    for name in a.mean:
        np.testing.assert_array_equal(a.mean[name], b.mean[name])


def test_worst_case_state_is_at_most_8_kib():
    """Every cap full: 12-character recent ids, both hash generations, the de-dup window."""
    assert worst_case_state_bytes(InterestModel.untrained()) <= 8192


def test_a_full_state_round_trips_exactly():
    model = InterestModel.untrained(text_dim=384)
    st = full_state(model)
    assert st.seen.full and len(st.recent) == DEDUP_WINDOW
    data = st.to_bytes()
    back = UserState.from_bytes(data)
    assert_same(back, st)
    assert back.to_bytes() == data
    empty = model.new_state()
    assert_same(UserState.from_bytes(empty.to_bytes()), empty)


def test_an_event_applied_under_format_2_is_still_a_duplicate():
    import hashlib

    model = InterestModel.untrained(text_dim=8, cf_dim=4)
    st = model.new_state()
    st.recent = [int.from_bytes(hashlib.blake2b(b"e1", digest_size=8).digest(), "big")]  # format 2's hash
    back = UserState.from_bytes(v2_bytes(st, ["a"]))
    assert back.has_applied("e1") and not back.has_applied("e2")


def test_format_2_states_are_read_and_converted():
    model = InterestModel.untrained(text_dim=8, cf_dim=4)
    st = full_state(model)
    old_seen = [f"movie/{i}" for i in range(MAX_SEEN)]  # a format 2 state at its cap, newest last
    v2 = replace(st, recent=[k << 16 for k in st.recent])  # format 2 kept 64-bit event hashes
    back = UserState.from_bytes(v2_bytes(v2, old_seen))
    assert back.seen.recent == old_seen[-RECENT_ITEMS:]
    assert all(i in back.seen for i in old_seen)  # all 2,000 still remembered
    assert (back.norm, back.recent, back.events, back.last_ts) == (st.norm, st.recent, st.events, st.last_ts)
    for name in st.mean:
        np.testing.assert_array_equal(back.mean[name], st.mean[name])
    again = UserState.from_bytes(back.to_bytes())  # written back as format 3
    assert orjson.loads(back.to_bytes()[4:4 + struct.unpack(">I", back.to_bytes()[:4])[0]])["v"] == 3
    assert_same(again, back)
    small = UserState.from_bytes(v2_bytes(model.new_state(), ["a", "b"]))
    assert small.seen.recent == ["a", "b"] and not small.seen.older and not small.seen.newer


def test_unknown_formats_are_refused():
    head = orjson.dumps({"v": 9})
    with pytest.raises(ValueError, match="format 9"):
        UserState.from_bytes(struct.pack(">I", len(head)) + head)


def test_seen_items_keep_the_newest_exactly_and_forget_a_generation_at_a_time():
    s = SeenItems()
    ids = [f"i{n}" for n in range(3 * MAX_SEEN)]
    for n, i in enumerate(ids):
        assert s.add(i) or s.has(i)  # False only for a hash collision with a remembered item
        assert s.recent == ids[max(0, n + 1 - RECENT_ITEMS): n + 1]
        assert len(s.older) <= GENERATION and len(s.newer) <= GENERATION
    kept = RECENT_ITEMS + GENERATION
    assert all(i in s for i in ids[-kept:])  # the newest 1,025 are always remembered
    assert not s.add(ids[-kept])  # a re-engagement moves the item to the recent end
    assert s.recent[-1] == ids[-kept] and s.newest(2) == [ids[-kept], ids[-1]]


def test_false_positive_rate_is_what_the_hash_width_says():
    s, n = SeenItems(), 0
    while not s.full:
        s.add(f"seen-{n}")
        n += 1
    fresh = [f"fresh-{i}" for i in range(40_000)]
    rate = sum(i in s for i in fresh) / len(fresh)
    expected = 2 * GENERATION / 2**HASH_BITS  # 1.5%
    assert expected * 0.8 < rate < expected * 1.2


def engine(n_items: int, params: CoocParams | None = None) -> InterestModel:
    model = InterestModel.untrained(text_dim=4, cf_dim=2)
    if params is not None:
        model = InterestModel(model.attention, model.items, CoocModel(params), blend={"attention": 1.0})
    rng = np.random.default_rng(1)
    for i in range(n_items):
        model.add_item(f"it{i}", rng.normal(size=4))
    return model


def test_recommendations_leave_out_every_seen_item_older_ones_included():
    model = engine(300)
    st, history = model.new_state(), [f"it{i}" for i in range(0, 240, 2)]  # 120 items: 70 of them hashed
    for t, i in enumerate(history):
        model.apply(st, Event("u", i, "click", None, t, f"e{t}"))
    assert len(st.seen.newer) == len(history) - RECENT_ITEMS
    rows = set(model.seen_rows(st).tolist())
    assert {model.items.index[i] for i in history} <= rows
    assert len(rows) - len(history) <= 3  # false positives: expected 180 * 70 / 2**17 = 0.1
    listed = [r.item_id for r in model.recommend(st, k=300).items]
    assert len(listed) == 300 - len(rows) and not set(history) & set(listed)


def test_co_engagement_may_not_read_more_than_the_recent_items():
    with pytest.raises(ValueError, match="last 60 items"):
        engine(3, CoocParams(window=60))
    engine(3, CoocParams(window=RECENT_ITEMS, hist_len=RECENT_ITEMS))
