"""Run the reliability scenarios N times against a real broker and print a markdown table.

    python -m tests.support.reliability --runs 3                      # every scenario, 3 times
    python -m tests.support.reliability --runs 10 --scenarios crash,leave
    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python -m tests.support.reliability --runs 2

The scenarios are exactly those of ``tests/integration/test_reliability.py`` (they live in
``tests/support/reliability/``): ``duplicates``, ``forget``, ``fuzz``, ``keys`` and the
rebalances under load ``leave`` (SIGTERM), ``join`` and ``crash`` (SIGKILL). Each run starts its own
workers on fresh topics; without ``KAFKA_BOOTSTRAP_SERVERS`` (or ``--bootstrap``) a local Apache
Kafka is started for the whole session. Run it from the repository root with the test extra
installed (``pip install -e '.[test]'``: confluent-kafka, jsonschema). Exit status 1 when any run
failed; each failure's report follows the table.

>>> print(table([{"scenario": "crash", "runs": 2, "failed": 1, "sent": 20000, "lost": 3, "doubled": 0,
...               "dead_lettered": 0, "seconds": 61.0}]))
| scenario | runs | failed runs | events sent | lost | doubled | dead-lettered | mean s |
|---|--:|--:|--:|--:|--:|--:|--:|
| crash | 2 | 1 | 20000 | 3 | 0 | 0 | 30.5 |
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from tests.support import reliability as h
from tests.support.workers import WorkerProcess

ALL = ("duplicates", "forget", "fuzz", "keys", "leave", "join", "crash")
COLUMNS = [("scenario", "scenario"), ("runs", "runs"), ("failed", "failed runs"), ("sent", "events sent"),
           ("lost", "lost"), ("doubled", "doubled"), ("dead_lettered", "dead-lettered"), ("seconds", "mean s")]


def table(rows: list[dict]) -> str:
    """The markdown table; ``seconds`` is summed over the runs and shown as a mean."""
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|---|" + "--:|" * (len(COLUMNS) - 1)
    lines = [head, rule]
    for r in rows:
        cells = [str(r["scenario"])]
        for key, _ in COLUMNS[1:]:
            cells.append(f"{r[key] / max(r['runs'], 1):.1f}" if key == "seconds" else str(r[key]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.support.reliability", description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3, help="runs per scenario (default 3)")
    p.add_argument("--scenarios", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", ""),
                   help="Kafka bootstrap servers; empty: start a local broker")
    p.add_argument("--rate", type=float, default=500, help="events/s of the rebalance scenarios")
    p.add_argument("--seconds", type=float, default=20, help="load duration of the rebalance scenarios")
    p.add_argument("--partitioner", choices=("murmur2_random", "consistent_random"), default="murmur2_random",
                   help="how the rebalance scenarios' producer places keys: murmur2_random (Java's) or "
                        "consistent_random (CRC32, librdkafka's default) (default: %(default)s)")
    args = p.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = sorted(set(args.scenarios) - set(ALL))
    if unknown:
        p.error(f"unknown scenarios {unknown}; choose from {', '.join(ALL)}")
    return args


class Workers:
    """A ``worker_factory`` like the tests' fixture; ``stop_all`` cleans up after each run."""

    def __init__(self, bootstrap: str, logs: Path, worker_cls: type[WorkerProcess]):
        self.bootstrap, self.logs, self.cls, self.started = bootstrap, logs, worker_cls, []

    def __call__(self, prefix: str | None = None, extra_env: dict | None = None):
        import uuid

        w = self.cls(self.bootstrap, prefix or f"r{uuid.uuid4().hex[:8]}-", self.logs, extra_env)
        self.started.append(w)
        return w

    def stop_all(self) -> None:
        for w in self.started:
            w.stop()
        self.started.clear()


def run_one(name: str, bootstrap: str, workers: Workers, args: argparse.Namespace):
    try:
        if name in ("duplicates", "forget", "fuzz"):
            w = h.start_worker(workers, bootstrap)
            return getattr(h, f"scenario_{name}")(bootstrap, w)
        if name == "keys":
            return h.scenario_keys(bootstrap, workers)
        return h.scenario_rebalance(bootstrap, workers, name, rate=args.rate, seconds=args.seconds,
                                    partitioner=args.partitioner)
    except Exception as exc:  # a worker that would not start, a broken harness: a failed run
        return h.Outcome(name, problems=[f"run aborted: {exc!r}"[:3000]])
    finally:
        workers.stop_all()


def run_all(bootstrap: str, args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    logs = Path(tempfile.mkdtemp(prefix="stream-reco-reliability-"))
    print(f"broker {bootstrap}; worker logs in {logs}", file=sys.stderr, flush=True)
    workers = Workers(bootstrap, logs, WorkerProcess)
    rows, failures = [], []
    for name in args.scenarios:
        row = {"scenario": name, "runs": 0, "failed": 0, "sent": 0, "lost": 0, "doubled": 0,
               "dead_lettered": 0, "seconds": 0.0}
        for i in range(args.runs):
            t0 = time.monotonic()
            o = run_one(name, bootstrap, workers, args)
            row["runs"] += 1
            row["failed"] += not o.ok
            for key in ("sent", "lost", "doubled", "dead_lettered"):
                row[key] += getattr(o, key)
            row["seconds"] += time.monotonic() - t0
            print(f"[{name} {i + 1}/{args.runs}] {'ok' if o.ok else 'FAILED'}: {o.report().splitlines()[0]}",
                  file=sys.stderr, flush=True)
            if not o.ok:
                failures.append(f"### {name}, run {i + 1}\n\n```\n{o.report()}\n```")
        rows.append(row)
    return rows, failures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.bootstrap:
        rows, failures = run_all(args.bootstrap, args)
    else:
        from stream_app.dev.broker import LocalKafka

        with LocalKafka(partitions=4) as kafka:
            rows, failures = run_all(kafka.bootstrap_servers, args)
    print(table(rows))
    if failures:
        print("\n## Failed runs\n")
        print("\n\n".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
