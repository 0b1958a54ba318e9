"""Live fan-out of recommendations to web clients (the page's Server-Sent Events stream).

The hot path publishes each user's new list to Kafka and, on this worker, to ``Subscribers``;
``GET /users/{id}/events`` holds one bounded queue per open page. A slow page loses old lists,
never blocks the hot path (only the newest list of a user matters).

>>> import asyncio
>>> async def demo():
...     subs = Subscribers()
...     q = subs.subscribe("u1")
...     subs.publish("u1", b"{}"); subs.publish("u2", b"{}")
...     got = q.get_nowait()
...     subs.unsubscribe("u1", q)
...     return got, subs.count()
>>> asyncio.run(demo())
(b'{}', 0)

A forget: ``{"user_id": "u1", "forgotten": true}`` to the user's pages.
"""
from __future__ import annotations

import asyncio
from collections import defaultdict

import orjson


class Subscribers:
    def __init__(self, queue_size: int = 16):
        self.queue_size = queue_size
        self._by_user: dict[str, set[asyncio.Queue]] = defaultdict(set)

    def subscribe(self, user_id: str) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(maxsize=self.queue_size)
        self._by_user[user_id].add(q)
        return q

    def unsubscribe(self, user_id: str, q: asyncio.Queue) -> None:
        qs = self._by_user.get(user_id)
        if qs is not None:
            qs.discard(q)
            if not qs:
                del self._by_user[user_id]

    def publish(self, user_id: str, message: bytes) -> None:
        for q in self._by_user.get(user_id, ()):
            if q.full():
                q.get_nowait()  # drop the oldest list: the newest is what the page shows
            q.put_nowait(message)

    def forget(self, user_id: str) -> None:
        """Tell the user's open pages the user was forgotten (``{"user_id": ..., "forgotten":
        true}``: the page drops the list it shows), keep nothing. A list published after it
        belongs to the user's new life (``events_applied`` counts from 1 again)."""
        self.publish(user_id, orjson.dumps({"user_id": user_id, "forgotten": True}))

    def count(self) -> int:
        return sum(len(v) for v in self._by_user.values())
