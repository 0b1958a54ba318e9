"""Model-thread CPU time per list at a large catalogue: `python -m stream_app.dev.list_cost --items N`.

Builds in this process the model a worker serves in ``stream-app bench --items N`` (the untrained
fusion over 384-d item vectors, co-engagement counts and ``models.offline.two_stage.BLEND``; the
item vectors random unit vectors around topic centres, ``stream_app.dev.item_memory.topic_vectors``;
the behaviour ``stream_app.dev.synth_catalog.synth_events``, folded in), then ranks the users in
batches of ``--batch`` users (``recommend_many``, two-stage) and reports this thread's CPU time
per list (``time.thread_time``: what the worker's model thread spends, steady on a shared machine),
wall time per list and the 1-minute load average. ``--profile FILE`` writes a cProfile of the
timed calls. ``--check-exact U``: recall@10 of those lists against exact ranking for U users.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import time

import numpy as np


def build(n_items: int, n_events: int, seed: int = 0, later: int = 0):
    """-> (model, states, the next ``later`` event messages) for ``n_items`` synthetic items and
    ``n_events`` events folded in (module doc)."""
    from models.engine import Event
    from models.offline.two_stage import blank_model
    from stream_app.dev.item_memory import CF_DIM, TEXT_DIM, topic_vectors
    from stream_app.dev.synth_catalog import synth_catalog, synth_events

    items = synth_catalog(n_items, seed)
    events = synth_events(items, n_events + later, seed)
    events, rest = events[:n_events], events[n_events:]
    X = topic_vectors(items.topic, seed=seed)
    model = blank_model(TEXT_DIM, cf_dim=CF_DIM)
    for m, v in zip(items.messages, X):
        model.add_item(m["item_id"], v, m["categories"], m["attributes"])
    states: dict = {}
    model.fold([Event(e["user_id"], e["item_id"], e["type"], e.get("value"), e["ts"], e["event_id"])
                for e in events], states)
    return model, states, rest


def measure_batches(model, states: dict, events: list[dict], size: int, profile: str | None = None,
                    follow: bool = False) -> dict:
    """The worker's whole model step (``Processor.apply_batch``: states decoded, events folded, the
    touched users ranked, messages built) over ``events`` in batches of ``size``: thread CPU ms
    per list and per event (co-engagement learning through pair messages, as the worker does).
    ``follow``: each batch's pair messages also folded into neighbour rows (the aggregator's
    work, not timed) and those rows applied to the model before the next batch (the follower's
    work, timed: it runs in the model thread), so the co-engagement rows change every batch."""
    from models.cooc.online import apply_rows
    from models.cooc.table import RowTable, fold_records
    from models.features import TextSentiment
    from stream_app.codec import Codec
    from stream_app.dev.serve_bench import _StubEncoder
    from stream_app.processor import Processor

    model.ranking.mode = "two-stage"
    proc = Processor(model, _StubEncoder(), TextSentiment(), Codec.load())
    proc.pairs_half_life_ms = 0.0
    stored = {u: st.to_bytes() for u, st in states.items()}
    prof = cProfile.Profile() if profile else None
    table, offset, aside = RowTable(), 0, 0.0
    lists, t, c = 0, time.perf_counter(), time.thread_time()
    if prof:
        prof.enable()
    for i in range(0, len(events), size):
        chunk = events[i:i + size]
        res = proc.apply_batch(chunk, {u: stored.get(u) for u in dict.fromkeys(e["user_id"] for e in chunk)})
        stored.update({u: st.to_bytes() for u, st in res.states.items()})
        lists += len(res.states)
        if follow:
            a = time.thread_time()
            messages = [(item, offset + k, value) for k, (item, value) in enumerate(res.pairs or ())]
            offset += len(messages)
            rows = fold_records(table, messages, {})
            aside += time.thread_time() - a
            apply_rows(model.cooc, rows)
    if prof:
        prof.disable()
        prof.dump_stats(profile)
    cpu = time.thread_time() - c - aside
    return {"apply_batch": size, "follow": follow, "events": len(events), "lists": lists,
            "cpu_ms_per_list": round(1000 * cpu / max(1, lists), 3),
            "cpu_ms_per_event": round(1000 * cpu / max(1, len(events)), 4),
            "wall_ms_per_list": round(1000 * (time.perf_counter() - t) / max(1, lists), 3),
            "loadavg_1m": round(os.getloadavg()[0], 2)}


def measure(model, states: dict, batch: int, users: int, profile: str | None = None) -> dict:
    """Thread CPU ms and wall ms per list over ``users`` users in batches of ``batch``."""
    model.ranking.mode = "two-stage"
    sample = [states[u] for u in sorted(states)[:users]]
    model.recommend_many(sample[:batch], 10)  # warm: the index and the rankers' caches
    prof = cProfile.Profile() if profile else None
    t, c = time.perf_counter(), time.thread_time()
    if prof:
        prof.enable()
    for i in range(0, len(sample), batch):
        model.recommend_many(sample[i:i + batch], 10)
    if prof:
        prof.disable()
        prof.dump_stats(profile)
    n = max(1, len(sample))
    return {"items": model.items.live, "lists": len(sample), "batch": batch,
            "cpu_ms_per_list": round(1000 * (time.thread_time() - c) / n, 3),
            "wall_ms_per_list": round(1000 * (time.perf_counter() - t) / n, 3),
            "loadavg_1m": round(os.getloadavg()[0], 2)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--users", type=int, default=2000, help="lists ranked")
    ap.add_argument("--batch", type=int, nargs="*", default=[64, 256], help="users per recommend_many call")
    ap.add_argument("--profile", help="write a cProfile of the first batch size's calls here")
    ap.add_argument("--apply-batch", type=int, nargs="*", default=[],
                    help="also the whole Processor.apply_batch over --later events in batches of this many")
    ap.add_argument("--later", type=int, default=20_000, help="events for --apply-batch")
    ap.add_argument("--follow", action="store_true",
                    help="--apply-batch with the batches' co-engagement rows followed (measure_batches)")
    ap.add_argument("--check-exact", type=int, default=0, help="recall@10 against exact for this many users")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    model, states, later = build(args.items, args.events, later=args.later if args.apply_batch else 0)
    print(f"built {model.items.live:,} items, {len(states):,} users in {time.perf_counter() - t0:.1f} s")
    for i, b in enumerate(args.batch):
        print(measure(model, states, b, args.users, args.profile if i == 0 else None))
    for i, b in enumerate(args.apply_batch):
        print(measure_batches(model, states, later, b, args.profile.replace(".out", f"-batch{b}.out")
                              if args.profile and i == 0 else None, args.follow))
    if args.check_exact:
        from models.offline.two_stage import compare

        print(compare(model, states, sorted(states)[:args.check_exact]))


if __name__ == "__main__":
    main()
