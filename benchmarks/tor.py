"""Links over Tor, measured on the private Tor network of tests/tornet.py (issue 14).

    .venv/bin/python benchmarks/tor.py [--json FILE] [--runs N]

Not part of `make bench`: it needs tor (apt install tor) and starts a whole private
network (3 authorities, 4 relays) on loopback. Daemons run in this process, each with
its own tor, and share no path but Tor unless said. It prints:

- start to reachable: a daemon's start (fresh home, then a restart) until its onion
  service is published, and until another tor holding a friend's client-auth key
  first opens a stream to it;
- post to feed: a text moment posted by Alice until it is in Bob's feed, linked
  through Tor (median of N), beside the same on the LAN;
- a 10 MB photo: posted by Alice until its last chunk is stored at Bob's, in MB/s,
  through Tor beside the LAN (loopback).

The network shares this machine's cores with every relay: figures are bound by CPU
and say nothing of the public Tor network (spec/tor.md section 8 says what to expect).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.multinode import (
    LOOPBACK,
    befriend,
    befriend_over_tor,
    eventually,
    make_home,
    random_png,
    read_feed,
    running,
    until,
)
from tests.tornet import running_network

from p2pmoments.config import Config
from p2pmoments.core.onion import SocksError, pairing_client_auth
from p2pmoments.core.pairing import decode_code
from p2pmoments.net.tor import Tor, TorError
from p2pmoments.node import Node

PHOTO_SIDE = 1830  # random pixels, 1830 x 1830 RGB: a PNG of about 10 MB (it cannot shrink)
WAIT = 600.0


async def first_stream(visitor: Tor, node: Node, started: float) -> float:
    """Seconds from `started` until `visitor` opens a stream to `node`'s onion service,
    dialling as a daemon does (Tor.dial: backoff from 1 s, stalled circuits closed)."""
    address = node.onions.address
    assert address is not None
    while True:
        try:
            _, writer = await visitor.dial(address, timeout=WAIT)
        except (SocksError, TorError):
            continue  # dial() gave up after its own retries: again
        writer.close()
        return time.monotonic() - started


async def start_to_reachable(root: Path, config: Config, visitor: Tor) -> list[dict[str, Any]]:
    """A fresh daemon, then the same one restarted: until published, until reachable by
    a tor holding one of its pairing codes (as a scanner's is)."""
    home = await make_home(root, "Dora")
    out = []
    for run in ("first start", "restart"):
        started = time.monotonic()
        async with running(home, config) as dora:
            code = decode_code((await dora.pairings.new_code())[0])
            assert code.onion is not None
            await visitor.add_client_auth(code.onion, pairing_client_auth(code.token))
            reachable = await first_stream(visitor, dora, started)
            await eventually(lambda d=dora: d.onions.published_at, timeout=WAIT, what="publish")
            assert dora.onions.published_at is not None
            assert dora.onions.bootstrapped_at is not None
            out.append(
                {
                    "run": run,
                    "bootstrapped_s": dora.onions.bootstrapped_at - started,
                    "published_s": dora.onions.published_at - started,
                    "reachable_s": reachable,
                }
            )
    return out


async def post_to_feed(alice: Node, bob: Node, runs: int) -> list[float]:
    times = []
    for i in range(runs):
        text = f"moment {i} {time.monotonic_ns()}"
        started = time.monotonic()
        await alice.posting.post("family", text)

        async def arrived(text: str = text) -> bool:
            return any(m["text"] == text for m in await read_feed(bob, limit=100))

        await until(bob, arrived, timeout=WAIT, what="the moment at Bob's")
        times.append(time.monotonic() - started)
    return times


async def photo_rate(alice: Node, bob: Node, photo: bytes) -> dict[str, float]:
    last = bob.events.last_id
    started = time.monotonic()
    moment = await alice.posting.post("family", "", photos=[photo])

    async def done() -> bool:
        events, _ = bob.events.after(last)
        return any(e.kind == "transfer.done" for e in events)

    await until(bob, done, timeout=WAIT, what="the photo at Bob's")
    seconds = time.monotonic() - started
    size = sum(ref.size for ref in moment.content.blobs)
    return {"bytes": size, "seconds": seconds, "mb_per_s": size / seconds / 1e6}


async def pair_of(
    root: Path, config: Config, over_tor: bool
) -> tuple[contextlib.AsyncExitStack, Node, Node]:
    """Alice and Bob, friends, with a circle; linked through Tor or on loopback."""
    stack = contextlib.AsyncExitStack()
    alice = await stack.enter_async_context(running(await make_home(root, "Alice"), config))
    bob = await stack.enter_async_context(running(await make_home(root, "Bob"), config))
    if over_tor:
        await befriend_over_tor(alice, bob)
        await eventually(lambda: bob.links.path(alice.me) == "tor", timeout=WAIT, what="link")
    else:
        await befriend(alice, bob)
        await eventually(lambda: bob.links.path(alice.me) == "lan", timeout=30, what="link")
    await alice.circles.create("family", ["Bob"], False)

    async def joined() -> bool:
        return bool(bob.circles.all())

    await until(bob, joined, timeout=WAIT, what="the circle at Bob's")
    return stack, alice, bob


async def main_async(runs: int) -> dict[str, Any]:
    photo = await asyncio.to_thread(random_png, PHOTO_SIDE)
    with tempfile.TemporaryDirectory() as tmp, running_network(Path(tmp) / "net") as net:
        config = replace(LOOPBACK, tor="on", tor_torrc=tuple(net.torrc_lines()))
        figures: dict[str, Any] = {"network_consensus_s": net.timings["consensus"]}
        client = net.start_client("visitor")
        await asyncio.to_thread(net.wait_bootstrapped, client)
        async with await Tor.attach(f"127.0.0.1:{client.control_port}") as visitor:
            figures["start"] = await start_to_reachable(Path(tmp) / "dora", config, visitor)
        for path, cfg in (("tor", config), ("lan", LOOPBACK)):
            root = Path(tmp) / path
            root.mkdir()
            stack, alice, bob = await pair_of(root, cfg, over_tor=path == "tor")
            async with stack:
                feed = await post_to_feed(alice, bob, runs)
                figures[f"post_to_feed_{path}_s"] = {
                    "median": statistics.median(feed),
                    "min": min(feed),
                    "max": max(feed),
                }
                figures[f"photo_{path}"] = await photo_rate(alice, bob, photo)
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="posts timed for post-to-feed")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    figures = asyncio.run(main_async(args.runs))
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
