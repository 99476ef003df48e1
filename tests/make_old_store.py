"""Makes tests/data/store-v3.tar.gz: two homes as the daemon of schema 3 left them.

    git archive 54f0b04 src tests | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old/src:/tmp/old python tests/make_old_store.py tests/data/store-v3.tar.gz

Run it with the code of commit 54f0b04 (the last before schema 4 and blob references of
the second form, issue 13), not this one: the archive is what that code wrote. Alice
posted a text, a photo and a file (chunks of the first form, each a file of its own,
synced); Bob received them (chunks fetched, not synced) and commented. Both stopped
cleanly. tests/test_store_migration.py opens them with today's code.
"""

from __future__ import annotations

import asyncio
import io
import sys
import tarfile
import tempfile
from pathlib import Path

from PIL import Image

from tests.multinode import befriend, eventually, make_home, running

FILE = bytes(range(256)) * 80  # 20,480 bytes: one chunk
TEXTS = ("the first post", "a photo and a file")


def photo() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(out, format="PNG")
    return out.getvalue()


async def make(root: Path) -> None:
    alice_home, bob_home = await make_home(root, "Alice"), await make_home(root, "Bob")
    async with running(alice_home) as alice, running(bob_home) as bob:
        await befriend(alice, bob)
        await alice.circles.create("family", ["Bob"], members_can_post=True)
        await alice.posting.post("family", TEXTS[0])
        post = await alice.posting.post(
            "family", TEXTS[1], photos=[photo()], files=[("notes.bin", FILE, "x/y")]
        )

        def done() -> bool:
            return any(e.kind == "transfer.done" for e in bob.events.after(0)[0])

        await eventually(done, timeout=30, what="Bob to hold every chunk")
        from p2pmoments.views import moment_text

        await bob.posting.comment(moment_text(post.id), "lovely")
        await eventually(lambda: len(alice.events.after(0)[0]) > 0)


def main() -> None:
    out = Path(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        asyncio.run(make(root))
        with tarfile.open(out, "w:gz") as tar:
            for name in ("Alice", "Bob"):
                tar.add(root / name, arcname=name)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
