"""Slow clients against the control port of a real daemon held to 1,024 open files
(issue 18, part 3): 1,500 connections that send a request head one line at a time,
and reconnect when dropped. Feed reads, replication and a photo transfer keep working,
the log stays small, and every slow connection is closed within the header timeout."""

from __future__ import annotations

import errno
import json
import resource
import select
import socket
import threading
import time
from pathlib import Path

import pytest

from p2pmoments.api.guards import IDLE_TIMEOUT
from tests.daemons import Daemon, cli, wait_for

pytestmark = pytest.mark.process

SLOW_CLIENTS = 1500
OPEN_FILES = 1024  # the usual soft limit; here the hard one too, so the daemon cannot raise it
MAX_LOG_GROWTH = 1 << 20
# Seconds past IDLE_TIMEOUT for the daemon to get round to closing: its loop can be held
# up several seconds on a loaded 2-core machine (a photo decoded meanwhile, other suites
# running; seen: 3.4 s and 7 s). Without the timeout no slow connection is ever closed:
# the wait for every one of them to be closed, once the flood stops, fails.
SLACK = 10.0


class SlowClients(threading.Thread):
    """`count` connections to `port`, each sending `GET /api/v1/health HTTP/1.1`, a Host
    line, then one header line every `drip` seconds and never the blank line; one that
    is closed is opened again `redial` seconds later while `redialling` is set."""

    def __init__(self, port: int, count: int, *, drip: float = 1.0, redial: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.port, self.count, self.drip, self.redial = port, count, drip, redial
        self.stop = threading.Event()
        self.redialling = threading.Event()
        self.redialling.set()
        self.lock = threading.Lock()
        self.connected = 0  # connections the daemon took
        self.held: list[float] = []  # for each one the daemon closed: how long it was open
        self.open_now = 0
        self.failed: list[str] = []

    def run(self) -> None:
        poll = select.poll()
        socks: dict[int, socket.socket] = {}
        since: dict[int, float] = {}  # fd -> when connected (absent: still connecting)
        due: list[float] = [time.monotonic()] * self.count  # redials

        def dial() -> None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            code = sock.connect_ex(("127.0.0.1", self.port))
            if code not in (0, errno.EINPROGRESS):
                self.failed.append(errno.errorcode.get(code, str(code)))
                sock.close()
                due.append(time.monotonic() + self.redial)
                return
            socks[sock.fileno()] = sock
            poll.register(sock, select.POLLOUT)

        def drop(fd: int) -> None:
            sock = socks.pop(fd)
            poll.unregister(fd)
            opened = since.pop(fd, None)
            if opened is not None:
                with self.lock:
                    self.held.append(time.monotonic() - opened)
            sock.close()
            if self.redialling.is_set():
                due.append(time.monotonic() + self.redial)

        next_drip = time.monotonic() + self.drip
        while not self.stop.is_set():
            now = time.monotonic()
            ready = [t for t in due if t <= now]
            due[:] = [t for t in due if t > now]
            for _ in ready:
                dial()
            for fd, _ in poll.poll(50):
                sock = socks[fd]
                if fd not in since:  # connecting
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        drop(fd)
                        continue
                    since[fd] = time.monotonic()
                    with self.lock:
                        self.connected += 1
                    try:
                        sock.send(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                    except OSError:
                        drop(fd)
                        continue
                    poll.modify(fd, select.POLLIN)
                    continue
                try:
                    if sock.recv(4096):
                        continue  # an answer (a refusal): wait for the close
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                drop(fd)
            if time.monotonic() >= next_drip:
                next_drip += self.drip
                for fd in list(since):
                    try:
                        socks[fd].send(b"X-Slow: 1\r\n")
                    except BlockingIOError:
                        pass
                    except OSError:
                        drop(fd)
            with self.lock:
                self.open_now = len(since)
        for fd in list(socks):
            socks.pop(fd).close()


def log_size(daemon: Daemon) -> int:
    return daemon.log.stat().st_size


def test_slow_clients_cannot_stop_the_daemon_or_flood_its_log(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < SLOW_CLIENTS + 200:
        pytest.skip(f"this test needs {SLOW_CLIENTS + 200} open files, the hard limit is {hard}")
    want = SLOW_CLIENTS + 500
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    for home, name in ((alice, "Alice"), (bob, "Bob")):
        assert cli(home, "init", "--name", name).returncode == 0
    limit = ["prlimit", f"--nofile={OPEN_FILES}:{OPEN_FILES}", "--"]
    daemons.append(Daemon(alice, prefix=limit))
    daemons.append(Daemon(bob))
    a, b = daemons
    a.wait_ready()
    b.wait_ready()
    assert cli(bob, "pair", cli(alice, "qr", "--link").stdout.strip()).returncode == 0
    wait_for(
        lambda: json.loads(cli(alice, "friends", "--json").stdout)["friends"],
        timeout=15,
        what="Alice to know Bob",
    )
    assert cli(alice, "circle", "create", "family", "--member", "Bob").returncode == 0
    assert cli(bob, "circle", "create", "pals", "--member", "Alice").returncode == 0
    port = int(a.info["api_url"].split(":")[-1].split("/")[0])
    log_before = log_size(a)

    slow = SlowClients(port, SLOW_CLIENTS)
    slow.start()
    try:
        wait_for(
            lambda: slow.connected >= SLOW_CLIENTS,
            timeout=30,
            what=f"{SLOW_CLIENTS} slow connections to be taken",
        )
        for _ in range(5):  # feed reads through the flooded port
            assert "moments" in a.api("GET", "/moments?limit=5")

        from tests.photos import photo_with_location

        photo = tmp_path / "photo.jpg"
        photo.write_bytes(photo_with_location(1600, 1200))
        posted = cli(alice, "post", "--circle", "family", "--photo", str(photo), "beach")
        assert posted.returncode == 0, posted.stderr

        def photo_at_bob() -> bool:
            feed = b.api("GET", "/moments")["moments"]
            shown = [m for m in feed if m["text"] == "beach"]
            return bool(shown) and all(p["chunks_held"] == p["chunks"] for p in shown[0]["photos"])

        wait_for(photo_at_bob, timeout=30, what="the photo to reach Bob")
        b.api("POST", "/moments", {"circle": "pals", "text": "from Bob"})
        wait_for(
            lambda: any(m["text"] == "from Bob" for m in a.api("GET", "/moments")["moments"]),
            timeout=30,
            what="Bob's moment to reach Alice, read through the flooded port",
        )
        # The flood went on all along: its connections closed and came back (the reads
        # above may all fit in the first connections' lifetime).
        wait_for(
            lambda: slow.connected > SLOW_CLIENTS,
            timeout=IDLE_TIMEOUT + SLACK + 5,
            what="slow connections to be closed and opened again",
        )

        slow.redialling.clear()
        wait_for(
            lambda: slow.open_now == 0,
            timeout=IDLE_TIMEOUT + SLACK + 2,
            what="every slow connection to be closed",
        )
    finally:
        slow.stop.set()
        slow.join(timeout=10)
    with slow.lock:
        held = sorted(slow.held)
    assert held[-1] <= IDLE_TIMEOUT + SLACK, held[-20:]
    assert "Traceback" not in a.output
    grown = log_size(a) - log_before
    assert grown < MAX_LOG_GROWTH, grown
    print(
        f"{slow.connected} slow connections over the test; held at most {held[-1]:.1f} s "
        f"(median {held[len(held) // 2]:.2f} s); the log grew by {grown} bytes"
    )


def test_the_daemon_raises_its_soft_limit_on_open_files(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    home = tmp_path / "alice"
    assert cli(home, "init", "--name", "Alice").returncode == 0
    daemons.append(Daemon(home, prefix=["prlimit", f"--nofile={OPEN_FILES}:4096", "--"]))
    daemons[-1].wait_ready()
    limits = Path(f"/proc/{daemons[-1].proc.pid}/limits").read_text()
    (line,) = [x for x in limits.splitlines() if x.startswith("Max open files")]
    assert line.split()[3:5] == ["4096", "4096"], line
    wait_for(  # logged as it starts; the log file may lag /health on a busy machine
        lambda: "up to 4096 open files" in daemons[-1].output,
        timeout=10,
        what="the daemon to say its new limit",
    )
