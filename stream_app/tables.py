"""The app's state, in Faust tables backed by compacted changelog topics (a restarted or moved
worker restores them from Kafka):

- ``user-state`` (Table, partitioned like ``interactions``): user_id -> ``UserState.to_bytes()``;
- ``catalog-items`` (GlobalTable, every worker holds all of it): item_id -> item message plus its
  encoded vector (``stream_app.codec.encode_item_record``), so a restart does not re-encode.

Keys and values are bytes we encode ourselves (key_type=bytes selects Faust's raw codec).
Faust names the changelog topics ``<app_id>-<table>-changelog`` (``stream_app.topics``).
"""
from __future__ import annotations

from dataclasses import dataclass

from stream_app.settings import Settings
from stream_app.topics import CATALOG_TABLE, USER_STATE_TABLE


@dataclass(frozen=True)
class Tables:
    users: object  # faust.Table
    items: object  # faust.GlobalTable


def declare(app, settings: Settings) -> Tables:
    users = app.Table(USER_STATE_TABLE, key_type=bytes, value_type=bytes, partitions=settings.partitions)
    items = app.GlobalTable(CATALOG_TABLE, key_type=bytes, value_type=bytes, partitions=settings.partitions)
    return Tables(users, items)
