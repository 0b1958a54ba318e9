"""Memory per item of the model's item structures: `python -m stream_app.dev.item_memory --items N`.

Builds, in this process, what a worker holds per catalogue item for a synthetic catalogue of N
items (``stream_app.dev.synth_catalog``), the model a worker serves for it (the untrained fusion
with co-engagement counts and a fixed blend, ``models.offline.two_stage.blank_model``, CF space
64-d as the default model's), one structure at a time, and reports bytes per item of each:

* **catalogue vectors** (``models.items.ItemVectors``: the hybrid (text and cf) and category rows,
  the id list and index) -- ``add_item`` for every item;
* **co-engagement rows** (``models.cooc``: counts and their row map) -- ``--events`` synthetic
  events folded in (their per-row dicts grow with the distinct pairs, so this one depends on
  the log; bytes per stored pair are given too);
* **ranking index** (``models.ann``: faiss's inverted lists of codes, the exact vectors, the
  per-row hashes, the moments) and the rankers' per-item caches (the attention item
  embeddings) -- a first two-stage ``recommend_many``.

Then the cost of one catalogue change for the next ranking call: a ranking call of the sampled
users, then one new item and the same call again (the ranking index and the rankers' caches
follow the catalogue on the next call).

Each figure is the growth of the process's resident memory (``/proc/self/status`` VmRSS) across
the step, after a collection, with the process's peak within the step (VmHWM, reset before each
step where the kernel allows); the arrays' own sizes (``nbytes``: what the structure holds by
design, at its current capacity) are given beside it. Item vectors are random unit vectors
around topic centres (the encoder's output is not needed to measure memory). Prints a markdown
table; ``--out`` writes JSON.
"""
from __future__ import annotations

import argparse
import gc
import os
import time
from pathlib import Path

import numpy as np
import orjson

TEXT_DIM, CF_DIM = 384, 64


def rss_bytes(field: str = "VmRSS") -> int:
    """A field of /proc/self/status in bytes (VmRSS: resident now; VmHWM: its peak)."""
    return proc_status_bytes(os.getpid(), field)


def proc_status_bytes(pid: int, field: str, *more: str) -> int | tuple[int, ...]:
    """A ``/proc/<pid>/status`` field in bytes; with ``more``, each field's, all from one read
    (so ``VmHWM`` >= ``VmRSS`` holds between them, as it would not across two reads of a
    process that grows meanwhile)."""
    fields = (field, *more)
    with open(f"/proc/{pid}/status") as f:
        found = {line.split(":", 1)[0]: int(line.split()[1]) * 1024 for line in f
                 if line.split(":", 1)[0] in fields}
    missing = [k for k in fields if k not in found]
    if missing:
        raise KeyError(missing[0])
    return found[field] if not more else tuple(found[k] for k in fields)


def topic_vectors(topic: np.ndarray, dim: int = TEXT_DIM, seed: int = 0) -> np.ndarray:
    """(N, dim) float32 unit vectors, items of one topic near their topic's centre."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(int(topic.max()) + 1, dim)).astype(np.float32)
    X = centres[topic] + rng.normal(scale=1.0, size=(topic.size, dim)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X


def _settled_rss() -> int:
    """Resident bytes now, after a collection; the peak (VmHWM) is reset to it where the kernel
    allows (``/proc/self/clear_refs``), so the next step's peak is its own."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return rss_bytes()


def _step_peak() -> int:
    return rss_bytes("VmHWM")


