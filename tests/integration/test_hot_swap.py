"""A running worker takes a newly published model version without a restart (stream_app.model_watch).

A worker serves version A of a models folder; events flow; versions B, C and D (copies of A under
new names) are published one after another while events keep arriving; the worker switches to
each without a restart, the lists after each switch name the new version, and every event is
applied exactly once across the three switches: each user's
``events_applied`` ends at the number of events sent, and the event ids the lists name, over all
of the user's messages, are each sent event exactly once. Then a broken version (a corrupt
weights file) is published: it is refused, counted, and B keeps serving."""
from __future__ import annotations

import shutil
import time
import urllib.request
from collections import Counter
from pathlib import Path

import orjson
import pytest

from models import registry
from models.cooc import CoocModel
from models.engine import InterestModel
from tests.support.reliability.clients import TopicReader, by_key, produce_all
from tests.support.reliability.ledger import latest_counts
from tests.support.reliability.outcome import ITEM_IDS, all_exited, ev, start_worker

pytestmark = pytest.mark.broker

USERS = [f"hs-{i}" for i in range(12)]
TYPES = ("click", "favorite", "rating")


def publish_version(models: Path, src: Path | None = None, broken: bool = False) -> str:
    """A new version, written whole (``registry.partial_dir`` then ``commit_version``) and published:
    an untrained checkpoint for the worker's encoder, or a copy of ``src``; ``broken``: its
    attention weights are not a readable file."""
    name = registry.new_version(models)
    work = registry.partial_dir(models, name)
    if src is None:
        m = InterestModel.untrained()
        m.attention.version = name
        m.attention.save(work)
        CoocModel().save(work / "cooc.npz")
    else:
        shutil.copytree(src, work)
    if broken:
        (work / "fusion.npz").write_bytes(b"this is not a weights file")
    registry.commit_version(models, name)
    registry.publish(models, name)
    return name


def get(worker, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}{path}", timeout=5) as r:
        return r.read()


def watch(worker) -> dict:
    """The worker's ``/stats`` ``model_watch`` ({} while it does not answer)."""
    return (worker.stats() or {}).get("model_watch") or {}


