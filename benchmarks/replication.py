"""Replication benchmarks for issue 6, each figure beside a baseline from the same run.

    .venv/bin/python benchmarks/replication.py [--json FILE] [--only NAME...]

- catch-up: a daemon holds 10,000 moments of a circle and a member's daemon starts
  empty; moments per second from the member's dial (connect and handshake included) to
  the last moment stored (`CatchUp`, which benchmarks/peers.py interleaves with
  Scuttlebutt's rounds), and bytes on the wire against the envelopes' own size; beside
  verifying and opening the same envelopes alone;
- idle resync: two daemons already in step link again; bytes per circle, beside
  a link that shares no circle (handshake, hellos);
- live fan-out: a moment to a circle of 50 (daemons in one process, on loopback);
  when the last member has it and receptions per member, beside a circle of two;
- a 100 MB file to a member, two daemon processes: MB/s from the moment's arrival
  until the last chunk is stored, beside raw loopback TCP and the cipher alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import itertools

from common import Row, cipher, daemon_info, p2pm, raw_tcp, report, start, stop, wait
from tests.multinode import befriend, eventually, make_home, running, until

from p2pmoments.client import ApiClient
from p2pmoments.core.moment import Content, Kind, moment_id, open_moment, seal_moment
from p2pmoments.core.replication.messages import T_HAVE, T_MOMENTS
from p2pmoments.node import Node
from p2pmoments.paths import resolve_paths
from p2pmoments.views import circle_text, moment_text

MB = 1_000_000
CATCH_UP = 10_000
TEXT = "A moment worth sharing: the ice cream, the beach, the launch went well. " * 2
FAN_OUT = 50  # members, the owner included
FILE_SIZE = 100 * MB


def hook(node: Node, on: Callable[[bytes, dict[int, Any]], None]) -> None:
    node.on_message = on


def link_bytes(node: Node, peer: Node) -> int:
    key = bytes(peer.identity.public.verify_key)
    for p in node.links.peers():
        if p.key == key:
            return p.bytes_in + p.bytes_out
    raise RuntimeError("not linked")


# --- catch-up -----------------------------------------------------------------------------


class CatchUp:
    """Alice's daemon holds CATCH_UP moments of a circle, Bob's (a member) none. Each
    `round()` starts from copies of both homes: Bob's daemon first, settled, then
    Alice's; Bob dials her (his dialler retries) and is timed from that dial (connect and
    handshake included, from his log) until the last moment is stored (his event), as
    Scuttlebutt's harness times its own (benchmarks/baseline_ssb.py). Returns seconds.

        with CatchUp(root) as ours:
            seconds = ours.round()    # interleave with another benchmark's rounds
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.size = 0  # bytes of envelopes
        self.wire = 0  # bytes on Bob's link in the last round
        self.opening = 0.0  # verify + open alone, a second, one thread
        self._rounds = 0

    def __enter__(self) -> CatchUp:
        asyncio.run(self._build())
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    async def _build(self) -> None:
        made = self.root / "made"
        alice_home, bob_home = await make_home(made, "Alice"), await make_home(made, "Bob")
        async with running(alice_home) as alice:
            async with running(bob_home) as bob:
                await befriend(alice, bob)
                circle = await alice.circles.create("big", ["Bob"], members_can_post=False)
                await eventually(lambda: bob.circles.all(), what="the manifest")
            # Bob is away while Alice's circle fills with 10,000 moments.
            key = alice.circles.key_for(circle)
            envelopes = [
                seal_moment(
                    alice.identity,
                    circle,
                    key,
                    seq=i,
                    time=1_700_000_000 + i,
                    content=Content(kind=Kind.POST, text=f"{i} {TEXT}"),
                ).envelope
                for i in range(1, CATCH_UP + 1)
            ]
            for start_at in range(0, CATCH_UP, 1000):
                await alice.replication.receive(envelopes[start_at : start_at + 1000])
            self.port = alice.listen_port
        self.size = sum(len(e) for e in envelopes)
        self.last_id = moment_text(moment_id(envelopes[-1]))
        # Baseline: verifying and opening the same envelopes, nothing else.
        began = time.perf_counter()
        for e in envelopes:
            open_moment(e, lambda c, ep: circle if ep == circle.epoch else None, lambda m: key)
        self.opening = CATCH_UP / (time.perf_counter() - began)

    def round(self, timeout: float = 120) -> float:
        self._rounds += 1
        work = self.root / f"round{self._rounds}"
        alice_home, bob_home = work / "Alice", work / "Bob"
        shutil.copytree(self.root / "made" / "Alice", alice_home)
        shutil.copytree(self.root / "made" / "Bob", bob_home)
        log = work / "bob.log"
        bob = start(bob_home, "--log-level", "debug", log=log)  # debug: the dial's time
        procs = [bob]
        try:
            wait(lambda: daemon_info(bob_home, bob.pid))
            alice = start(alice_home, "--listen", f"127.0.0.1:{self.port}")
            procs.append(alice)
            wait(lambda: daemon_info(alice_home, alice.pid))
            stored = None
            after = 0
            deadline = time.monotonic() + timeout
            while stored is None and time.monotonic() < deadline:
                found, after = events(bob_home, after)
                for e in found:
                    if e["kind"] == "moment.added" and e["data"]["id"] == self.last_id:
                        stored = e["time"]
            if stored is None:
                raise RuntimeError("the catch-up did not finish")
            status = json.loads(p2pm(bob_home, "status", "--json").stdout)
            (peer,) = json.loads(p2pm(bob_home, "peers", "--json").stdout)
            self.wire = int(peer["bytes_in"]) + int(peer["bytes_out"])
        finally:
            for proc in procs:
                stop(proc)
        assert status["moments"] == CATCH_UP, status
        dials = [float(t) for t in re.findall(r"dialled \S+ at ([0-9.]+)", log.read_text())]
        dial = max(t for t in dials if t < stored)  # the dial that reached Alice
        shutil.rmtree(work, ignore_errors=True)
        return stored - dial


