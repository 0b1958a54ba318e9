"""Many events at once (``InterestModel.fold``, what ``Processor.apply_batch`` uses) and one at a
time (``InterestModel.replay``) give the states, co-engagement counts and recommendation
messages of the one-event, one-dimension-at-a-time code they replaced, bit for bit, whatever the
batch boundaries. The streams have many users, repeated items, duplicate event ids within and
across batches, forget events, unknown and retired items, review texts, tiny vector components
(float16 subnormals), equal or out-of-order timestamps, and gaps long enough for a norm to
decay to nothing."""
from __future__ import annotations

import copy
import os

import numpy as np
import pytest

from models.cooc import CoocCounts, CoocModel, CoocParams
from models.dimensions import DAY_MS, Dimension, default_dimensions
from models.engine import Event, InterestModel
from models.fold import fold, Pending
from models.items import ItemVectors
from models.attention import AttentionFusion
from models.state import DEDUP_WINDOW, UserState
from stream_app.codec import Codec
from stream_app.processor import Processor
from tests.models.reference_fold import plain_replay

TEXT, CF, CAT = 8, 3, 16
TEXTS = ["great", "awful", "meh", "fine", "so-so"]
DIMS = (*default_dimensions("hybrid"), Dimension("liked", "category", "liked", half_life_ms=3 * DAY_MS),
        Dimension("burst", "text", per_event_decay=0.6))


# -- models and streams ------------------------------------------------------------------------
def trained_like(seed: int, cooc: CoocModel | None, dims=DIMS) -> InterestModel:
    """Random projections and attention, co-engagement counts, a blend: a stand-in for a checkpoint."""
    rng = np.random.default_rng(seed)
    space = {"text": TEXT, "cf": CF, "category": CAT, "hybrid": TEXT + CF}
    scorer = AttentionFusion.default(dims, space)
    scorer.w = {k: rng.normal(size=v.shape).astype(np.float32) if v.size else v for k, v in scorer.w.items()}
    ids = [f"i{i}" for i in range(70)]
    cf = {i: rng.normal(size=CF) * 10.0 ** rng.integers(-6, 1) for i in ids[::2]}
    blend = {"attention": 0.5, "co-engagement": 0.3, "popularity": 0.2} if cooc is not None else None
    model = InterestModel(scorer, ItemVectors(TEXT, CF, CAT, cf_factors=cf, capacity=16), cooc, blend)
    add_items(model, ids, rng)
    return model


def add_items(model: InterestModel, ids, rng) -> None:
    for i in ids:
        text = (rng.normal(size=TEXT) * 10.0 ** rng.integers(-7, 1, TEXT)).astype(np.float32)
        cats = [f"g{g}" for g in rng.choice(6, size=rng.integers(0, 3), replace=False)]
        model.add_item(i, text, cats, {"price": float(rng.integers(1, 300))} if rng.random() < 0.5 else None)
    model.delete_item(ids[-1])  # retired: its events fail


def features(rng, dim: int) -> dict:
    sentiment = [0.0, -0.0, -0.7, 0.3, 1.0]
    return {t: (s, rng.normal(size=dim).astype(np.float32)) for t, s in zip(TEXTS, sentiment)}


def stream(rng, n: int, n_users: int = 9, n_items: int = 70) -> list[Event]:
    """Skewed users (the busiest have hundreds of events: beyond the de-duplication window and the
    verbatim seen items) and items; now and then a forget, a repeated event id, an unknown item,
    a gap of decades or millennia (a norm decays to 0.0 and keeps its mean)."""
    users = [f"u{k}" for k in range(n_users)]
    p_user = 1.0 / np.arange(1, n_users + 1)
    p_item = 1.0 / np.arange(1, n_items + 1) ** 0.7
    ids: dict[str, list[str]] = {}
    ts, out = 10**12, []
    for k in range(n):
        user = users[rng.choice(n_users, p=p_user / p_user.sum())]
        gaps, p_gap = [0, 1000, 3_600_000, 2 * int(DAY_MS), 10**12, 10**16], [.5, .2, .15, .144, .004, .002]
        ts += int(rng.choice(gaps, p=p_gap))
        t = ts - int(rng.integers(1, 10**6)) if rng.random() < 0.05 else ts
        item = f"i{rng.choice(n_items, p=p_item / p_item.sum())}"
        type_, value, text = str(rng.choice(["click", "favorite", "rating", "rating", "review"])), None, None
        if type_ == "rating":
            value = float(rng.integers(1, 6))
        elif type_ == "review":
            text = str(rng.choice(TEXTS))
        r, eid = rng.random(), f"e{k}"
        if r < 0.01 and user != users[0]:  # the busiest user never forgets
            type_ = "forget"
        elif r < 0.05 and ids.get(user):
            eid = str(rng.choice(ids[user][-400:]))  # a retry: within the window or long gone
        elif r < 0.07:
            item = "nope"
        ids.setdefault(user, []).append(eid)
        out.append(Event(user, item, type_, value, t, eid, text))
    return out


def cuts(rng, n: int) -> list[tuple[int, int]]:
    edges = sorted({0, n, *rng.integers(0, n, size=int(rng.integers(1, 12))).tolist()})
    return list(zip(edges, edges[1:]))


def assert_same(a: dict[str, UserState], b: dict[str, UserState]) -> None:
    assert a.keys() == b.keys()
    for u in a:
        assert a[u].to_bytes() == b[u].to_bytes(), u
        assert a[u].norm == b[u].norm and a[u].seen == b[u].seen


def assert_same_counts(a: InterestModel, b: InterestModel) -> None:
    if a.cooc is None:
        return
    ca, cb = a.cooc.counts, b.cooc.counts
    assert ca.n.tobytes() == cb.n.tobytes()
    for j in range(len(ca)):
        assert ca.row(j).tobytes() == cb.row(j).tobytes(), j


