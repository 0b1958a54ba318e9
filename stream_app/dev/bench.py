"""``stream-app bench``: throughput, latency, encoder speed and state size, in one run.

Sections (each printed as a markdown table, all optionally written as JSON):

a. **raw passthrough** -- the ceiling of plain aiokafka on this machine: n events are produced to a
   fresh topic, then a consumer (large ``getmany`` batches) -> orjson loads/dumps -> producer copies
   them to another topic.
b. **pipeline** -- a worker process on fresh topics: the catalogue is loaded, n events are replayed
   as fast as possible (sustained events/s from the first produce to the recommendation that
   answers the last event, latency percentiles), then again on fresh topics with a new worker at
   half that rate (latency at half load).
c. **encoder** -- texts/s of the text encoder at batch sizes 1, 32 and 128 on the data set's item
   texts, on cpu and on cuda when present.
d. **state size** -- the data set replayed offline through the interest model; bytes of each
   user's serialised state.

A broker is started for a and b unless ``KAFKA_BOOTSTRAP_SERVERS`` is set; every topic and
consumer group is new for each run.
"""
from __future__ import annotations

import asyncio
import os
import platform
import time
import uuid
from contextlib import ExitStack
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
import orjson

from models.features import item_text

from stream_app.dev.replay import PRODUCER_OPTIONS, load_catalog, prepare, replay_events
from stream_app.dev.results import ReplayResult
from stream_app.kafka_clients import client_options, security_options
from stream_app.topics import ensure_topics_async
from stream_app.settings import Settings

ENCODER_BATCHES = (1, 32, 128)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table (numbers right-aligned).

    >>> print(markdown_table(["a", "b"], [["x", 1.5]]))
    | a | b |
    |---|--:|
    | x | 1.5 |
    """
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.3g}" if v == v else "n/a"
        return f"{v:,}" if isinstance(v, int) else str(v)

    numeric = [all(isinstance(r[i], (int, float)) for r in rows) for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("--:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _run_id() -> str:
    return uuid.uuid4().hex[:8]


# -- a. raw aiokafka passthrough -----------------------------------------------------------------

async def raw_passthrough(settings: Settings, events: Sequence[dict]) -> dict:
    """Produce ``events`` to a fresh topic, then time consume -> orjson loads/dumps -> produce."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    run = _run_id()
    src, dst = f"bench-raw-{run}-in", f"bench-raw-{run}-out"
    await ensure_topics_async(settings.bootstrap_servers, [src, dst], partitions=settings.partitions,
                              replication=settings.replication_factor, security=security_options(settings))
    values = [(ev["user_id"].encode(), orjson.dumps(ev)) for ev in events]

    producer = AIOKafkaProducer(**client_options(settings), **PRODUCER_OPTIONS)
    await producer.start()
    try:
        t0 = time.perf_counter()
        for i, (key, value) in enumerate(values):
            await producer.send(src, key=key, value=value)
            if i % 1024 == 1023:
                await asyncio.sleep(0)
        await producer.flush()
        produce_s = time.perf_counter() - t0

        consumer = AIOKafkaConsumer(src, **client_options(settings), group_id=None,
                                    auto_offset_reset="earliest", enable_auto_commit=False,
                                    max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024)
        await consumer.start()
        try:
            done, t0 = 0, time.perf_counter()
            while done < len(values):
                batch = await consumer.getmany(timeout_ms=1000, max_records=20_000)
                for records in batch.values():
                    for m in records:
                        await producer.send(dst, key=m.key, value=orjson.dumps(orjson.loads(m.value)))
                    done += len(records)
                if not batch and time.perf_counter() - t0 > 120:
                    raise TimeoutError(f"raw passthrough read only {done} of {len(values)} events")
            await producer.flush()
            pass_s = time.perf_counter() - t0
        finally:
            await consumer.stop()
    finally:
        await producer.stop()
    n = len(values)
    return {"events": n, "produce_s": produce_s, "produce_events_per_s": n / produce_s,
            "passthrough_s": pass_s, "passthrough_events_per_s": n / pass_s}


# -- b. the pipeline -----------------------------------------------------------------------------

