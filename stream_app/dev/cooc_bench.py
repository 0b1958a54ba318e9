"""CPU cost of the co-engagement stream per worker batch: `python -m stream_app.dev.cooc_bench`.

Replays a data set (``--data``, default MovieLens 100k from ``../shared/data/ml-100k``; or with
``--items N`` the synthetic catalogue and events of ``stream-app bench --items N``) in time
order, in batches of ``--batch`` events, through the three steps of ``stream_app.cooc_stream``
in process, without a broker:

* **build** (a worker): the batch's first engagements as one delta per touched item, as
  ``Processor.pair_messages`` makes them (``CoocModel.delta_columns``,
  ``models.cooc.online.PairDeltas``), and those as pair messages
  (``stream_app.cooc_pairs.bundle_pairs``);
* **fold** (the aggregator, one owner of every pairs partition): the messages read
  (``stream_app.cooc_pairs.pair_entries``) and folded into the rows (``CoocAggregator.handle``'s work, Kafka aside), every
  touched row's changelog record made;
* **apply** (every worker's model thread): those records applied to a serving model's online
  rows (``models.cooc.online.apply_rows``), after every batch, and (a second model) every
  ``--apply-every`` batches, as ``STREAM_RECO_COOC_APPLY_EVERY_S`` spaces them (an item's last
  record standing for its earlier ones).

Each step is timed in CPU time of the thread that runs it (``time.thread_time``), not wall
clock, so a loaded machine changes the figures little. Prints one markdown table: ms per batch
(mean over all batches, and over the second half, when rows are full), messages and records
per batch. ``--half-life-s`` and ``--top-m`` as the worker's settings.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from models.cooc import CoocModel, CoocParams
from models.seen import SeenItems, item_key

DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ml-100k"


def dataset_events(data: Path, limit: int | None = None) -> tuple[list[str], list[tuple[str, str, int]]]:
    """(item ids, (user, item, time) in time order) of a data set."""
    from models.offline.loaders import load_dataset

    ds = load_dataset(data)
    ids = sorted(ds.items)
    known = set(ids)
    return ids, [(e.user_id, e.item_id, e.ts) for e in ds.interactions if e.item_id in known][: limit]


def synthetic_events(n_items: int, n_events: int, seed: int = 0) -> tuple[list[str], list[tuple[str, str, int]]]:
    """The catalogue and events of ``stream-app bench --items`` (``stream_app.dev.synth_catalog``)."""
    from stream_app.dev.synth_catalog import synth_catalog, synth_events

    items = synth_catalog(n_items, seed)
    ids = [m["item_id"] for m in items.messages]
    return ids, [(e["user_id"], e["item_id"], e["ts"]) for e in synth_events(items, n_events, seed)]


def batches(ids: list[str], events: list[tuple[str, str, int]], size: int, params: CoocParams):
    """[(first engagements, event times)] per batch of ``size`` events: each user's recent
    distinct items kept as ``UserState.seen`` keeps them, as the worker's fold does."""
    index = {i: r for r, i in enumerate(ids)}
    seen: dict[str, SeenItems] = {}
    out = []
    for a in range(0, len(events), size):
        eng, times = [], []
        for user, item, ts in events[a:a + size]:
            s = seen.setdefault(user, SeenItems())
            key = item_key(item)
            if not s.has(item, key):
                eng.append(([index[i] for i in s.newest(params.span)], index[item]))
                times.append(ts)
            s.add(item, key)
        out.append((eng, times))
    return out