def wait_until(cond, worker, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline or not worker.running():
            raise AssertionError(f"{what}: not after {timeout:.0f} s\n{worker.log()[-4000:]}")
        time.sleep(0.2)


def send_round(bootstrap: str, worker, r: int, sent: dict[str, list[str]]) -> None:
    """Two events per user, recorded in ``sent``."""
    batch = []
    for i, u in enumerate(USERS):
        for n in range(2):
            e = ev(f"{u}-r{r}-{n}", u, ITEM_IDS[(7 * r + 3 * i + n) % len(ITEM_IDS)], 1_700_000_000_000 + 1000 * r + n,
                   TYPES[(r + n + i) % 3], **({"value": 4} if TYPES[(r + n + i) % 3] == "rating" else {}))
            batch.append((u.encode(), orjson.dumps(e)))
            sent.setdefault(u, []).append(e["event_id"])
    produce_all(bootstrap, worker.topic("interactions"), batch)


def wait_applied(recs: TopicReader, sent: dict[str, list[str]], worker) -> dict[str, list[dict]]:
    want = {u: len(ids) for u, ids in sent.items()}
    done = recs.until(lambda ms: all(latest_counts(by_key(ms)).get(u) == n for u, n in want.items()),
                      timeout=180, give_up=all_exited(worker))
    got = latest_counts(by_key(recs.messages))
    assert done, f"events_applied {({u: got.get(u) for u in want})} != {want}\n{worker.log()[-4000:]}"
    return {u: [m for m in by_key(recs.messages)[u] if m] for u in sent}


def exactly_once(lists: dict[str, list[dict]], sent: dict[str, list[str]]) -> None:
    """Every sent event named by exactly one of its user's lists, and events_applied rising."""
    for u, ms in lists.items():
        named = Counter(i for m in ms for i in m["based_on_event_ids"])
        assert named == Counter(sent[u]), f"{u}: lists name {named}, sent {sent[u]}"
        counts = [m["events_applied"] for m in ms]
        assert counts == sorted(set(counts)), f"{u}: events_applied {counts}"


def swap_under_stream(models: Path, src: Path, bootstrap: str, w, r: int, sent: dict[str, list[str]]) -> tuple[str, int]:
    """Publish a copy of ``src`` while rounds of events keep flowing; (its name, the next round)
    once the worker's ``/stats`` says it serves it."""
    new = publish_version(models, src=src)
    while True:
        send_round(bootstrap, w, r, sent)
        r += 1
        if watch(w).get("serving") == new:
            return new, r
        assert r < 2000 and w.running(), f"still serving {watch(w)}\n{w.log()[-4000:]}"
        time.sleep(0.1)  # paces the producer; the loop ends on what /stats says


def version_of(lists: dict[str, list[dict]], event_id_part: str) -> set[str]:
    return {m["model_version"] for ms in lists.values() for m in ms
            if any(event_id_part in i for i in m["based_on_event_ids"])}


@pytest.mark.timeout(600)
def test_a_worker_swaps_to_a_published_version_without_a_restart(worker_factory, kafka_bootstrap, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    a = publish_version(models)
    w = start_worker(worker_factory, kafka_bootstrap,
                     extra_env={"STREAM_RECO_MODELS_DIR": str(models), "STREAM_RECO_MODEL_POLL_S": "0.3"})
    recs = TopicReader(kafka_bootstrap, w.topic("recommendations"))
    sent: dict[str, list[str]] = {}
    try:
        assert w.stats()["model_version"] == a and watch(w)["serving"] == a
        send_round(kafka_bootstrap, w, 0, sent)
        lists = wait_applied(recs, sent, w)
        assert version_of(lists, "-r0-") == {a}

        r, order = 1, [a]
        for _ in range(3):  # three switches, events flowing through each
            v, r = swap_under_stream(models, models / order[-1], kafka_bootstrap, w, r, sent)
            order.append(v)
        b, after = order[-1], r
        send_round(kafka_bootstrap, w, after, sent)
        lists = wait_applied(recs, sent, w)
        exactly_once(lists, sent)
        assert version_of(lists, f"-r{after}-") == {b}
        for u, ms in lists.items():  # each version's lists in publishing order: never back
            names = [m["model_version"] for m in ms]
            assert names == sorted(names, key=order.index), f"{u}: {names}"
        assert orjson.loads(get(w, f"/users/{USERS[0]}"))["model_version"] == b

        c = publish_version(models, src=models / b, broken=True)
        wait_until(lambda: c in watch(w).get("refused", {}), w, f"version {c} refused")
        send_round(kafka_bootstrap, w, after + 1, sent)
        lists = wait_applied(recs, sent, w)
        exactly_once(lists, sent)
        assert version_of(lists, f"-r{after + 1}-") == {b}
        stats = w.stats()
        assert stats["model_version"] == b and stats["model_watch"]["swaps"] == 3
        online = stats["online"]
        assert online["judged"] > 0 and {a, b} <= set(online["windows"]["10000"]["by_version"])
        metrics = get(w, "/metrics").decode()
        assert 'stream_reco_model_swaps_total{outcome="swapped"} 3.0' in metrics
        assert 'stream_reco_model_swaps_total{outcome="refused"} 1.0' in metrics
        assert f'version="{b}"' in next(line for line in metrics.splitlines()
                                         if line.startswith("stream_reco_model_info{"))
        assert 'stream_reco_online_hit_rate{version="all",window="1000"}' in metrics
        overview = orjson.loads(get(w, "/overview"))
        assert overview["model_version"] == b and overview["model_watch"]["swaps"] == 3
        assert set(overview["recent_users"]) <= set(USERS) and overview["recent_users"]
        assert w.running()
    finally:
        recs.close()
