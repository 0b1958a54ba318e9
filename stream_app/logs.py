"""Logging that stays readable during an outage: the same warning or error repeated many times a
second (a broker that is down makes every client retry and log) is let through a few times per
interval, then summarised.

>>> import logging
>>> f = RateLimit(burst=2, interval_s=60.0, clock=lambda: 0.0)
>>> rec = lambda: logging.LogRecord("aiokafka", logging.ERROR, "x", 1, "Unable connect to %s", ("k:9",), None)
>>> [f.filter(rec()) for _ in range(4)]
[True, True, False, False]
"""
from __future__ import annotations

import logging
import time
from typing import Callable


class RateLimit(logging.Filter):
    """Per (logger, message template): at most ``burst`` records of WARNING and above per
    ``interval_s``; the next record after a quiet interval says how many were suppressed."""

    def __init__(self, burst: int = 5, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.burst, self.interval_s, self.clock = burst, interval_s, clock
        self._seen: dict[tuple[str, str], list[float]] = {}  # key -> [window start, count, suppressed]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        start, count, suppressed = self._seen.get(key, (now, 0, 0))
        if now - start >= self.interval_s:
            if suppressed:
                record.msg = f"{record.msg} [{suppressed} similar messages suppressed in the last {self.interval_s:.0f} s]"
            start, count, suppressed = now, 0, 0
        count += 1
        allowed = count <= self.burst
        self._seen[key] = (start, count, suppressed + (0 if allowed else 1))
        return allowed


def install(logger: logging.Logger | None = None, **kw) -> RateLimit:
    """Add one rate limit to every handler of ``logger`` (the root logger by default)."""
    f = RateLimit(**kw)
    for handler in (logger or logging.getLogger()).handlers:
        handler.addFilter(f)
    return f
