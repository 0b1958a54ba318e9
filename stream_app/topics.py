"""Create the app's topics before the worker subscribes, and wait until the broker lists them.

Faust declares its topics and subscribes right after; when a topic is brand new the consumer's
first metadata can miss it, and Faust then ignores the topic until the next metadata refresh
(minutes). Creating them first, with the partition count the tables need, removes that race.
"""
from __future__ import annotations

import asyncio
import logging
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from stream_app.settings import Settings

log = logging.getLogger(__name__)

CHANGELOG_TABLES = ("user-state", "catalog-items")


def topic_names(settings: Settings) -> tuple[list[str], list[str]]:
    """(plain topics, compacted changelog topics) this app reads or writes."""
    plain = [settings.topic(n) for n in ("interactions", "catalog", "recommendations", "dead_letters")]
    changelogs = [f"{settings.app_id}-{t}-changelog" for t in CHANGELOG_TABLES]
    return plain, changelogs


async def ensure_topics_async(settings: Settings, timeout_s: float = 60.0) -> None:
    plain, changelogs = topic_names(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(t, settings.partitions, settings.replication_factor) for t in plain if t not in existing]
        new += [NewTopic(t, settings.partitions, settings.replication_factor, topic_configs={"cleanup.policy": "compact"})
                for t in changelogs if t not in existing]
        for topic in new:  # one by one: an "already exists" for one must not hide the others
            try:
                await admin.create_topics([topic])
            except TopicAlreadyExistsError:
                pass
        want = set(plain + changelogs)
        deadline = time.monotonic() + timeout_s
        while not want <= set(await admin.list_topics()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics not visible after {timeout_s}s: {sorted(want)}")
            await asyncio.sleep(0.2)
        if new:
            log.info("created topics %s", [t.name for t in new])
    finally:
        await admin.close()


def ensure_topics(settings: Settings, timeout_s: float = 60.0) -> None:
    asyncio.run(ensure_topics_async(settings, timeout_s))
