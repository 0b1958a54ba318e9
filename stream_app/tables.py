"""The catalogue, in a Faust GlobalTable backed by a compacted changelog topic (a restarted
worker restores it from Kafka): ``catalog-items``, every worker holds all of it: item_id -> item
message plus its encoded vector (``stream_app.codec.encode_item_record``), so a restart does not
re-encode. Keys and values are bytes we encode ourselves (key_type=bytes selects Faust's raw
codec). Faust names the changelog ``<app_id>-catalog-items-changelog`` (``stream_app.topics``).

The user states live outside Faust, with the hot path that updates them (``stream_app.store``).

Every worker's in-memory catalogue follows the ``catalog-items`` changelog: upserts and deletions
made by any worker, in changelog order (``CatalogFollower``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from stream_app.settings import Settings
from stream_app.topics import CATALOG_TABLE


@dataclass
class CatalogFollower:
    """Changes read from the catalogue changelog (recovery, or other workers' writes), applied to
    the model in order, in the model thread, before the next batch."""

    pending: list = field(default_factory=list)  # (item_id bytes, record bytes | None)

    async def on_changelog_event(self, event) -> None:
        self.pending.append((event.key, event.value))

    async def sync(self, run_model, processor) -> None:
        if not self.pending:
            return
        changes, self.pending = self.pending, []
        await run_model(apply_catalog_changes, processor, changes)


def apply_catalog_changes(processor, changes: list) -> None:
    for key, record in changes:
        if record is None:
            processor.model.delete_item(key.decode())
        else:
            processor.restore_item(record)


@dataclass(frozen=True)
class Tables:
    items: object  # faust.GlobalTable


def declare(app, settings: Settings, catalog: CatalogFollower) -> Tables:
    items = app.GlobalTable(CATALOG_TABLE, key_type=bytes, value_type=bytes, partitions=settings.partitions,
                            on_changelog_event=catalog.on_changelog_event)
    return Tables(items)
