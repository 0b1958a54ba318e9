"""Learning while serving: a data set replayed in time order into two workers, one serving a
frozen model, one taking the versions that warm-start retrains from its topic publish.

    python -m stream_app.dev.retrain_bench --dataset ../shared/data/ml-latest-small [--out DIR]

1. The events are sorted by time; cuts at 60/70/80/90 %.
2. Initial model: the first 60 % are produced to topics of their own and ``stream-app train
   --from-kafka`` (cold) writes and publishes the first version of the models folder (or
   ``--initial DIR``: a version folder an earlier run trained on the same 60 %).
3. Two workers on one broker, each on topics and an application id of its own: FROZEN serves the
   initial version throughout (``STREAM_RECO_CHECKPOINT``), RETRAINED watches the models folder
   (``STREAM_RECO_MODELS_DIR``). Both get every event. 0-70 % is replayed as fast as it goes;
   then at 70, 80 and 90 % ``stream-app train --from-kafka --warm-start`` reads RETRAINED's topic
   up to then, and the next 10 % is produced at ``--rate`` events/s as soon as it is done, so a
   published version is switched in between two batches of a live stream; a version the gate
   refuses stays unpublished.
4. A consumer of both recommendations topics, of its own, keeps every list; the online hit@10 of
   the last 30 % is recomputed from them (``stream_app.dev.retrain_score``) and set beside the
   workers' own counters (``/metrics``, read at 70 % and at the end), per model version.
5. Exactly once: every event named by exactly one list, each user's last ``events_applied``
   the events sent to them, and ``GET /users/{id}`` agrees.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path

import orjson

from models import registry
from stream_app.dev.local import LocalWorker
from stream_app.dev.replay import PRODUCER_OPTIONS, load_catalog, prepare
from stream_app.dev.retrain_score import Published, time_cuts
from stream_app.kafka_clients import client_options, security_options
from stream_app.settings import Settings
from stream_app.topics import ensure_topics_async

CUTS = (0.6, 0.7, 0.8, 0.9)


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def cli(settings: Settings, *args: str) -> tuple[float, str]:
    """``stream-app ARGS`` as a child with ``settings``; (wall seconds, its output)."""
    env = {**os.environ, **settings.env(), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "stream_app.cli", *args], env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"stream-app {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return wall, proc.stdout + proc.stderr


def newest_meta(models: Path, before: set[str]) -> dict | None:
    """The retrain.json of the version folder that appeared since ``before`` (None: none did)."""
    new = sorted(p for p in registry.versions(models) if p not in before)
    if not new:
        return None
    return orjson.loads((models / new[-1] / registry.METADATA).read_bytes())


def version_names(models: Path) -> set[str]:
    return set(registry.versions(models)) if models.is_dir() else set()


def step_row(label: str, wall: float, meta: dict | None, load: float) -> dict:
    """What one retrain did, from its retrain.json."""
    if meta is None:
        return {"step": label, "wall_s": round(wall, 1), "load_1m": load, "version": None, "gate": "skipped"}
    rec, gate = meta["recent"], meta["gate"]
    return {"step": label, "wall_s": round(wall, 1), "load_1m": load, "version": meta["version"],
            "events": meta["data"]["events"], "train_s": meta["seconds"]["train"],
            "new_ndcg": rec["new"].get("ndcg@10"), "new_hr": rec["new"].get("hr@10"),
            "serving_ndcg": rec["serving"].get("ndcg@10"), "serving_hr": rec["serving"].get("hr@10"),
            "published": bool(gate["publish"]), "gate": gate["reason"]}


# -- Kafka helpers -------------------------------------------------------------------------------

async def produce(settings_list: list[Settings], events: list[dict], rate: float = 0.0,
                  topic: str = "interactions", key: str = "user_id") -> None:
    """``events`` to the ``topic`` of every settings (same order, keyed by ``key``), ``rate`` per s."""
    from aiokafka import AIOKafkaProducer

    s0 = settings_list[0]
    await ensure_topics_async(s0.bootstrap_servers, [s.topic(topic) for s in settings_list], partitions=s0.partitions,
                              replication=s0.replication_factor, security=security_options(s0))
    producer = AIOKafkaProducer(**client_options(s0), **PRODUCER_OPTIONS)
    await producer.start()
    try:
        start = time.monotonic()
        for i, ev in enumerate(events):
            if rate > 0:
                delay = start + i / rate - time.monotonic()
                if delay > 0.002:
                    await asyncio.sleep(delay)
            value, k = orjson.dumps(ev), ev[key].encode()
            for s in settings_list:
                await producer.send(s.topic(topic), key=k, value=value)
            if i % 256 == 255:
                await asyncio.sleep(0)
        await producer.flush()
    finally:
        await producer.stop()


class Lists:
    """A consumer of its own (no group, from the start) of some lines' recommendations topics:
    every list, per line and user, in the order published."""

    def __init__(self, lines: dict[str, Settings]):
        self.lines = lines
        self.by_topic = {s.topic("recommendations"): name for name, s in lines.items()}
        self.lists: dict[str, dict[str, list[Published]]] = {name: {} for name in lines}
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        s0 = next(iter(self.lines.values()))
        await ensure_topics_async(s0.bootstrap_servers, list(self.by_topic), partitions=s0.partitions,
                                  replication=s0.replication_factor, security=security_options(s0))
        self.consumer = AIOKafkaConsumer(*self.by_topic, **client_options(s0), group_id=None,
                                         auto_offset_reset="earliest", enable_auto_commit=False,
                                         max_partition_fetch_bytes=8 * 1024 * 1024)
        await self.consumer.start()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=200, max_records=20_000)
            for tp, records in batch.items():
                line = self.lists[self.by_topic[tp.topic]]
                for m in records:
                    if m.value is None:
                        continue
                    msg = orjson.loads(m.value)
                    line.setdefault(msg["user_id"], []).append(Published(
                        msg["events_applied"], msg["model_version"], [i["item_id"] for i in msg["items"]],
                        list(msg.get("based_on_event_ids") or ())))

    def applied(self, line: str, want: dict[str, int]) -> int:
        """How many users' last list counts at least the events ``want`` says."""
        got = self.lists[line]
        return sum(1 for u, n in want.items() if got.get(u) and got[u][-1].events_applied >= n)

    async def wait_applied(self, want: dict[str, int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(self.applied(line, want) < len(want) for line in self.lines):
            if self.task.done():
                self.task.result()
            if time.monotonic() > deadline:
                got = {line: self.applied(line, want) for line in self.lines}
                raise TimeoutError(f"not every event applied within {timeout:.0f}s: users done {got} of {len(want)}")
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.consumer.stop()


def http(worker: LocalWorker, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}{path}", timeout=10) as r:
        return r.read()


# -- the steps -----------------------------------------------------------------------------------

def initial_model(base: Settings, catalog: list[dict], events: list[dict], models: Path, args) -> dict:
    """The first version of ``models``: trained cold from topics holding ``events`` (the first
    60 %), or copied from ``args.initial``. Returns its row for the table."""
    models.mkdir(parents=True, exist_ok=True)
    if args.initial:
        src = Path(args.initial)
        shutil.copytree(src, models / src.name)
        registry.publish(models, src.name)
        meta = orjson.loads((src / registry.METADATA).read_bytes())
        return {**step_row("initial (60 %, cold; earlier run)", args.initial_wall_s, meta, args.initial_load),
                "reused": str(src)}
    s = replace(base, topic_prefix=f"{base.topic_prefix}init-", app_id=f"{base.app_id}-init")
    asyncio.run(produce([s], catalog, topic="catalog", key="item_id"))
    asyncio.run(produce([s], events))
    before = version_names(models)
    wall, out = cli(s, "train", "--from-kafka", "--out", str(models), "--budget-s", str(args.budget_s),
                    "--sequence-kind", args.sequence_kind, "--sequence-budget-s", str(args.sequence_budget_s))
    print(out.strip().splitlines()[-1] if out.strip() else "", flush=True)
    meta = newest_meta(models, before)
    if meta is None or not meta["gate"]["publish"]:
        raise RuntimeError(f"the initial model was not published:\n{out[-3000:]}")
    return step_row("initial (60 %, cold)", wall, meta, load1())


async def wait_swap(worker: LocalWorker, version: str, t0: float, out: dict) -> None:
    """Record when ``worker`` serves ``version`` (seconds after ``t0``)."""
    while True:
        st = await asyncio.to_thread(worker.stats) or {}
        if (st.get("model_watch") or {}).get("serving") == version:
            out["swap_after_s"] = round(time.monotonic() - t0, 1)
            out["swap_load_s"] = (st.get("model_watch") or {}).get("last_load_s")
            return
        await asyncio.sleep(0.2)


async def one_step(at: str, lines: dict[str, Settings], workers: dict[str, LocalWorker], part: list[dict],
                   models: Path, collector: "Lists", want: dict[str, int], report: dict, args) -> None:
    """A warm retrain from RETRAINED's topic; the next slice is produced at ``args.rate`` from the
    moment ``current`` names a new version (or the retrain ended without one), so the worker
    switches while events flow."""
    load, before, was = load1(), version_names(models), registry.current_version(models)
    cap = () if args.warm_sequence_budget_s is None else ("--warm-sequence-budget-s", str(args.warm_sequence_budget_s))
    retrain = asyncio.create_task(asyncio.to_thread(
        cli, lines["retrained"], "train", "--from-kafka", "--warm-start", "--out", str(models), *cap))
    while not retrain.done() and registry.current_version(models) == was:
        await asyncio.sleep(0.1)
    t1, now = time.monotonic(), registry.current_version(models)
    sl: dict = {"slice": f"after {at}", "events": len(part), "rate": args.rate, "version": now,
                "published": now != was}
    watcher = asyncio.create_task(wait_swap(workers["retrained"], now, t1, sl)) if now != was else None
    producing = asyncio.create_task(produce(list(lines.values()), part, rate=args.rate))
    wall, _ = await retrain
    meta = newest_meta(models, before)
    row = step_row(f"warm retrain at {at}", wall, meta, load)
    report["steps"].append(row)
    print(f"{row['step']}: {row['wall_s']} s, version {row['version']}, published {row.get('published')} "
          f"({row['gate']}), load {load}", flush=True)
    sl["version"] = row["version"]
    await producing
    await collector.wait_applied(want, timeout=1800)
    if watcher is not None:
        try:
            await asyncio.wait_for(watcher, timeout=120)
        except asyncio.TimeoutError:
            sl["swap_after_s"] = None
    sl.update(seconds=round(time.monotonic() - t1, 1), load_1m=load1())
    report["slices"].append(sl)
    print(f"slice {sl['slice']}: {len(part)} events in {sl['seconds']} s, swap {sl.get('swap_after_s')} s after "
          f"the version was published (load {sl['load_1m']})", flush=True)


async def run_lines(lines: dict[str, Settings], workers: dict[str, LocalWorker], catalog: list[dict],
                    events: list[dict], cuts: list[int], models: Path, args) -> dict:
    """Steps 3-5 of the module doc on running workers; returns what they measured."""
    report: dict = {"steps": [], "slices": []}
    await asyncio.gather(*(load_catalog(w.settings, catalog) for w in workers.values()))
    collector = Lists(lines)
    await collector.start()
    want: dict[str, int] = {}

    def count(evs: list[dict]) -> None:
        for ev in evs:
            want[ev["user_id"]] = want.get(ev["user_id"], 0) + 1

    head = events[:cuts[1]]
    t0 = time.monotonic()
    await produce(list(lines.values()), head)
    count(head)
    await collector.wait_applied(want, timeout=1800)
    report["head"] = {"events": len(head), "seconds": round(time.monotonic() - t0, 1), "load_1m": load1()}
    print(f"0-70 %: {len(head)} events applied by both lines in {report['head']['seconds']} s", flush=True)
    report["metrics_70"] = {name: (await asyncio.to_thread(http, w, "/metrics")).decode() for name, w in workers.items()}
    bounds = cuts[1:] + [len(events)]
    for c, (a, b) in enumerate(zip(bounds, bounds[1:])):
        count(events[a:b])
        await one_step(f"{70 + 10 * c} %", lines, workers, events[a:b], models, collector, want, report, args)
    await asyncio.sleep(2.0)
    await collector.stop()
    report["lists"] = collector.lists
    report["metrics_end"] = {name: (await asyncio.to_thread(http, w, "/metrics")).decode() for name, w in workers.items()}
    report["stats_end"] = {name: w.stats() for name, w in workers.items()}
    report["users_endpoint"] = {name: {u: orjson.loads(await asyncio.to_thread(http, w, f"/users/{u}"))
                                       .get("events_applied") for u in want} for name, w in workers.items()}
    report["sent_per_user"] = want
    return report


def run(args) -> dict:
    from stream_app.dev.broker import LocalKafka
    from stream_app.dev.retrain_report import summarise

    base = Settings.from_env()
    ds, catalog, events = prepare(args.dataset)
    if args.fraction < 1.0:
        events = events[:max(10, int(len(events) * args.fraction))]
    cuts = time_cuts(len(events), CUTS)
    out = Path(args.out).resolve()  # the workers run in another folder
    models = out / f"models-{uuid.uuid4().hex[:6]}"
    print(f"# learning while serving: {ds.name}, {len(events):,} events, {len(catalog):,} items; cuts {cuts}; "
          f"load {load1()}", flush=True)
    with LocalKafka(partitions=base.partitions) if not base.bootstrap_servers else _nothing() as kafka:
        if kafka is not None:
            base = replace(base, bootstrap_servers=kafka.bootstrap_servers)
        run_id = uuid.uuid4().hex[:6]
        base = replace(base, topic_prefix=f"rb-{run_id}-", app_id=f"rb-{run_id}", checkpoint="")
        initial = initial_model(base, catalog, events[:cuts[0]], models, args)
        print(f"initial: {initial}", flush=True)
        first = models / registry.current_checkpoint(models).name
        lines = {"frozen": replace(base, topic_prefix=f"{base.topic_prefix}frozen-", app_id=f"{base.app_id}-frozen",
                                   checkpoint=str(first)),
                 "retrained": replace(base, topic_prefix=f"{base.topic_prefix}retrained-",
                                      app_id=f"{base.app_id}-retrained")}
        env = {"frozen": {}, "retrained": {"STREAM_RECO_MODELS_DIR": str(models),
                                           "STREAM_RECO_MODEL_POLL_S": str(args.poll_s)}}
        workers = {name: LocalWorker(s, extra_env=env[name], log_path=out / f"worker-{name}.log")
                   for name, s in lines.items()}
        try:
            for w in workers.values():
                w.start(timeout=300)
            measured = asyncio.run(run_lines(lines, workers, catalog, events, cuts, models, args))
        finally:
            for w in workers.values():
                w.stop()
    return summarise(ds.name, events, cuts, initial, measured, top_k=base.top_k)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stream_app.dev.retrain_bench", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, help="data set folder")
    p.add_argument("--out", default="runs/retrain-bench", help="folder for result.json, the models and worker logs")
    p.add_argument("--fraction", type=float, default=1.0, help="use only the oldest share of the events (quick runs)")
    p.add_argument("--rate", type=float, default=100.0, help="events/s of each slice after a retrain (default: %(default)s)")
    p.add_argument("--poll-s", type=float, default=1.0, help="the retrained worker's STREAM_RECO_MODEL_POLL_S")
    p.add_argument("--initial", default=None, help="a version folder trained on the first 60 %% by an earlier run")
    p.add_argument("--initial-wall-s", type=float, default=float("nan"), help="with --initial: its measured wall time")
    p.add_argument("--initial-load", type=float, default=float("nan"), help="with --initial: the load average then")
    p.add_argument("--budget-s", type=float, default=60.0, help="cold initial model: co-engagement search budget")
    p.add_argument("--sequence-kind", default="gru", help="cold initial model: sequence model kind")
    p.add_argument("--sequence-budget-s", type=float, default=60.0, help="cold initial model: sequence budget")
    p.add_argument("--warm-sequence-budget-s", type=float, default=None,
                   help="warm retrains: a seconds cap on the sequence model beside its epoch limit (default: none)")
    args = p.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    result = run(args)
    result["wall_s"] = round(time.monotonic() - t0, 1)
    (Path(args.out) / "result.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(result["table"])
    print(f"\nwrote {Path(args.out) / 'result.json'} ({result['wall_s']} s in all, load {load1()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
