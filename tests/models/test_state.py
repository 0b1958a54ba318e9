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
    again = UserState.from_bytes(back.to_bytes())  # written back as format 4
    assert orjson.loads(back.to_bytes()[4:4 + struct.unpack(">I", back.to_bytes()[:4])[0]])["v"] == 4
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


# -- format 4: source offsets, forgets, recent-item weights; migration to another model ----------
def v3_bytes(st: UserState) -> bytes:
    """The format 3 writer as it was: no offsets, no forgets, no weights."""
    names = list(st.mean)
    head = orjson.dumps({"v": 3, "dims": names, "sizes": [int(st.mean[n].size) for n in names],
                         "ts": st.last_ts, "n": st.events, "recent": len(st.recent), "seen": st.seen.counts()})
    body = b"".join(st.mean[n].astype(np.float16).tobytes() for n in names)
    norms = np.array([st.norm[n] for n in names], dtype=">f4").tobytes()
    keys = np.array(st.recent, dtype=">u8").view(np.uint8).reshape(-1, 8)[:, 2:].tobytes()
    return struct.pack(">I", len(head)) + head + body + norms + keys + st.seen.pack()


def small_model(text_dim: int = 8) -> InterestModel:
    model = InterestModel.untrained(text_dim=text_dim, cf_dim=4)
    rng = np.random.default_rng(text_dim)
    for i in range(80):  # the events below are about the first 40
        model.add_item(f"i{i}", rng.normal(size=text_dim), [f"g{i % 4}"])
    return model


def events(user: str, n: int, start: int = 0) -> list[Event]:
    kinds = ["click", "rating", "favorite", "review"]
    return [Event(user, f"i{(7 * j) % 40}", kinds[j % 4], 2.0 if j % 4 == 1 else None, 1000 * j, f"{user}-{j}")
            for j in range(start, start + n)]


def test_format_3_states_still_load_and_offsets_forgets_and_weights_round_trip():
    model = small_model()
    states: dict = {}
    model.fold(events("u", 30), states, positions=[(2, 100 + j) for j in range(30)])
    st = states["u"]
    assert st.offsets == {2: 129} and set(st.weights) == set(st.seen.recent)
    back = UserState.from_bytes(st.to_bytes())
    assert_same(back, st)
    assert (back.offsets, back.generation) == (st.offsets, 0)
    assert back.weights == {i: tuple(float(np.float16(x)) for x in w) for i, w in st.weights.items()}
    old = UserState.from_bytes(v3_bytes(st))
    assert_same(old, st)
    assert (old.offsets, old.generation, old.weights) == ({}, 0, {})


def test_a_re_read_of_any_length_is_skipped_by_offset_retries_by_event_id():
    """300 events of one user applied, then read again from their offsets: nothing is applied
    twice (the event-id window alone holds the last 256). A retry of an event id at a new offset
    is skipped by the window; events without offsets (offline) keep the window alone."""
    model = small_model()
    evs = events("u", 300)
    at = [(0, j) for j in range(300)]
    states: dict = {}
    model.fold(evs, states, positions=at)
    stored = states["u"].to_bytes()
    states = {"u": UserState.from_bytes(stored)}
    model.fold(evs, states, positions=at)  # the whole range read again
    assert states["u"].events == 300
    mean = states["u"].mean["content"].copy()
    model.fold(evs[-5:], states, positions=[(0, 300 + j) for j in range(5)])  # retries at new offsets
    assert states["u"].events == 300
    np.testing.assert_array_equal(states["u"].mean["content"], mean)
    model.fold(events("u", 2, 300), states, positions=[(3, 7), (3, 8)])  # another partition: its own offsets
    assert states["u"].events == 302 and states["u"].offsets == {0: 304, 3: 8}
    states = {"u": UserState.from_bytes(stored)}
    model.fold(evs, states)  # no offsets: the window alone, which 300 events in order run through
    assert states["u"].events == 600


def test_a_forget_keeps_only_offsets_event_ids_and_the_forget_count():
    model = small_model()
    states: dict = {}
    model.fold(events("u", 10), states, positions=[(1, j) for j in range(10)])
    forget = Event("u", "", "forget", None, 5, "u-forget")
    model.fold([forget], states, positions=[(1, 10)])
    gone = UserState.from_bytes(states["u"].to_bytes())
    assert gone.forgotten and gone.events == 0 and gone.generation == 1 and gone.last_ts == -1
    assert gone.mean == {} and gone.norm == {} and gone.weights == {} and gone.seen == SeenItems()
    assert gone.offsets == {1: 10} and len(gone.recent) == 11
    states = {"u": gone}
    model.fold(events("u", 10) + [forget], states, positions=[(1, j) for j in range(11)])  # read again
    model.fold(events("u", 3), states, positions=[(1, 20 + j) for j in range(3)])  # retries of old ids
    model.fold([forget], states, positions=[(1, 30)])  # a retried forget
    assert states["u"].forgotten and states["u"].generation == 1
    model.fold(events("u", 2, 50), states, positions=[(1, 40), (1, 41)])  # the user's new life
    st = states["u"]
    assert st.events == 2 and not st.forgotten and st.fits(model.dims, model.items.dims)
    assert st.seen.recent == ["i" + str((7 * j) % 40) for j in (50, 51)]


def test_a_state_of_another_model_is_migrated_with_its_bookkeeping():
    """A state of the untrained default layout (text 8-d) loaded into a model with other sizes
    (text 12-d): its count, recent items, event ids and offsets carry over, its interest is
    rebuilt from the recent items, and it goes on counting."""
    old, new = small_model(8), small_model(12)
    states: dict = {}
    old.fold(events("u", 60), states, positions=[(0, j) for j in range(60)])
    stored = UserState.from_bytes(states["u"].to_bytes())
    assert not stored.fits(new.dims, new.items.dims)
    moved = new.fit(stored)
    assert moved.fits(new.dims, new.items.dims)
    assert (moved.events, moved.seen.recent, moved.recent, moved.offsets, moved.last_ts) == \
        (60, stored.seen.recent, stored.recent, stored.offsets, stored.last_ts)
    assert all(moved.norm[d] > 0 for d in ("content", "recency", "category"))
    assert new.recommend(moved, k=3).items
    states = {"u": stored}
    new.fold(events("u", 61), states, positions=[(0, j) for j in range(61)])  # one new event, the rest re-read
    assert states["u"].events == 61 and states["u"].fits(new.dims, new.items.dims)
    plain = UserState.from_bytes(v3_bytes(stored))  # no weights: each recent item as a plain engagement
    assert new.fit(plain).events == 60 and new.fit(plain).norm["content"] > 0


def test_seen_ids_of_every_length_round_trip_byte_for_byte():
    seen = SeenItems()
    for n in (1, 5, 127, 128, 129, 300, 16_383, 16_384, 20_000):  # one, two and three varint bytes
        seen.add(("é" if n % 2 else "x") * (n // 2 if n % 2 else n) + str(n))
    packed = seen.pack()
    back, end = SeenItems.unpack(seen.counts(), packed + b"tail", 0)
    assert back.recent == seen.recent and end == len(packed) and back.pack() == packed
