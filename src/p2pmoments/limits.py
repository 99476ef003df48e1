"""Open files (issue 18): the soft limit raised toward the hard one at start, a spare
descriptor kept for when they run out, and accept() failures logged once an interval
with a count instead of once a try.

When a process has no descriptor left, asyncio's accept loop reports every failed
accept() to the loop's exception handler, which logs a traceback each time: millions
of them a minute, while every connection waits unanswered in the listen queue."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import socket
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "ACCEPT_LOG_INTERVAL",
    "WANT_OPEN_FILES",
    "AcceptGuard",
    "Throttle",
    "open_files_target",
    "raise_open_files_limit",
]

log = logging.getLogger(__name__)

WANT_OPEN_FILES = 65536  # enough for any load; more only makes a leak slower to see
ACCEPT_LOG_INTERVAL = 60.0
SHED_AT_ONCE = 256  # waiting connections closed per failed accept(), at most
OUT_OF_FILES = (errno.EMFILE, errno.ENFILE)


def open_files_target(soft: int, hard: int) -> int:
    """The soft limit to ask for: WANT_OPEN_FILES, or the hard limit if lower, and never
    below the present one (RLIM_INFINITY is -1)."""
    if soft == resource.RLIM_INFINITY:
        return soft
    ceiling = WANT_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, WANT_OPEN_FILES)
    return max(soft, ceiling)


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files toward the hard one; the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = open_files_target(soft, hard)
    if target != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open files limit from %d to %d: %s", soft, target, exc)
            return soft
    return target


class Throttle:
    """Counts what happens; once an interval, says how many times it happened."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._count = 0
        self._last: float | None = None

    def note(self, now: float) -> int:
        """Count one; the count to report now (the first, then one per interval), or 0."""
        self._count += 1
        if self._last is not None and now - self._last < self._interval:
            return 0
        count, self._count, self._last = self._count, 0, now
        return count


class AcceptGuard:
    """The loop's exception handler while the daemon runs: an accept() that fails for
    want of descriptors spends the spare one to take and close the connections waiting
    (so clients hear at once, and the listening socket does not stay readable), and is
    logged once per ACCEPT_LOG_INTERVAL with a count. Everything else goes on as before."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        interval: float = ACCEPT_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loop = loop
        self._clock = clock
        self._throttle = Throttle(interval)
        self._interval = interval
        self._previous = loop.get_exception_handler()
        self._spare: int | None = None
        self.shed = 0  # connections closed unanswered, in all

    def __enter__(self) -> AcceptGuard:
        self._spare = _open_spare()
        self._loop.set_exception_handler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.set_exception_handler(self._previous)
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        sock = context.get("socket")
        if isinstance(exc, OSError) and exc.errno in OUT_OF_FILES and sock is not None:
            shed = self._shed(sock.fileno())
            count = self._throttle.note(self._clock())
            if count:
                log.warning(
                    "out of open files: accept() failed %d times%s; closed %d waiting "
                    "connections unanswered (%d in all)",
                    count,
                    "" if count == 1 else f" in the last {self._interval:.0f} s",
                    shed,
                    self.shed,
                )
            return
        if self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)

    def _shed(self, fd: int) -> int:
        """Take and close the connections waiting on listening socket `fd`, with the
        spare descriptor freed for the purpose; how many."""
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None
        listener = socket.socket(fileno=fd)  # the loop's own socket: detached, not closed
        shed = 0
        try:
            listener.setblocking(False)
            while shed < SHED_AT_ONCE:
                try:
                    conn, _ = listener.accept()
                except OSError:  # none waiting, or still out of descriptors
                    break
                conn.close()
                shed += 1
        finally:
            listener.detach()
            self._spare = _open_spare()
        self.shed += shed
        return shed


def _open_spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # out of descriptors right now: try again at the next failure
        return None
