"""Logging to standard output (the journal under systemd), bounded in rate: no kind of
record can fill a disk or the journal however often it happens (issue 18)."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable

__all__ = ["BURST", "INTERVAL", "RateLimit", "configure_logging"]

BURST = 50  # records of one kind let through per INTERVAL
INTERVAL = 60.0
MAX_KINDS = 1000


class RateLimit(logging.Filter):
    """At most `burst` records of one kind (logger, level and message template) per
    `interval`; past that they are counted, and the first one of the next interval
    says how many were left out."""

    def __init__(
        self,
        burst: int = BURST,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._burst, self._interval, self._clock = burst, interval, clock
        self._kinds: dict[tuple[str, int, str], list[float]] = {}  # [start, count, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        now = self._clock()
        key = (record.name, record.levelno, str(record.msg)[:200])
        kind = self._kinds.get(key)
        if kind is None:
            if len(self._kinds) >= MAX_KINDS:
                self._forget(now)
            kind = self._kinds[key] = [now, 0, 0]
        if now - kind[0] >= self._interval:
            dropped = int(kind[2])
            kind[:] = [now, 0, 0]
            if dropped and isinstance(record.msg, str):
                record.msg += f" [{dropped} more like this left out in {self._interval:.0f} s]"
        if kind[1] < self._burst:
            kind[1] += 1
            return True
        kind[2] += 1
        return False

    def _forget(self, now: float) -> None:
        stale = [k for k, v in self._kinds.items() if now - v[0] >= self._interval]
        for key in stale or list(self._kinds):
            del self._kinds[key]


def configure_logging(level: str) -> None:
    """Send log records at `level` and above to stdout; no timestamps under the journal."""
    under_journal = "JOURNAL_STREAM" in os.environ
    fmt = (
        "%(levelname)s %(name)s: %(message)s"
        if under_journal
        else ("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(RateLimit())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log would print every API call at info level.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
