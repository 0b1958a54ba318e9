"""One user's multi-dimension interest state: what the worker keeps per user between events.

The state never sees the catalogue: the caller (``models.engine.InterestModel``) hands it the
item's vectors, one per space. An event is its bookkeeping (``advance``: time, count,
de-duplication window; the seen items) and the update of the norms and means, which
``models.fold`` does for the worker's batches and the offline replay alike. The state
serialises to a compact byte string (float16 means) that lives in a compacted changelog topic.

Idempotency has two guards. By source position: ``offsets`` holds, per source partition, the
offset of the last event of the user read from it; an event read again at an offset at or
below it (a batch re-read after a crash or a lost commit, however long) is skipped. Per
partition, because an event may be applied off its user's partition (``stream_app.routing``).
By event identity: the ids of the last ``DEDUP_WINDOW`` applied events are kept (as 48-bit
hashes: with 256 ids in the window, a new event is taken for a duplicate with odds of about
1 in 10^12), and an event whose id is among them is not applied again: a producer's retry of
the same ``event_id`` at a new offset is harmless as long as it arrives within that many of
the user's events. Events without a source position (offline replay) have the window alone.

Forgetting (``forgotten``) erases everything the state knows of the user's behaviour (interest
means and norms, seen items and their weights, event times, the count) and keeps only what makes
old events harmless: the source offsets, the event-id hashes and the number of forgets.
``events`` counts the events applied since the user's last forget.

A state written for a model with other dimensions or space sizes (``fits``) is rebuilt by the
model from what the state keeps (``models.migration``): the recent items and, per item, the
strength and valence of its last event (``weights``).

The items already engaged with are a ``models.seen.SeenItems``: the last ``RECENT_ITEMS`` ids
verbatim, older ones as short hashes (that module has the trade-off: a small false-positive rate
for a bounded size). With every cap full, a state of the untrained default model (five
dimensions, 2,944 bytes of float16 means) is 7,530 bytes: 172 of header, 20 of norms, 1,536 of
event-id hashes, 650 for 50 recent ids of 12 characters, 2,208 for 1,950 older items
(``stream_app.dev.bench.worst_case_state_bytes``), plus in format 4 200 bytes of recent-item
weights and ~15 per source partition. A trained checkpoint's 448-d text+CF space adds 384 bytes
of means. Formats 3 and 2 (format 2: every seen id verbatim in the header) are still read, and
converted: they have no offsets and no weights.

>>> import numpy as np
>>> from models.dimensions import default_dimensions
>>> from models.fold import Pending, fold
>>> dims = default_dimensions()
>>> st = UserState.empty(dims, {"text": 2, "category": 2, "cf": 2})
>>> vecs = {"text": np.float32([[1, 0]]), "category": np.float32([[1, 0]]), "cf": np.zeros((1, 2), np.float32)}
>>> fold(dims, [Pending(st, 0, 2.0, 1.0, st.since(1000))], vecs)
>>> st.advance(1000, event_key("e1")); st.seen.add("a")
True
>>> st.has_applied("e1"), st.mean["content"].tolist(), st.seen.recent, st.events
(True, [1.0, 0.0], ['a'], 1)
>>> UserState.from_bytes(st.to_bytes()).mean["content"].tolist()
[1.0, 0.0]
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import orjson

from models.dimensions import Dimension
from models.seen import MAX_SEEN, RECENT_ITEMS, SeenItems

__all__ = ["DEDUP_WINDOW", "MAX_SEEN", "RECENT_ITEMS", "UserState", "event_key"]

DEDUP_WINDOW = 256  # ids of the user's last applied events, for de-duplication
_FORMAT = 4
_READS = (2, 3, _FORMAT)
_UNKNOWN = (float("nan"), float("nan"))  # the weights of a recent item whose event is not known


def event_key(event_id: str) -> int:
    """A stable 48-bit hash of an event id (what the de-duplication window stores): the top 48
    bits of its 64-bit BLAKE2b digest, so format 2's 64-bit hashes convert by a shift."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big") >> 16


