"""The co-engagement aggregator's fold in a process of its own (``stream_app.cooc_stream``,
``CoocAggregator``): folding a batch's pair messages into neighbour rows is numpy and Python work
that, in the worker's process, would take turns with the hot path's model thread and event loop
for the interpreter lock. The child imports numpy, orjson and ``models.cooc.table`` only.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

log = logging.getLogger(__name__)

DECODED_MAX = 20_000  # decoded rows the fold process keeps per partition between batches
PARENT_POLL_S = 1.0  # how often the fold process checks that its worker is still there


class FoldProcess:
    """The aggregator's fold (``models.cooc.table.fold_records``) in a child process: the decoded
    rows of each owned partition (a ``RowTable``, at most ``DECODED_MAX`` rows, then cleared) live
    there, so a batch sends only its messages and the stored records of the rows the child lacks.
    This side keeps which items each child table holds, by the same rule, so it knows which
    those are. The child is started on first use (spawned: it imports numpy and orjson only); if
    it dies, the next fold starts another and sends every row it needs again from the store.

    >>> f = FoldProcess()
    >>> asyncio.run(f.fold({0: [("a", 0, b'{"n":1,"ts":0,"ids":["b"],"w":[1.0]}')]}, lambda p, i: None, 0.0, 64))
    [(0, [('a', b'{"n":1.0,"ts":0,"offset":0,"ids":["b"],"w":[1.0]}')])]
    >>> f.held
    {0: {'a'}}
    >>> f.stop()
    """

    def __init__(self):
        self.held: dict[int, set[str]] = {}  # partition -> items its child table holds
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_watch_parent, initargs=(os.getpid(),))
            self.held.clear()  # a new child holds nothing
        return self._pool

    def drop(self, partitions) -> None:
        """Forget these partitions' tables (the next fold there starts from the stored records)."""
        for p in partitions:
            self.held.pop(p, None)

    async def fold(self, by_partition: dict[int, list], stored, half_life_ms: float, top_m: int) -> list:
        """-> [(partition, [(item id, row record)])] of every row the messages changed;
        ``stored(partition, item)``: the item's row record in the changelog (or None)."""
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            pool = self._executor()
            work = []
            for p, messages in by_partition.items():
                held = self.held.setdefault(p, set())
                fresh = len(held) > DECODED_MAX or not held
                if fresh:
                    held.clear()
                items = {m[0] for m in messages}
                work.append((p, fresh, messages, {i: stored(p, i) for i in items if i not in held}))
                held |= items
            try:
                return await loop.run_in_executor(pool, _fold_all, work, half_life_ms, top_m)
            except BrokenProcessPool:
                self.stop()
                if attempt == 2:
                    raise
                log.warning("co-engagement fold process died; starting another (rows sent again from the store)")
            except BaseException:  # the child's tables may hold part of this batch: start them again
                self.drop(by_partition)
                raise

    def stop(self) -> None:
        pool, self._pool = self._pool, None
        self.held.clear()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


_TABLES: dict = {}  # in the fold process: partition -> RowTable


def _watch_parent(parent: int) -> None:
    """In the fold process: exit once the worker that started it is gone (a kill -9 leaves no
    one to stop it otherwise)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _fold_all(work: list, half_life_ms: float, top_m: int) -> list:
    from models.cooc.table import RowTable, fold_records

    out = []
    for p, fresh, messages, stored in work:
        if fresh:
            _TABLES[p] = RowTable()
        out.append((p, fold_records(_TABLES[p], messages, stored, half_life_ms, top_m)))
    return out
