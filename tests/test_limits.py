"""Open files and the log under a flood (issue 18): the soft limit raised, accept()
failures shed and logged once an interval, and no kind of log record let through
without bound."""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from p2pmoments.limits import WANT_OPEN_FILES, AcceptGuard, Throttle, open_files_target
from p2pmoments.logs import RateLimit

INF = resource.RLIM_INFINITY


@pytest.mark.parametrize(
    ("soft", "hard", "target"),
    [
        (1024, 4096, 4096),
        (1024, 1024, 1024),
        (1024, INF, WANT_OPEN_FILES),
        (1024, 1 << 20, WANT_OPEN_FILES),
        (100_000, 200_000, 100_000),  # never lowered
        (INF, INF, INF),
    ],
)
def test_the_soft_limit_is_raised_toward_the_hard_one(soft: int, hard: int, target: int) -> None:
    assert open_files_target(soft, hard) == target


def test_a_throttle_reports_the_first_then_a_count_per_interval() -> None:
    throttle = Throttle(60)
    assert [throttle.note(t) for t in (0, 1, 2, 59)] == [1, 0, 0, 0]
    assert throttle.note(60) == 4  # three held back, and this one
    assert throttle.note(61) == 0


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    yield sock
    sock.close()


def test_out_of_files_the_waiting_connections_are_closed_and_logged_once(
    listener: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.new_event_loop()
    others: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda loop, context: others.append(context))
    clients = [socket.create_connection(listener.getsockname(), timeout=5) for _ in range(3)]
    now = [0.0]
    try:
        with caplog.at_level(logging.WARNING, "p2pmoments.limits"):
            with AcceptGuard(loop, interval=60, clock=lambda: now[0]) as guard:
                handler = loop.get_exception_handler()
                assert handler is not None
                failure = {
                    "message": "socket.accept() out of system resource",
                    "exception": OSError(errno.EMFILE, "Too many open files"),
                    "socket": listener,
                }
                for _ in range(1000):
                    handler(loop, failure)
                now[0] = 61
                handler(loop, failure)
                handler(loop, {"message": "something else"})
            assert guard.shed == 3
        for client in clients:
            assert client.recv(1) == b""  # closed at once, not left waiting
        assert listener.fileno() >= 0  # the listening socket itself is untouched
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) == 2, warnings
        assert "failed 1 times" in warnings[0]
        assert "failed 1000 times in the last 60 s" in warnings[1]
        assert others == [{"message": "something else"}]  # the loop's handler again
        assert loop.get_exception_handler() is not None  # restored, not ours
        assert loop.get_exception_handler() is not handler
    finally:
        for client in clients:
            client.close()
        loop.close()


def record(msg: str = "accept failed: %s", *args: object) -> logging.LogRecord:
    return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, args or ("x",), None)


def test_no_kind_of_log_record_passes_without_bound() -> None:
    now = [0.0]
    limit = RateLimit(burst=50, interval=60, clock=lambda: now[0])
    passed = [limit.filter(record()) for _ in range(10_000)]
    assert sum(passed) == 50
    assert limit.filter(record("another kind")) is True  # each kind has its own bound
    now[0] = 60
    later = record()
    assert limit.filter(later) is True
    assert later.getMessage() == "accept failed: x [9950 more like this left out in 60 s]"
    plain = record()
    assert limit.filter(plain) is True
    assert plain.getMessage() == "accept failed: x"
