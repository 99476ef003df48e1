"""Files with versions (issue 21): what a one-megabyte change to a large file costs,
beside what the whole file cost, measured in the same run.

    .venv/bin/python benchmarks/versions.py [--size MIB] [--json FILE]

Alice posts a file of --size MiB (default 1024: 1 GiB) to a circle with Bob (two
daemons in one process, on loopback); once Bob holds it whole, Alice makes a new
version with one MiB changed in the middle (not on a chunk border). Figures: the
bytes Bob received (chunks and records, as they came off the link) and the bytes he
stored for the new version, beside the same for the whole file; the seconds Alice
took to make the version (every chunk is encrypted once more to find those that did
not change) beside the seconds she took to post the file.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, report
from tests.multinode import befriend, eventually, make_home, running

from p2pmoments.core.replication.messages import T_CHUNK, T_MOMENTS
from p2pmoments.errors import NotFoundError
from p2pmoments.node import Node
from p2pmoments.views import moment_text

MIB = 1 << 20


def piece(i: int, change_at: int | None) -> bytes:
    """MiB number i of the file (the same every time it is asked for), with, if
    `change_at` falls in it or the next, one MiB from there changed."""
    data = bytearray(random.Random(i).randbytes(MIB))  # noqa: S311 (reproducible, not secret)
    if change_at is not None:
        start, end = i * MIB, (i + 1) * MIB
        lo, hi = max(start, change_at), min(end, change_at + MIB)
        if lo < hi:
            data[lo - start : hi - start] = random.Random(-1 - i).randbytes(hi - lo)  # noqa: S311
    return bytes(data)


async def pieces(count: int, change_at: int | None = None) -> AsyncIterator[bytes]:
    for i in range(count):
        yield piece(i, change_at)
        await asyncio.sleep(0)


def stored(root: Path) -> int:
    """Bytes of the files under a folder."""
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


async def whole(node: Node, post: str, n: int, timeout: float) -> None:
    """Wait until version n of the post's file is all here."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                await node.versions.reader(post, n)
                return
            except NotFoundError:
                await node.events.wait_after(node.events.last_id, 1.0)


async def measure(size_mib: int) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        homes = [await make_home(Path(tmp), n) for n in ("Alice", "Bob")]
        async with running(homes[0]) as alice, running(homes[1]) as bob:
            await befriend(alice, bob)
            await alice.circles.create("bench", ["Bob"], members_can_post=True)
            await eventually(lambda: bob.circles.all(), what="Bob's manifest")
            received = [0]

            def count(peer: bytes, body: dict[int, Any]) -> None:
                if body.get(0) == T_CHUNK and isinstance(body.get(2), bytes):
                    received[0] += len(body[2])
                elif body.get(0) == T_MOMENTS:
                    received[0] += sum(len(e) for e in body.get(2, []))

            bob.on_message = count
            bob_chunks = bob.paths.blob_dir
            began = time.perf_counter()
            async with alice.posting.upload() as upload:
                await upload.add_file("big.bin", "x/y", pieces(size_mib))
                post_id = (await alice.posting.post("bench", "", upload=upload)).id
            posted = time.perf_counter() - began
            post = moment_text(post_id)
            await whole(bob, post, 1, timeout=3600)
            first_bytes, first_stored = received[0], stored(bob_chunks)
            received[0] = 0
            change_at = size_mib * MIB // 2 + 12345
            began = time.perf_counter()
            async with alice.posting.upload() as upload:
                await alice.versions.update(
                    post, upload, "big.bin", "x/y", pieces(size_mib, change_at), note="1 MiB"
                )
            made = time.perf_counter() - began
            await whole(bob, post, 2, timeout=600)
            change_bytes, change_stored = received[0], stored(bob_chunks) - first_stored
    size = f"{size_mib} MiB" if size_mib < 1024 else f"{size_mib // 1024} GiB"
    return [
        (
            f"MB received, 1 MiB changed in {size}",
            change_bytes / 1e6,
            "MB, the whole file",
            first_bytes / 1e6,
        ),
        (
            "MB stored at the member, 1 MiB changed",
            change_stored / 1e6,
            "MB, the whole file",
            first_stored / 1e6,
        ),
        ("s to make the version (author)", made, "s to post the file", posted),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="MiB (default 1024)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report(asyncio.run(measure(args.size)), args.json)


if __name__ == "__main__":
    main()
