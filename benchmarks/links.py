"""Link benchmarks for issue 4, each figure beside a baseline measured in the same run.

    .venv/bin/python benchmarks/links.py [--json FILE]

- throughput of 64 KiB messages over a link on loopback, beside raw asyncio TCP
  and beside ChaCha20-Poly1305 alone;
- Noise IK handshakes per second (in memory, and over TCP with hellos), beside
  the X25519 operations they need;
- time from start to connected for two paired daemon processes, beside the
  time to /health of one;
- a flood of hostile connections: the daemon's resident memory, and whether
  its friend's link survives.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cipher, daemon_info, p2pm, raw_tcp, report, rss_kib, start, stop, wait

from p2pmoments.core.crypto import LinkSecretKey, x25519
from p2pmoments.core.identity import Identity
from p2pmoments.core.link import AcceptRequest, Link, MessageReceived
from p2pmoments.core.noise import HandshakeState, Pattern
from p2pmoments.net.transport import LinkRunner

MIB = 1 << 20
MESSAGE = 64 * 1024
TOTAL = 256 * MIB


async def link_server(
    identity: Identity, on_event: Any
) -> tuple[asyncio.Server, int, list[asyncio.Task[object]]]:
    """A loopback server answering links as `identity`: (server, port, the tasks serving
    its links, to await so that each has closed before the server goes)."""
    served: list[asyncio.Task[object]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.append(asyncio.current_task())  # type: ignore[arg-type]
        link = Link(identity=identity, name="Bob", initiator=False, now=time.monotonic())
        await LinkRunner(link, reader, writer, on_event).run()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], served


async def link_throughput() -> float:
    alice, bob = Identity.generate(), Identity.generate()
    done = asyncio.Event()
    got = 0
    opened = asyncio.Event()

    async def on_event(runner: LinkRunner, event: object) -> None:
        nonlocal got
        if isinstance(event, AcceptRequest):
            runner.link.accept()
        elif isinstance(event, MessageReceived):
            got += len(event.body[1])
            if got >= TOTAL:
                done.set()

    async def on_event_a(runner: LinkRunner, event: object) -> None:
        if type(event).__name__ == "Established":
            opened.set()

    server, port, served = await link_server(bob, on_event)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    link = Link(
        identity=alice,
        name="Alice",
        initiator=True,
        now=time.monotonic(),
        remote_link_key=bytes(bob.public.link_key),
    )
    runner = LinkRunner(link, reader, writer, on_event_a)
    task = asyncio.ensure_future(runner.run())
    await opened.wait()
    payload = b"x" * MESSAGE
    start = time.perf_counter()
    for _ in range(TOTAL // MESSAGE):
        runner.send({0: 20, 1: payload})
        await writer.drain()
    await done.wait()
    seconds = time.perf_counter() - start
    runner.close()
    await task
    await asyncio.gather(*served)
    server.close()
    return got / seconds / MIB


def handshakes_in_memory(seconds: float = 2.0) -> tuple[float, float]:
    alice, bob = LinkSecretKey.generate(), LinkSecretKey.generate()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        i = HandshakeState(
            Pattern.IK,
            initiator=True,
            prologue=b"p",
            static=alice,
            remote_static=bytes(bob.public_key),
        )
        r = HandshakeState(Pattern.IK, initiator=False, prologue=b"p", static=bob)
        r.read_message(i.write_message())
        i.read_message(r.write_message())
        count += 1
    rate = count / (time.perf_counter() - start)
    # An IK handshake costs 8 X25519 operations in all (4 per side) plus 2 key generations.
    sk, pk = bytes(alice.secret_bytes), bytes(bob.public_key)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        x25519(sk, pk)
        n += 1
    dh_rate = n / (time.perf_counter() - start)
    return rate, dh_rate / 10


async def handshakes_over_tcp(count: int = 300) -> float:
    alice, bob = Identity.generate(), Identity.generate()

    async def accept(runner: LinkRunner, event: object) -> None:
        if isinstance(event, AcceptRequest):
            runner.link.accept()

    server, port, served = await link_server(bob, accept)
    start = time.perf_counter()
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        link = Link(
            identity=alice,
            name="Alice",
            initiator=True,
            now=time.monotonic(),
            remote_link_key=bytes(bob.public.link_key),
        )
        opened = asyncio.Event()

        async def on(runner: LinkRunner, event: object, opened: asyncio.Event = opened) -> None:
            if type(event).__name__ == "Established":
                opened.set()
                runner.close()

        await LinkRunner(link, reader, writer, on).run()
        assert opened.is_set()
    rate = count / (time.perf_counter() - start)
    await asyncio.gather(*served)  # the server's side of each link has closed too
    server.close()
    return rate


def api_up(home: Path, pid: int) -> bool:
    return daemon_info(home, pid) is not None


def peers(home: Path) -> int:
    """Connected peers, asked of the API directly (a CLI process per poll would be slow)."""
    import urllib.request

    try:
        info = json.loads((home / "data" / "daemon.json").read_text())
        token = (home / "data" / "api.token").read_text().strip()
        request = urllib.request.Request(  # noqa: S310 - our loopback API
            info["api_url"] + "/peers", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            return len(json.loads(response.read())["peers"])
    except (OSError, ValueError, KeyError):
        return 0


def daemons(runs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "a", Path(tmp) / "b"
        p2pm(a, "init", "--name", "Alice")
        p2pm(b, "init", "--name", "Bob")
        pa = start(a, "--listen", "127.0.0.1:47601")
        pb = start(b, "--listen", "127.0.0.1:47602")
        wait(lambda: api_up(a, pa.pid) and api_up(b, pb.pid))
        link = p2pm(a, "qr", "--link").stdout.strip()
        p2pm(b, "pair", link)
        wait(lambda: peers(a) == 1)
        for p in (pa, pb):
            stop(p)
        connect, health = [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            pa = start(a, "--listen", "127.0.0.1:47601")
            pb = start(b, "--listen", "127.0.0.1:47602")
            wait(lambda pid=pa.pid: api_up(a, pid))
            health.append(time.perf_counter() - t0)
            wait(lambda: peers(a) == 1 and peers(b) == 1)
            connect.append(time.perf_counter() - t0)
            last = (pa, pb)
            if _ < runs - 1:
                for p in (pa, pb):
                    stop(p)
        pa, pb = last
        before = rss_kib(pa.pid)
        held = flood(47601, 2000)
        during = rss_kib(pa.pid)
        alive = peers(a) == 1 and peers(b) == 1
        for s in held:
            s.close()
        time.sleep(1)  # let the daemon drop the flood before measuring again
        after = rss_kib(pa.pid)
        for p in (pa, pb):
            stop(p)
    return {
        "connect": statistics.median(connect),
        "health": statistics.median(health),
        "rss_before": before / 1024,
        "rss_flood": during / 1024,
        "rss_after": after / 1024,
        "friend_link_survived": float(alive),
    }


def flood(port: int, count: int) -> list[Any]:
    import socket

    held = []
    for i in range(count):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect_ex(("127.0.0.1", port))
            if i % 3 == 0:
                s.send(b"\x00\x61\x01" + os.urandom(96))  # garbage handshake
            elif i % 3 == 1:
                s.send(b"\xff\xff" + os.urandom(200))  # a huge frame that never comes
        except OSError:
            pass
        held.append(s)
    time.sleep(2)  # hold them all open while we measure
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows: list[tuple[str, float, str, float]] = []
    raw = asyncio.run(raw_tcp(TOTAL, MESSAGE)) / MIB
    linked = asyncio.run(link_throughput())
    cipher_alone = cipher(TOTAL) / MIB
    rows.append(("link throughput, 64 KiB messages (MiB/s)", linked, "raw asyncio TCP", raw))
    rows.append(("  same link", linked, "ChaCha20-Poly1305 alone", cipher_alone))
    hs, dh_bound = handshakes_in_memory()
    rows.append(("IK handshakes/s in memory", hs, "X25519 bound (10 ops each)", dh_bound))
    tcp_hs = asyncio.run(handshakes_over_tcp())
    rows.append(("IK handshakes/s over TCP with hellos", tcp_hs, "in memory", hs))
    d = daemons(args.runs)
    rows.append(
        ("start to connected, two daemons (s)", d["connect"], "start to /health", d["health"])
    )
    rows.append(
        ("RSS under 2000 hostile connections (MiB)", d["rss_flood"], "RSS before", d["rss_before"])
    )
    rows.append(("RSS after the flood closes (MiB)", d["rss_after"], "RSS before", d["rss_before"]))
    rows.append(("friend link survived the flood (1 = yes)", d["friend_link_survived"], "", 1))
    report(rows, args.json)


if __name__ == "__main__":
    main()
