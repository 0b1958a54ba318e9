"""Micro-batches from a Faust stream that are acknowledged only when they were handled.

Faust's ``Stream.take_events`` acks a batch's events in a ``finally`` block: when the agent's body
raises, or when the agent is cancelled by a rebalance or a shutdown halfway through a batch, the
whole batch is still acked and its offsets are committed, although its states and recommendations
were never written (events lost). ``take_batches`` is the same buffering with one change: a batch
is acked only after the body has finished with it (the generator resumed for the next batch).
An abandoned batch stays unacked, so its events are read again by whoever owns the partition
next, and the event-id de-duplication in the user state makes that harmless.

It uses the stream's buffering hooks (``add_processor``, ``_enable_passive``, ``_processors``) of
the pinned faust-streaming version, exactly as ``take_events`` does; the real-broker tests cover it.
"""
from __future__ import annotations

import asyncio
from typing import AsyncIterator

from mode.utils.futures import notify


async def take_batches(stream, max_: int, within: float) -> AsyncIterator[list]:
    """Yield lists of at most ``max_`` events, or whatever arrived within ``within`` seconds."""
    buffer: list = []
    events: list = []
    buffer_full = asyncio.Event()
    buffer_consumed = asyncio.Event()
    consuming: asyncio.Future | None = None
    channel_it = stream.channel.__aiter__()

    async def add_to_buffer(value):
        nonlocal consuming
        try:
            if consuming is not None:
                try:
                    await consuming
                finally:
                    consuming = None
            buffer.append(value)
            event = stream.current_event
            if event is None:
                raise RuntimeError("take buffer found no current event")
            events.append(event)
            if len(buffer) >= max_:
                buffer_full.set()
                buffer_consumed.clear()
                await stream.wait(buffer_consumed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            stream.log.exception("error adding to the batch buffer: %r", exc)
            await stream.crash(exc)
        return value

    # We ack ourselves, once a batch was handled. Acks stay off for good, also after this
    # generator ends: when it is closed (shutdown, rebalance) the stream may still drain a few
    # already-fetched events without our processor, and with acks back on it would ack them unseen.
    stream.enable_acks = False
    stream.add_processor(add_to_buffer)
    stream._enable_passive(channel_it)
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(buffer_full, timeout=within)
            if not buffer:
                continue
            consuming = asyncio.get_running_loop().create_future()
            batch = list(events)
            handled = False
            try:
                yield batch
                handled = True  # reached only when the body asks for the next batch
            finally:
                buffer.clear()
                events.clear()
                if handled:
                    for event in batch:
                        await stream.ack(event)
                notify(consuming)
                buffer_full.clear()
                buffer_consumed.set()
    finally:
        stream._processors.remove(add_to_buffer)


def start_fresh_partitions_at_the_beginning(app, topics: set[str]) -> None:
    """After a rebalance, read a partition that has no committed offset from its first message.

    Faust seeks each newly assigned partition to its committed offset, and aiokafka skips the
    seek when there is none (or it is 0), leaving the position wherever this consumer's fetcher
    happened to be. A partition that moved between workers before its first commit would then
    skip the messages fetched, but not handled, by the previous owner (lost). This wraps the
    consumer's ``perform_seek`` (pinned faust-streaming) so such partitions of ``topics`` start at
    their earliest offset; the event-id window makes any re-read harmless."""
    consumer = app.consumer
    original = consumer.perform_seek

    async def perform_seek() -> None:
        await original()
        fresh = [tp for tp in consumer.assignment()
                 if tp.topic in topics and not consumer._committed_offset.get(tp)]
        if fresh:
            earliest = await consumer.earliest_offsets(*fresh)
            await consumer.seek_wait({tp: earliest[tp] for tp in fresh})

    consumer.perform_seek = perform_seek