class Steps:
    """The three steps over one worker, one aggregator owning every pairs partition, and one
    serving model (a follower)."""

    def __init__(self, ids: list[str], params: CoocParams, partitions: int, half_life_ms: float, top_m: int,
                 every: int = 3):
        self.worker, self.serving = CoocModel(params), CoocModel(params)
        for i in ids:
            self.worker.add_item(i)
            self.serving.add_item(i)
        self.serving.online.half_life_ms = half_life_ms
        self.sparse = CoocModel(params)
        for i in ids:
            self.sparse.add_item(i)
        self.sparse.online.half_life_ms = half_life_ms
        self.every, self.held, self.batches = every, [], 0
        self.names = np.asarray(self.worker.counts.ids, dtype=object)
        self.half_life_ms, self.top_m = half_life_ms, top_m
        self.store: dict[int, dict[str, bytes]] = {p: {} for p in range(partitions)}  # the changelog's latest records
        self.decoded: dict[int, dict] = {}
        self.offsets = [0] * partitions

    def build(self, eng, times) -> list[tuple[int, str, bytes]]:
        from models.cooc.online import PairDeltas
        from stream_app.catalog import item_partition
        from stream_app.cooc_pairs import bundle_pairs

        cooc = self.worker
        deltas = PairDeltas.of(cooc.delta_columns(eng, times, self.half_life_ms), self.names)
        return bundle_pairs(deltas, len(self.store), item_partition)

    def fold(self, messages: list[tuple[int, str, bytes]]) -> list[tuple[str, bytes]]:
        from models.cooc.table import RowTable, fold_records
        from stream_app.cooc_pairs import entry_items, pair_entries

        by_partition: dict[int, list] = {}
        for p, key, value in messages:
            by_partition.setdefault(p, []).extend(pair_entries(key, self.offsets[p], value))
            self.offsets[p] += 1
        out = []
        for p, msgs in by_partition.items():
            table, stored = self.decoded.setdefault(p, RowTable()), self.store[p]
            written = fold_records(table, msgs, {i: stored.get(i) for i in entry_items(msgs) if i not in table},
                                   self.half_life_ms, self.top_m)
            stored.update(written)
            out += written
        return out

    def apply(self, records: list[tuple[str, bytes]]) -> None:
        from models.cooc.online import apply_rows

        apply_rows(self.serving, records)

    def apply_every(self, records: list[tuple[str, bytes]], last: bool) -> None:
        """Records held back and applied every ``every`` batches (``STREAM_RECO_COOC_APPLY_EVERY_S``
        over the time a batch takes), to a second serving model."""
        from models.cooc.online import apply_rows

        self.held += records
        self.batches += 1
        if self.batches % self.every == 0 or last:
            apply_rows(self.sparse, self.held)
            self.held = []


def timed(fn, *args):
    t0 = time.thread_time()
    out = fn(*args)
    return out, (time.thread_time() - t0) * 1000.0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--items", type=int, default=0,
                    help="instead of --data: the synthetic catalogue of `stream-app bench --items` with this many items")
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--events", type=int, default=None, help="only the first N events (--items: 50,000 unless given)")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--half-life-s", type=float, default=0.0)
    ap.add_argument("--top-m", type=int, default=64)
    ap.add_argument("--apply-every", type=int, default=3,
                    help="batches between row applications (0.2 s at ~30,000 events/s in batches of 2,000: 3)")
    args = ap.parse_args(argv)
    params = CoocParams()
    if args.items:
        ids, events = synthetic_events(args.items, args.events or 50_000)
        name = f"synthetic, {args.items:,} items"
    else:
        (ids, events), name = dataset_events(args.data, args.events), args.data.name
    work = batches(ids, events, args.batch, params)
    steps = Steps(ids, params, args.partitions, args.half_life_s * 1000.0, args.top_m, args.apply_every)
    rows = []
    for k, (eng, times) in enumerate(work):
        messages, build = timed(steps.build, eng, times)
        records, fold = timed(steps.fold, messages)
        _, apply = timed(steps.apply, records)
        _, sparse = timed(steps.apply_every, records, k == len(work) - 1)
        rows.append((build, fold, apply, sparse, len(messages), len(records), sum(len(v) for _, _, v in messages)))
    t = np.asarray(rows)
    half = t[len(t) // 2:]
    print(f"{len(work)} batches of {args.batch} events ({name}), {args.partitions} pairs partitions, "
          f"top_m {args.top_m}, half-life {args.half_life_s:g} s; CPU ms per batch (thread time)\n")
    print("| step | mean ms | mean ms, 2nd half |")
    print("|---|---:|---:|")
    names = ("build (model thread)", "fold (aggregator)", "apply, every batch (model thread, each worker)",
             f"apply, every {args.apply_every} batches (per batch)")
    for k, name in enumerate(names):
        print(f"| {name} | {t[:, k].mean():.1f} | {half[:, k].mean():.1f} |")
    print(f"\npair messages per batch: {t[:, 4].mean():.0f} ({t[:, 6].sum() / max(1, t[:, 4].sum()):.0f} bytes each); "
          f"row records per batch: {t[:, 5].mean():.0f} ({t[:, 5].sum() / max(1, len(events)):.2f} per event)")


if __name__ == "__main__":
    main()
