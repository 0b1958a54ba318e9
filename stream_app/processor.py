"""What the worker does with a batch, without Kafka or Faust: parse, check, encode, update, rank.

The consumers (``stream_app.hotpath``, ``stream_app.catalog``) only move bytes between Kafka, the
user store and this object; the heavy methods (``index_items``, ``apply_batch``) are plain
functions of their inputs and run in the model thread so the event loop stays free.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import numpy as np
from aiokafka.partitioner import murmur2

from models.cooc.online import PairDeltas
from models.encoder import MODEL_NAME
from models.engine import Event, InterestModel, Ranked, Recommendation
from models.features import item_text
from models.migration import fallback
from models.state import UserState
from stream_app.codec import Codec, Rejected, Source, decode_item_record, encode_item_record
from stream_app.online_eval import CONSUMPTION

log = logging.getLogger(__name__)


@dataclass
class Forward:
    """A valid event that arrived on a partition other than its user's owner partition (a null
    key, a key other than user_id, or another partitioner): re-publish it to ``partition``."""

    event: dict
    partition: int


@lru_cache(maxsize=1 << 14)
def owner_partition(user_id: str, partitions: int) -> int:
    """The one partition that holds a user's state: murmur2 of the user id, as Kafka's Java
    client (and aiokafka, and librdkafka's ``murmur2_random``) partition a message keyed by it.

    >>> owner_partition("196", 4), owner_partition("196", 1)
    (0, 0)

    The hash is pure Python (~1 µs for a short id) and every event needs it, so the answers for
    the 16,384 users seen last are kept (users recur; ~2.5 MB when full).
    """
    return (murmur2(user_id.encode()) & 0x7FFFFFFF) % partitions



@dataclass
class BatchResult:
    states: dict[str, UserState] = field(default_factory=dict)  # touched users' new states
    messages: dict[str, dict] = field(default_factory=dict)  # user -> recommendation message
    forgotten: set[str] = field(default_factory=set)  # users forgotten in this batch (UserState.forget)
    failed: list[tuple[int, str]] = field(default_factory=list)  # (event position, reason)
    applied: int = 0  # events folded in, of users whose list was made (the others' events failed)
    duplicates: int = 0  # events skipped as already applied (by their event id)
    pairs: PairDeltas | None = None  # one delta per touched item (iterated: item id, delta)
    engagements: int = 0  # first engagements the pair messages were made of
    consumed: list[tuple[str, str]] = field(default_factory=list)  # (user, item) of applied consumption events, in order


def to_event(msg: dict) -> Event:
    """An ``interaction/v1`` message as the model's event."""
    return Event(msg["user_id"], msg.get("item_id", ""), msg["type"], msg.get("value"), msg["ts"],
                 msg["event_id"], msg.get("text"))


def count(result: BatchResult, evs: Sequence[Event], before: dict[str, int]) -> None:
    """Each event of a batch counted once: failed (a dead letter: also every event of a user
    without a list, though folded in), applied, a forget request, or else a duplicate (by its
    source offset or its event id)."""
    failed = {i for i, _ in result.failed}
    result.applied = sum(result.states[u].events - before[u] for u in result.messages)
    forgets = sum(1 for i, e in enumerate(evs) if e.type == "forget" and i not in failed)
    result.duplicates = max(0, len(evs) - len(failed) - result.applied - forgets)


class Processor:
    def __init__(self, model: InterestModel, encoder, sentiment, codec: Codec, top_k: int = 10, sensor=None):
        self.sensor = sensor  # stream_app.sensor.Sensor or None: what the encoder did
        self.model = model
        self.encoder = encoder  # .encode(list[str]) -> (N, D) unit vectors; .version names them
        self.reencoded_items = 0  # catalogue records whose vector another encoder made, encoded again
        self.sentiment = sentiment  # callable(str) -> [-1, 1]
        self.codec = codec
        self.top_k = top_k
        # None: the co-engagement counts learn here (update_many); a half-life in ms (0: no decay):
        # a batch's first engagements become pair messages instead (stream_app.cooc_stream)
        self.pairs_half_life_ms: float | None = None
        self._names: tuple = (None, None)  # (counts, version) -> its ids as an object array

    # -- catalog -----------------------------------------------------------------------------
    def parse_item(self, src: Source) -> dict | Rejected:
        return self.codec.decode("catalog_item", src.value)

    def encode(self, texts: list[str]) -> np.ndarray:
        """The encoder, timed for the metrics."""
        t0 = time.perf_counter()
        vecs = self.encoder.encode(texts)
        if self.sensor is not None:
            self.sensor.on_encoded(len(texts), time.perf_counter() - t0)
        return vecs

    def index_items(self, items: Sequence[dict]) -> list[tuple[str, bytes | None]]:
        """Apply catalogue upserts and deletions in order, encoding all new item texts in one
        batched pass. Returns, per item id, its final catalogue-table record (item + vector), or
        None when its last message deleted it."""
        final = {it["item_id"]: it for it in items}  # the last message of each item wins
        live = [it for it in final.values() if not it.get("deleted")]
        texts = [item_text(it["title"], it.get("text"), it.get("categories", ())) for it in live]
        vecs = dict(zip((it["item_id"] for it in live), self.encode(texts))) if live else {}
        out: list[tuple[str, bytes | None]] = []
        for item_id, it in final.items():
            if it.get("deleted"):
                self.model.delete_item(item_id)
                out.append((item_id, None))
            else:
                v = vecs[item_id]
                self.model.add_item(item_id, v, it.get("categories", ()), it.get("attributes"),
                                    it.get("published_ts"))
                out.append((item_id, encode_item_record(it, v, self.encoder.version)))
        return out

    def restore_item(self, record: bytes) -> None:
        """Re-add an item from its catalogue-table record (recovery: no re-encoding), or, when
        another encoder made its vector (the worker's encoder was changed), from its text encoded
        again: the vectors of two encoders never share the catalogue."""
        item, vec = decode_item_record(record)
        if item.pop("_enc", MODEL_NAME) != self.encoder.version:
            vec = self.encode([item_text(item["title"], item.get("text"), item.get("categories", ()))])[0]
            self.reencoded_items += 1
        self.model.add_item(item["item_id"], vec, item.get("categories", ()), item.get("attributes"),
                            item.get("published_ts"))

    # -- interactions ------------------------------------------------------------------------
    def parse_event(self, src: Source, partitions: int) -> dict | Rejected | Forward:
        """A checked interaction or forget request, or why not; ``Forward`` when it belongs to
        another partition (``partitions``: the topic's partition count). ``src``: a ``Source``, or
        anything with its ``partition`` and ``value`` (the hot path passes the consumer record)."""
        ev = self.codec.decode("interaction", src.value)
        if isinstance(ev, Rejected):
            return ev
        if ev["type"] != "forget" and ev["item_id"] not in self.model.items:
            return Rejected("unknown_item", f"item_id {ev['item_id']!r} is not in the catalogue",
                            self.codec.ids["interaction"])
        owner = owner_partition(ev["user_id"], partitions)
        if src.partition != owner:
            return Forward(ev, owner)
        return ev

    def text_features(self, texts: Sequence[str]) -> dict[str, tuple[float, np.ndarray]]:
        """Sentiment and encoder vector of each distinct text, encoded in one batched pass."""
        distinct = list(dict.fromkeys(t for t in texts if t))
        if not distinct:
            return {}
        return {t: (self.sentiment(t), v) for t, v in zip(distinct, self.encode(distinct))}

    def apply_batch(self, events: Sequence[dict], states: dict[str, bytes | None],
                    positions: Sequence[tuple[int, int] | None] | None = None) -> BatchResult:
        """events: checked interaction / forget messages in arrival order; states: user -> stored
        state bytes (a state written by another model is migrated as it is read,
        ``models.migration``); positions: (source partition, offset) of each event, or None (an
        event read again at or below the offset its user's state noted is skipped). Folds each
        event into its user's state (a failing event is reported in ``failed`` and skipped, the
        others go on), then ranks once per user with events after its last forget."""
        result = BatchResult()
        for user in dict.fromkeys(ev["user_id"] for ev in events):
            raw = states.get(user)
            result.states[user] = self.model.fit(UserState.from_bytes(raw)) if raw else self.model.new_state()
        feats = self.text_features([ev.get("text") for ev in events])
        evs = [to_event(m) for m in events]
        position = {id(e): i for i, e in enumerate(evs)}
        failed: dict[int, str] = {}

        def on_error(ev: Event, exc: Exception) -> None:
            failed[position[id(ev)]] = f"{type(exc).__name__}: {exc}"

        before = {u: (st.events, st.generation) for u, st in result.states.items()}
        applied: list[int] = []
        pairs = None if self.pairs_half_life_ms is None or self.model.cooc is None else []
        learning = {} if pairs is None else {"pairs": pairs}  # the worker's pairs go to Kafka
        self.model.fold(evs, result.states, feats, on_error, positions=positions, applied=applied,
                        **learning)  # in one go
        if pairs:
            result.pairs, result.engagements = self.pair_messages(pairs), len(pairs)
        result.forgotten = {u for u, st in result.states.items() if st.generation > before[u][1]}
        meta: dict[str, dict] = {}
        for ev in evs:
            if ev.type == "forget":
                if ev.user_id in result.forgotten:
                    meta.pop(ev.user_id, None)
            else:
                m = meta.get(ev.user_id)
                if m is None:
                    m = meta[ev.user_id] = {"ts": ev.ts, "ids": []}
                m["ts"] = max(m["ts"], ev.ts)
                m["ids"].append(ev.event_id)
        folded: list[Event | None] = [None] * len(evs)
        for i in applied:
            folded[i] = evs[i]
        self._rank(result, meta, folded, failed)
        result.consumed = [(e.user_id, e.item_id) for e in folded
                           if e is not None and e.type in CONSUMPTION and e.user_id in result.messages]
        result.failed = sorted(failed.items())
        count(result, evs, {u: 0 if u in result.forgotten else n for u, (n, _) in before.items()})
        result.states = {u: st for u, st in result.states.items() if u in meta or u in result.forgotten}
        return result

    def pair_messages(self, pairs: Sequence[tuple[tuple[list[int], int], int]]) -> PairDeltas:
        """A batch's first engagements ((prev rows, row), event time) as one delta per target
        item, by item id (``CoocModel.delta_columns``), sent in pair messages by
        ``stream_app.cooc_stream.send_pairs``."""
        cooc = self.model.cooc
        deltas = cooc.delta_columns([e for e, _ in pairs], [t for _, t in pairs], self.pairs_half_life_ms)
        counts = cooc.counts
        if self._names[0] != (id(counts), counts.version):  # the ids as an array, while they stand
            self._names = ((id(counts), counts.version), np.asarray(counts.ids, dtype=object))
        return PairDeltas.of(deltas, self._names[1])

    def _rank(self, result: BatchResult, meta: dict[str, dict], applied: Sequence[Event | None],
              failed: dict[int, str]) -> None:
        """One message per user of ``meta``: all ranked at once; when that fails, one by one, and
        a user whose ranking fails gets the popularity list (``fallback``); only if
        that fails too are the user's events folded in by this batch (``applied``: the batch's
        events, None where not folded in) dead letters: they stay applied, and a re-read skips
        them, so no event is dead-lettered twice. A user's state is never dropped."""
        now = int(time.time() * 1000)
        users = list(meta)
        try:  # every touched user ranked at once
            recs = self.model.recommend_many([result.states[u] for u in users], self.top_k)
        except Exception:  # one by one, to find whose ranking fails
            recs = [None] * len(users)
        for user, rec in zip(users, recs):
            m, st = meta[user], result.states[user]
            try:
                result.messages[user] = self.recommendation(user, st, m["ts"], m["ids"], now, rec)
                continue
            except Exception:
                log.exception("ranking failed for user %r; serving the popularity list", user)
            try:
                result.messages[user] = self.recommendation(user, st, m["ts"], m["ids"], now, self.fallback(st))
            except Exception as exc:  # no list at all: the user's events of this batch are dead letters
                log.exception("the popularity list failed too for user %r", user)
                failed.update({i: f"ranking failed: {exc!r}" for i, e in enumerate(applied)
                               if e is not None and e.user_id == user})

    def fallback(self, st: UserState) -> Recommendation:
        """The popularity list (``models.migration.fallback``), for a user whose ranking failed."""
        top = fallback(self.model, st, self.top_k)
        return Recommendation([Ranked(i, s, {"popularity": s}) for i, s in top], {"popularity": 1.0}, self.model.version)

    def recommendation(self, user: str, st: UserState, based_on_ts: int, event_ids: list[str], now: int,
                       rec: Recommendation | None = None) -> dict:
        """The ``recommendation/v1`` message of ``rec`` (None: ranked here; a state written by
        another model is migrated first; a forgotten user's list is empty)."""
        if rec is None and st.forgotten:  # no list until the user's next event
            rec = Recommendation([], {}, self.model.version)
        if rec is None:
            rec = self.model.recommend(self.model.fit(st), self.top_k)
        return {
            "schema": "recommendation/v1",
            "user_id": user,
            "items": [{"item_id": r.item_id, "score": round(r.score, 6), "rank": i + 1, "reasons": r.reasons}
                      for i, r in enumerate(rec.items)],
            "dimension_weights": rec.dimension_weights,
            "model_version": rec.model_version,
            "based_on_event_ts": based_on_ts,
            "based_on_event_ids": event_ids[-50:],
            "generated_at": now,
            "events_applied": st.events,
        }
