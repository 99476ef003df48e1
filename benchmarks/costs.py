"""What each message kind a member can send costs the receiver, per byte sent (issue 22, 5).

    .venv/bin/python benchmarks/costs.py [--json FILE]

Bob, the receiver, is a daemon process; Alice, a member of his circle, runs in this
process and sends him, over their link, the most costly message of each kind she can
make (spec/sync.md section 5 lists them). For each: the bytes she sent (her link's
count), and Bob's CPU-seconds (/proc), resident-memory growth and disk growth (the
database's pages in use, and chunk files) once he is quiet again; each as a ratio to
the bytes sent: CPU as nanoseconds a byte, memory and disk as bytes a byte. The
baseline beside each figure is the same cost of honest text moments (8,000 short posts
in two messages). Junk goes last: Bob drops a peer whose junk passes its limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, daemon_info, report, start, stop, wait
from tests.hostile_refs import hostile_index
from tests.multinode import befriend, eventually, make_home, running

from p2pmoments.config import Address
from p2pmoments.core.blobs import BIG_CHUNK_SIZE, chunk_address
from p2pmoments.core.crypto import random_bytes
from p2pmoments.core.moment import Content, Kind, seal_moment
from p2pmoments.core.replication.messages import (
    T_CHUNK,
    T_HAVE,
    T_MANIFESTS,
    T_MOMENTS,
    T_WANT_CHUNKS,
)
from p2pmoments.node import Node

FILE = 16 << 20  # Bob's file, whose chunks Alice may ask for
REUSES = 50  # moments carrying one reference to a 1-piece index (16,384 chunk names)
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def disk_bytes(home: Path) -> int:
    """Bytes the database's pages in use and the chunk files take (the WAL is left out:
    it is reused, and checkpointed into the database)."""
    total = 0
    for folder, _, files in os.walk(home):
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".db"):
                with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                    pages = db.execute("PRAGMA page_count").fetchone()[0]
                    free = db.execute("PRAGMA freelist_count").fetchone()[0]
                    total += (pages - free) * db.execute("PRAGMA page_size").fetchone()[0]
            elif "blobs" in folder:
                with contextlib.suppress(FileNotFoundError):
                    total += os.lstat(path).st_blocks * 512
    return total


class Measure:
    """Bob's costs while Alice sends one kind of message."""

    def __init__(self, alice: Node, bob_key: bytes, bob_pid: int, bob_home: Path) -> None:
        self.alice, self.bob_key, self.pid, self.home = alice, bob_key, bob_pid, bob_home

    def _sent(self) -> int:
        for p in self.alice.links.peers():
            if p.key == self.bob_key:
                return p.bytes_out
        return -1

    async def quiet(self, timeout: float = 60) -> None:
        """Until Bob's CPU stops moving (1.5 s without 30 ms of work), at most `timeout`."""
        deadline = time.monotonic() + timeout
        last = cpu_seconds(self.pid)
        while time.monotonic() < deadline:
            await asyncio.sleep(1.5)
            now = cpu_seconds(self.pid)
            if now - last < 0.03:
                return
            last = now

    async def __call__(
        self, name: str, send: Callable[[], Awaitable[None]]
    ) -> dict[str, float | str]:
        await self.quiet()
        sent, cpu = self._sent(), cpu_seconds(self.pid)
        rss, disk = rss_bytes(self.pid), disk_bytes(self.home)
        await send()
        await self.quiet()
        linked = self.bob_key in self.alice.links.linked()
        after = self._sent()
        if after < 0:
            raise RuntimeError(f"{name}: Bob dropped Alice; no byte count")
        bytes_sent = max(1, after - sent)
        out: dict[str, float | str] = {
            "kind": name,
            "sent": bytes_sent,
            "cpu_ns_per_byte": (cpu_seconds(self.pid) - cpu) * 1e9 / bytes_sent,
            "memory_per_byte": max(0, rss_bytes(self.pid) - rss) / bytes_sent,
            "disk_per_byte": max(0, disk_bytes(self.home) - disk) / bytes_sent,
            "linked": "yes" if linked else "dropped",
        }
        print(
            f"{name:44} {bytes_sent:>10} B  cpu {out['cpu_ns_per_byte']:9.1f} ns/B"
            f"  mem {out['memory_per_byte']:9.2f} B/B  disk {out['disk_per_byte']:9.2f} B/B"
            f"  {out['linked']}",
            flush=True,
        )
        return out