def _pack_keys(keys: list[int]) -> bytes:
    return np.array(keys, dtype=">u8").view(np.uint8).reshape(-1, 8)[:, 2:].tobytes()


def _unpack_keys(data: bytes, count: int, pos: int) -> list[int]:
    raw = np.frombuffer(data, dtype=np.uint8, count=6 * count, offset=pos).reshape(-1, 6)
    full = np.zeros((count, 8), dtype=np.uint8)
    full[:, 2:] = raw
    return full.view(">u8").ravel().tolist()


@dataclass
class UserState:
    mean: dict[str, np.ndarray]  # dimension -> float16 decayed mean, (space_dim,)
    norm: dict[str, float]  # dimension -> decayed total |weight| (0 = no evidence)
    last_ts: int = -1  # event time of the last applied event, ms
    events: int = 0  # events applied so far
    seen: SeenItems = field(default_factory=SeenItems)  # items engaged with (models.seen)
    recent: list[int] = field(default_factory=list)  # event_key of the last DEDUP_WINDOW events
    offsets: dict[int, int] = field(default_factory=dict)  # source partition -> last offset read from it
    generation: int = 0  # forgets so far
    weights: dict[str, tuple[float, float]] = field(default_factory=dict)  # item -> (strength, valence), last event

    @classmethod
    def empty(cls, dims: Sequence[Dimension], space_dims: Mapping[str, int]) -> "UserState":
        return cls(mean={d.name: np.zeros(space_dims[d.space], dtype=np.float16) for d in dims},
                   norm={d.name: 0.0 for d in dims})

    def fits(self, dims: Sequence[Dimension], space_dims: Mapping[str, int]) -> bool:
        """The state has a norm and a mean of the right size for every dimension, and no other
        (not so: a state written by a model with other dimensions, or a forgotten one)."""
        if len(self.mean) != len(dims):
            return False
        for d in dims:
            m = self.mean.get(d.name)
            if m is None or m.shape != (space_dims[d.space],) or d.name not in self.norm:
                return False
        return True

    def check(self, dims: Sequence[Dimension], space_dims: Mapping[str, int]) -> None:
        """ValueError unless the state ``fits`` the dimensions."""
        if not self.fits(dims, space_dims):
            raise ValueError("user state does not fit the model's dimensions")

    @property
    def forgotten(self) -> bool:
        """Forgotten, and no event applied since."""
        return self.generation > 0 and self.events == 0

    def forget(self, key: int) -> "UserState":
        """The record a forget (``key``: the ``event_key`` of its id) leaves: no interest, no
        items, no times, no count; the source offsets, the event-id hashes (the forget's among
        them) and the number of forgets (now one more)."""
        recent = (self.recent + [key])[-DEDUP_WINDOW:]
        return UserState(mean={}, norm={}, recent=recent, offsets=dict(self.offsets), generation=self.generation + 1)

    def trim_weights(self) -> None:
        """Keep the (strength, valence) of the recent items only (``weights``: the caller notes
        each event's, and trims when it holds more than a few times ``RECENT_ITEMS``)."""
        w = self.weights
        self.weights = {i: w[i] for i in self.seen.recent if i in w}

    def read_at(self, partition: int, offset: int) -> bool:
        """Note that the user's event at ``offset`` of source ``partition`` is being read; False
        when it was read already (at or below the last offset noted for that partition)."""
        last = self.offsets.get(partition)
        if last is not None and offset <= last:
            return False
        self.offsets[partition] = offset
        return True

    def has_applied(self, event_id: str) -> bool:
        return event_key(event_id) in self.recent

    def since(self, ts: int) -> float:
        """ms from the last applied event to ``ts`` (0.0 before the first): what the decays take."""
        return float(ts - self.last_ts) if self.last_ts >= 0 else 0.0

    def advance(self, ts: int, key: int) -> None:
        """The time, the count and the de-duplication window of a new event (``key``: the
        ``event_key`` of its id, not among ``recent``)."""
        self.last_ts = max(self.last_ts, int(ts))
        self.events += 1
        self.recent.append(key)
        if len(self.recent) > DEDUP_WINDOW:
            del self.recent[: len(self.recent) - DEDUP_WINDOW]

    # -- wire format 4: 4-byte header length, orjson header ("v": the format; "off": [partition,
    #    offset] pairs; "g": forgets), the float16 means in header order, their float32 norms, the
    #    de-duplication window as 6-byte big-endian hashes, the seen items (``SeenItems.pack``: the
    #    recent ids, the older items' hashes), then (strength, valence) as float16 per recent id
    #    (NaN: unknown). Format 3 ends after the seen items and has no "off" or "g".
    def to_bytes(self) -> bytes:
        names = list(self.mean)
        head = orjson.dumps({"v": _FORMAT, "dims": names, "sizes": [int(self.mean[n].size) for n in names],
                             "ts": self.last_ts, "n": self.events, "recent": len(self.recent),
                             "seen": self.seen.counts(), "off": list(self.offsets.items()),
                             "g": self.generation})
        body = b"".join(self.mean[n].astype(np.float16).tobytes() for n in names)
        norms = np.array([self.norm[n] for n in names], dtype=">f4").tobytes()  # float32 values (models.fold)
        w = self.weights
        weights = np.array([w.get(i, _UNKNOWN) for i in self.seen.recent], dtype=">f2").tobytes()
        return (struct.pack(">I", len(head)) + head + body + norms + _pack_keys(self.recent)
                + self.seen.pack() + weights)

    @classmethod
    def from_bytes(cls, data: bytes) -> "UserState":
        """Formats 4, 3 and 2 (a format 2 state's seen list becomes a ``SeenItems``)."""
        (hlen,) = struct.unpack(">I", data[:4])
        head = orjson.loads(data[4:4 + hlen])
        if head.get("v") not in _READS:
            raise ValueError(f"unsupported user state format {head.get('v')!r}")
        mean, pos = _read_means(head, data, 4 + hlen)
        if head["v"] == 2:
            norm = head["norm"]
        else:
            norm = np.frombuffer(data, dtype=">f4", count=len(head["dims"]), offset=pos).tolist()
            pos += 4 * len(head["dims"])
        if head["v"] == 2:  # 64-bit hashes: keep their top 48 bits
            recent = [k >> 16 for k in np.frombuffer(data, dtype=">u8", count=head["recent"], offset=pos).tolist()]
            pos += 8 * head["recent"]
        else:
            recent = _unpack_keys(data, head["recent"], pos)
            pos += 6 * head["recent"]
        if head["v"] == 2:
            seen = SeenItems.from_ids(head["seen"])
        else:
            seen, pos = SeenItems.unpack(head["seen"], data, pos)
        weights = {}
        if head["v"] >= 4:  # (NaN, NaN) where unknown: read as such (models.migration)
            w = np.frombuffer(data, dtype=">f2", count=2 * len(seen.recent), offset=pos).reshape(-1, 2)
            weights = dict(zip(seen.recent, map(tuple, w.tolist())))
        return cls(mean=mean, norm=dict(zip(head["dims"], norm)), last_ts=head["ts"],
                   events=head["n"], seen=seen, recent=recent, weights=weights,
                   offsets={int(p): int(o) for p, o in head.get("off", ())}, generation=head.get("g", 0))


def _read_means(head: Mapping[str, Any], data: bytes, pos: int) -> tuple[dict[str, np.ndarray], int]:
    mean = {}
    for name, size in zip(head["dims"], head["sizes"]):
        mean[name] = np.frombuffer(data, dtype=np.float16, count=size, offset=pos).copy()
        pos += 2 * size
    return mean, pos
