"""``stream-app bench --items N [N ...]``: the worker on a synthetic catalogue of N items.

For each N: a catalogue of N items with text and its behaviour log (``stream_app.dev.synth_catalog``,
deterministic by seed), a real broker and real worker processes on fresh topics, serving the
untrained fusion with co-engagement counted from the stream and the fixed blend of
``models.offline.two_stage`` (a checkpoint written for the run: no trained model knows these
items). Measured, in order:

1. **indexing**: the N catalogue messages through the worker's indexer (encoder on cpu, cuda
   when present) until ``/stats`` counts them all: seconds and items/s. With ``--encode-max M``
   below N only the first M go through the encoder (the measured rate); the other N - M items are
   written straight to the catalogue changelog, their vectors a random encoded item of the same
   topic plus noise (``--item-vectors FILE.npy``: vectors computed elsewhere, one row per item), and
   the full-N indexing time is given as a **projection** (N / measured rate), labelled so; then
   10 events of other users until they are answered (the catalogue records applied, the index
   built): ``first_answer_s``, so full speed starts on a serving worker;
2. **full speed**: the events replayed as fast as possible; sustained events/s from the first
   produce to the recommendation answering the last event, per-event latency;
3. **restore**: the worker is killed (SIGKILL) and a new one started on the same topics; seconds
   until it is ready (its group joined after the dead member's session timeout, user states and
   the catalogue changelog read back; the model may still be applying the catalogue records) and
   until it has answered new events of 10 users (the catalogue applied);
4. **half rate**: half as many events of other users at half the sustained rate, on the restored
   worker: per-event latency;
5. **RSS**: each worker's peak resident memory (``VmHWM``), read just before it stops;
6. **recall@10** of two-stage against exact ranking, in this process, on the worker's own item
   vectors (read back from the catalogue changelog) and the same events
   (``models.offline.two_stage.compare``), on a sample of users.
0. first, the encoder alone on synthetic texts (texts/s; cpu, cuda when present), N / rate as a
   projection for 10^5 and 10^6. Each timing is stored with the 1-minute load average then.
"""
from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import orjson

from stream_app.dev.catalog_records import TEXT_DIM, read_catalog_vectors, vectors_beyond, write_catalog_records
from stream_app.dev.item_memory import proc_status_bytes
from stream_app.settings import Settings

CF_DIM = 64


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def write_stream_checkpoint(folder: str | Path) -> str:
    """The model served in this benchmark: the untrained fusion, empty co-engagement counts (the
    stream fills them) and ``models.offline.two_stage.BLEND``, as a checkpoint folder."""
    from models.offline.two_stage import BLEND, blank_model

    model = blank_model(TEXT_DIM, cf_dim=CF_DIM)
    out = model.attention.save(folder, extra={"blend": dict(BLEND), "domain": "default",
                                              "training": {"note": "untrained fusion, co-engagement from the stream"}})
    model.cooc.save(out / "cooc.npz")
    return str(out)


