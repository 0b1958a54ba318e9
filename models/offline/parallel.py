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

import logging
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
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


class Jobs:
    """A pool of ``jobs`` processes (None: every core); a context manager."""

    def __init__(self, jobs: int | None = None):
        self.jobs = max(1, int(jobs or default_jobs()))
        single_thread()
        self._pool = None
        if self.jobs > 1:
            self._pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_worker, initargs=(logging.getLogger().getEffectiveLevel(),))

    def submit(self, fn: Callable, *args: Any, **kwargs: Any) -> Future:
        if self._pool is not None:
            return self._pool.submit(fn, *args, **kwargs)
        done: Future = Future()
        try:
            done.set_result(fn(*args, **kwargs))
        except Exception as exc:  # re-raised by result(), as a pool's future does
            done.set_exception(exc)
        return done

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "Jobs":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
