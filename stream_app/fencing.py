"""Writer epochs: how a changelog tells the current owner's writes from a former owner's late ones.

A member that was cut off from its group (evicted: no heartbeat, or a batch longer than the
rebalance timeout) may still have writes in flight while the partition's new owner has taken
over. Nothing in Kafka stops those late writes short of transactions, so every changelog record
the store writes carries its writer's epoch (record headers ``EPOCH_HEADER``, plus the member id
in ``WRITER_HEADER``), and the store's restore refuses a record whose epoch is lower than one
already seen earlier in the same partition.

The epoch of an owner for one partition is fixed when the partition is assigned to it and restored
(``stream_app.store.UserStore.restore``): ``max(group generation, highest epoch in the partition +
1)``. The generation orders owners of the group (it grows with every rebalance); the highest epoch
already in the partition keeps epochs growing when the group's generation starts again (a group
deleted after all its members left). Before it handles any record, the owner appends an epoch
marker (key ``MARKER_KEY``) to the partition and waits for it, so any write of a former owner that
lands later is detectably older.

``Writer`` is what the consumer knows about its assignment (generation, member id, how to send);
``assignment`` holds it while the assignment callback runs, so the store reads it there without
being told by the hot path. ``Fenced`` is raised by an outbox whose member lost its assignment.

What stays open. A member notices it lost its assignment at its next heartbeat (about a third of
the session timeout) or failed commit; what it handed to the producer before that still reaches
Kafka. On the changelog the next restore refuses it and rewrites the user with the state it kept;
on ``recommendations`` consumers keep the message with the highest ``events_applied``. If log
compaction cleans the partition after such a late write and before the next restore, the owner's
newer record of that user is gone and the late one is refused: that user restarts empty. It
takes a zombie write, then closed segments cleaned (``segment.ms`` 7 days by default), then a
restore, in that order.
"""
from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Awaitable, Callable

EPOCH_HEADER = "stream-reco-epoch"
WRITER_HEADER = "stream-reco-writer"
# Never a user id: user ids are JSON strings checked by the schema, and this key is not UTF-8.
MARKER_KEY = b"\xff\xfestream-reco-epoch-marker"


class Fenced(RuntimeError):
    """This member lost the assignment its writes were made under (evicted, or the group's
    generation changed): what it has not sent yet must not reach Kafka."""


class CorruptRecord(ValueError):
    """A changelog record the store cannot restore (no key, or an unreadable epoch header)."""


@dataclass(frozen=True)
class Writer:
    """The member an assignment was given to: its group generation and member id, and ``send``
    (topic, key=, value=, partition=, headers=) -> a delivery future, for the epoch marker."""

    generation: int
    member: str
    send: Callable[..., Awaitable]


assignment: contextvars.ContextVar[Writer | None] = contextvars.ContextVar("assignment", default=None)


def headers(epoch: int, member: str) -> list[tuple[str, bytes]]:
    return [(EPOCH_HEADER, str(epoch).encode()), (WRITER_HEADER, member.encode())]


def epoch_of(record_headers) -> int:
    """The writer epoch of a changelog record; 0 for one written without (before epochs)."""
    for name, value in record_headers or ():
        if name == EPOCH_HEADER:
            try:
                return int(value)
            except (TypeError, ValueError):
                raise CorruptRecord(f"unreadable writer epoch header {value!r}") from None
    return 0


def owner_epoch(generation: int, highest: int) -> int:
    """The epoch of a new owner: above every epoch in the partition, and at least the generation."""
    return max(generation, highest + 1)
