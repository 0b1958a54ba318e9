"""A fatal error stops the process within a bounded time, whatever its parts are doing.

A worker that cannot go on (the cluster changed under it, a batch that cannot be handled or
delivered, a restore that failed) asks the app to stop, and its services stop one by one: the
consumers settle their batches, leave their groups, the producers flush. Any of those steps can
hang on a broker that is gone or on a group that is re-balancing. So ``begin`` also arms a hard
deadline in a daemon thread: if the process is still alive ``EXIT_DEADLINE_S`` seconds later, the
reason is written to stderr and the process ends with ``os._exit(code)``. Nothing is lost by that:
what was not committed is read again after a restart (``stream_app.checkpoint``).

``began()`` tells the consumers to fetch, handle and re-join nothing more.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time

log = logging.getLogger(__name__)

EXIT_DEADLINE_S = 10.0  # from the fatal error to the end of the process, at the latest

_began = threading.Event()
_reason: list[BaseException] = []


def began() -> bool:
    return _began.is_set()


def reason() -> BaseException | None:
    return _reason[0] if _reason else None


def begin(exc: BaseException, code: int = 1, deadline_s: float = EXIT_DEADLINE_S) -> bool:
    """Record the first fatal error and arm the deadline; False if one had begun already."""
    if _began.is_set():
        return False
    _reason.append(exc)
    _began.set()
    threading.Thread(target=_deadline, args=(exc, code, deadline_s, time.monotonic()),
                     name="fatal-deadline", daemon=True).start()
    return True


def _deadline(exc: BaseException, code: int, deadline_s: float, t0: float) -> None:
    time.sleep(deadline_s)
    message = (f"stream-app worker stopped: {exc!r} (forced exit: the shutdown had not finished "
               f"{time.monotonic() - t0:.1f} s after the error)")
    try:
        log.critical(message)
        for handler in logging.getLogger().handlers:
            handler.flush()
        print(message, file=sys.stderr, flush=True)
        sys.stdout.flush()
    finally:
        os._exit(code)
