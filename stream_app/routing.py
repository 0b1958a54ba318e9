"""Events on the wrong partition: applied where they land, or re-routed to their owner.

A user's state lives on its owner partition (``stream_app.processor.owner_partition``: murmur2 of
the user id, where Kafka's Java client puts a message keyed by it). A producer with another
partitioner (librdkafka's CRC32, kcat's) puts most events elsewhere. When the worker that reads
such an event also owns the user's partition, applying it right there saves a write and a read;
otherwise it is re-routed: appended to the owner partition, and applied when read from there.
Either way it is applied once. What must hold too is the order of one user's events, and an
event applied where it landed must not overtake events of its user that were re-routed earlier
and are still unread in the owner partition:

- re-routed by another worker before a rebalance (that worker settled them before giving its
  partitions up): when a partition is assigned, its end offset is noted, and nothing is applied
  off-partition for it until a record at or past that point has been read (and handled);
- re-routed by this worker: a user stays re-routed while any of its re-routed events is unread.

>>> r = OffPartition()
>>> r.assigned({0: 5, 1: 0})          # partition -> its end offset when it was assigned
>>> r.may_apply_here("u", 1), r.may_apply_here("u", 0)
(True, False)
>>> r.read(0, 3); r.may_apply_here("u", 0)
False
>>> r.read(0, 4); r.may_apply_here("u", 0)   # the last record there at assignment was read
True
>>> r.rerouted("u", "e1", 0); r.may_apply_here("u", 0), r.may_apply_here("v", 0)
(False, True)
>>> r.read_back("u", "e1"); r.may_apply_here("u", 0)
True
>>> r.rerouted("w", "e2", 7); r.pending    # owned elsewhere: never read back here, not kept
{}
"""
from __future__ import annotations

from typing import Iterable


class OffPartition:
    def __init__(self) -> None:
        self.owned: set[int] = set()
        self.backlog: dict[int, int] = {}  # partition -> its end offset at assignment, until read
        self.pending: dict[str, set] = {}  # user -> ids of its re-routed events not read back yet

    def assigned(self, ends: dict[int, int]) -> None:
        for p, end in ends.items():
            self.owned.add(p)
            if end > 0:
                self.backlog[p] = end

    def revoked(self, partitions: Iterable[int]) -> None:
        """Called once the batches in flight are settled: what this worker re-routed is on the
        broker, and whoever owns those partitions next sees it as backlog."""
        for p in partitions:
            self.owned.discard(p)
            self.backlog.pop(p, None)
        self.pending.clear()

    def may_apply_here(self, user: str, owner: int) -> bool:
        return owner in self.owned and owner not in self.backlog and user not in self.pending

    def rerouted(self, user: str, event_id, owner: int) -> None:
        if owner in self.owned:  # read back here later; elsewhere, the other worker orders it
            self.pending.setdefault(user, set()).add(event_id)

    def read_back(self, user: str, event_id) -> None:
        ids = self.pending.get(user)
        if ids is not None:
            ids.discard(event_id)
            if not ids:
                del self.pending[user]

    def read(self, partition: int, offset: int) -> None:
        """A record at ``offset`` of ``partition`` was read and its batch handled."""
        end = self.backlog.get(partition)
        if end is not None and offset >= end - 1:
            del self.backlog[partition]