def worker_memory(worker) -> dict:
    """Peak and current resident memory of a running worker process and its children (the
    co-engagement aggregator, ``stream_app.aggregator``): the sum of their peaks (at least the
    peak of the sum) and of their current sizes."""
    pid = worker.proc.pid
    try:
        kids = [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        kids = []
    peak = rss = 0
    try:
        for p in [pid, *kids]:
            hwm, now = proc_status_bytes(p, "VmHWM", "VmRSS")  # one read: the peak is at least the size
            peak, rss = peak + hwm, rss + now
    except (OSError, KeyError):
        return {"peak_rss_bytes": None, "rss_bytes": None}
    return {"peak_rss_bytes": peak, "rss_bytes": rss, "processes": 1 + len(kids)}


def recall_two_stage(settings: Settings, vectors: dict[str, np.ndarray], items, events: Sequence[dict],
                     users: int, seed: int) -> dict:
    """recall@10 of two-stage against exact (``models.offline.two_stage.compare``) on the worker's
    item vectors and the replayed events, folded offline, for a sample of ``users`` users."""
    from models.engine import Event
    from models.offline.two_stage import blank_model, compare

    model = blank_model(TEXT_DIM, cf_dim=CF_DIM)
    for m in items.messages:
        v = vectors.get(m["item_id"])
        if v is not None:
            model.add_item(m["item_id"], v, m.get("categories", ()), m.get("attributes"))
    evs = sorted((Event(e["user_id"], e["item_id"], e["type"], e.get("value"), e["ts"], e["event_id"])
                  for e in events), key=lambda e: e.ts)
    states: dict = {}
    model.fold(evs, states)
    rng = np.random.default_rng(seed)
    ids = sorted(states)
    sample = [ids[i] for i in sorted(rng.choice(len(ids), min(users, len(ids)), replace=False))]
    out = compare(model, states, sample)
    out["loadavg_1m"] = _load()
    return out


def index_catalog(w1, items, n_items: int, encode_n: int, item_vectors: str | None, seed: int) -> dict:
    """Step 1 of the module doc: the first ``encode_n`` items through the worker's indexer, the
    rest (if any) straight to the catalogue changelog; the measured rate and the projection."""
    from stream_app.dev.replay import load_catalog

    t0 = time.perf_counter()
    idx_s = asyncio.run(load_catalog(w1.settings, items.messages[:encode_n], timeout=600 + 0.2 * encode_n))
    index = {"encoded_items": encode_n, "encoded_s": idx_s, "encoded_items_per_s": encode_n / idx_s,
             "loadavg_1m": _load(), "measured_for_all_items": encode_n == n_items}
    if encode_n < n_items:
        encoded = asyncio.run(read_catalog_vectors(w1.settings))
        if item_vectors:
            vecs = np.load(item_vectors, mmap_mode="r")[encode_n:n_items].astype(np.float32)
            index["vectors_beyond_encoded"] = f"loaded from {item_vectors}"
        else:
            vecs = vectors_beyond(encoded, items, encode_n, seed)
            index["vectors_beyond_encoded"] = "an encoded item of the same topic plus noise (not encoded)"
        t1 = time.perf_counter()
        asyncio.run(write_catalog_records(w1.settings, items.messages[encode_n:], vecs))
        deadline = time.monotonic() + 600
        while (w1.stats() or {}).get("items", 0) < n_items and time.monotonic() < deadline:
            time.sleep(0.25)
        index["changelog_items"] = n_items - encode_n
        index["changelog_load_s"] = time.perf_counter() - t1
        index["projected_all_items_s"] = n_items / index["encoded_items_per_s"]
    index["worker_items"] = (w1.stats() or {}).get("items")
    index["total_s"] = time.perf_counter() - t0
    return index


def first_answer(worker, events: Sequence[dict]) -> dict:
    """Seconds until ``events`` (of users not in the measured runs) are answered: the catalogue
    records may still be applied, and the index built, after the changelog is read, so full
    speed is measured on a worker that already answers."""
    from stream_app.dev.replay import replay_events

    t0 = time.perf_counter()
    ready = asyncio.run(replay_events(worker.settings, events, rate=0.0, progress=False, idle_timeout=900.0))
    out = {"first_answer_s": time.perf_counter() - t0, "warmup_answered": ready.events_covered}
    print(f"  first answer {out['first_answer_s']:.1f} s after the catalogue was read", flush=True)
    return out


def run_items(settings: Settings, n_items: int, n_events: int, seed: int = 0, encode_max: int = 0,
              item_vectors: str | None = None, recall_users: int = 200, progress: bool = True,
              half_rate: float = 0.0) -> dict:
    """Every measurement of the module doc for one catalogue size, on ``settings``' broker;
    ``half_rate`` > 0: the restored worker is asked for that many events/s instead of half the
    sustained rate (the same load for two settings or two versions)."""
    from stream_app.dev.local import LocalWorker
    from stream_app.dev.replay import replay_events
    from stream_app.dev.synth_catalog import synth_catalog, synth_events

    rep: dict = {"items": n_items, "events": n_events, "seed": seed, "loadavg_start": _load()}
    t0 = time.perf_counter()
    items = synth_catalog(n_items, seed)
    full_events = synth_events(items, n_events, seed, user_prefix="u")
    half_events = synth_events(items, max(1, n_events // 2), seed + 1, user_prefix="h")
    probe = synth_events(items, 10, seed + 2, user_prefix="r", n_users=10)
    warmup = synth_events(items, 10, seed + 3, user_prefix="w", n_users=10)
    rep["generate_s"] = time.perf_counter() - t0
    rep["users_full"] = len({e["user_id"] for e in full_events})

    run = uuid.uuid4().hex[:8]
    folder = Path(tempfile.mkdtemp(prefix="stream-reco-items-"))
    s = replace(settings, topic_prefix=f"{settings.topic_prefix}items-{run}-",
                app_id=f"{settings.app_id}-items-{run}", checkpoint=write_stream_checkpoint(folder / "model"))
    encode_n = n_items if encode_max <= 0 or encode_max >= n_items else encode_max
    with ExitStack() as stack:
        w1 = LocalWorker(s, log_path=folder / "worker-1.log").start(timeout=300)
        stack.callback(w1.stop)
        rep["worker_log"] = [str(w1.log_path)]

        # 1. indexing
        rep["indexing"] = index = index_catalog(w1, items, n_items, encode_n, item_vectors, seed)
        print(f"  indexed {encode_n:,} items in {index['encoded_s']:.1f} s "
              f"({index['encoded_items_per_s']:,.0f} items/s)", flush=True)

        index.update(first_answer(w1, warmup))

        # 2. full speed
        cpu0 = w1.cpu_seconds()
        full = asyncio.run(replay_events(w1.settings, full_events, rate=0.0, progress=progress, idle_timeout=60.0))
        cpu = (w1.cpu_seconds() or 0.0) - (cpu0 or 0.0)
        rep["full"] = {**full.summary(), "loadavg_1m": _load(), "worker_cpu_s": cpu,
                       "worker_cpu_us_per_event": 1e6 * cpu / max(1, len(full_events))}
        rep["full"]["worker_stats"] = w1.stats()
        rep["worker_1_memory"] = worker_memory(w1)
        print(f"  full speed: {full.events_per_s:,.0f} events/s, p99 {full.latency_ms(99):.0f} ms", flush=True)

        # 3. restore: kill -9, a new worker on the same topics
        w1.proc.kill()
        w1.proc.wait()
        t_kill, t_kill_wall = time.perf_counter(), time.time()
        w2 = LocalWorker(s, log_path=folder / "worker-2.log")
        stack.callback(w2.stop)
        rep["worker_log"].append(str(w2.log_path))
        w2.start(timeout=600)
        ready_s = time.perf_counter() - t_kill
        items_after = (w2.stats() or {}).get("items")
        answered = asyncio.run(replay_events(w2.settings, probe, rate=0.0, progress=False, idle_timeout=900.0))
        rep["restore"] = {"ready_s": ready_s, "first_answer_s": answered.last_recommendation - t_kill_wall,
                          "items_in_model_when_ready": items_after,
                          "items_when_answering": (w2.stats() or {}).get("items"), "probe_events": len(probe),
                          "probe_answered": answered.events_covered, "loadavg_1m": _load(),
                          "session_timeout_s": s.session_timeout_s, "worker_stats": w2.stats()}

        # 4. half rate on the restored worker, other users
        rate = half_rate if half_rate > 0 else max(1.0, full.events_per_s / 2)
        half = asyncio.run(replay_events(w2.settings, half_events, rate=rate, progress=progress, idle_timeout=60.0))
        rep["half"] = {**half.summary(), "loadavg_1m": _load(), "worker_stats": w2.stats()}
        rep["worker_2_memory"] = worker_memory(w2)
        print(f"  half rate ({rate:,.0f}/s): p99 {half.latency_ms(99):.0f} ms", flush=True)

        # 6. recall, on the worker's own vectors
        vectors = asyncio.run(read_catalog_vectors(w2.settings))
    if recall_users > 0:
        t0 = time.perf_counter()
        rep["recall"] = recall_two_stage(s, vectors, items, full_events + half_events, recall_users, seed)
        rep["recall"]["seconds"] = time.perf_counter() - t0
    rep["loadavg_end"] = _load()
    return rep


def table(reports: Sequence[dict]) -> str:
    from stream_app.dev.bench import markdown_table

    def mib(b):
        return b / 2**20 if b else float("nan")

    rows = []
    for r in reports:
        ix, full, half, rs = r["indexing"], r["full"], r["half"], r["restore"]
        if ix["measured_for_all_items"]:
            index_cell = f"{ix['encoded_s']:.1f} s ({ix['encoded_items_per_s']:,.0f}/s)"
        else:
            index_cell = (f"{ix['encoded_items']:,} encoded: {ix['encoded_s']:.1f} s ({ix['encoded_items_per_s']:,.0f}/s); "
                          f"all {r['items']:,}: {ix['projected_all_items_s']:,.0f} s PROJECTED")
        peak = max(v for v in (r["worker_1_memory"]["peak_rss_bytes"], r["worker_2_memory"]["peak_rss_bytes"])
                   if v is not None) if any((r["worker_1_memory"]["peak_rss_bytes"],
                                             r["worker_2_memory"]["peak_rss_bytes"])) else None
        rec = r.get("recall", {})
        rows.append([r["items"], full["events_produced"], f"{full['events_covered']:,}", full["events_per_s"],
                     full["latency_p99_ms"], half["rate"], half["latency_p99_ms"], f"{half['events_covered']:,}",
                     mib(peak), index_cell, rs["ready_s"], rs["first_answer_s"],
                     rec.get("recall@10 vs exact", float("nan")),
                     f"{full['loadavg_1m']} / {half['loadavg_1m']}"])
    return markdown_table(
        ["items", "events", "answered", "1 worker ev/s", "p99 ms (full)", "half rate ev/s", "p99 ms (half)",
         "answered (half)", "peak RSS MiB", "indexing", "restore: ready s", "restore: answers s",
         "recall@10 two-stage vs exact", "load 1m (full / half)"], rows)


def encoder_rates(settings: Settings, n_texts: int = 1000, seed: int = 0,
                  project_to: Sequence[int] = (100_000, 1_000_000)) -> list[dict]:
    """Texts/s of the encoder alone on ``n_texts`` synthetic item texts (batch ``settings.encoder_batch``),
    on cpu with the worker's threads and with every core, and on cuda when present; with the
    time N texts would take at that rate, **projected** (not measured) for ``project_to``."""
    import torch

    from models.features import item_text
    from stream_app.dev.bench import encoder_speed
    from stream_app.dev.synth_catalog import synth_catalog

    texts = [item_text(m["title"], m.get("text"), m.get("categories", ()))
             for m in synth_catalog(n_texts, seed).messages]
    runs = [("cpu", t) for t in dict.fromkeys([settings.torch_threads, os.cpu_count() or 1])]
    runs += [("cuda", None)] if torch.cuda.is_available() else []
    out = []
    for device, threads in runs:
        rows, _ = encoder_speed(texts, device, (settings.encoder_batch,), threads=threads)
        for r in rows:
            r["loadavg_1m"] = _load()
            r["projected_s"] = {str(n): n / r["texts_per_s"] for n in project_to}
        out += rows
    return out


def run_items_bench(settings: Settings, sizes: Sequence[int], n_events: int = 100_000,
                    out: str | Path | None = None, seed: int = 0, encode_max: int = 0,
                    item_vectors: str | None = None, progress: bool = True, half_rate: float = 0.0) -> int:
    """``stream-app bench --items N ...``: :func:`run_items` for each size on one broker (a local
    one unless ``KAFKA_BOOTSTRAP_SERVERS`` is set); prints the table, writes JSON to ``out``."""
    import subprocess

    from stream_app.dev.bench import _machine, markdown_table
    from stream_app.dev.broker import LocalKafka

    t_all = time.monotonic()
    report: dict = {"sizes": list(sizes), "events": n_events, "seed": seed, "encode_max": encode_max, "half_rate": half_rate,
                    "settings": {"batch_max": settings.batch_max, "batch_within_s": settings.batch_within_s,
                                 "partitions": settings.partitions, "encoder_batch": settings.encoder_batch,
                                 "torch_threads": settings.torch_threads, "top_k": settings.top_k},
                    "machine_before": _machine(), "runs": []}
    try:
        here = Path(__file__).resolve().parents[2]
        report["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                                          text=True).stdout.strip()
        report["uncommitted_files"] = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                                     cwd=here, capture_output=True, text=True).stdout.splitlines()
    except OSError:
        pass
    print(f"# stream-app bench --items {' '.join(map(str, sizes))}: {n_events:,} events each\n", flush=True)
    with ExitStack() as stack:
        if not settings.bootstrap_servers:
            kafka = LocalKafka(partitions=settings.partitions)
            stack.callback(kafka.stop)
            kafka.start()
            settings = replace(settings, bootstrap_servers=kafka.bootstrap_servers)
        report["encoder"] = encoder_rates(settings)
        if out:
            _write(out, report)
        for n in sizes:
            print(f"## {n:,} items", flush=True)
            report["runs"].append(run_items(settings, n, n_events, seed, encode_max, item_vectors, progress=progress,
                                             half_rate=half_rate))
            if out:
                _write(out, report)
    report["machine_after"] = _machine()
    report["wall_s"] = time.monotonic() - t_all
    print("\n## synthetic catalogue: one worker, real broker\n")
    print("ev/s: sustained, first produce -> the list answering the last event; p99: per event, produced -> "
          "first list counting it; half rate: on the restored worker, other users; restore: SIGKILL -> a new "
          "worker ready (catalogue + states read back) / answering a new event; peak RSS: VmHWM of the workers, "
          "each with its aggregator process added; recall: in process, on the worker's item vectors and the same "
          "events\n")
    print(table(report["runs"]), flush=True)
    print("\ntext encoder alone, synthetic item texts (projected = N / measured texts/s, not measured)\n")
    print(markdown_table(["device", "threads", "batch", "texts", "texts/s", "10^5 texts s (projected)",
                          "10^6 texts s (projected)", "load 1m"],
                         [[r["device"], r["threads"], r["batch"], r["texts"], r["texts_per_s"],
                           r["projected_s"]["100000"], r["projected_s"]["1000000"], r["loadavg_1m"]]
                          for r in report["encoder"]]), flush=True)
    print(f"\nbench finished in {report['wall_s']:.0f} s; load average {report['machine_before']['loadavg_1m']} before, "
          f"{report['machine_after']['loadavg_1m']} after ({report['machine_before']['cpus']} cpus)")
    if out:
        _write(out, report)
        print(f"wrote {out}")
    return 0


def _write(out: str | Path, report: dict) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
