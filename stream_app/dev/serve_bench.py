"""In-process serving cost of a trained checkpoint: ``python -m stream_app.dev.serve_bench``.

No Kafka: the data set's catalogue is indexed through ``Processor.index_items`` (item vectors from
the encoder's disk cache when present), the first ``--warm`` events of the time-ordered log are
folded in through ``Processor.apply_batch`` (states kept as bytes, as the worker's table keeps
them), then the next ``--events`` events are measured:

* ``apply``: ``InterestModel.replay`` over those events (per event: state update and
  co-engagement counts), and again without updating the counts;
* ``recommend``: one ``InterestModel.recommend`` per touched user, with the blend, and with the
  attention fusion alone; ``recommend_many``: all of them in one call (what a batch does);
* ``apply_batch``: the whole ``Processor.apply_batch`` (decode states, replay, rank each touched
  user) over the events in batches of each ``--batch`` size.

Every measurement starts from the same states and co-engagement counts and is repeated
``--repeats`` times; the best repeat is reported, by wall clock and by the CPU time of the
measuring thread (the second is what one core can do when others compete for the machine).
BLAS runs on one thread unless ``--threads``.
"""
from __future__ import annotations

import argparse
import os
import sys


def _pin_threads(n: int) -> None:
    """Set BLAS / OpenMP threads; effective only before numpy is first imported."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


if __name__ == "__main__":  # before numpy is imported
    _threads = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--threads=")), "1")
    _pin_threads(int(_threads))

import gc  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Sequence  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CHECKPOINT_DIRS = (REPO / "runs" / "checkpoints", Path.home() / ".cache" / "stream-reco" / "demo-checkpoints")


def find_checkpoint(name: str = "fusion-ml-100k-") -> Path:
    """The newest checkpoint folder named ``name*`` where ``make train`` and ``make demo`` put them."""
    found = [p for d in CHECKPOINT_DIRS for p in d.glob(f"**/{name}*") if (p / "config.json").exists()]
    if not found:
        raise SystemExit(f"no {name}* checkpoint under {', '.join(map(str, CHECKPOINT_DIRS))}; pass --checkpoint")
    return max(found, key=lambda p: p.name)


def find_dataset() -> Path:
    """ml-100k under STREAM_RECO_DATA_ROOT, else <repo>/../shared/data."""
    root = os.environ.get("STREAM_RECO_DATA_ROOT") or REPO.parent / "shared" / "data"
    path = Path(root) / "ml-100k"
    if not path.exists():
        raise SystemExit(f"{path} not found; pass --dataset")
    return path


class _StubEncoder:
    """Deterministic unit vectors per text (only when the real encoder cannot load)."""

    dim, device = 384, "cpu"

    def encode(self, texts):
        out = np.stack([np.random.default_rng(abs(hash(t)) % 2**32).normal(size=self.dim) for t in texts])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def build(checkpoint: Path):
    from models.engine import InterestModel
    from models.features import TextSentiment
    from stream_app.codec import Codec
    from stream_app.processor import Processor

    try:
        from models.encoder import build_encoder

        encoder = build_encoder(device="cpu", batch_size=64, threads=1,
                                disk_cache=str(Path.home() / ".cache" / "stream-reco" / "vectors"))
    except Exception as exc:  # no weights here: timings do not depend on the vectors' values
        print(f"encoder unavailable ({type(exc).__name__}); using stand-in vectors", file=sys.stderr)
        encoder = _StubEncoder()
    return Processor(InterestModel.load(checkpoint), encoder, TextSentiment(), Codec.load())


class _Clock:
    """Wall and thread CPU seconds since ``start``."""

    def start(self) -> None:
        self.t0 = (time.perf_counter(), time.thread_time())

    def stop(self) -> np.ndarray:
        return np.array([time.perf_counter() - self.t0[0], time.thread_time() - self.t0[1]])


def _best(fn: Callable[[_Clock], float], repeats: int, reset: Callable[[], None]) -> list[float]:
    """fn(clock) -> work done per timed second pair; -> the best (wall, cpu) seconds per unit."""
    best = np.full(2, np.inf)
    for _ in range(repeats):
        reset()
        best = np.minimum(best, fn(_Clock()))
    return best.tolist()


def measure(proc, events: list[dict], stored: dict[str, bytes], batches: Sequence[int], repeats: int) -> list[list]:
    from models.state import UserState
    from stream_app.processor import to_event

    model = proc.model
    counts0 = model.cooc.counts.copy() if model.cooc is not None else None
    evs = [to_event(m) for m in events]
    users = list(dict.fromkeys(e.user_id for e in evs))
    fresh: dict = {}

    def reset() -> None:
        if counts0 is not None:
            model.cooc.counts = counts0.copy()
        fresh.clear()
        fresh.update({u: UserState.from_bytes(stored[u]) if u in stored else model.new_state() for u in users})

    def apply(clock: _Clock, learn: bool) -> np.ndarray:
        clock.start()
        for _ in model.replay(evs, fresh, learn=None if learn else (lambda e: False)):
            pass
        return clock.stop() / len(evs)

    def recommend(clock: _Clock, blend: bool) -> np.ndarray:
        for _ in model.replay(evs, fresh):
            pass
        saved, model.blend = model.blend, (model.blend if blend else None)
        try:
            clock.start()
            for u in users:
                model.recommend(fresh[u], proc.top_k)
            return clock.stop() / len(users)
        finally:
            model.blend = saved

    def recommend_many(clock: _Clock) -> np.ndarray:
        for _ in model.replay(evs, fresh):
            pass
        clock.start()
        model.recommend_many([fresh[u] for u in users], proc.top_k)
        return clock.stop() / len(users)

    def batch_run(clock: _Clock, size: int) -> np.ndarray:
        states = dict(stored)
        clock.start()
        for i in range(0, len(events), size):
            chunk = events[i:i + size]
            res = proc.apply_batch(chunk, {u: states.get(u) for u in dict.fromkeys(e["user_id"] for e in chunk)})
            states.update({u: st.to_bytes() for u, st in res.states.items()})
        return clock.stop() / len(events)

    def us(fn: Callable[[_Clock], np.ndarray]) -> list[float]:
        return [1e6 * t for t in _best(fn, repeats, reset)]

    rows = [["apply, µs/event", *us(lambda c: apply(c, True))],
            ["apply without co-engagement counts, µs/event", *us(lambda c: apply(c, False))],
            [f"recommend, µs/call ({len(users)} users)", *us(lambda c: recommend(c, True))],
            ["recommend, attention fusion alone, µs/call", *us(lambda c: recommend(c, False))],
            [f"recommend_many, all {len(users)} users in one call, µs/list", *us(recommend_many)]]
    for size in batches:
        n_b = -(-len(events) // size)
        rows.append([f"apply_batch of {size:,} ({n_b} batches; states as bytes), events/s",
                     *[1e6 / t for t in us(lambda c: batch_run(c, size))]])
    reset()
    return rows


def warm_states(proc, events: list[dict], size: int = 5000) -> dict[str, bytes]:
    states: dict[str, bytes] = {}
    for i in range(0, len(events), size):
        chunk = events[i:i + size]
        res = proc.apply_batch(chunk, {u: states.get(u) for u in dict.fromkeys(e["user_id"] for e in chunk)})
        states.update({u: st.to_bytes() for u, st in res.states.items()})
    return states


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", help="checkpoint folder (default: newest fusion-ml-100k-*)")
    ap.add_argument("--dataset", help="data set folder (default: ../shared/data/ml-100k)")
    ap.add_argument("--warm", type=int, default=20_000, help="events folded in before measuring")
    ap.add_argument("--events", type=int, default=5_000, help="events measured")
    ap.add_argument("--batch", type=int, nargs="+", default=[500, 5000])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (use --threads=N)")
    args = ap.parse_args(argv)

    from stream_app.dev.bench import markdown_table
    from stream_app.dev.replay import prepare

    checkpoint = Path(args.checkpoint) if args.checkpoint else find_checkpoint()
    _, catalog, events = prepare(args.dataset or find_dataset(), args.warm + args.events)
    proc = build(checkpoint)
    proc.index_items(catalog)
    stored = warm_states(proc, events[: args.warm])
    gc.freeze()  # as the worker does after start-up (stream_app.worker): no full collections over torch's objects
    rows = measure(proc, events[args.warm:], stored, args.batch, args.repeats)
    print(f"checkpoint {checkpoint.name}; {len(catalog):,} items; events {args.warm:,}..{len(events):,} "
          f"of the time-ordered log after {args.warm:,} folded in; best of {args.repeats}; "
          f"BLAS threads {os.environ.get('OPENBLAS_NUM_THREADS', 'default')}; "
          f"load {os.getloadavg()[0]:.2f} ({os.cpu_count()} cpus)\n")
    print(markdown_table(["measure", "wall clock", "thread CPU"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
