"""Every topic the app reads or writes and every consumer group it joins, by name, and the check
that the topics exist as expected.

``TopicNames`` derives all topic names from the settings, the tables' changelog topics included
(Faust names them ``<app_id>-<table>-changelog``) and the co-engagement topics (``<app_id>-cooc-pairs``:
pair messages keyed by item; ``<app_id>-cooc-rows-changelog``: the compacted neighbour rows,
``stream_app.cooc_stream``); ``hot_group``, ``catalog_group`` and ``cooc_group`` name the three
consumer groups. Nothing else in the code spells a topic or group name.
``ensure_topics`` creates missing topics before the worker subscribes (when a topic is brand new
the consumer's first metadata can miss it, and Faust then ignores it until the next refresh), waits
until the broker lists them, and checks that the topics a table is co-partitioned with have the
table's partition count.

>>> from stream_app.settings import Settings
>>> names = TopicNames.from_settings(Settings(app_id="reco", topic_prefix="t-"))
>>> names.interactions, names.user_state_changelog
('t-interactions', 'reco-user-state-changelog')
>>> hot_group(Settings(app_id="reco")), catalog_group(Settings(app_id="reco"))
('reco-interactions', 'reco-catalog')
>>> names.cooc_pairs, names.cooc_rows_changelog, cooc_group(Settings(app_id="reco"))
('reco-cooc-pairs', 'reco-cooc-rows-changelog', 'reco-cooc')
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from stream_app.settings import Settings, SettingsError

log = logging.getLogger(__name__)

USER_STATE_TABLE = "user-state"
CATALOG_TABLE = "catalog-items"
COOC_TABLE = "cooc-rows"


@dataclass(frozen=True)
class TopicNames:
    interactions: str
    catalog: str
    recommendations: str
    dead_letters: str
    user_state_changelog: str
    catalog_items_changelog: str
    cooc_pairs: str
    cooc_rows_changelog: str

    @classmethod
    def from_settings(cls, settings: Settings) -> "TopicNames":
        return cls(interactions=settings.topic("interactions"), catalog=settings.topic("catalog"),
                   recommendations=settings.topic("recommendations"), dead_letters=settings.topic("dead_letters"),
                   user_state_changelog=changelog(settings.app_id, USER_STATE_TABLE),
                   catalog_items_changelog=changelog(settings.app_id, CATALOG_TABLE),
                   cooc_pairs=f"{settings.app_id}-cooc-pairs", cooc_rows_changelog=changelog(settings.app_id, COOC_TABLE))

    @property
    def plain(self) -> list[str]:
        return [self.interactions, self.catalog, self.recommendations, self.dead_letters, self.cooc_pairs]

    @property
    def changelogs(self) -> list[str]:
        return [self.user_state_changelog, self.catalog_items_changelog, self.cooc_rows_changelog]


def changelog(app_id: str, table: str) -> str:
    return f"{app_id}-{table}-changelog"


def hot_group(settings: Settings) -> str:
    """The consumer group of the hot path (``interactions``)."""
    return f"{settings.app_id}-interactions"


def catalog_group(settings: Settings) -> str:
    """The consumer group of the catalogue indexer (``catalog``)."""
    return f"{settings.app_id}-catalog"


def cooc_group(settings: Settings) -> str:
    """The consumer group of the co-engagement aggregator (``<app_id>-cooc-pairs``)."""
    return f"{settings.app_id}-cooc"


async def ensure_topics_async(bootstrap_servers: str, plain: list[str], compacted: list[str] = (),
                              partitions: int = 4, replication: int = 1, timeout_s: float = 60.0,
                              copartitioned: list[str] = (), security: dict | None = None) -> dict[str, list[int]]:
    """Create missing topics (``compacted`` ones with cleanup.policy=compact), wait until every
    partition of each has a leader, return each topic's partition ids, and raise if any topic in ``copartitioned`` has a partition count other than
    ``partitions`` (a table and its source topic must agree, or state lands on the wrong worker).
    ``security``: ``stream_app.kafka_clients.security_options``."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **(security or {}))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(t, partitions, replication) for t in plain if t not in existing]
        new += [NewTopic(t, partitions, replication, topic_configs={"cleanup.policy": "compact"})
                for t in compacted if t not in existing]
        for topic in new:  # one by one: an "already exists" for one must not hide the others
            try:
                await admin.create_topics([topic])
            except TopicAlreadyExistsError:
                pass
        want = sorted(set(plain) | set(compacted))
        deadline = time.monotonic() + timeout_s
        while True:  # listed, and every partition has a leader
            described = {t["topic"]: t for t in await admin.describe_topics(want)}
            ready = {n: sorted(p["partition"] for p in t["partitions"]) for n, t in described.items()
                     if t["error_code"] == 0 and t["partitions"]
                     and all(p["error_code"] == 0 and p["leader"] >= 0 for p in t["partitions"])}
            if len(ready) == len(want):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {sorted(set(want) - set(ready))} have no leaders after {timeout_s:.0f}s")
            await asyncio.sleep(0.1)
        if new:
            log.info("created topics %s", [t.name for t in new])
            await asyncio.sleep(0.5)  # new partitions: let their leaders start serving
        wrong = {t: len(ready[t]) for t in copartitioned if len(ready[t]) != partitions}
        if wrong:
            raise RuntimeError(f"topics {wrong} do not have {partitions} partitions "
                               "(STREAM_RECO_PARTITIONS); a table and its source topic must agree")
        return ready
    finally:
        await admin.close()