def measure(n_items: int, n_events: int = 100_000, seed: int = 0, users: int = 64) -> dict:
    """Bytes per item of each item structure for ``n_items`` items (module doc)."""
    from models.engine import Event
    from models.offline.two_stage import blank_model
    from stream_app.dev.synth_catalog import synth_catalog, synth_events

    t_all = time.perf_counter()
    items = synth_catalog(n_items, seed)
    events = synth_events(items, n_events, seed)
    messages = [(m["item_id"], m["categories"], m["attributes"]) for m in items.messages]
    topic = items.topic
    del items
    X = topic_vectors(topic, seed=seed)
    model = blank_model(TEXT_DIM, cf_dim=CF_DIM)
    evs = [Event(e["user_id"], e["item_id"], e["type"], e.get("value"), e["ts"], e["event_id"]) for e in events]
    del events
    rows: list[dict] = []

    base = _settled_rss()
    t0 = time.perf_counter()
    for (item_id, cats, attrs), v in zip(messages, X):
        model.add_item(item_id, v, cats, attrs)
    add_s = time.perf_counter() - t0
    del messages
    peak_items = _step_peak()
    after_items = _settled_rss()
    cooc_counts = model.cooc.counts
    cooc_nbytes_empty = _cooc_nbytes(model)
    rows.append({"structure": "catalogue vectors + co-engagement rows (empty)", "rss_bytes": after_items - base,
                 "nbytes": model.items.nbytes() + cooc_nbytes_empty, "seconds": add_s, "peak_rss_bytes": peak_items,
                 "detail": {"item_vectors_nbytes": model.items.nbytes(),
                            "item_vectors_capacity_rows": int(model.items.capacity),
                            "floats_per_row": int(model.items.nbytes() // max(1, model.items.capacity) // 4),
                            "cooc_nbytes": cooc_nbytes_empty}})

    states: dict = {}
    t0 = time.perf_counter()
    model.fold(evs, states)
    fold_s = time.perf_counter() - t0
    state_bytes = sum(len(st.to_bytes()) for st in states.values())
    peak_fold = _step_peak()
    after_fold = _settled_rss()
    pairs = _cooc_pairs(cooc_counts)
    rows.append({"structure": f"co-engagement counts from {len(evs):,} events (+ {len(states):,} user states)",
                 "rss_bytes": after_fold - after_items, "nbytes": _cooc_nbytes(model) - cooc_nbytes_empty,
                 "seconds": fold_s, "peak_rss_bytes": peak_fold,
                 "detail": {"pairs": pairs, "dense": bool(cooc_counts.dense), "user_states": len(states),
                            "user_state_serialised_bytes": state_bytes}})

    row, after_rank, peak_rank, steady_s, changed_s, sample = _ranking_step(model, states, users, X[0], after_fold)
    rows.append(row)
    total = after_rank - base
    for r in rows:
        r["rss_bytes_per_item"] = r["rss_bytes"] / n_items
        r["nbytes_per_item"] = r["nbytes"] / n_items
    return {"items": n_items, "events": len(evs), "seed": seed, "rows": rows,
            "rss_bytes_total": total, "rss_bytes_per_item_total": total / n_items,
            "text_vector_bytes_per_item": TEXT_DIM * 4, "rss_bytes_before": base,
            "peak_rss_bytes": max(peak_items, peak_fold, peak_rank, rss_bytes("VmHWM")),
            "ranking_call_s": steady_s, "ranking_call_after_one_new_item_s": changed_s, "ranking_users": len(sample),
            "loadavg_1m": round(os.getloadavg()[0], 2), "wall_s": time.perf_counter() - t_all}


def _ranking_step(model, states: dict, users: int, vector: np.ndarray, after_fold: int):
    """The ranking index and the rankers' caches built by a first two-stage call; then the cost of
    the next call, and of the call after one catalogue change (the index follows the catalogue)."""
    model.ranking.mode = "two-stage"
    sample = list(states.values())[:users]
    t0 = time.perf_counter()
    model.recommend_many(sample, 10)
    rank_s = time.perf_counter() - t0
    peak_rank = _step_peak()
    after_rank = _settled_rss()
    index = model.ranking.index
    cache_nbytes = model.attention.item_matrix_nbytes()
    row = {"structure": "ranking index (faiss IVF-PQ codes + exact vectors + per-row hashes) + rankers' item caches",
           "rss_bytes": after_rank - after_fold, "nbytes": index.nbytes() + cache_nbytes, "seconds": rank_s,
           "peak_rss_bytes": peak_rank,
           "detail": {"index_cells": index.cells, "nprobe": index.nprobe or index.default_nprobe(),
                      "faiss_nbytes": _faiss_nbytes(index), "index_nbytes": index.nbytes(),
                      "attention_item_matrix_nbytes": cache_nbytes}}
    # what one catalogue change costs the next ranking call (the index and caches follow the catalogue)
    t0 = time.perf_counter()
    model.recommend_many(sample, 10)
    steady_s = time.perf_counter() - t0
    model.add_item("one-more-item", vector, ("extra",), None)
    t0 = time.perf_counter()
    model.recommend_many(sample, 10)
    changed_s = time.perf_counter() - t0
    return row, after_rank, peak_rank, steady_s, changed_s, sample


def _cooc_pairs(counts) -> int:
    if counts.dense:
        return int(np.count_nonzero(counts._dense))
    return sum(len(r) for r in counts._rows)


def _cooc_nbytes(model) -> int:
    """Bytes of the co-engagement counts by design: the dense matrix, or the per-row dicts (the
    dicts' own tables plus 32 bytes per key/value object pair beyond the small-int cache)."""
    import sys

    c = model.cooc.counts
    out = c.n.nbytes
    if c.dense:
        out += c._dense.nbytes
    else:
        out += sum(sys.getsizeof(r) + 56 * len(r) for r in c._rows) + sys.getsizeof(c._rows)
    return int(out)


def _faiss_nbytes(index) -> int:
    """Bytes of the inverted lists' codes and ids, and the cell centres."""
    ix = index._index
    if ix is None:
        return 0
    return int(ix.ntotal * (ix.code_size + 8) + ix.nlist * ix.d * 4)


def markdown(report: dict) -> str:
    from stream_app.dev.bench import markdown_table

    n = report["items"]
    rows = [[r["structure"], r["rss_bytes"] / 2**20, r["rss_bytes_per_item"], r["nbytes_per_item"], r["seconds"],
             r["peak_rss_bytes"] / 2**30] for r in report["rows"]]
    rows.append(["total", report["rss_bytes_total"] / 2**20, report["rss_bytes_per_item_total"],
                 sum(r["nbytes_per_item"] for r in report["rows"]), sum(r["seconds"] for r in report["rows"]),
                 report["peak_rss_bytes"] / 2**30])
    head = (f"### Memory per item, {n:,} items, {report['events']:,} events (load {report['loadavg_1m']}, "
            f"peak RSS {report['peak_rss_bytes'] / 2**30:.2f} GiB, {report['rss_bytes_before'] / 2**30:.2f} GiB before "
            f"the first step (interpreter, libraries, synthetic inputs); a text vector alone is "
            f"{report['text_vector_bytes_per_item']:,} B)\n\n")
    tail = (f"\n\none ranking call of {report['ranking_users']} users (two-stage): {report['ranking_call_s']:.3f} s; "
            f"the same call after one new item: {report['ranking_call_after_one_new_item_s']:.3f} s")
    return head + markdown_table(["structure", "RSS growth MiB", "RSS B/item", "nbytes B/item", "build s",
                                 "process peak RSS GiB in the step"], rows) + tail


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--events", type=int, default=100_000, help="synthetic events folded into the counts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="", help="also write the result as JSON here")
    args = ap.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    report = measure(args.items, args.events, args.seed)
    print(markdown(report), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