def catch_up(root: Path, rounds: int = 1) -> list[Row]:
    with CatchUp(root) as ours:
        seconds = statistics.median(ours.round() for _ in range(rounds))
    rate = CATCH_UP / seconds
    print(
        f"catch-up: {CATCH_UP} moments in {seconds:.2f} s from Bob's dial; wire {ours.wire} B"
        f" for {ours.size} B of envelopes ({ours.wire / ours.size:.3f}×)"
    )
    return [
        ("catch-up, moments/s (target 8000)", rate, "verify + open alone, /s", ours.opening),
        ("catch-up, bytes on the wire / envelopes", ours.wire / ours.size, "target", 1.15),
        ("catch-up, KB on the wire", ours.wire / 1000, "envelopes' own size, KB", ours.size / 1000),
    ]


# --- idle resync ----------------------------------------------------------------------------


async def idle_resync(root: Path, circles: int = 5, posts: int = 20) -> list[Row]:
    homes = [await make_home(root, n) for n in ("Alice", "Bob", "Carol")]
    async with running(homes[0]) as alice:
        async with running(homes[1]) as bob, running(homes[2]) as carol:
            await befriend(alice, bob)
            await befriend(alice, carol)  # a friend who shares no circle: the baseline
            for c in range(circles):
                await alice.circles.create(f"c{c}", ["Bob"], members_can_post=True)
                for i in range(posts):
                    await alice.posting.post(f"c{c}", f"{i} {TEXT}")
                    await bob.posting.post(f"c{c}", f"{i} {TEXT}")

            async def in_step() -> bool:
                return (await bob.store.run(lambda s: s.counts())).moments == 2 * circles * posts

            await eventually(lambda: len(bob.circles.all()) == circles)
            await until(bob, in_step, timeout=30, what="Bob to hold every moment")
        # Both come back, already in step.
        haves = {"Alice": 0, "Bob": 0}
        others: list[object] = []  # any other message: there should be none

        def count(who: str) -> Callable[[bytes, dict[int, Any]], None]:
            def on(peer: bytes, body: dict[int, Any]) -> None:
                if body.get(0) == T_HAVE:
                    haves[who] += 1
                else:
                    others.append(body.get(0))

            return on

        hook(alice, count("Alice"))
        async with contextlib.AsyncExitStack() as stack, running(homes[1]) as bob:
            hook(bob, count("Bob"))  # before Carol's start lets Bob's link come up
            carol = await stack.enter_async_context(running(homes[2]))
            bob_key = bytes(bob.identity.public.verify_key)
            carol_key = bytes(carol.identity.public.verify_key)
            try:
                await eventually(
                    lambda: (
                        {bob_key, carol_key} <= set(alice.links.linked())
                        and haves["Alice"] >= circles
                        and haves["Bob"] >= circles
                    ),
                    timeout=30,
                )
            except AssertionError:
                linked = [k in alice.links.linked() for k in (bob_key, carol_key)]
                raise RuntimeError(f"no resync: linked {linked}, haves {haves}") from None
            await asyncio.sleep(1.0)  # a quiet second: anything more would show
            with_circles = link_bytes(alice, bob)
            without = link_bytes(alice, carol)
    assert not others, f"an idle resync sent messages of types {others}"
    per_circle = (with_circles - without) / circles
    print(
        f"idle resync: {with_circles} B with {circles} circles of {2 * posts} moments,"
        f" {without} B sharing none; haves {haves}"
    )
    return [
        (
            "idle resync, bytes per circle (target 2000)",
            per_circle,
            "link sharing no circle, B",
            without,
        ),
    ]