MODELS = {
    "untrained": lambda seed: InterestModel.untrained(text_dim=TEXT, cf_dim=CF),
    "trained-like": lambda seed: trained_like(seed, CoocModel(CoocParams(window=4, trans_window=3, trans_decay=0.3,
                                                                          beta=0.7, hist_len=3))),
    "counts per row": lambda seed: trained_like(seed, CoocModel(CoocParams(window=3, trans_window=2, beta=1.3),
                                                                CoocCounts(dense_max=8))),
}


def build(kind: str, seed: int) -> InterestModel:
    model = MODELS[kind](seed)
    if kind == "untrained":
        add_items(model, [f"i{i}" for i in range(70)], np.random.default_rng(seed))
    return model


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("worker", [True, False], ids=["on_error", "offline"])
def test_fold_and_replay_equal_the_one_event_code(kind, seed, worker):
    rng = np.random.default_rng(seed)
    model = build(kind, seed)
    feats, events = features(rng, TEXT), stream(rng, 2500)
    learn = (lambda e: int(e.event_id[1:]) % 5 != 0) if seed else None
    runs = {}
    for how in ("plain", "replay", "fold"):
        m, states, errors = copy.deepcopy(model), {}, []
        on_error = (lambda ev, exc: errors.append((ev, type(exc)))) if worker else None
        if how == "plain":
            plain_replay(m, events, states, feats, on_error, learn)
        elif how == "replay":
            for _ in m.replay(events, states, feats, on_error, learn):
                pass
        else:
            for a, b in cuts(np.random.default_rng(seed + 10), len(events)):
                m.fold(events[a:b], states, feats, on_error, learn)
        runs[how] = m, states, errors
    plain = runs.pop("plain")
    assert max(st.events for st in plain[1].values()) > DEDUP_WINDOW
    for m, states, errors in runs.values():
        assert_same(states, plain[1])
        assert_same_counts(m, plain[0])
        assert errors == plain[2]
    if worker:
        assert {t for _, t in plain[2]} == {KeyError}


class Encoder:
    dim = TEXT
    version = "all-MiniLM-L6-v2"

    def encode(self, texts):
        return np.stack([np.random.default_rng(sum(map(ord, t))).normal(size=TEXT) for t in texts]).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_apply_batch_gives_the_messages_of_the_one_event_code(seed, monkeypatch):
    """The same batches through ``apply_batch`` with the fold, and with the reference replay in its
    place: the same states, failures and messages, batch by batch."""
    monkeypatch.setattr("stream_app.processor.time.time", lambda: 1.7e9)
    rng = np.random.default_rng(seed)
    events = [{k: v for k, v in e._asdict().items() if v is not None} for e in stream(rng, 1500)]
    sentiment = {t: s for t, (s, _) in features(rng, TEXT).items()}
    procs = []
    for how in ("fold", "plain"):
        proc = Processor(trained_like(seed, CoocModel(CoocParams(window=4, trans_window=2, trans_decay=0.3))),
                         Encoder(), sentiment.get, Codec.load(), top_k=5)
        if how == "plain":
            proc.model.fold = lambda evs, states, feats, on_error, positions=None, applied=None, m=proc.model: plain_replay(
                m, evs, states, feats, on_error)
        procs.append(proc)
    stored: list[dict[str, bytes]] = [{}, {}]
    for a, b in cuts(np.random.default_rng(seed + 20), len(events)):
        batch = events[a:b]
        results = [p.apply_batch(batch, {u: st.get(u) for u in dict.fromkeys(e["user_id"] for e in batch)})
                   for p, st in zip(procs, stored)]
        for res, st in zip(results, stored):
            st.update({u: s.to_bytes() for u, s in res.states.items()})
        new, ref = results
        assert new.messages == ref.messages and new.messages
        assert (new.failed, new.applied, new.forgotten) == (ref.failed, ref.applied, ref.forgotten)
        assert stored[0] == stored[1]
    assert_same_counts(procs[0].model, procs[1].model)


def test_the_fold_rounds_to_float16_as_numpy_does():
    """The compiled loop's float16 rounding, as means folded with weight 1 into an empty
    dimension: the stored mean is then the item vector (after the rule's arithmetic: 0 * 0 + 1 * x,
    then / 1, which quiets a signalling NaN and makes -0 +0), rounded. Every exponent and every
    top-20-bit pattern, with low bits at and around the rounding ties of every float16 spacing,
    NaN payloads, infinities. STREAM_RECO_EXHAUSTIVE=1: all 2**32 float32 values."""
    top = np.arange(1 << 20, dtype=np.uint32) << 12
    chunks = [(top[:, None] | np.uint32([0, 1, 0x7FF, 0x800, 0x801, 0xFFF])).ravel()]
    if os.environ.get("STREAM_RECO_EXHAUSTIVE"):
        chunks = (np.arange(lo, lo + (1 << 24), dtype=np.uint64).astype(np.uint32) for lo in range(0, 1 << 32, 1 << 24))
    width = 1 << 12
    dims = [Dimension("all", "text")]
    for bits in chunks:
        vectors = bits.view(np.float32).reshape(-1, width)  # (T, width)
        states = [UserState.empty(dims, {"text": width}) for _ in range(len(vectors))]
        with np.errstate(over="ignore", invalid="ignore"):
            want = ((np.float32(0) * np.float32(0) + np.float32(1) * vectors) / np.float32(1)).astype(np.float16)
        fold(dims, [Pending(st, k, 1.0, 1.0, 0.0) for k, st in enumerate(states)], {"text": vectors})
        got = np.stack([st.mean["all"] for st in states])
        assert got.view(np.uint16).tobytes() == want.view(np.uint16).tobytes()
