"""An old store opens and keeps its moments and blobs (spec/store.md, schema 4 and on).

tests/data/store-v3.tar.gz holds two homes as the daemon of schema 3 left them (made by
tests/make_old_store.py with that daemon's code): Alice posted a text, a photo and a
file, Bob received them and commented. Today's daemon opens them, moves the database to
the newest schema, shows every moment, serves every photo and file (chunks of the first form,
files of their own), and goes on: a new post, packed, reaches Bob.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tarfile
from pathlib import Path

import pytest

from p2pmoments.core.blobs import BlobKind
from p2pmoments.node import Node
from p2pmoments.paths import resolve_paths
from p2pmoments.reading import Reading
from p2pmoments.store import SCHEMA_VERSION, Store
from tests.make_old_store import FILE, TEXTS
from tests.multinode import read_feed, running, until

OLD = Path(__file__).parent / "data" / "store-v3.tar.gz"


@pytest.fixture
def homes(tmp_path: Path) -> Path:
    with tarfile.open(OLD) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path


def schema_of(home: Path) -> int:
    conn = sqlite3.connect(resolve_paths(home).db_file)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def integrity(home: Path) -> str:
    store = Store.open(resolve_paths(home).db_file)
    try:
        return store.integrity_check()
    finally:
        store.close()


async def whole(node: Node, moment: str, kind: BlobKind, thumbnail: bool = False) -> bytes:
    ref = await node.moments.blob(moment, kind, 1, thumbnail)
    reader = await node.moments.open_blob(ref)
    return b"".join(await asyncio.to_thread(reader.read_many, 0, len(reader.addresses)))


async def test_an_old_store_opens_with_its_moments_and_blobs(homes: Path) -> None:
    assert await asyncio.to_thread(schema_of, homes / "Alice") == 3 < SCHEMA_VERSION
    for name in ("Alice", "Bob"):
        async with running(homes / name) as node:
            feed = await read_feed(node, 10)
            assert sorted(m["text"] for m in feed) == sorted(TEXTS)
            (with_blobs,) = [m for m in feed if m["photos"]]
            for item in (*with_blobs["photos"], *with_blobs["files"]):
                assert item["chunks_held"] == item["chunks"]
            assert await whole(node, with_blobs["id"], BlobKind.FILE) == FILE
            photo = await whole(node, with_blobs["id"], BlobKind.PHOTO)
            assert photo.startswith(b"\x89PNG")
            thumb = await whole(node, with_blobs["id"], BlobKind.PHOTO, thumbnail=True)
            assert thumb.startswith(b"\xff\xd8")  # a JPEG
            assert [c["text"] for c in with_blobs["comments"]] == ["lovely"]
            # Upgraded with everything it held read: nothing shows as new.
            counts = await Reading(
                node.store, node.events, node.circles, node.moments, lambda _: False
            ).counts()
            assert counts
            assert [c.unread for c in counts] == [0] * len(counts)
        assert await asyncio.to_thread(schema_of, homes / name) == SCHEMA_VERSION
        assert await asyncio.to_thread(integrity, homes / name) == "ok"


async def test_an_old_store_goes_on_posting_and_receiving(homes: Path) -> None:
    async with running(homes / "Alice") as alice, running(homes / "Bob") as bob:
        # They last met at other ports: Bob is told where Alice is now.
        assert alice.listen_port is not None
        bob.links.want(
            bytes(alice.identity.public.verify_key),
            bytes(alice.identity.public.link_key),
            address=("127.0.0.1", alice.listen_port),
            first=True,
        )
        bob.links.seen(
            bytes(alice.identity.public.verify_key), "127.0.0.1", alice.listen_port, "address"
        )
        data = bytes(range(256)) * 5000  # a new file: its five chunks in a pack
        post = await alice.posting.post("family", "after the upgrade", files=[("n", data, "x/y")])

        async def arrived() -> bool:
            feed = await read_feed(bob, 10)
            return any(
                m["text"] == "after the upgrade"
                and m["files"][0]["chunks_held"] == m["files"][0]["chunks"] == 5
                for m in feed
            )

        await until(bob, arrived, timeout=30, what="the new post and its file at Bob's")
        from p2pmoments.views import moment_text

        assert await whole(bob, moment_text(post.id), BlobKind.FILE) == data
