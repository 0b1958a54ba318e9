"""What the agents do with a micro-batch, without Faust: parse, check, encode, update, rank.

The agents (``stream_app.agents``) only move bytes between Kafka, the tables and this object;
the heavy methods (``index_items``, ``apply_batch``) are plain functions of their inputs and run in
a worker thread so the event loop stays free.
"""
from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import orjson

from models.engine import InterestModel
from models.state import UserState
from stream_app.codec import Codec, Rejected

log = logging.getLogger(__name__)


@dataclass
class Source:
    """Where a message came from (for dead letters and idempotent replays)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Misrouted:
    """A valid event whose message key is not its user_id: republish it keyed by user_id."""

    event: dict


@dataclass
class BatchResult:
    states: dict[str, UserState] = field(default_factory=dict)  # touched users' new states
    messages: dict[str, dict] = field(default_factory=dict)  # user -> recommendation message
    rejected: list[tuple[Source, Rejected]] = field(default_factory=list)


class Processor:
    def __init__(self, model: InterestModel, encoder, sentiment, codec: Codec, top_k: int = 10):
        self.model = model
        self.encoder = encoder  # .encode(list[str]) -> (N, D) unit vectors
        self.sentiment = sentiment  # callable(str) -> [-1, 1]
        self.codec = codec
        self.top_k = top_k

    # -- catalog -----------------------------------------------------------------------------
    def parse_item(self, src: Source) -> dict | Rejected:
        return self.codec.decode("catalog_item", src.value)

    @staticmethod
    def item_text(item: dict) -> str:
        parts = [item["title"]]
        if item.get("text"):
            parts.append(item["text"])
        if item.get("categories"):
            parts.append("Categories: " + ", ".join(item["categories"]))
        return ". ".join(parts)

    def index_items(self, items: Sequence[dict]) -> list[tuple[str, bytes]]:
        """Encode all item texts in one batched pass, add them to the catalogue vectors and
        return (item_id, record) pairs for the catalogue table (record = item + its vector)."""
        for it in items:
            if it.get("deleted"):
                self.model.items.delete(it["item_id"])
        live = [it for it in items if not it.get("deleted")]
        vecs = self.encoder.encode([self.item_text(it) for it in live]) if live else np.zeros((0, 0))
        out = []
        for it, v in zip(live, vecs):
            self.model.add_item(it["item_id"], v, it.get("categories", ()), it.get("attributes"))
            out.append((it["item_id"], encode_item_record(it, v)))
        return out

    def restore_item(self, record: bytes) -> None:
        """Re-add an item from its catalogue-table record (recovery: no re-encoding)."""
        item, vec = decode_item_record(record)
        self.model.add_item(item["item_id"], vec, item.get("categories", ()), item.get("attributes"))

    # -- interactions ------------------------------------------------------------------------
    def parse_event(self, src: Source) -> dict | Rejected | Misrouted:
        ev = self.codec.decode("interaction", src.value)
        if isinstance(ev, Rejected):
            return ev
        if ev["item_id"] not in self.model.items:
            return Rejected("unknown_item", f"item_id {ev['item_id']!r} is not in the catalogue",
                            self.codec.ids["interaction"])
        if src.key is None or src.key != ev["user_id"].encode():
            return Misrouted(ev)
        return ev

    def apply_batch(self, events: Sequence[tuple[dict, int]], states: dict[str, bytes | None]) -> BatchResult:
        """events: (event, source offset) in arrival order; states: user -> stored state bytes.
        Updates each touched user's state once per event, then ranks once per user."""
        result = BatchResult()
        texts = [ev["text"] for ev, _ in events if ev.get("text")]
        text_vecs = iter(self.encoder.encode(texts)) if texts else iter(())
        meta: dict[str, dict] = {}
        for ev, offset in events:
            user = ev["user_id"]
            st = result.states.get(user)
            if st is None:
                raw = states.get(user)
                st = UserState.from_bytes(raw) if raw else self.model.new_state()
                result.states[user] = st
            text_vec = next(text_vecs) if ev.get("text") else None
            senti = self.sentiment(ev["text"]) if ev.get("text") else None
            self.model.apply(st, ev["item_id"], ev["type"], ev.get("value"), ev["ts"], offset,
                             text_sentiment=senti, text_vector=text_vec)
            m = meta.setdefault(user, {"ts": ev["ts"], "ids": []})
            m["ts"] = max(m["ts"], ev["ts"])
            m["ids"].append(ev["event_id"])
        now = int(time.time() * 1000)
        for user, st in result.states.items():
            result.messages[user] = self.recommendation(user, st, meta[user]["ts"], meta[user]["ids"], now)
        return result

    def recommendation(self, user: str, st: UserState, based_on_ts: int, event_ids: list[str], now: int) -> dict:
        rec = self.model.recommend(st, self.top_k)
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


def encode_item_record(item: dict, vec: np.ndarray) -> bytes:
    return orjson.dumps({**item, "_vec": base64.b64encode(vec.astype(np.float32).tobytes()).decode()})


def decode_item_record(record: bytes) -> tuple[dict, np.ndarray]:
    obj = orjson.loads(record)
    vec = np.frombuffer(base64.b64decode(obj.pop("_vec")), dtype=np.float32)
    return obj, vec
