"""Co-engagement counts as a Kafka aggregate, on a real broker: the same events give the same
online rows and the same lists with one worker and with two (each learns from every event, not
from its own partitions only), the lists match the offline replay that applies the rule locally,
and a worker killed with kill -9 and restarted (its aggregator made to read every pair message
again) keeps every count learned online, exactly once, in rows bounded at 2 * top_m.

Every wait polls a condition (``tests.support.cooc.wait_settled``) with a generous deadline."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from models.cooc import CoocModel
from models.engine import Event
from models.offline.data import write_jsonl_dataset
from models.offline.fused import train_checkpoint
from stream_app.dev.messages import catalog_message
from stream_app.topics import TopicNames, cooc_group
from tests.integration.test_equivalence import offline_model, synthetic_dataset
from tests.integration.test_heavy_user import rewind
from tests.support.cooc import online_rows, top_items, wait_settled
from tests.support.reliability.clients import produce_all
from tests.support.reliability.outcome import wait_items

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    ds = synthetic_dataset()
    folder = write_jsonl_dataset(ds, tmp_path_factory.mktemp("data") / "synthetic")
    path = train_checkpoint(folder, tmp_path_factory.mktemp("ck"), budget_s=3.0, progress=False, sequence_budget_s=3.0)
    return ds, path


def events(items: list[str], users: range, per_user: int = 8, seed: int = 0) -> list[dict]:
    """Each user prefers one topic; no texts (the encoder is not what is compared here)."""
    rng = np.random.default_rng(seed)
    out = []
    for u in users:
        topic = items[u % len(items)].split("-")[0]
        pool = [i for i in items if i.startswith(topic)] * 3 + items
        for n in range(per_user):
            kind = ("click", "rating", "favorite")[n % 3]
            e = {"event_id": f"c{u}-{n}", "type": kind, "user_id": f"c{u}", "item_id": pool[rng.integers(len(pool))],
                 "ts": 1_700_000_000_000 + 60_000 * (u * per_user + n)}
            if kind == "rating":
                e["value"] = float(rng.integers(1, 6))
            out.append(e)
    return out


def children(pid: int, word: str) -> list[int]:
    """Child processes of ``pid`` whose command line holds ``word``."""
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(k) for k in kids if word in Path(f"/proc/{k}/cmdline").read_bytes().decode(errors="replace")]


def wait_gone(pid: int, deadline_s: float = 60.0) -> bool:
    """Whether process ``pid`` ends (or is a zombie) within ``deadline_s``."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.1)
    return False


def to_event(e: dict) -> Event:
    return Event(e["user_id"], e["item_id"], e["type"], e.get("value"), e["ts"], e["event_id"])


def produce(bootstrap: str, topic: str, evs: list[dict]) -> None:
    produce_all(bootstrap, topic, [(e["user_id"].encode(), orjson.dumps(e)) for e in evs])


def start(factory, bootstrap, ds, env, prefix=None, load=True):
    w = factory(prefix, extra_env=env).start()
    if load:
        produce_all(bootstrap, w.topic("catalog"), [(i.encode(), orjson.dumps(catalog_message(it)))
                                                    for i, it in ds.items.items()])
    wait_items(w, len(ds.items))
    return w


def offline_lists(ds, path, evs: list[dict], learn: bool) -> dict[str, list[str]]:
    """Every user's top-10 after the offline replay of ``evs`` (the rule applied locally, event
    by event) or, with ``learn`` False, on the checkpoint's counts alone."""
    model = offline_model(ds, path)
    states: dict = {}
    model.fold([to_event(e) for e in evs], states, learn=None if learn else (lambda e: False))
    return {u: [r.item_id for r in model.recommend(st, k=10).items] for u, st in states.items()}


