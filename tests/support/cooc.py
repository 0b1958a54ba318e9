"""Broker-test helpers for the co-engagement stream (``stream_app.cooc_stream``): when workers
have settled (every event handled and committed, every pair message folded and committed, every
worker's model holding the rows changelog to its end), and their read paths (``/users/{id}``,
``/cooc/{item_id}``). Each waits on a condition, polled, with a generous deadline."""
from __future__ import annotations

import time
import urllib.request

import orjson

from stream_app.topics import TopicNames, cooc_group, hot_group
from tests.support.reliability.clients import committed_offsets


def _done(offsets: dict[int, tuple]) -> bool:
    """Every partition's committed offset at its high watermark (no commit: nothing to read)."""
    return all(hw == 0 or (c is not None and c >= hw) for c, hw in offsets.values())


def settled_now(bootstrap: str, workers: list) -> bool:
    s = workers[0].settings
    names = TopicNames.from_settings(s)
    parts = range(s.partitions)
    if not _done(committed_offsets(bootstrap, hot_group(s), names.interactions, parts)):
        return False
    if not _done(committed_offsets(bootstrap, cooc_group(s), names.cooc_pairs, parts)):
        return False
    ends = {p: hw for p, (_, hw) in committed_offsets(bootstrap, cooc_group(s), names.cooc_rows_changelog, parts).items()}
    for w in workers:
        applied = ((w.stats() or {}).get("cooc") or {}).get("applied_offsets")
        if applied is None or any(applied.get(str(p), 0) < end for p, end in ends.items()):
            return False
    return True


def wait_settled(bootstrap: str, workers: list, timeout: float = 240.0) -> None:
    """Until every worker of one app has settled (module doc), twice in a row."""
    deadline, streak = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        streak = streak + 1 if settled_now(bootstrap, workers) else 0
        if streak == 2:
            return
        for w in workers:
            if not w.running():
                raise AssertionError(f"worker exited; log {w.log_path}:\n{w.log()[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"not settled after {timeout:.0f}s: {[(w.stats() or {}).get('cooc') for w in workers]}")


def get(worker, path: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}{path}", timeout=10) as r:
            return orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def top_items(worker, user: str) -> list[str] | None:
    view = get(worker, f"/users/{user}")
    return None if view is None else [i["item_id"] for i in view["items"]]


def online_rows(worker, items: list[str]) -> dict[str, dict | None]:
    return {i: get(worker, f"/cooc/{i}") for i in items}
