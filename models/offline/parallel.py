"""Independent offline work (trainings, searches, replays) in parallel processes.

``Jobs(n)`` is a pool of ``n`` worker processes (``spawn``: a fresh interpreter each, no state
copied from this one); ``submit(fn, *args)`` returns a ``concurrent.futures.Future``. With
``n == 1`` nothing is started: each submitted call runs at once in this process, so a serial run
and a parallel one run the same functions on the same arguments. Every process (this one too)
uses one intra-op torch thread and one BLAS thread, so float sums are taken in the same order
whatever the number of cores, and every training seeds its own generators: the results do not
depend on ``n`` (``tests/models/offline/test_parallel.py``).
"""
from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import logging
import multiprocessing
import os
import pickle
import threading
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from typing import Any, Callable

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def default_jobs() -> int:
    """Every core."""
    return os.cpu_count() or 1


def single_thread() -> None:
    """One intra-op thread for torch and the BLAS libraries in this process (the children of a
    ``Jobs`` pool inherit the variables before they load any library)."""
    for var in THREAD_VARIABLES:
        os.environ[var] = "1"
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


def _worker(level: int) -> None:
    """A pool process: one thread, and this process's log level (progress of long trainings)."""
    single_thread()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s [job %(process)d]: %(message)s")


def _call(payload: bytes) -> Any:
    """Run a job pickled at submission (``Jobs.submit``)."""
    fn, args, kwargs = pickle.loads(payload)
    return fn(*args, **kwargs)


class Jobs:
    """A pool of ``jobs`` processes (None: every core); a context manager.

    At most ``jobs`` calls run at once; a waiting call with a lower ``priority`` starts first
    (then in submission order), so the work the result waits on is not queued behind work that
    can wait. A call's arguments are pickled when it is submitted: what it runs on is what the
    caller had then, as in a serial run.
    """

    def __init__(self, jobs: int | None = None):
        self.jobs = max(1, int(jobs or default_jobs()))
        single_thread()
        self._pool = None
        self._waiting: list[tuple[int, int, bytes, Future]] = []  # heap: (priority, order, payload, future)
        self._order = itertools.count()
        self._running = 0
        self._lock = threading.Lock()
        if self.jobs > 1:
            self._pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_worker, initargs=(logging.getLogger().getEffectiveLevel(),))

    def submit(self, fn: Callable, *args: Any, priority: int = 0, **kwargs: Any) -> Future:
        """``fn(*args, **kwargs)`` as a job; lower ``priority`` first among the waiting jobs."""
        done: Future = Future()
        if self._pool is not None:
            payload = pickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
            with self._lock:
                heapq.heappush(self._waiting, (priority, next(self._order), payload, done))
            self._start()
            return done
        try:
            done.set_result(fn(*args, **kwargs))
        except Exception as exc:  # re-raised by result(), as a pool's future does
            done.set_exception(exc)
        return done

    @contextlib.contextmanager
    def working_here(self):
        """While this process itself computes (a selection the next jobs wait on): one process
        fewer runs jobs, so the work here does not share a core with ``jobs`` others. Jobs
        already running go on; no waiting one starts in the place taken."""
        with self._lock:
            self._running += 1
        try:
            yield
        finally:
            self._ended(None, None)

    def _start(self) -> None:
        """Hand waiting jobs to free processes."""
        with self._lock:
            starts = []
            while self._running < self.jobs and self._waiting:
                starts.append(heapq.heappop(self._waiting)[2:])
                self._running += 1
        for payload, done in starts:
            if not done.set_running_or_notify_cancel():
                self._ended(done, None)
                continue
            try:
                job = self._pool.submit(_call, payload)
            except Exception as exc:  # a broken or closed pool: the caller's result() raises it
                done.set_exception(exc)
                with self._lock:
                    self._running -= 1
                continue
            job.add_done_callback(functools.partial(self._ended, done))

    def _ended(self, done: Future | None, job: Future | None) -> None:
        with self._lock:
            self._running -= 1
        if job is not None:
            if job.cancelled():  # the pool shut down before it ran
                done.set_exception(CancelledError())
            elif job.exception() is not None:
                done.set_exception(job.exception())
            else:
                done.set_result(job.result())
        if self._pool is not None:
            self._start()

    def close(self) -> None:
        if self._pool is not None:
            with self._lock:
                waiting, self._waiting = self._waiting, []
            for *_, done in waiting:
                done.cancel()
            pool, self._pool = self._pool, None
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "Jobs":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
