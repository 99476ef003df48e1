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
The kinds added later (removal notices, wants, spans, reach cards, pictures, chunks
sent ahead) are measured on a second pair of their own (measure_more), each also
with what Bob sent back.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, daemon_info, report, start, stop, wait
from PIL import Image
from tests.hostile_refs import cpu_seconds, disk_bytes, hostile_index, rss_bytes
from tests.multinode import befriend, eventually, make_home, running

from p2pmoments.config import Address
from p2pmoments.core.ahead import T_AHEAD
from p2pmoments.core.blobs import (
    BIG_CHUNK_SIZE,
    chunk_address,
)
from p2pmoments.core.crypto import VerifyKey, random_bytes
from p2pmoments.core.identity import Identity
from p2pmoments.core.manifest import create_removal
from p2pmoments.core.moment import Content, Kind, seal_moment
from p2pmoments.core.onion import ClientAuthKey, OnionKey
from p2pmoments.core.picture import Head, digest_of
from p2pmoments.core.reach import create_card, encode_reach
from p2pmoments.core.replication.messages import (
    T_CHUNK,
    T_HAVE,
    T_MANIFESTS,
    T_MOMENTS,
    T_REMOVED,
    T_WANT_CHUNKS,
)
from p2pmoments.node import Node
from p2pmoments.pictures import MAX_PICTURE

FILE = 16 << 20  # Bob's file, whose chunks Alice may ask for
REUSES = 50  # moments carrying one reference to a 1-piece index (16,384 chunk names)


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


Kinds = Callable[[Node, bytes, bytes, int, Path], Awaitable[list[dict[str, float | str]]]]


async def with_bob_process(
    root: Path, kinds: Kinds, *, bobs_file: bool
) -> list[dict[str, float | str]]:
    """Alice and Bob, friends in Alice's circle "c" (with a file of Bob's there if
    `bobs_file`); then Bob as a daemon process, Alice in this one, linked: `kinds` runs
    there, given Alice, the circle, Bob's key, his pid and his home."""
    alice_home, bob_home = await make_home(root, "Alice"), await make_home(root, "Bob")
    async with running(alice_home) as alice, running(bob_home) as bob:
        await befriend(alice, bob)
        circle = await alice.circles.create("c", ["Bob"], members_can_post=True)
        await eventually(lambda: bob.circles.all(), what="the manifest")
        if bobs_file:
            await bob.posting.post("c", "a file", files=[("f.bin", os.urandom(FILE), "")])
        port = alice.listen_port
        bob_key = bytes(bob.identity.public.verify_key)
    bob_proc = start(bob_home)
    try:
        wait(lambda: daemon_info(bob_home, bob_proc.pid))
        async with running(alice_home, listen=Address(host="127.0.0.1", port=port)) as alice:
            await eventually(lambda: bob_key in alice.links.linked(), timeout=60, what="a link")
            return await kinds(alice, circle.circle_id, bob_key, bob_proc.pid, bob_home)
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


def _received(alice: Node, bob: bytes) -> int:
    """Bytes Alice has received from Bob on their link (what he sent her)."""
    return next((p.bytes_in for p in alice.links.peers() if p.key == bob), -1)