def pipeline_run(settings: Settings, catalog: list[dict], events: list[dict], rate: float, label: str,
                 progress: bool = True, workers: int = 1, partitioner: str = "murmur2") -> tuple[ReplayResult, dict]:
    """``workers`` worker processes in one group, on fresh topics and app id: load the catalogue,
    replay ``events`` at ``rate`` (0 = as fast as possible). Returns the replay's result and facts
    about the worker run (CPU and counters summed over the workers)."""
    from stream_app.dev.local import LocalWorker

    run = _run_id()
    s = replace(settings, topic_prefix=f"{settings.topic_prefix}bench-{run}-", app_id=f"{settings.app_id}-bench-{run}")
    t0 = time.monotonic()
    with ExitStack() as stack:
        group = [stack.enter_context(LocalWorker(s)) for _ in range(workers)]
        start_s = time.monotonic() - t0

        def cpu() -> float | None:
            got = [w.cpu_seconds() for w in group]
            return None if any(c is None for c in got) else sum(got)

        async def go() -> tuple[float, ReplayResult, float | None]:
            catalog_s = await load_catalog(group[0].settings, catalog)
            cpu0 = cpu()
            result = await replay_events(group[0].settings, events, rate=rate, progress=progress, idle_timeout=60.0,
                                         partitioner=partitioner)
            cpu1 = cpu()
            return catalog_s, result, (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None

        catalog_s, result, cpu_s = asyncio.run(go())
        stats = [w.stats() or {} for w in group]
        logs = [str(w.log_path) for w in group]

    def total(key: str) -> int | None:
        got = [st.get(key) for st in stats]
        return None if any(g is None for g in got) else sum(got)

    events_, batches = total("events"), total("batches")
    info = {"label": label, "workers": workers, "worker_start_s": start_s, "loadavg_1m": round(os.getloadavg()[0], 2),
            "catalog_s": catalog_s, "worker_log": logs, "worker_cpu_s": cpu_s,
            "worker_cpu_us_per_event": 1e6 * cpu_s / len(events) if cpu_s is not None and events else None,
            "worker_events": events_, "worker_batches": batches, "worker_recommendations": total("recommendations"),
            "events_per_batch": (events_ / batches) if batches else None, "partitioner": partitioner,
            "worker_rerouted": total("rerouted"),
            "hot_path_seconds": [st.get("hot_path_seconds") for st in stats]}
    return result, info


# -- c. encoder ----------------------------------------------------------------------------------

def encoder_speed(texts: Sequence[str], device: str, batches: Sequence[int] = ENCODER_BATCHES,
                  seconds: float = 8.0, threads: int | None = None) -> tuple[list[dict], np.ndarray | None]:
    """texts/s per batch size: consecutive batches of real texts until ``seconds`` have passed (or
    the texts run out). The largest batch size encodes every text; those vectors are returned."""
    from models.encoder import EncoderConfig, TextEncoder

    enc = TextEncoder(EncoderConfig(device=device, threads=threads))
    threads = enc._torch.get_num_threads()
    enc.encode(list(texts[:64]), batch_size=32)  # warm-up
    rows, all_vectors = [], None
    for bs in batches:
        sync = enc._torch.cuda.synchronize if device == "cuda" else (lambda: None)
        whole = bs == max(batches)
        n, vecs, t0 = 0, [], time.perf_counter()
        while n < len(texts) and (whole or n == 0 or time.perf_counter() - t0 < seconds):
            chunk = list(texts[n:n + bs])
            vecs.append(enc.encode(chunk, batch_size=bs))
            n += len(chunk)
        sync()
        dt = time.perf_counter() - t0
        if whole:
            all_vectors = np.concatenate(vecs)
        rows.append({"device": device, "threads": threads, "batch": bs, "texts": n, "seconds": dt,
                     "texts_per_s": n / dt, "ms_per_batch": 1000 * dt / max(1, -(-n // bs))})
    return rows, all_vectors


# -- d. state size -------------------------------------------------------------------------------

def state_sizes(catalog: Sequence[dict], vectors: np.ndarray, events: Sequence[dict], encoder=None) -> dict:
    """Replay ``events`` offline through an untrained InterestModel; bytes of each user's final state."""
    from models.engine import InterestModel

    model = InterestModel.untrained(text_dim=vectors.shape[1])
    for it, v in zip(catalog, vectors):
        model.add_item(it["item_id"], v, it.get("categories", ()), it.get("attributes"))
    from stream_app.processor import to_event

    texts = sorted({ev["text"] for ev in events if ev.get("text")})
    feats = {}
    if texts and encoder is not None:
        from models.features import TextSentiment

        senti = TextSentiment()
        feats = {t: (senti(t), v) for t, v in zip(texts, encoder.encode(texts))}
    states = {}
    t0 = time.perf_counter()
    for _ in model.replay(map(to_event, events), states, feats):
        pass
    apply_s = time.perf_counter() - t0
    sizes = np.array([len(st.to_bytes()) for st in states.values()], dtype=np.float64)
    events_per_user = np.array([st.events for st in states.values()], dtype=np.float64)
    return {"users": len(states), "events": len(events), "apply_events_per_s": len(events) / apply_s,
            "mean_bytes": float(sizes.mean()), "p50_bytes": float(np.percentile(sizes, 50)),
            "p99_bytes": float(np.percentile(sizes, 99)), "max_bytes": float(sizes.max()),
            "total_bytes": float(sizes.sum()), "max_events_per_user": int(events_per_user.max()),
            "worst_case_bytes": worst_case_state_bytes(model)}


def worst_case_state_bytes(model, id_length: int = 12) -> int:
    """Bytes of a synthetic user at every cap: the recent item ids verbatim (``id_length``
    characters each) and both generations of older item hashes full (``MAX_SEEN`` items
    remembered, ``models.seen``), a full de-duplication window, every dimension with evidence."""
    from models.state import DEDUP_WINDOW

    rng = np.random.default_rng(0)
    st = model.new_state()
    for name in st.mean:
        st.mean[name] = rng.normal(size=st.mean[name].shape).astype(np.float16)
        st.norm[name] = float(np.float32(rng.uniform(1.0, 1000.0)))
    i = 0
    while not st.seen.full:  # distinct ids until every cap is reached (a hash collision takes one more)
        st.seen.add(f"{i:0{id_length}d}")
        i += 1
    st.recent = rng.integers(0, 2**48, size=DEDUP_WINDOW).tolist()
    st.events, st.last_ts = 10**6, 1_800_000_000_000
    return len(st.to_bytes())


# -- the whole benchmark -------------------------------------------------------------------------

def _machine() -> dict:
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
            "loadavg_1m": round(load[0], 2)}


def _kafka_sections(settings: Settings, catalog: list[dict], events: list[dict], report: dict,
                    sections: str, progress: bool, partitioner: str = "murmur2") -> None:
    """a (raw passthrough) and b (the pipeline), on the configured cluster or a local broker."""
    from stream_app.dev.broker import LocalKafka

    with ExitStack() as stack:
        if not settings.bootstrap_servers:
            kafka = LocalKafka(partitions=settings.partitions)
            stack.callback(kafka.stop)
            kafka.start()
            settings = replace(settings, bootstrap_servers=kafka.bootstrap_servers)
        if "a" in sections:
            raw = asyncio.run(raw_passthrough(settings, events))
            report["raw"] = raw
            print("## a. raw aiokafka passthrough (consume -> orjson loads/dumps -> produce)\n")
            print(markdown_table(["events", "produce only ev/s", "passthrough ev/s", "passthrough s"],
                                 [[raw["events"], raw["produce_events_per_s"], raw["passthrough_events_per_s"],
                                   raw["passthrough_s"]]]) + "\n", flush=True)
        if "b" in sections:
            _pipeline_section(settings, catalog, events, report, progress, partitioner)


def _pipeline_section(settings: Settings, catalog: list[dict], events: list[dict], report: dict,
                      progress: bool, partitioner: str = "murmur2") -> None:
    run = partial(pipeline_run, settings, catalog, events, progress=progress, partitioner=partitioner)
    how = "" if partitioner == "murmur2" else f", {partitioner}-placed"
    full, full_info = run(0.0, f"full speed{how}")
    half_rate = max(1.0, full.events_per_s / 2)
    half, half_info = run(half_rate, f"half rate{how}")
    two, two_info = run(0.0, f"full speed, 2 workers{how}", workers=2)
    pairs = ((full, full_info), (half, half_info), (two, two_info))
    runs = [{**r.summary(), **info} for r, info in pairs]
    report["pipeline"] = runs
    raw_rate = report.get("raw", {}).get("passthrough_events_per_s")
    if raw_rate:
        report["pipeline_over_raw"] = full.events_per_s / raw_rate
    print("## b. pipeline (replay -> worker -> recommendations)\n")
    print("answered = events counted by each user's events_applied; latency = per event, produced -> "
          "first recommendation that counts it; load = 1-minute load average after the run\n")
    print(markdown_table(
        ["run", "workers", "offered ev/s", "events", "answered", "recs", "dead letters", "sustained ev/s",
         "p50 ms", "p95 ms", "p99 ms", "latency samples", "regressions", "re-routed", "events/batch",
         "worker CPU µs/event", "load 1m"],
        [[i["label"], i["workers"], r["rate"] or "max", r["events_produced"], r["events_covered"],
          r["recommendations"], r["dead_letters"], r["events_per_s"], r["latency_p50_ms"],
          r["latency_p95_ms"], r["latency_p99_ms"], r["latency_samples"], r["regressions"],
          i["worker_rerouted"], i["events_per_batch"] or float("nan"), i["worker_cpu_us_per_event"] or float("nan"), i["loadavg_1m"]]
         for r, i in zip(runs, (i for _, i in pairs))]))
    if raw_rate:
        print(f"\npipeline / raw passthrough: {report['pipeline_over_raw']:.3f} "
              f"({full.events_per_s:,.0f} / {raw_rate:,.0f} events/s)")
    print(flush=True)


def _model_sections(settings: Settings, catalog: list[dict], events: list[dict], report: dict,
                    sections: str) -> None:
    """c (encoder texts/s) and d (serialised state size)."""
    vectors = None
    text_encoder = None
    import torch

    texts = [item_text(it["title"], it.get("text"), it.get("categories", ())) for it in catalog]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows: list[dict] = []
    # cpu: with the worker's intra-op threads (settings.torch_threads) and with every core
    encoder_runs = [("cpu", t) for t in dict.fromkeys([settings.torch_threads, os.cpu_count() or 1])]
    encoder_runs += [(d, None) for d in devices if d != "cpu"]
    for device, threads in encoder_runs if "c" in sections else [("cpu", settings.torch_threads)]:
        got, vecs = encoder_speed(texts, device, ENCODER_BATCHES if "c" in sections else (128,),
                                  threads=threads)
        rows += got
        if vectors is None:
            vectors = vecs
    if "c" in sections:
        report["encoder"] = rows
        print("## c. text encoder (all-MiniLM-L6-v2), item texts of the data set\n")
        print(markdown_table(["device", "threads", "batch", "texts", "texts/s", "ms/batch"],
                             [[r["device"], r["threads"], r["batch"], r["texts"], r["texts_per_s"],
                               r["ms_per_batch"]] for r in rows]) + "\n", flush=True)
    if any(ev.get("text") for ev in events):
        from models.encoder import build_encoder

        text_encoder = build_encoder(device="auto", batch_size=128, threads=settings.torch_threads)

    if "d" in sections and vectors is not None:
        st = state_sizes(catalog, vectors, events, text_encoder)
        report["state"] = st
        print("## d. serialised user state (untrained default model, offline replay)\n")
        print(markdown_table(["users", "events", "mean B", "p50 B", "p99 B", "max B", "worst case B (all caps full)",
                              "total MB", "apply ev/s"],
                             [[st["users"], st["events"], st["mean_bytes"], st["p50_bytes"], st["p99_bytes"],
                               st["max_bytes"], st["worst_case_bytes"], st["total_bytes"] / 1e6,
                               st["apply_events_per_s"]]]) + "\n",
              flush=True)
        if settings.checkpoint:
            from models.engine import InterestModel

            st["worst_case_bytes_checkpoint"] = worst_case_state_bytes(InterestModel.load(settings.checkpoint))
            print(f"worst case with the checkpoint's model ({settings.checkpoint}): "
                  f"{st['worst_case_bytes_checkpoint']:,} B\n", flush=True)



def run_bench(settings: Settings, dataset_path: str | Path, n_events: int = 100_000, out: str | Path | None = None,
              progress: bool = True, sections: str = "abcd", partitioner: str = "murmur2") -> int:
    """Run the sections (a: raw, b: pipeline, c: encoder, d: state), print their tables and
    optionally write everything as JSON to ``out``. ``partitioner``: how the pipeline runs place
    keyed events ("crc32": as librdkafka clients do, see ``replay_events``). Returns 0."""
    t_all = time.monotonic()
    ds, catalog, events = prepare(dataset_path, n_events)
    report: dict = {"dataset": ds.name, "events": len(events), "items": len(catalog),
                    "settings": {"batch_max": settings.batch_max, "batch_within_s": settings.batch_within_s,
                                 "partitions": settings.partitions, "encoder_batch": settings.encoder_batch,
                                 "top_k": settings.top_k, "partitioner": partitioner},
                    "machine_before": _machine()}
    print(f"# stream-app bench: {ds.name}, {len(events):,} events, {len(catalog):,} items\n", flush=True)

    if "a" in sections or "b" in sections:
        _kafka_sections(settings, catalog, events, report, sections, progress, partitioner)
    if "c" in sections or "d" in sections:
        _model_sections(settings, catalog, events, report, sections)
    report["machine_after"] = _machine()
    report["wall_s"] = time.monotonic() - t_all
    print(f"bench finished in {report['wall_s']:.0f} s; load average {report['machine_before']['loadavg_1m']} "
          f"before, {report['machine_after']['loadavg_1m']} after ({report['machine_before']['cpus']} cpus)")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        print(f"wrote {out}")
    return 0