async def measure(root: Path) -> list[dict[str, float | str]]:
    alice_home, bob_home = await make_home(root, "Alice"), await make_home(root, "Bob")
    async with running(alice_home) as alice, running(bob_home) as bob:
        await befriend(alice, bob)
        circle = await alice.circles.create("c", ["Bob"], members_can_post=True)
        await eventually(lambda: bob.circles.all(), what="the manifest")
        await bob.posting.post("c", "a file", files=[("f.bin", os.urandom(FILE), "")])
        port = alice.listen_port
        bob_key = bytes(bob.identity.public.verify_key)
    bob_proc = start(bob_home)
    try:
        wait(lambda: daemon_info(bob_home, bob_proc.pid))
        async with running(alice_home, listen=Address(host="127.0.0.1", port=port)) as alice:
            await eventually(lambda: bob_key in alice.links.linked(), timeout=60, what="a link")
            return await _kinds(alice, circle.circle_id, bob_key, bob_proc.pid, bob_home)
    finally:
        stop(bob_proc)


async def _kinds(
    alice: Node, circle_id: bytes, bob: bytes, pid: int, home: Path
) -> list[dict[str, float | str]]:
    measure = Measure(alice, bob, pid, home)
    manifest = alice.circles.resolve("c")
    key = alice.circles.key_for(manifest)
    seq = 0

    def seal(content: Content) -> bytes:
        nonlocal seq
        seq += 1
        return seal_moment(
            alice.identity, manifest, key, seq=seq, time=int(time.time()), content=content
        ).envelope

    async def send_all(bodies: list[dict[int, Any]]) -> None:
        for body in bodies:
            if not await alice.links.send_paced(bob, body):
                return

    out = []
    vector = [[random_bytes(32), 0, 2**40] for _ in range(151 * 64)]
    out.append(
        await measure(
            "have, 9,664 authors unknown",
            lambda: send_all([{0: T_HAVE, 1: circle_id, 2: vector, 3: [0]}] * 10),
        )
    )
    out.append(
        await measure(
            "manifests, 64 copies of one held",
            lambda: send_all([{0: T_MANIFESTS, 1: [manifest.raw] * 64}] * 10),
        )
    )
    # Honest moments: 900 KiB messages of short text moments (ascending seq).
    texts = [seal(Content(kind=Kind.POST, text=f"{i} hello")) for i in range(8000)]
    batches = [texts[i : i + 4000] for i in range(0, len(texts), 4000)]
    out.append(
        await measure(
            "moments, 8,000 short posts",
            lambda: send_all([{0: T_MOMENTS, 1: circle_id, 2: b} for b in batches]),
        )
    )
    # A file reference whose one index piece names 16,384 chunks, then moments reusing it.
    ref, address, piece = hostile_index(1)
    await asyncio.to_thread(alice.moments.blobs.put, address, piece)
    first = seal(Content(kind=Kind.POST, text="claim", blobs=(ref,)))
    opened = await alice.moments.open_many([first])
    await alice.moments.store_many(opened.moments)
    out.append(
        await measure(
            "moments, 1 naming a 1-piece index (+ piece)",
            lambda: send_all([{0: T_MOMENTS, 1: circle_id, 2: [first]}]),
        )
    )
    reuse = [seal(Content(kind=Kind.POST, text=f"again {i}", blobs=(ref,))) for i in range(REUSES)]
    opened = await alice.moments.open_many(reuse)
    await alice.moments.store_many(opened.moments)
    out.append(
        await measure(
            f"moments, {REUSES} reusing that index",
            lambda: send_all([{0: T_MOMENTS, 1: circle_id, 2: reuse}]),
        )
    )
    # Bob's file's chunks, which Alice may read: 16 asked per message.
    chunks = await alice.store.run(
        lambda s: [r[0] for r in s._conn.execute("SELECT address FROM moment_chunks")]
    )
    asked = [c for c in chunks if c != address][:48]
    out.append(
        await measure(
            "want-chunks, 16 of 512 KiB held",
            lambda: send_all([{0: T_WANT_CHUNKS, 1: asked[i : i + 16]} for i in range(0, 48, 16)]),
        )
    )
    # Junk last: an unasked chunk (4 units each).
    junk = os.urandom(BIG_CHUNK_SIZE)
    out.append(
        await measure(
            "chunk, 512 KiB unasked (junk)",
            lambda: send_all([{0: T_CHUNK, 1: chunk_address(junk, 2), 2: junk}] * 40),
        )
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="costs-") as tmp:
        found = asyncio.run(measure(Path(tmp)))
    honest = next(f for f in found if str(f["kind"]).startswith("moments, 8,000"))
    rows: list[Row] = []
    for f in found:
        for what, unit in (
            ("cpu_ns_per_byte", "ns/B"),
            ("disk_per_byte", "B/B"),
            ("memory_per_byte", "B/B"),
        ):
            rows.append(
                (
                    f"{f['kind']}: {what.split('_')[0]} {unit}"[:46],
                    float(f[what]),
                    "honest text moments, same",
                    float(honest[what]),
                )
            )
    report(rows, args.json)


if __name__ == "__main__":
    main()
