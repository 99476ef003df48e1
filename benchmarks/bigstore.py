"""A daemon with a full life's store (issue 22, target 3): 150 friends, 20 circles and
100,000 moments; beside a daemon with an empty store, in the same run.

    .venv/bin/python benchmarks/bigstore.py [--json FILE] [--moments N]

The store is built in-process (friends recorded as if paired, circles of 100 of them
made, moments sealed by us and stored as replication stores them); then a daemon
process is started on it. Figures: its resident memory once it answers, and the
median time of five calls each (after one to warm up) of the feed's first page
(`GET /moments`, 50 moments) and of `GET /status` (target under 100 ms each); and the
time of that first call of the feed, whose moments the daemon has not opened yet
(spec/store.md section 3.1: it remembers them).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, daemon_info, report, rss_kib, start, stop, wait
from tests.multinode import make_home, running

from p2pmoments.client import ApiClient
from p2pmoments.core.identity import Identity
from p2pmoments.core.moment import Content, Kind, seal_moment
from p2pmoments.paths import resolve_paths
from p2pmoments.store import FriendRecord, FriendState

FRIENDS = 150
CIRCLES = 20
MEMBERS = 100  # friends in each circle
MOMENTS = 100_000
BATCH = 1000
CALLS = 5


async def build(root: Path, moments: int) -> Path:
    home = await make_home(root, "Big")
    async with running(home) as node:
        now = int(time.time())
        names = []
        for i in range(FRIENDS):
            friend = Identity.generate()
            names.append(f"F{i:03d}")
            await node.friends.paired(
                FriendRecord(
                    verify_key=bytes(friend.public.verify_key),
                    link_key=bytes(friend.public.link_key),
                    link_signature=friend.link_signature,
                    name=names[-1],
                    their_name=names[-1],
                    state=FriendState.FRIEND,
                    since=now,
                    last_seen=None,
                    host=None,
                    port=None,
                )
            )
        circles = []
        for c in range(CIRCLES):
            members = [names[(c * 7 + j) % FRIENDS] for j in range(MEMBERS)]
            circles.append(await node.circles.create(f"circle {c}", members, True))
        seq = dict.fromkeys(range(CIRCLES), 0)
        envelopes: list[bytes] = []
        for i in range(moments):
            c = i % CIRCLES
            seq[c] += 1
            circle = circles[c]
            envelopes.append(
                seal_moment(
                    node.identity,
                    circle,
                    node.circles.key_for(circle),
                    seq=seq[c],
                    time=now - moments + i,
                    content=Content(kind=Kind.POST, text=f"moment {i}: the beach, the ice cream"),
                ).envelope
            )
            if len(envelopes) == BATCH:
                await node.replication.receive(envelopes)
                envelopes = []
        if envelopes:
            await node.replication.receive(envelopes)
    return home


def measure(home: Path) -> dict[str, float]:
    proc = start(home)
    try:
        wait(lambda: daemon_info(home, proc.pid))
        api = ApiClient(resolve_paths(home))

        def timed(path: str) -> tuple[float, float]:
            began = time.perf_counter()
            api.call("GET", path)  # warm
            first = (time.perf_counter() - began) * 1000
            times = []
            for _ in range(CALLS):
                began = time.perf_counter()
                api.call("GET", path)
                times.append(time.perf_counter() - began)
            return first, statistics.median(times) * 1000

        (cold, feed), (_, status) = timed("/moments?limit=50"), timed("/status")
        held = api.call("GET", "/status")["moments"]
        return {
            "rss_mb": rss_kib(proc.pid) / 1024,
            "feed_first_ms": cold,
            "feed_ms": feed,
            "status_ms": status,
            "held": held,
        }
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--moments", type=int, default=MOMENTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        began = time.monotonic()
        big = asyncio.run(build(root / "big", args.moments))
        print(f"built the store in {time.monotonic() - began:.0f} s", flush=True)
        empty = asyncio.run(make_home(root / "empty", "Empty"))
        ours, base = measure(big), measure(empty)
    print(f"{ours['held']:.0f} moments held")
    label = f"{FRIENDS} friends, {CIRCLES} circles, {args.moments:,} moments"
    rows: list[Row] = [
        (f"{label}: resident MB", ours["rss_mb"], "an empty store, MB", base["rss_mb"]),
        (
            f"{label}: feed page, ms (target 100)",
            ours["feed_ms"],
            "empty store, ms",
            base["feed_ms"],
        ),
        (
            f"{label}: feed page, first read after start, ms",
            ours["feed_first_ms"],
            "empty store, ms",
            base["feed_first_ms"],
        ),
        (
            f"{label}: status, ms (target 100)",
            ours["status_ms"],
            "empty store, ms",
            base["status_ms"],
        ),
    ]
    report(rows, args.json)


if __name__ == "__main__":
    main()
