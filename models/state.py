"""One user's multi-dimension interest state, updated one event at a time.

The stream worker and the offline evaluation call the very same ``UserState.apply``; the state
serialises to a compact byte string (float16 means) that lives in a compacted changelog topic.

>>> import numpy as np
>>> from models.dimensions import default_dimensions
>>> from models.items import ItemVectors
>>> items = ItemVectors(text_dim=2, cf_dim=2, category_dim=2)
>>> _ = items.upsert("a", text=np.array([1.0, 0.0]), category=np.array([1.0, 0.0]))
>>> st = UserState.empty(default_dimensions(), items.dims)
>>> st.apply(default_dimensions(), items, row=0, item_id="a", strength=2.0, valence=1.0, ts=1000, offset=0)
True
>>> st.apply(default_dimensions(), items, row=0, item_id="a", strength=2.0, valence=1.0, ts=1000, offset=0)
False
>>> st.mean["content"].tolist(), st.seen
([1.0, 0.0], ['a'])
>>> UserState.from_bytes(st.to_bytes()).mean["content"].tolist()
[1.0, 0.0]
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import orjson

from models.dimensions import Dimension
from models.items import ItemVectors

MAX_SEEN = 2000  # items remembered for "already seen" exclusion, newest kept
_FORMAT = 1


@dataclass
class UserState:
    mean: dict[str, np.ndarray]  # dimension -> float16 decayed mean, (space_dim,)
    norm: dict[str, float]  # dimension -> decayed total |weight| (0 = no evidence)
    last_ts: int = -1  # event time of the last applied event, ms
    last_offset: int = -1  # source offset of the last applied event (idempotent replays)
    events: int = 0
    seen: list[str] = field(default_factory=list)

    @classmethod
    def empty(cls, dims: Sequence[Dimension], space_dims: Mapping[str, int]) -> "UserState":
        return cls(mean={d.name: np.zeros(space_dims[d.space], dtype=np.float16) for d in dims},
                   norm={d.name: 0.0 for d in dims})

    def apply(self, dims: Sequence[Dimension], items: ItemVectors, row: int, item_id: str,
              strength: float, valence: float, ts: int, offset: int,
              text_vector: np.ndarray | None = None) -> bool:
        """Fold one event into every dimension. Returns False (and changes nothing) when the
        event's offset was already applied, so a replayed batch after a crash is harmless.
        ``text_vector`` (the event's own review text, encoded) is blended into text-space dimensions."""
        if offset <= self.last_offset:
            return False
        dt = float(ts - self.last_ts) if self.last_ts >= 0 else 0.0
        for d in dims:
            w = d.event_weight(strength, valence)
            decay = d.decay(dt)
            old_norm = self.norm[d.name] * decay
            new_norm = old_norm + abs(w)
            if new_norm <= 0.0:
                self.norm[d.name] = 0.0
                continue
            x = items.vector(d.space, row)
            if text_vector is not None and d.space in ("text", "hybrid"):
                n = text_vector.shape[0]  # the text part of the space comes first
                x = x.copy()
                x[:n] = 0.5 * (x[:n] + text_vector)
            acc = self.mean[d.name].astype(np.float32) * old_norm + w * x
            self.mean[d.name] = (acc / new_norm).astype(np.float16)
            self.norm[d.name] = float(np.float32(new_norm))
        self.last_ts = max(self.last_ts, int(ts))
        self.last_offset = int(offset)
        self.events += 1
        if item_id in self.seen:
            self.seen.remove(item_id)
        self.seen.append(item_id)
        if len(self.seen) > MAX_SEEN:
            del self.seen[: len(self.seen) - MAX_SEEN]
        return True

    # -- wire format: 4-byte header length, orjson header, then float16 means in header order --
    def to_bytes(self) -> bytes:
        names = list(self.mean)
        head = orjson.dumps({"v": _FORMAT, "dims": names, "sizes": [int(self.mean[n].size) for n in names],
                             "norm": [self.norm[n] for n in names], "ts": self.last_ts,
                             "off": self.last_offset, "n": self.events, "seen": self.seen})
        body = b"".join(self.mean[n].astype(np.float16).tobytes() for n in names)
        return struct.pack(">I", len(head)) + head + body

    @classmethod
    def from_bytes(cls, data: bytes) -> "UserState":
        (hlen,) = struct.unpack(">I", data[:4])
        head = orjson.loads(data[4:4 + hlen])
        if head.get("v") != _FORMAT:
            raise ValueError(f"unsupported user state format {head.get('v')!r}")
        mean, pos = {}, 4 + hlen
        for name, size in zip(head["dims"], head["sizes"]):
            mean[name] = np.frombuffer(data, dtype=np.float16, count=size, offset=pos).copy()
            pos += 2 * size
        return cls(mean=mean, norm=dict(zip(head["dims"], head["norm"])), last_ts=head["ts"],
                   last_offset=head["off"], events=head["n"], seen=head["seen"])
