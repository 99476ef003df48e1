"""A home made by each earlier schema opens, migrates and serves (issue 23, upgrades).

tests/data/store-vN.tar.gz holds two homes as the daemon of schema N left them (made by
tests/make_old_stores.py with that schema's own code, store-v3 by tests/make_old_store.py):
Alice posted a text, a photo and a file; Bob received them and commented (and, but in
store-v3, reacted). Today's daemon opens each, moves it to the newest schema, and serves
every moment, photo and file through the control API; then a new post of Alice's, with a
file, reaches Bob.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from p2pmoments.api import API_PREFIX, create_app
from p2pmoments.node import Node
from p2pmoments.paths import resolve_paths
from p2pmoments.store import SCHEMA_VERSION, Store
from tests.make_old_stores import COMMENT, FILE, REACTION, SCHEMAS, TEXTS
from tests.multinode import read_feed, running, until

DATA = Path(__file__).parent / "data"
TOKEN = "u" * 43
AUTH = {"Authorization": f"Bearer {TOKEN}"}
VERSIONS = sorted({3, *SCHEMAS})
Client = TestClient[Any, Any]


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


async def get(client: Client, path: str) -> tuple[int, bytes, str]:
    response = await client.get(API_PREFIX + path, headers=AUTH)
    return response.status, await response.read(), response.content_type


def test_there_is_a_fixture_for_every_earlier_schema() -> None:
    assert set(range(1, SCHEMA_VERSION + 1)) <= {*VERSIONS, SCHEMA_VERSION}
    for version in VERSIONS:
        assert (DATA / f"store-v{version}.tar.gz").exists(), version


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_home_of_each_schema_migrates_and_serves_its_moments(
    version: int,
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> None:
    with tarfile.open(DATA / f"store-v{version}.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    alice_home, bob_home = tmp_path / "Alice", tmp_path / "Bob"
    assert await asyncio.to_thread(schema_of, alice_home) == version
    async with running(alice_home) as alice, running(bob_home) as bob:
        for node in (alice, bob):
            client = await aiohttp_client(create_app(node, TOKEN))
            await served_whole(client, reacted=version != 3)
        await goes_on(alice, bob)
    for home in (alice_home, bob_home):
        assert await asyncio.to_thread(schema_of, home) == SCHEMA_VERSION
        assert await asyncio.to_thread(integrity, home) == "ok"


async def served_whole(client: Client, *, reacted: bool) -> None:
    status, _, _ = await get(client, "/status")
    assert status == 200
    response = await client.get(API_PREFIX + "/moments", headers=AUTH)
    assert response.status == 200
    feed = (await response.json())["moments"]
    assert sorted(m["text"] for m in feed) == sorted(TEXTS)
    (post,) = [m for m in feed if m["photos"]]
    assert [c["text"] for c in post["comments"]] == [COMMENT]
    if reacted:
        assert [p["name"] for p in post["reactions_by"][REACTION]] == ["Bob"]
    for blob in (*post["photos"], *post["files"]):
        assert blob["chunks_held"] == blob["chunks"]
    status, body, _ = await get(client, f"/moments/{post['id']}/files/1")
    assert (status, body) == (200, FILE)
    status, body, kind = await get(client, f"/moments/{post['id']}/photos/1")
    assert (status, body[:8], kind) == (200, b"\x89PNG\r\n\x1a\n", "image/png")
    status, body, kind = await get(client, f"/moments/{post['id']}/photos/1/thumbnail")
    assert (status, body[:2], kind) == (200, b"\xff\xd8", "image/jpeg")


async def goes_on(alice: Node, bob: Node) -> None:
    # They last met at other ports: Bob is told where Alice is now.
    assert alice.listen_port is not None
    me = bytes(alice.identity.public.verify_key)
    bob.links.want(
        me,
        bytes(alice.identity.public.link_key),
        address=("127.0.0.1", alice.listen_port),
        first=True,
    )
    bob.links.seen(me, "127.0.0.1", alice.listen_port, "address")
    await alice.posting.post("family", "after the upgrade", files=[("n", FILE * 3, "x/y")])

    async def arrived() -> bool:
        return any(
            m["text"] == "after the upgrade"
            and m["files"][0]["chunks_held"] == m["files"][0]["chunks"]
            for m in await read_feed(bob, 10)
        )

    await until(bob, arrived, timeout=30, what="a post after the upgrade at Bob's")
