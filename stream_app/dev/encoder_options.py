"""The text encoder options on this CPU, on real texts: ``python -m stream_app.dev.encoder_bench
--items ../shared/data/ml-latest-small [--options minilm:fp32,minilm:bf16,static] [--batches 1,64,256]
[--threads 1] [--seconds 4]``.

Texts as the product builds them: every item's text (``models.features.item_text``: title, year,
genres) and every distinct event text (MovieLens tags, folded as review text), each list in a
seeded random order. Per option, thread count, batch size and kind of text: ``encode`` called on
consecutive chunks of ``batch`` texts (the worker's call: one batch of new texts) until the texts
or ``--seconds`` run out, after one warm-up call. Prints one table row each:

    encoder | threads | batch | texts | texts/s | ms per batch | CPU ms per 1k texts | load (1 min)

"CPU ms" is the process's CPU time (every thread of it): the figure that the load on a shared
machine disturbs least. The load average is read when the row is measured.
"""
from __future__ import annotations

import os
import random
import time

import numpy as np


def real_texts(dataset: str, seed: int = 0) -> dict[str, list[str]]:
    """{"items": item texts, "events": distinct event texts} of a data set, shuffled (seeded)."""
    from models.features import item_text
    from models.offline.base import ItemCatalog
    from models.offline.loaders import load_dataset

    ds = load_dataset(dataset)
    catalog = ItemCatalog.from_dataset(ds)
    out = {"items": [item_text(it.title, it.text, it.categories) for it in catalog.items],
           "events": sorted({ev.text for ev in ds.interactions if ev.text})}
    rnd = random.Random(seed)
    for v in out.values():
        rnd.shuffle(v)
    return {k: v for k, v in out.items() if v}


def build(option: str, threads: int, static_path: str):
    """The encoder of ``option``: "minilm:<dtype>" (the transformer on cpu) or "static"."""
    from models.encoder import build_encoder

    if option == "static":
        return build_encoder(kind="static", static_path=static_path)
    dtype = option.split(":", 1)[1] if ":" in option else "fp32"
    return build_encoder(device="cpu", threads=threads, dtype=dtype, cache_size=0)


def measure(enc, texts: list[str], batch: int, seconds: float) -> dict:
    """texts/s, ms per batch and CPU ms per 1k texts of ``enc.encode`` over chunks of ``batch``."""
    enc.encode(texts[:batch], batch_size=batch)  # warm-up
    n = calls = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while n < len(texts) and (n == 0 or time.perf_counter() - t0 < seconds):
        part = texts[n:n + batch]
        enc.encode(part, batch_size=batch)
        n += len(part)
        calls += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"texts": n, "texts_s": n / wall, "ms_batch": 1000 * wall / calls, "cpu_ms_1k": 1000 * cpu / n * 1000,
            "load": os.getloadavg()[0]}


def run_options(dataset: str, options: list[str], batches: list[int], threads_list: list[int], seconds: float,
                static_path: str | None = None) -> list[dict]:
    """Measure every option (see the module doc); prints the table, returns its rows."""
    import torch

    from models.static_encoder import default_static_path

    static_path = static_path or str(default_static_path(os.path.expanduser("~/.cache/stream-reco")))
    texts = real_texts(dataset)
    chars = {k: np.mean([len(t) for t in v]) for k, v in texts.items()}
    print(f"# encoder options on cpu ({os.cpu_count()} cores); torch {torch.__version__}; data {dataset}: "
          + "; ".join(f"{len(v):,} {k} texts, {chars[k]:.0f} chars" for k, v in texts.items())
          + f"; {seconds:g} s per cell; load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    header = ("encoder", "threads", "batch", "texts", "n", "texts/s", "ms per batch", "CPU ms per 1k texts", "load")
    print("| " + " | ".join(header) + " |\n|" + "|".join("---" for _ in header) + "|", flush=True)
    rows = []
    for option in options:
        for threads in ([1] if option == "static" else threads_list):
            torch.set_num_threads(threads)
            enc = build(option, threads, static_path)
            label = option if option != "static" else f"static ({enc.version}, d{enc.dim})"
            for batch in batches:
                for kind, part in texts.items():
                    m = measure(enc, part, batch, seconds)
                    rows.append({"encoder": option, "threads": threads, "batch": batch, "kind": kind, **m})
                    print(f"| {label} | {threads} | {batch} | {kind} | {m['texts']:,} | {m['texts_s']:,.0f} | "
                          f"{m['ms_batch']:.2f} | {m['cpu_ms_1k']:,.0f} | {m['load']:.2f} |", flush=True)
    return rows
