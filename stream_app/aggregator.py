"""The co-engagement aggregator (``stream_app.cooc_stream.CoocAggregator``) in a process of its own.

A worker is one Python process: its event loop, its model thread and the aggregator's fold thread
take turns on one interpreter lock, so at most about one core does Python work however many the
machine has. The aggregator shares nothing with the hot path but Kafka (its own consumer group on
the pairs topic, its own producer to the rows changelog, which every worker follows), so a worker
runs it as a child process by default (``STREAM_RECO_COOC_AGGREGATOR``):

* ``process``: ``AggregatorProcess``, a service of the worker, starts ``stream-app aggregate`` with
  the worker's settings and watches it. The child dies with the worker (``PR_SET_PDEATHSIG``, and
  it checks its parent every second), so a killed worker takes its aggregator along, as one
  process did. The worker is ready once its child runs; a child that exits while the worker runs
  stops the worker (non-zero exit, with the child's reason), as a failure of any of its consumers
  does. The child's counters (pair messages folded, rows written, the pairs topic's lag) reach the
  worker's ``/stats`` and ``/metrics`` as JSON lines on its stdout (``Channel``).
* ``thread``: in the worker process, as one more service (one process, one lock).
* ``none``: not in this worker: ``stream-app aggregate`` runs elsewhere (at least one must run,
  or the co-engagement counts learned online stay empty).

The guarantees are the aggregator's own (``stream_app.cooc_stream``): it folds each pair message
exactly once by the offsets in its rows, whichever process it runs in.
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

import mode
import orjson

from stream_app.sensor import Sensor
from stream_app.settings import Settings
from stream_app.topics import TopicNames

log = logging.getLogger(__name__)

PARENT_VAR = "STREAM_RECO_AGGREGATOR_PARENT"  # the worker's pid, set for its child
FORWARDED = ("on_rows_folded", "on_lag")  # the sensor calls a child passes to its worker
STOP_GRACE_S = 15.0  # a stopping worker waits this long for its child before it kills it


class Channel:
    """The child's side of its stdout, one JSON object a line: ``{"call": name, "args": [...]}``
    for each sensor call of ``FORWARDED`` (``AggregatorProcess`` makes the same call on the
    worker's sensor), ``{"started": true}`` once it runs, ``{"failed": reason}`` before it stops
    after a failure."""

    def __init__(self, out=None):
        self.out = out or sys.stdout.buffer

    def send(self, message: dict) -> None:
        self.out.write(orjson.dumps(message) + b"\n")
        self.out.flush()


class ForwardingSensor:
    """The child's sensor: each of ``FORWARDED`` through the ``Channel``."""

    def __init__(self, channel: Channel):
        self.channel = channel

    def __getattr__(self, name: str):
        if name not in FORWARDED:
            raise AttributeError(name)
        return lambda *args: self.channel.send({"call": name, "args": list(args)})


@dataclass
class AggregatorContext:
    """What ``CoocAggregator`` reads of a worker's ``stream_app.context.Context``."""

    settings: Settings
    topics: TopicNames
    sensor: Any = field(default_factory=Sensor)
    failed: BaseException | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def consumer_options(self) -> dict[str, Any]:
        return dict(settings=self.settings, client_id=f"{self.settings.app_id} aggregator", crash=self.crash,
                    sensor=self.sensor, warm_topics=(self.topics.cooc_pairs, self.topics.cooc_rows_changelog))

    async def crash(self, exc: BaseException) -> None:
        self.failed = self.failed or exc
        self.stopping.set()


def die_with_parent(parent: int) -> None:
    """Ask the kernel to kill this process when its parent dies (Linux); exit now if it has."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the watch in ``run_aggregator`` notices within a second
    if os.getppid() != parent:
        os._exit(1)


async def _serve(settings: Settings, parent: int | None) -> int:
    from stream_app.cooc_stream import CoocAggregator

    channel = Channel() if parent else None
    ctx = AggregatorContext(settings, TopicNames.from_settings(settings),
                            sensor=ForwardingSensor(channel) if channel else Sensor())
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, ctx.stopping.set)
    if parent:  # Ctrl-C reaches the terminal's whole process group: the worker stops its child itself
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    else:
        loop.add_signal_handler(signal.SIGINT, ctx.stopping.set)
    service = CoocAggregator(ctx)
    try:
        await service.start()
    except Exception as exc:  # no broker, a refused login: the worker stops with the reason
        ctx.failed = exc
    else:
        log.info("co-engagement aggregator started (group of %s)", ctx.topics.cooc_pairs)
        if channel:
            channel.send({"started": True})
    while not ctx.stopping.is_set() and ctx.failed is None:
        if parent and os.getppid() != parent:
            log.warning("the worker that started this aggregator is gone: stopping")
            break
        try:
            await asyncio.wait_for(ctx.stopping.wait(), timeout=1.0)
        except asyncio.TimeoutError:
            pass
    try:
        await service.stop()
    except Exception as exc:  # stopping what failed to start: the first failure is the one told
        log.warning("co-engagement aggregator: stop: %r", exc)
    if ctx.failed is not None:
        if channel:
            channel.send({"failed": repr(ctx.failed)})
        print(f"stream-app aggregate stopped: {ctx.failed!r}", file=sys.stderr, flush=True)
        return 1
    return 0


def run_aggregator(settings: Settings) -> int:
    """``stream-app aggregate``: the aggregator alone until SIGTERM / SIGINT (or, started by a
    worker, until the worker is gone); the exit code is non-zero after a failure."""
    parent = int(os.environ.get(PARENT_VAR, "0")) or None
    if parent:
        die_with_parent(parent)
    if not settings.bootstrap_servers:
        raise SystemExit("KAFKA_BOOTSTRAP_SERVERS is not set: point it at your Kafka cluster")
    if not parent:  # a worker made the topics before it started this one
        from stream_app.topics import ensure_topics
        ensure_topics(settings, timeout_s=30.0)
    return asyncio.run(_serve(settings, parent))


class AggregatorProcess(mode.Service):
    """The worker's child running ``stream-app aggregate`` (module doc). Started once the child
    runs (so a worker is ready only with its aggregator, as with it in process); a child that
    stops while the worker runs stops the worker, with the child's reason."""

    def __init__(self, settings: Settings, sensor, crash, **kwargs):
        self.settings, self.sensor, self.crash = settings, sensor, crash
        self.proc: asyncio.subprocess.Process | None = None
        self.running = asyncio.Event()
        self.reason = ""  # the child's failure, as it told
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        env = {**os.environ, **self.settings.env(), PARENT_VAR: str(os.getpid())}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "stream_app.cli", "aggregate", env=env, stdout=asyncio.subprocess.PIPE)
        log.info("co-engagement aggregator: process %d", self.proc.pid)
        exited = asyncio.ensure_future(self._read())
        started = asyncio.ensure_future(self.running.wait())
        await asyncio.wait({exited, started}, return_when=asyncio.FIRST_COMPLETED)
        if not self.running.is_set():
            started.cancel()
            raise RuntimeError(self._stopped(await exited))
        self.add_future(self._watch(exited))

    def _stopped(self, code: int) -> str:
        return (f"the co-engagement aggregator (process {self.proc.pid if self.proc else '?'}) stopped "
                f"(exit code {code}){': ' + self.reason if self.reason else ''}")

    async def _read(self) -> int:
        """Every line of the child until it ends -> its exit code."""
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        while line := await proc.stdout.readline():
            try:
                msg = orjson.loads(line)
            except orjson.JSONDecodeError:
                log.info("aggregator: %s", line.decode(errors="replace").rstrip())
                continue
            if msg.get("call") in FORWARDED:
                getattr(self.sensor, msg["call"])(*msg.get("args", ()))
            elif msg.get("started"):
                self.running.set()
            elif "failed" in msg:
                self.reason = str(msg["failed"])
        return await proc.wait()

    async def _watch(self, exited: asyncio.Future) -> None:
        code = await exited
        if not self.should_stop:
            await self.crash(RuntimeError(self._stopped(code)))

    async def on_stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout=STOP_GRACE_S)
        except asyncio.TimeoutError:
            log.warning("co-engagement aggregator (process %d) did not stop in %.0f s: killed", proc.pid,
                        STOP_GRACE_S)
            proc.kill()
            await proc.wait()