# --- fan-out --------------------------------------------------------------------------------


async def fan_out(root: Path) -> list[Row]:
    names = ["Alice"] + [f"M{i:02d}" for i in range(1, FAN_OUT)]
    homes = [await make_home(root, n) for n in names]
    async with contextlib.AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(running(h)) for h in homes]
        alice, members = nodes[0], nodes[1:]
        for m in members:
            await befriend(alice, m)
        for a, b in itertools.pairwise(members):
            await befriend(a, b)  # a ring, so members also link to each other
        told: set[tuple[bytes, bytes]] = set()  # (member, circle) whose have reached Alice

        def have(peer: bytes, body: dict[int, Any]) -> None:
            if body.get(0) == T_HAVE and body.get(3):  # it names the manifest it holds
                told.add((peer, body[1]))

        hook(alice, have)
        await alice.circles.create("two", [members[0].name], members_can_post=False)
        await alice.circles.create("all", [m.name for m in members], members_can_post=True)
        # Alice knows every member holds the manifests: she will push, not announce.
        await eventually(lambda: len(told) == len(members) + 1, timeout=60, what="the haves")
        circle_ids = {c.name: c.circle_id for c in alice.circles.all()}

        async def deliver(circle: str, to: list[Node]) -> tuple[float, float]:
            receptions = 0
            text = circle_text(circle_ids[circle])

            def seen(peer: bytes, body: dict[int, Any]) -> None:
                nonlocal receptions
                if body.get(0) == T_MOMENTS and body.get(1) == circle_ids[circle]:
                    receptions += len(body[2])

            def stored_at(node: Node) -> float | None:
                """When the member stored it: its moment.added event."""
                for e in node.events.after(0)[0]:
                    if e.kind == "moment.added" and e.data["circle"] == text:
                        return e.time
                return None

            for m in to:
                hook(m, seen)
            began = time.time()  # the clock events are stamped with
            await alice.posting.post(circle, f"hello {circle}")
            await eventually(lambda: all(stored_at(m) for m in to), timeout=30, what="every member")
            latest = max(stored_at(m) or 0.0 for m in to) - began
            await asyncio.sleep(1.0)  # relays that would send it again have had their chance
            return latest, receptions / len(to)

        two_latency, _ = await deliver("two", members[:1])
        latency, per_member = await deliver("all", members)
    print(f"fan-out to {len(members)}: last after {latency * 1000:.0f} ms, {per_member:.2f} each")
    return [
        (
            f"fan-out to {len(members)}, last member has it, ms (target 1000)",
            latency * 1000,
            "circle of two, ms",
            two_latency * 1000,
        ),
        (f"fan-out to {len(members)}, receptions per member (target 2)", per_member, "ideal", 1.0),
    ]