async def _more_kinds(
    alice: Node, circle_id: bytes, bob: bytes, pid: int, home: Path
) -> list[dict[str, float | str]]:
    """Removal notices (21), a have's wants (17, field 4), a moments message's span
    (18, field 3), reach cards (22), chunks sent ahead (40), profile pictures (31-33).
    Each row also gives what Bob sent back, a byte sent."""
    measure = Measure(alice, bob, pid, home)
    manifest = alice.circles.resolve("c")
    key = alice.circles.key_for(manifest)
    me = bytes(alice.identity.public.verify_key)

    async def send_all(bodies: list[dict[int, Any]]) -> None:
        for body in bodies:
            if not await alice.links.send_paced(bob, body):
                return

    # Not measured: 8,000 posts of Alice's that Bob holds, for her to want again.
    seq = 8000
    posts = [
        seal_moment(
            alice.identity,
            manifest,
            key,
            seq=i,
            time=int(time.time()),
            content=Content(kind=Kind.POST, text=f"{i} hello"),
        ).envelope
        for i in range(1, seq + 1)
    ]
    opened = await alice.moments.open_many(posts)
    await alice.moments.store_many(opened.moments)
    await send_all([{0: T_MOMENTS, 1: circle_id, 2: posts[i : i + 4000]} for i in (0, 4000)])
    await measure.quiet()

    async def row(name: str, send: Callable[[], Awaitable[None]]) -> dict[str, float | str]:
        before = _received(alice, bob)
        out = await measure(name, send)
        back = _received(alice, bob) - before
        out["back_per_byte"] = back / float(out["sent"])
        print(f"{'':44} Bob sent back {back} B: {out['back_per_byte']:.2f} B/B", flush=True)
        return out

    out = []
    # 21: removal notices, each signed well (a signature check each), for circles unknown.
    bob_key = VerifyKey(bob)
    notices = [
        create_removal(
            alice.identity,
            circle_id=random_bytes(32),
            epoch=1,
            member=bob_key,
            time=int(time.time()),
        ).raw
        for _ in range(64)
    ]
    out.append(
        await row(
            "removed, 64 notices signed, circles unknown",
            lambda: send_all([{0: T_REMOVED, 1: notices}] * 10),
        )
    )
    # 17 with wants: "send me your range of my own moments again, from 1".
    epoch = manifest.epoch
    wants_have = {0: T_HAVE, 1: circle_id, 2: [[me, epoch, seq]], 3: [epoch], 4: [[me, epoch, 1]]}
    out.append(
        await row(
            f"have, wants {seq:,} of ours again, x10",
            lambda: send_all([wants_have] * 10),
        )
    )
    # 18 with a span that skips ahead: not opened, answered by one have a second.
    skipped = [
        seal_moment(
            alice.identity,
            manifest,
            key,
            seq=seq + 1_000_000 + i,
            time=int(time.time()),
            content=Content(kind=Kind.POST, text=f"{i} far"),
        ).envelope
        for i in range(4000)
    ]
    far = [me, epoch, seq + 1_000_000, seq + 1_003_999]
    out.append(
        await row(
            "moments, 4,000 past a gap (span), x5",
            lambda: send_all([{0: T_MOMENTS, 1: circle_id, 2: skipped, 3: far}] * 5),
        )
    )
    # 40: chunks sent ahead, true to their address, that no moment will use.
    ahead = [os.urandom(BIG_CHUNK_SIZE) for _ in range(40)]
    out.append(
        await row(
            "ahead, 40 x 512 KiB no moment uses",
            lambda: send_all(
                [{0: T_AHEAD, 1: circle_id, 2: chunk_address(c, 2), 3: c} for c in ahead]
            ),
        )
    )
    # 31-33: profile pictures, each a 512 x 512 JPEG near 64 KiB that Bob decodes whole.
    person = alice.pictures._me
    pictures = [_noisy_jpeg() for _ in range(5)]

    async def set_pictures() -> None:
        for i, image in enumerate(pictures):
            head = Head(int(time.time()) + 10 + i, digest_of(image))
            await alice.pictures._keep(person, head, ("image/jpeg", image))
            await measure.quiet(10)

    out.append(await row("pictures, 5 x 512 x 512 JPEG (head, picture)", set_pictures))
    # 22: reach cards, each of a new identity, signed: 64 signature checks a message.
    cards = [
        create_card(
            Identity.generate(),
            onion=OnionKey.generate().address,
            client_auth=ClientAuthKey.generate().public_key,
            issued=int(time.time()),
        ).raw
        for _ in range(64)
    ]
    out.append(
        await row(
            "reach, 64 cards of strangers, signed",
            lambda: send_all([encode_reach(cards)] * 10),
        )
    )
    return out


def _noisy_jpeg() -> bytes:
    """A 512 x 512 JPEG of noise under MAX_PICTURE bytes: the most pixels a byte."""
    small = Image.frombytes("L", (64, 64), os.urandom(64 * 64))
    image = small.resize((512, 512)).convert("RGB")
    for quality in (90, 75, 50, 30, 10):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        if buffer.tell() <= MAX_PICTURE:
            return buffer.getvalue()
    raise RuntimeError("no JPEG small enough")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="costs-") as tmp:
        found = asyncio.run(with_bob_process(Path(tmp), _kinds, bobs_file=True))
    with tempfile.TemporaryDirectory(prefix="costs-") as tmp:
        # The kinds added since the first table, on a pair of their own (Bob quiet
        # before each: no file of his, no index to follow).
        found += asyncio.run(with_bob_process(Path(tmp), _more_kinds, bobs_file=False))
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
