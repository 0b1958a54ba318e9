"""Run a ``stream-app worker`` as a child process: for the demo, the benchmark and the tests.

    with LocalWorker(settings) as worker:      # free web port, its own log file
        print(worker.stats())                  # the worker's /stats, or None while it is not up
        print(worker.settings.web_port, worker.log_path)

The child gets exactly ``settings`` through its environment (``Settings.env()``), so it reads the
same topics, application id and tuning as the caller. ``start`` returns once ``/stats`` answers and
the worker has logged that it is Ready; ``stop`` sends SIGTERM and kills the worker if it has not
shut down within the grace period.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path
from typing import IO, Mapping, Sequence

import orjson

from stream_app.dev.broker import free_port
from stream_app.settings import Settings

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the repository: a worker runs this tree's code
READY_MARK = b"Ready"


def fetch_stats(host: str, port: int, timeout: float = 1.0, token: str = "") -> dict | None:
    """The worker's ``/stats`` document, or None when nothing answers there (yet). ``token``: the
    worker's ``STREAM_RECO_HTTP_TOKEN``, when it has one."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(f"http://{host}:{port}/stats", headers=headers),
                                    timeout=timeout) as r:
            return orjson.loads(r.read())
    except Exception:
        return None


class LocalWorker:
    """One worker process with its own log file and web port.

    ``web_port``: None picks a free loopback port (``settings.web_port`` is then replaced), so
    several workers can run side by side. ``extra_env`` is merged last into the child's
    environment. ``wrapper`` is prepended to the command line (e.g. a profiler's launcher).
    """

    def __init__(self, settings: Settings, *, web_port: int | None = None, log_path: str | Path | None = None,
                 extra_env: Mapping[str, str] | None = None, wrapper: Sequence[str] = (),
                 cwd: str | Path | None = None):
        self.settings = replace(settings, web_port=web_port or free_port(),  # the child's cwd differs
                                checkpoint=str(Path(settings.checkpoint).resolve()) if settings.checkpoint else "")
        if log_path is None:
            folder = Path(tempfile.mkdtemp(prefix="stream-reco-worker-"))
            log_path = folder / f"worker-{uuid.uuid4().hex[:6]}.log"
        self.log_path = Path(log_path)
        self.env = {**os.environ, **self.settings.env(), **(extra_env or {})}
        self.command = [*wrapper, sys.executable, "-m", "stream_app.cli", "worker"]
        self.cwd = Path(cwd) if cwd is not None else PROJECT_ROOT
        self.proc: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None

    @property
    def port(self) -> int:
        return self.settings.web_port

    def start(self, timeout: float = 120.0) -> "LocalWorker":
        """Start the process and wait until it serves ``/stats`` and has logged Ready."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        log.info("worker pid %d on web port %d, log %s", self.proc.pid, self.port, self.log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self._close_log()
                raise RuntimeError(f"worker exited with {code}; log {self.log_path}:\n{self.log()[-5000:]}")
            if self.stats() is not None and READY_MARK in self.log_path.read_bytes():
                return self
            time.sleep(0.5)
        tail = self.log()[-5000:]
        self.stop()
        raise TimeoutError(f"worker not ready within {timeout:.0f}s; log {self.log_path}:\n{tail}")

    def stats(self) -> dict | None:
        """The worker's ``/stats`` document, or None when it does not answer."""
        return fetch_stats("127.0.0.1", self.port, token=self.settings.http_token)

    def log(self) -> str:
        """The worker's output so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the worker process has used so far (Linux), else None."""
        if self.proc is None:
            return None
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit code (None if never started)."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    log.warning("worker pid %d ignored SIGTERM for %.0fs; killing it", self.proc.pid, grace)
                    self.proc.kill()
                    self.proc.wait()
            code = self.proc.returncode
        self._close_log()
        return code

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "LocalWorker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