@pytest.mark.timeout(900)
def test_one_worker_and_two_workers_learn_the_same_rows_and_serve_the_same_lists(trained, worker_factory,
                                                                                  kafka_bootstrap):
    ds, path = trained
    env = {"STREAM_RECO_CHECKPOINT": str(path)}
    items, evs = sorted(ds.items), events(sorted(ds.items), range(160))
    users = sorted({e["user_id"] for e in evs})

    one = start(worker_factory, kafka_bootstrap, ds, env)
    produce(kafka_bootstrap, one.topic("interactions"), evs)
    first = start(worker_factory, kafka_bootstrap, ds, env)
    second = start(worker_factory, kafka_bootstrap, ds, env, prefix=first.prefix, load=False)
    produce(kafka_bootstrap, first.topic("interactions"), evs)
    wait_settled(kafka_bootstrap, [one])
    wait_settled(kafka_bootstrap, [first, second])

    pair_messages = [w.stats()["cooc"]["pair_messages"] for w in (first, second)]
    assert all(pair_messages), pair_messages  # both workers of the pair learned from their events
    rows_one = online_rows(one, items)
    assert sum(1 for r in rows_one.values() if r and r["neighbours"]) >= len(items) - 2
    for w in (first, second):  # every worker follows every row: the same sums as one worker's
        assert online_rows(w, items) == rows_one

    lists_one = {u: top_items(one, u) for u in users}
    lists_two = {u: top_items(first, u) for u in users}
    same = sum(lists_one[u] == lists_two[u] for u in users)
    assert same >= 0.99 * len(users), f"{same} of {len(users)} lists equal"

    learned, base = offline_lists(ds, path, evs, True), offline_lists(ds, path, evs, False)
    moved = sum(learned[u] != base[u] for u in users)
    assert moved >= 0.2 * len(users), f"the online counts changed only {moved} of {len(users)} lists"
    same = sum(lists_one[u] == learned[u] for u in users)
    assert same >= 0.99 * len(users), f"{same} of {len(users)} lists equal the offline replay's"


@pytest.mark.timeout(900)
def test_kill_9_and_restart_keep_every_count_learned_online(trained, worker_factory, kafka_bootstrap):
    ds, path = trained
    top_m = 3
    env = {"STREAM_RECO_CHECKPOINT": str(path), "STREAM_RECO_COOC_TOP_M": str(top_m)}
    items = sorted(ds.items)
    before, after = events(items, range(80), seed=1), events(items, range(80, 120), seed=2)

    w = start(worker_factory, kafka_bootstrap, ds, env)
    produce(kafka_bootstrap, w.topic("interactions"), before)
    wait_settled(kafka_bootstrap, [w])
    rows = online_rows(w, items)
    users = sorted({e["user_id"] for e in before})
    lists = {u: top_items(w, u) for u in users}
    aggregators = children(w.proc.pid, "aggregate")
    assert len(aggregators) == 1  # the worker runs its aggregator in a child process (the default)
    w.proc.kill()
    w.proc.wait()
    assert wait_gone(aggregators[0]), "the aggregator outlived its killed worker"
    names = TopicNames.from_settings(w.settings)  # the restarted aggregator reads every pair message again
    rewind(kafka_bootstrap, cooc_group(w.settings), names.cooc_pairs)

    again = start(worker_factory, kafka_bootstrap, ds, env, prefix=w.prefix, load=False)
    wait_settled(kafka_bootstrap, [again])
    assert online_rows(again, items) == rows
    assert {u: top_items(again, u) for u in users} == lists
    assert again.stats()["cooc"]["rows_written"] == 0  # every message re-read was skipped by offset

    produce(kafka_bootstrap, again.topic("interactions"), after)
    wait_settled(kafka_bootstrap, [again])
    final = online_rows(again, items)
    assert again.stats()["cooc"]["rows_written"] > 0  # the child's counters reach the worker's /stats
    expected = offline_counts(ds, path, before + after)
    for item in items:  # each first engagement counted once: none lost, none doubled
        assert final[item]["n"] == expected.counts.n[expected.index[item]], item
        assert len(final[item]["neighbours"]) <= 2 * top_m  # bounded
    partners = max(len(expected.counts.off_diagonal(expected.index[i])[0]) for i in items)
    assert partners > 2 * top_m  # so the bound was reached and rows were cut back


def offline_counts(ds, path, evs: list[dict]) -> CoocModel:
    """The rule applied locally to ``evs`` from zero counts (the checkpoint's parameters)."""
    model = offline_model(ds, path)
    model.cooc.counts = type(model.cooc.counts)()
    for i in model.items.ids:
        model.cooc.add_item(i)
    model.fold([to_event(e) for e in evs], {})
    return model.cooc


def test_a_worker_whose_aggregator_dies_stops_with_an_error(trained, worker_factory, kafka_bootstrap):
    """The aggregator is part of the worker: a child that dies (here SIGKILL) stops the worker
    with a non-zero exit, as any failed consumer of it does, rather than serve without it."""
    ds, path = trained
    w = start(worker_factory, kafka_bootstrap, ds, {"STREAM_RECO_CHECKPOINT": str(path)})
    (aggregator,) = children(w.proc.pid, "aggregate")
    os.kill(aggregator, signal.SIGKILL)
    assert w.proc.wait(timeout=120) != 0
