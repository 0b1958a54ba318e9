"""The items a user has already engaged with, in a few kilobytes at most (numpy only; a leaf).

Two parts:

* ``recent``: the last ``RECENT_ITEMS`` distinct item ids, verbatim, newest last; a re-engaged
  item moves to the end. This is what the co-engagement dimension reads (its last items, in
  order; ``models.engine.InterestModel`` refuses parameters that would read more) and membership
  here is exact.
* older items, as ``HASH_BITS``-bit hashes of their ids (``item_key``) in two generations of at
  most ``GENERATION`` distinct hashes each. An item that drops out of ``recent`` joins the newer
  generation; when that one is full, it becomes the older generation and the previous older one
  is dropped. So at least the ``RECENT_ITEMS + GENERATION`` (1,025) newest distinct items are
  always remembered, and at most ``MAX_SEEN`` (2,000): a user with up to 1,025 distinct items
  has all of them; a heavier one forgets its oldest items a generation at a time (format 2 of
  the state kept an exact list of the newest 2,000).

Serialised, each generation is a sorted set coded Elias-Fano style (the low bits of each hash
verbatim, the high bits as unary gaps): about ``HASH_BITS - log2(n) + 2`` bits per hash, 9 bits
at a full generation, so 1,950 older items take 2,208 bytes (as JSON strings of 12-character
ids they took 29 KB).

The trade-off is a false positive: an item never engaged with whose hash equals a remembered
one counts as seen. With ``n`` older (hashed) items that happens to a given item with
probability ``n / 2**HASH_BITS``: 0.04% for a user with 100 distinct items (50 of them
hashed), 0.7% at 1,000, 1.5% at the cap. Its effects: that item is left out of the user's
recommendations (the next one takes its place), and an engagement with it does not update the
co-engagement counts (as for a re-engagement). Both the worker and the offline fit
(``models.cooc.CoocModel.fit``) go through this class, so they agree exactly, false positives
included. Replaying MovieLens 100K, 39 of its 100,000 first engagements (0.04%) are taken for
re-engagements; on MovieLens latest-small 206 of 100,976 (0.2%), and 479 re-engagements of
heavy users count as first ones again (their item was forgotten).

>>> s = SeenItems()
>>> [s.add(i) for i in ("a", "b", "a")]      # True: a first engagement
[True, True, False]
>>> s.recent, s.newest(1), "a" in s, "z" in s
(['b', 'a'], ['a'], True, False)
>>> for i in range(RECENT_ITEMS):
...     _ = s.add(f"item-{i}")
>>> "a" in s.recent, "a" in s, len(s.newer)    # "a" and "b" moved to the hashed part
(False, True, 2)
>>> SeenItems.unpack(s.counts(), s.pack(), 0)[0] == s
True
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np

RECENT_ITEMS = 50  # ids kept verbatim, newest last (the co-engagement window reads at most these)
MAX_SEEN = 2000  # distinct items remembered at most (recent ids + both hash generations)
GENERATION = (MAX_SEEN - RECENT_ITEMS) // 2  # distinct hashes per generation
HASH_BITS = 17  # width of an older item's hash (the false-positive rate above)
_UNIVERSE = 1 << HASH_BITS


@lru_cache(maxsize=1 << 16)
def item_key(item_id: str) -> int:
    """The ``HASH_BITS``-bit hash by which an older item is remembered (kept for the last 65,536
    ids asked: each engagement of a heavy user asks for two)."""
    digest = hashlib.blake2b(item_id.encode(), digest_size=8, person=b"seen-item").digest()
    return int.from_bytes(digest, "big") >> (64 - HASH_BITS)


@dataclass
class SeenItems:
    recent: list[str] = field(default_factory=list)  # last RECENT_ITEMS distinct ids, newest last
    older: set[int] = field(default_factory=set)  # item_key of the older generation
    newer: set[int] = field(default_factory=set)  # item_key of the newer generation
    # (older, newer) as sorted int64 arrays, while they stand (``generations``)
    _sorted: tuple[np.ndarray, np.ndarray] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_ids(cls, item_ids: Iterable[str]) -> "SeenItems":
        """Engagements with ``item_ids`` in order (oldest first), e.g. an exact list of old."""
        out = cls()
        for i in item_ids:
            out.add(i)
        return out

    def has(self, item_id: str, key: int | None = None) -> bool:
        """Seen already (``key``: ``item_key(item_id)`` when the caller has it)."""
        return item_id in self.recent or self._hashed(item_id, key)

    __contains__ = has

    def _hashed(self, item_id: str, key: int | None) -> bool:
        if not self.older and not self.newer:
            return False
        key = item_key(item_id) if key is None else key
        return key in self.newer or key in self.older

    def add(self, item_id: str, key: int | None = None) -> bool:
        """One engagement with ``item_id``; True when it was not seen before (a first one)."""
        if item_id in self.recent:
            self.recent.remove(item_id)
            self.recent.append(item_id)
            return False
        first = not self._hashed(item_id, key)
        self.recent.append(item_id)
        if len(self.recent) > RECENT_ITEMS:
            self._retire(item_key(self.recent.pop(0)))
        return first

    def _retire(self, key: int) -> None:
        if key in self.newer:
            return
        self._sorted = None
        if len(self.newer) >= GENERATION:
            self.older, self.newer = self.newer, set()
        self.newer.add(key)

    def newest(self, n: int) -> list[str]:
        """The last ``n`` distinct items, newest first (at most ``RECENT_ITEMS``)."""
        return self.recent[: -n - 1: -1] if n > 0 else []

    @property
    def full(self) -> bool:
        """Every cap reached: the recent list and both generations."""
        return len(self.recent) == RECENT_ITEMS and len(self.older) == len(self.newer) == GENERATION

    def generations(self) -> tuple[np.ndarray, np.ndarray]:
        """(older, newer) hashes as sorted int64 arrays, kept until the next change (as read
        from bytes, ``unpack``, they cost nothing)."""
        if self._sorted is None:
            self._sorted = tuple(np.sort(np.fromiter(g, np.int64, len(g))) for g in (self.older, self.newer))
        return self._sorted

    def hashed_mask(self, keys: np.ndarray) -> np.ndarray:
        """(N,) bool: which of ``keys`` (``item_key`` of N items) are among the older items."""
        if not self.older and not self.newer:
            return np.zeros(len(keys), dtype=bool)
        table = np.zeros(_UNIVERSE, dtype=bool)
        for g in self.generations():
            table[g] = True
        return table[keys]

    # -- wire form: ``counts()`` goes in the caller's header, ``pack()`` in its body
    def counts(self) -> list[int]:
        return [len(self.recent), len(self.older), len(self.newer)]

    def pack(self) -> bytes:
        """The recent ids (each utf-8 after its byte length as a varint), then both generations."""
        raw = [i.encode() for i in self.recent]
        ids = b"".join(_varint(len(r)) + r for r in raw)
        return ids + b"".join(pack_keys(g) for g in self.generations())

    @classmethod
    def unpack(cls, counts: Sequence[int], data: bytes, offset: int) -> tuple["SeenItems", int]:
        """(the items, the offset after them) from what ``counts`` and ``pack`` wrote."""
        recent = []
        for _ in range(counts[0]):
            n = data[offset]
            offset += 1
            if n >= 0x80:  # a length of more than one varint byte
                n, shift = n & 0x7F, 7
                while True:
                    b = data[offset]
                    offset += 1
                    n |= (b & 0x7F) << shift
                    shift += 7
                    if b < 0x80:
                        break
            recent.append(data[offset:offset + n].decode())
            offset += n
        older, offset = unpack_keys(data, offset, counts[1])
        newer, offset = unpack_keys(data, offset, counts[2])
        return cls(recent, set(older.tolist()), set(newer.tolist()), (older, newer)), offset


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def _low_bits(m: int) -> int:
    """floor(log2(universe / m)): the bits of each hash stored verbatim."""
    return max(0, (_UNIVERSE // m).bit_length() - 1)


def pack_keys(keys: np.ndarray) -> bytes:
    """Sorted distinct hashes -> bytes: ``m * l`` low bits, then the high parts as a bit vector
    of ``m + universe >> l`` bits with a one at ``high[i] + i`` (each padded to whole bytes).

    >>> k = np.array([3, 900, 901, 70_000]); len(pack_keys(k))  # 4 * 15 low bits, 4 + 4 high bits
    9
    >>> unpack_keys(pack_keys(k), 0, 4)[0].tolist()
    [3, 900, 901, 70000]
    """
    m = keys.size
    if m == 0:
        return b""
    low = _low_bits(m)
    low_bits = ((keys[:, None] >> np.arange(low - 1, -1, -1)) & 1).astype(np.uint8).ravel()
    high = np.zeros(m + (_UNIVERSE >> low), dtype=np.uint8)
    high[(keys >> low) + np.arange(m)] = 1
    return np.packbits(low_bits).tobytes() + np.packbits(high).tobytes()


def unpack_keys(data: bytes, offset: int, m: int) -> tuple[np.ndarray, int]:
    """The inverse of ``pack_keys`` for ``m`` hashes at ``offset``: (hashes, the offset after)."""
    if m == 0:
        return np.zeros(0, dtype=np.int64), offset
    low = _low_bits(m)
    n_low, n_high = (m * low + 7) // 8, m + (_UNIVERSE >> low)
    buf = np.frombuffer(data, dtype=np.uint8, count=n_low + (n_high + 7) // 8, offset=offset)
    lows = np.unpackbits(buf[:n_low])[: m * low].reshape(m, low).astype(np.int64)
    lows = lows @ (1 << np.arange(low - 1, -1, -1, dtype=np.int64))
    ones = np.flatnonzero(np.unpackbits(buf[n_low:])[:n_high])
    if ones.size != m:
        raise ValueError(f"corrupt seen-item set: {ones.size} entries, expected {m}")
    return ((ones - np.arange(m)) << low) | lows, offset + buf.size
