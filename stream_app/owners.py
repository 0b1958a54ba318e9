"""Which worker holds a user: the owner of the user's interactions partition in the hot path's
consumer group, read from the group's description on the broker (each member's client id carries
its web URL, ``"<app_id> <url>"``). Any worker can then answer ``/users/{id}`` by forwarding the
request to the owner; any client can join the group and name any URL, so ``stream_app.forward``
decides whether a URL may be asked at all. The answer is cached for ``ttl_s``; during a
rebalance it may name no one.
"""
from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


def owners_from_description(group: dict, topic: str) -> dict[int, str]:
    """partition -> member URL, from one group of ``DescribeGroupsResponse.to_object()``.

    >>> from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment as A
    >>> raw = A(0, [("interactions", [0, 2])], b"").encode()
    >>> owners_from_description({"members": [{"client_id": "reco http://h:1", "member_assignment": raw}]},
    ...                         "interactions")
    {0: 'http://h:1', 2: 'http://h:1'}
    """
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    out: dict[int, str] = {}
    for member in group.get("members", ()):
        _, _, url = member["client_id"].partition(" ")
        raw = member["member_assignment"]
        if not url or not raw:
            continue
        for t, partitions in ConsumerProtocolMemberAssignment.decode(raw).assignment:
            if t == topic:
                out.update({p: url for p in partitions})
    return out


class Owners:
    def __init__(self, bootstrap_servers: str, group_id: str, topic: str, ttl_s: float = 2.0,
                 security: dict | None = None):
        self.bootstrap_servers, self.group_id, self.topic, self.ttl_s = bootstrap_servers, group_id, topic, ttl_s
        self.security = security or {}  # stream_app.kafka_clients.security_options
        self._owners: dict[int, str] = {}
        self._at = float("-inf")

    async def url_of(self, partition: int) -> str | None:
        if time.monotonic() - self._at > self.ttl_s:
            try:
                self._owners = await self._describe()
                self._at = time.monotonic()
            except Exception as exc:  # the broker is away: answer from what we knew
                log.warning("cannot describe group %s: %r", self.group_id, exc)
        return self._owners.get(partition)

    async def _describe(self) -> dict[int, str]:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, **self.security,
                                    request_timeout_ms=5000)
        await admin.start()
        try:
            responses = await admin.describe_consumer_groups([self.group_id])
        finally:
            await admin.close()
        out: dict[int, str] = {}
        for resp in responses:
            for group in resp.to_object()["groups"]:
                out.update(owners_from_description(group, self.topic))
        return out