def ensure_topics(settings: Settings, timeout_s: float = 60.0) -> TopicNames:
    """Create and check every topic of the app described by ``settings``. When the broker
    cannot be used because it refuses the login (SASL, TLS), raises ``SettingsError`` naming the
    settings to fix rather than the failure to connect."""
    from stream_app.kafka_clients import login_problem, security_options

    names = TopicNames.from_settings(settings)
    try:
        asyncio.run(ensure_topics_async(settings.bootstrap_servers, names.plain, names.changelogs,
                                        settings.partitions, settings.replication_factor, timeout_s,
                                        copartitioned=[names.interactions, names.user_state_changelog,
                                                       names.catalog, names.catalog_items_changelog,
                                                       names.cooc_pairs, names.cooc_rows_changelog],
                                        security=security_options(settings)))
    except Exception:
        problem = asyncio.run(login_problem(settings)) if settings.kafka_security_protocol != "PLAINTEXT" else None
        if problem:
            raise SettingsError(problem) from None
        raise
    return names


class ClusterChanged(RuntimeError):
    """The Kafka cluster behind the bootstrap address is not the one the worker started on."""


class ClusterWatch:
    """Notices a broker that came back empty (wiped, or another cluster on the same address):
    its cluster id differs from the one seen at start. Going on would serve from empty state as if
    nothing happened, so the worker stops with a clear message instead."""

    def __init__(self, bootstrap_servers: str, cluster_id: str | None = None, security: dict | None = None):
        self.bootstrap_servers = bootstrap_servers
        self.security = security or {}  # stream_app.kafka_clients.security_options
        self.cluster_id = cluster_id  # the id seen at start (run_worker reads it before the app starts)

    async def current(self) -> str | None:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, **self.security, request_timeout_ms=5000)
        try:
            await asyncio.wait_for(admin.start(), timeout=10)
            return (await asyncio.wait_for(admin.describe_cluster(), timeout=10)).get("cluster_id")
        except Exception:  # unreachable right now: an outage, not a change
            return None
        finally:
            try:
                await admin.close()
            except Exception:
                pass

    async def check(self) -> None:
        now = await self.current()
        if now is None:
            return
        if self.cluster_id is None:
            self.cluster_id = now
            log.info("Kafka cluster id %s", now)
        elif now != self.cluster_id:
            raise ClusterChanged(
                f"the Kafka cluster at {self.bootstrap_servers} changed (cluster id {self.cluster_id} -> {now}): "
                "it was wiped or replaced, so its topics, offsets and this worker's state are gone. "
                "Restart the worker to start over on the new cluster.")
