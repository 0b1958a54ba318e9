"""Dead letters: a consumed message that cannot be used is never dropped silently; it goes to the
dead-letter topic with the reason (``schemas/dead_letter.v1.json``), as part of the batch that read
it (sent through the batch's outbox, so it is on the broker before the batch is committed).

>>> big = dead_letter(b"x" * 100_000, Rejected("oversized", "too big"), "t", 0, 5, b"k")
>>> len(big["original"]), big["original_bytes"], len(big["original_sha256"])
(16384, 100000, 64)
"""
from __future__ import annotations

import base64
import hashlib
import logging
import time

import orjson

from stream_app.checkpoint import Outbox
from stream_app.codec import Rejected, Source
from stream_app.context import Context

log = logging.getLogger(__name__)

MAX_ORIGINAL = 16_384  # bytes of a large original kept in its dead letter


def source(record) -> Source:
    """Where a consumer record came from."""
    return Source(record.topic, record.partition, record.offset, record.key, record.value)


async def reject(ctx: Context, out: Outbox, src: Source, reason: Rejected, event: bool = True) -> None:
    """Send ``src`` to the dead-letter topic with ``reason`` (``event``: an interaction, counted
    as a dead-lettered event)."""
    log.warning("dead letter %s[%d]@%d: %s: %s", src.topic, src.partition, src.offset,
                reason.error_type, reason.error[:500])
    await out.send(ctx.topics.dead_letters, key=src.key, value=orjson.dumps(
        dead_letter(src.value, reason, src.topic, src.partition, src.offset, src.key)))
    ctx.sensor.on_dead_letter(reason.error_type, event)


def dead_letter(raw: bytes | None, reason: Rejected, topic: str, partition: int, offset: int,
                key: bytes | None) -> dict:
    """The dead-letter message for ``raw``. A large original keeps only its first MAX_ORIGINAL
    bytes, plus its size and SHA-256, so a dead letter always fits the broker's limit."""
    raw = raw or b""
    extra = {}
    if len(raw) > MAX_ORIGINAL:
        extra = {"original_bytes": len(raw), "original_sha256": hashlib.sha256(raw).hexdigest()}
        raw = raw[:MAX_ORIGINAL]
    try:
        original, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        if extra and exc.start >= len(raw) - 3:  # the cut split a multi-byte character
            original, encoding = raw[:exc.start].decode("utf-8"), "utf-8"
        else:
            original, encoding = base64.b64encode(raw).decode(), "base64"
    return {"schema": "dead_letter/v1", "original": original, "original_encoding": encoding, **extra,
            "topic": topic, "partition": partition, "offset": offset, "key": _key_text(key),
            "error": reason.error, "error_type": reason.error_type, "schema_id": reason.schema_id,
            "received_at": int(time.time() * 1000)}


def _key_text(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return key[:1024].decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(key[:1024]).decode()

