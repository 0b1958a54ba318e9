"""The aggregator's fold in its own process (``stream_app.cooc_fold``): the same row records as
folding in place, across batches, partitions, a table past its bound and a child that dies."""
from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from models.cooc.online import NeighbourRow

from models.cooc.table import RowTable, fold_records
from stream_app import cooc_fold
from stream_app.cooc_fold import FoldProcess
from tests.models.test_cooc_online import engagements, fresh, split_messages


def batches(n_items=40, n=500, seed=4, size=11):
    m = fresh(n_items=n_items)
    eng = engagements(n_items=n_items, n=n, seed=seed)
    times = (1_000_000 + 100 * np.arange(len(eng))).tolist()
    msgs = split_messages(m, eng, times, 9, 5_000.0, seed)
    return [msgs[a:a + size] for a in range(0, len(msgs), size)]


def test_the_fold_process_writes_what_folding_in_place_writes_through_a_bound_and_a_dead_child(monkeypatch, caplog):
    monkeypatch.setattr(cooc_fold, "DECODED_MAX", 15)  # tables cleared now and then: rows come back from the store
    store: dict[tuple[int, str], bytes] = {}  # (partition, item) -> last row record written
    reference = {0: RowTable(), 1: RowTable()}
    folder = FoldProcess()
    sent_back = []

    def stored(p, item):
        sent_back.append(item)
        return store.get((p, item))

    async def main():
        for k, batch in enumerate(batches()):
            by_partition = {p: [m for m in batch if hash(m[0]) % 2 == p] for p in (0, 1)}
            if k == 20:  # the child dies between two batches
                os.kill(next(iter(folder._pool._processes)), signal.SIGKILL)
                await asyncio.sleep(0.2)
            written = dict(await folder.fold(by_partition, stored, 5_000.0, 8))
            for p, messages in by_partition.items():
                expected = fold_records(reference[p], messages, {}, 5_000.0, 8)
                assert [i for i, _ in written[p]] == [i for i, _ in expected]
                for (item, got), (_, want) in zip(written[p], expected):  # a restored row may list its ids in another order
                    got, want = NeighbourRow.from_bytes(got), NeighbourRow.from_bytes(want)
                    assert (got.ts, got.offset, set(got.nb)) == (want.ts, want.offset, set(want.nb)), (k, p, item)
                    assert got.n == pytest.approx(want.n, rel=1e-9)
                    assert got.nb == pytest.approx(want.nb, rel=1e-6)
                store.update({(p, item): value for item, value in written[p]})
        folder.stop()

    asyncio.run(main())
    assert "fold process died" in caplog.text
    assert len(set(sent_back)) > 15  # rows were restored from the store, not only folded from nothing


WORKER = """
import asyncio, sys, time
from stream_app.cooc_fold import FoldProcess
if __name__ == "__main__":
    f = FoldProcess()
    asyncio.run(f.fold({0: [("a", 0, b'{"n":1,"ts":0,"ids":["b"],"w":[1.0]}')]}, lambda p, i: None, 0.0, 64))
    print(*f._pool._processes, flush=True)
    time.sleep(600)
"""


def test_the_fold_process_ends_when_its_worker_is_killed(tmp_path):
    import subprocess
    import sys
    import time

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              cwd=str(Path(__file__).resolve().parents[2]))
    try:
        child = int(parent.stdout.readline())
        assert Path(f"/proc/{child}").exists()
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 60
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(child)


def alive(pid: int) -> bool:
    """Running (a zombie left for its new parent to reap has no command line)."""
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return False
