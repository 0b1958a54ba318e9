"""Restore rate of the user-state store per backend: `python -m stream_app.dev.store_bench`.

Writes ``--states`` user states of ``--bytes`` each (random bytes: nothing for compression to
gain), with writer-epoch headers as the worker writes them, to a fresh changelog topic of
``--partitions`` partitions, then restores every partition into a ``UserStore`` of each backend,
each restore in a process of its own (so one backend's freed memory does not flatter the next),
``--repeats`` times, backends taking turns. Prints one markdown table: states restored per second,
MB/s of state, and how much the process's resident memory grew across the restore (the memory
backend holds every state; the rocksdb one its memtables and LRU cache).

Broker: ``--bootstrap`` (or KAFKA_BOOTSTRAP_SERVERS), else a throw-away local broker
(``stream_app.dev.broker.LocalKafka``). The rocksdb databases go to ``--state-dir`` (default: a
temporary folder, removed afterwards).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid

BACKENDS = ("memory", "rocksdb")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def fill(bootstrap: str, topic: str, partitions: int, states: int, size: int) -> None:
    from aiokafka import AIOKafkaProducer

    from stream_app import fencing
    from stream_app.topics import ensure_topics_async

    await ensure_topics_async(bootstrap, [], [topic], partitions=partitions)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                                max_batch_size=1 << 20, max_request_size=8 << 20)
    await producer.start()
    try:
        rng, headers, pending = random.Random(1), fencing.headers(1, "bench"), []
        for i in range(states):
            key = f"user-{i:08d}".encode()
            pending.append(await producer.send(topic, key=key, value=rng.randbytes(size),
                                               partition=i % partitions, headers=headers))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def measure(bootstrap: str, topic: str, partitions: int, backend: str, state_dir: str) -> dict:
    """One restore of every partition of ``topic`` into a store of ``backend``."""
    from stream_app.state_backends import open_backend
    from stream_app.store import UserStore

    store = UserStore(bootstrap, topic, backend=open_backend(backend, state_dir, topic))
    await store.start()
    try:
        before = rss_mb()
        t0 = time.perf_counter()
        await store.restore(range(partitions))
        seconds = time.perf_counter() - t0
        return {"backend": backend, "states": len(store), "seconds": seconds, "rss_mb": rss_mb() - before}
    finally:
        await store.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--states", type=int, default=100_000)
    ap.add_argument("--bytes", type=int, default=2048, help="size of one state")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", ""))
    ap.add_argument("--state-dir", default="")
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # one restore (child process): backend
    ap.add_argument("--topic", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.measure:
        print(json.dumps(asyncio.run(measure(a.bootstrap, a.topic, a.partitions, a.measure, a.state_dir))))
        return
    kafka = None
    if not a.bootstrap:
        from stream_app.dev.broker import LocalKafka

        kafka = LocalKafka(partitions=a.partitions).start()
        a.bootstrap = kafka.bootstrap_servers
    state_dir = a.state_dir or tempfile.mkdtemp(prefix="store-bench-")
    try:
        table = run(a, state_dir)
    finally:
        if kafka is not None:
            kafka.stop()
        if not a.state_dir:
            import shutil

            shutil.rmtree(state_dir, ignore_errors=True)
    print(table)


def run(a, state_dir: str) -> str:
    topic = f"store-bench-{uuid.uuid4().hex[:8]}-changelog"
    t0 = time.perf_counter()
    asyncio.run(fill(a.bootstrap, topic, a.partitions, a.states, a.bytes))
    print(f"wrote {a.states} states of {a.bytes} B to {topic} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    runs: dict[str, list[dict]] = {b: [] for b in a.backends.split(",")}
    for i in range(a.repeats):
        for backend in runs:
            out = subprocess.run([sys.executable, "-m", "stream_app.dev.store_bench", "--measure", backend,
                                  "--topic", topic, "--bootstrap", a.bootstrap, "--partitions", str(a.partitions),
                                  "--state-dir", state_dir], capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"run {i + 1} {backend}: {r}", file=sys.stderr)
            runs[backend].append(r)
    mb = a.states * a.bytes / 2**20
    lines = ["| backend | states | state MB | restore s (best of %d) | states/s | MB/s | RSS growth MB |" % a.repeats,
             "|---|---:|---:|---:|---:|---:|---:|"]
    for backend, rs in runs.items():
        best = min(rs, key=lambda r: r["seconds"])
        lines.append(f"| {backend} | {best['states']:,} | {mb:.0f} | {best['seconds']:.2f} | "
                     f"{best['states'] / best['seconds']:,.0f} | {mb / best['seconds']:.0f} | {best['rss_mb']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