# --- a 100 MB file --------------------------------------------------------------------------


def events(home: Path, after: int) -> tuple[list[dict[str, Any]], int]:
    """The daemon's events after `after`, waiting up to 10 s for one."""
    answer = ApiClient(resolve_paths(home)).call("GET", f"/events?after={after}&timeout=10")
    return answer["events"], answer["last_id"]


def big_file(root: Path, rounds: int = 3) -> list[Row]:
    """`rounds` different 100 MB files, one after another; the median transfer counts."""
    alice, bob = root / "alice", root / "bob"
    p2pm(alice, "init", "--name", "Alice")
    p2pm(bob, "init", "--name", "Bob")
    procs = [start(alice), start(bob)]
    seconds: list[float] = []
    try:
        for home, proc in zip((alice, bob), procs, strict=True):
            wait(lambda home=home, proc=proc: daemon_info(home, proc.pid))
        link = p2pm(alice, "qr", "--link").stdout.strip()
        p2pm(bob, "pair", link)
        p2pm(alice, "circle", "create", "files", "--member", "Bob")
        after = 0
        for n in range(rounds):
            path = root / f"big{n}.bin"
            path.write_bytes(os.urandom(FILE_SIZE))
            p2pm(alice, "post", "--circle", "files", "--file", str(path), f"100 MB, {n}")
            added = done = None
            deadline = time.monotonic() + 120
            while done is None and time.monotonic() < deadline:
                found, after = events(bob, after)
                for e in found:
                    if e["kind"] == "moment.added":
                        added = e["time"]
                    elif e["kind"] == "transfer.done":
                        done = e["time"]
            if added is None or done is None:
                raise RuntimeError("the file did not arrive")
            path.unlink()
            seconds.append(done - added)
        moved = json.loads(p2pm(bob, "feed", "--json").stdout)["moments"]
        assert all(m["files"][0]["chunks_held"] == m["files"][0]["chunks"] for m in moved)
    finally:
        for proc in procs:
            stop(proc)
    took = statistics.median(seconds)
    print(
        "100 MB file: "
        + ", ".join(f"{s:.2f}" for s in seconds)
        + " s from the moment's arrival to the last chunk"
    )
    speed = FILE_SIZE / took / MB
    return [
        (
            "100 MB file to a member, MB/s (target 190)",
            speed,
            "raw loopback TCP, MB/s",
            asyncio.run(raw_tcp(FILE_SIZE, 256 * 1024)) / MB,
        ),
        ("  same transfer, MB/s", speed, "ChaCha20-Poly1305 alone, MB/s", cipher(FILE_SIZE) / MB),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--only", nargs="*", choices=["catch-up", "idle", "fan-out", "file"], default=None
    )
    args = parser.parse_args()
    chosen = set(args.only or ["catch-up", "idle", "fan-out", "file"])
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "catch-up" in chosen:
            rows += catch_up(root / "catch-up")
        if "idle" in chosen:
            rows += asyncio.run(idle_resync(root / "idle"))
        if "fan-out" in chosen:
            rows += asyncio.run(fan_out(root / "fan-out"))
        if "file" in chosen:
            (root / "file").mkdir()
            rows += big_file(root / "file")
    report(rows, args.json)


if __name__ == "__main__":
    main()
