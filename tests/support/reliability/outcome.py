"""What every scenario shares: the test catalogue, starting workers with it, the ``Outcome`` of a
run, and the checks on dead letters and on workers still running."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import orjson

from tests.support.reliability.clients import TopicReader, produce_all
from tests.support.reliability.ledger import Verdict

REVIEWS = ["Loved it, a wonderful story with great acting.", "Terrible: boring, slow and far too long.",
           "Pretty good, I would watch it again.", "Not for me, the ending was awful."]


_GENRES = [("Sci-Fi", "space opera with starships and rebels"), ("Romance", "period romance about love and marriage"),
           ("Crime", "crime thriller about detectives and bank robbers"), ("Food", "cooking show about bread and pastry"),
           ("Sports", "football documentary about a season in the league"), ("Horror", "horror film in a haunted house"),
           ("Comedy", "comedy of errors at a family wedding"), ("History", "history documentary about ancient Rome")]


def catalog(n: int = 60) -> list[dict]:
    """``n`` items over 8 genres (enough that a user with ~50 events still has unseen items)."""
    out = []
    for i in range(n):
        cat, text = _GENRES[i % len(_GENRES)]
        out.append({"item_id": f"it{i:02d}", "title": f"{cat} #{i}", "categories": [cat],
                    "text": f"Episode {i // len(_GENRES) + 1}: a {text}, part {i}."})
    return out


CATALOG = catalog()
ITEM_IDS = [it["item_id"] for it in CATALOG]


def wait_items(worker, n: int, timeout: float = 120.0, strict: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (worker.stats() or {}).get("items", 0) < n:
        time.sleep(0.2)
    if strict and (worker.stats() or {}).get("items", 0) < n:
        raise AssertionError(f"worker has {(worker.stats() or {}).get('items')} of {n} catalogue items after "
                             f"{timeout:.0f}s; log {worker.log_path}:\n{worker.log()[-3000:]}")


def start_worker(factory, bootstrap: str, prefix: str | None = None, load: bool = True, **kw):
    """A started worker (``factory`` like tests/support/workers.py's ``worker_factory``) with the catalogue:
    produced to a fresh prefix (``load``), or restored from the changelog of an existing one (a
    worker may bring the restored catalogue into its model only when events arrive: up to 30 s of
    waiting for ``/stats`` to show it, then the events themselves tell)."""
    w = factory(prefix, **kw).start()
    if load:
        produce_all(bootstrap, w.topic("catalog"), [(it["item_id"].encode(), orjson.dumps(it)) for it in CATALOG])
        wait_items(w, len(CATALOG))
    else:
        wait_items(w, len(CATALOG), timeout=30, strict=False)
    return w


def start_pair(factory, bootstrap: str) -> list:
    """Two workers of one group (same prefix: same topics, group and changelogs; each its own web
    port), started side by side, then the catalogue; both serve it before this returns."""
    ws = [factory(None)]
    ws.append(factory(ws[0].prefix))
    while ws[1].port == ws[0].port:  # LocalWorker picks a free port when constructed: never the same
        ws[1] = factory(ws[0].prefix)
    errors: list[BaseException] = []

    def start(w):
        try:
            w.start()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(w,)) for w in ws]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for w in ws:
            w.stop()
        raise errors[0]
    produce_all(bootstrap, ws[0].topic("catalog"), [(it["item_id"].encode(), orjson.dumps(it)) for it in CATALOG])
    for w in ws:
        wait_items(w, len(CATALOG))
    return ws


@dataclass
class Outcome:
    """One scenario run: the runner's table row, and the tests' assertion text."""

    scenario: str
    sent: int = 0  # messages produced to `interactions` (valid, duplicates and bad ones)
    lost: int = 0
    doubled: int = 0
    dead_lettered: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, verdict: Verdict, label: str = "") -> None:
        self.lost += sum(verdict.lost.values())
        self.doubled += sum(verdict.doubled.values())
        if not verdict.ok:
            self.problems.append(f"{label}{verdict.explain()}")

    def report(self) -> str:
        head = (f"{self.scenario}: {self.sent} sent, {self.lost} lost, {self.doubled} doubled, "
                f"{self.dead_lettered} dead-lettered in {self.seconds:.0f}s")
        return "\n".join([head, *self.problems])


def ev(event_id: str, user: str, item: str, ts: int, type_: str = "click", **kw) -> dict:
    e = {"event_id": event_id, "type": type_, "user_id": user, "item_id": item, "ts": ts, **kw}
    if type_ == "rating" and "value" not in e:
        e["value"] = 4
    return e


def count_dead_letters(bootstrap: str, worker, since_ms: int, settle: float = 1.0) -> list[dict]:
    """Dead letters of ``worker``'s interactions topic received since ``since_ms``."""
    r = TopicReader(bootstrap, worker.topic("dead_letters"))
    try:
        time.sleep(settle)
        msgs = r.to_end()
    finally:
        r.close()
    topic = worker.topic("interactions")
    out = []
    for m in msgs:
        d = m.obj() or {}
        if d.get("topic") == topic and d.get("received_at", 0) >= since_ms:
            out.append(d)
    return out


def expect_no_dead_letters(o: Outcome, bootstrap: str, worker, since_ms: int) -> None:
    dls = count_dead_letters(bootstrap, worker, since_ms)
    o.dead_lettered = len(dls)
    if dls:
        reasons = sorted({f"{d.get('error_type')}: {str(d.get('error'))[:120]}" for d in dls})
        o.problems.append(f"{len(dls)} valid messages were DEAD-LETTERED: {reasons[:5]}")


def stop_all(workers) -> None:
    """SIGTERM every worker at once, then wait for each (LocalWorker.stop does both, one by one)."""
    threads = [threading.Thread(target=w.stop) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def all_exited(*workers) -> Callable[[], bool]:
    return lambda: not any(w.running() for w in workers)


def expect_running(o: Outcome, *workers) -> None:
    for w in workers:
        if not w.running():
            o.problems.insert(0, f"worker {w.port} EXITED with {w.proc.returncode}; log {w.log_path}:\n"
                              f"{w.log()[-2000:]}")
