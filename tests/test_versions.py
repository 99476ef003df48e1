"""Files with versions between real daemons (spec/moments.md section 9): a new version
reaches every member and costs only its changed chunks; concurrent versions show as
siblings everywhere; a merged one resolves them; hostile version records are refused."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from p2pmoments.blobstore import BlobStore
from p2pmoments.config import Address
from p2pmoments.core.blobs import BIG_CHUNK_SIZE
from p2pmoments.errors import NotFoundError
from p2pmoments.node import Node
from p2pmoments.store import Store
from p2pmoments.views import moment_text
from tests.multinode import befriend, eventually, make_home, running

SIZE = 12 * BIG_CHUNK_SIZE + 1000  # 13 chunks of the second form, and an index piece


async def _pieces(data: bytes) -> AsyncIterable[bytes]:
    for start in range(0, len(data), 1 << 20):
        yield data[start : start + (1 << 20)]


async def update(
    node: Node, post: str, data: bytes, *, note: str = "", parents: tuple[int, ...] = ()
) -> str:
    """A new version of the post's file, as the API makes it; its id."""
    async with node.posting.upload() as upload:
        moment = await node.versions.update(
            post, upload, "budget.xlsx", "x/y", _pieces(data), note=note, parents=parents
        )
    return moment_text(moment.id)


async def listing(node: Node, post: str) -> dict[str, Any]:
    return node.versions.listing_json(await node.versions.listing(post), node.friends.person)


async def read_version(node: Node, post: str, n: int) -> bytes | None:
    """Version n of the file, if all of it is here."""
    try:
        _, reader = await node.versions.reader(post, n)
    except NotFoundError:
        return None
    return b"".join(await asyncio.to_thread(reader.read_many, 0, len(reader.addresses)))


def count_received(node: Node) -> dict[bytes, int]:
    """Bytes of every chunk the node takes from a peer, by the chunk's address, counted as
    they are written. (By address: on a loaded machine a chunk asked of one neighbour can
    be asked again of the next after its silence, spec/sync.md section 4, and come twice;
    what this counts is which chunks travelled.)"""
    received: dict[bytes, int] = {}
    blobs: BlobStore = node.moments.blobs
    put = blobs.put_received

    def counting(chunks: list[tuple[bytes, bytes]]) -> list[bytes]:
        received.update((address, len(d)) for address, d in chunks)
        return put(chunks)

    blobs.put_received = counting  # type: ignore[method-assign]
    return received


@contextlib.asynccontextmanager
async def work_circle(tmp_path: Path) -> AsyncIterator[tuple[Node, Node, Node]]:
    """Alice, Bob and Carol, friends, in Alice's circle "work", where all may post. (A
    member relaying a file it does not hold yet is not asked again until the next
    link-up, spec/sync.md section 4, point 6: so each has a link to each.)"""
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob", "Carol")]
    async with contextlib.AsyncExitStack() as stack:
        alice, bob, carol = [await stack.enter_async_context(running(h)) for h in homes]
        await befriend(alice, bob)
        await befriend(alice, carol)
        await befriend(bob, carol)
        await alice.circles.create("work", ["Bob", "Carol"], members_can_post=True)
        await eventually(lambda: bob.circles.all() and carol.circles.all(), what="manifests")
        yield alice, bob, carol


def identity(node: Node) -> str:
    from p2pmoments.friends import identity_text

    return identity_text(bytes(node.identity.public.verify_key))


async def wait_for(node: Node, check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait for an async condition, checked at each event of the node and at least every
    half second (the last chunk of a file is written after the event that names it)."""
    try:
        async with asyncio.timeout(30):
            while not await check():
                await node.events.wait_after(node.events.last_id, 0.5)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def wait_version(node: Node, post: str, n: int, data: bytes) -> None:
    async def arrived() -> bool:
        try:
            return await read_version(node, post, n) == data
        except NotFoundError:
            return False

    await wait_for(node, arrived, f"version {n}")


async def test_a_new_version_reaches_every_member_and_sends_only_its_changed_chunks(
    tmp_path: Path,
) -> None:
    first = os.urandom(SIZE)
    async with work_circle(tmp_path) as (alice, bob, carol):
        post = moment_text(
            (await alice.posting.post("work", "budget", files=[("budget.xlsx", first, "x/y")])).id
        )
        for node in (bob, carol):
            await wait_version(node, post, 1, first)
        got = {"Alice": count_received(alice), "Carol": count_received(carol)}
        # Bob changes one megabyte in the middle: two chunks differ.
        start = 5 * BIG_CHUNK_SIZE + 100
        second = first[:start] + os.urandom(1 << 20) + first[start + (1 << 20) :]
        await update(bob, post, second, note="Q3 figures")
        for node in (alice, carol):
            await wait_version(node, post, 2, second)
            shown = await listing(node, post)
            assert [v["n"] for v in shown["versions"]] == [1, 2]
            assert shown["newest"] == 2
            assert shown["siblings"] == []
            newest = shown["versions"][1]
            assert (newest["author"]["identity"], newest["note"], newest["size"]) == (
                identity(bob),
                "Q3 figures",
                SIZE,
            )
            assert await read_version(node, post, 1) == first  # any version is readable
            # The feed shows the newest.
            summary = await node.versions.summary(alice_id(post), node.friends.person)
            assert summary is not None
            assert summary["newest"]["n"] == 2
        # Three chunks changed (1 MiB across chunk borders) and one index piece: not the
        # file again. Alice holds the first version in her own pack, Carol loose.
        for who, sizes in got.items():
            assert len(sizes) == 4, (who, len(sizes))
            assert sum(sizes.values()) < 4 * BIG_CHUNK_SIZE, who


def alice_id(post: str) -> bytes:
    from p2pmoments.core.ids import IdKind, decode_id

    return decode_id(post, IdKind.MOMENT)


async def test_concurrent_versions_are_siblings_everywhere_and_a_merge_resolves_them(
    tmp_path: Path,
) -> None:
    first = os.urandom(SIZE)
    async with work_circle(tmp_path) as (alice, bob, carol):
        post = moment_text(
            (await alice.posting.post("work", "", files=[("budget.xlsx", first, "x/y")])).id
        )
        for node in (bob, carol):
            await wait_version(node, post, 1, first)
        bobs = first[:100] + b"Bob's figures" + first[113:]
        carols = first[:-100] + os.urandom(100)
        # Both change version 1 at once: neither has seen the other's.
        await asyncio.gather(
            update(bob, post, bobs, parents=(1,)), update(carol, post, carols, parents=(1,))
        )

        async def siblings(node: Node) -> list[str]:
            shown = await listing(node, post)
            by_n = {v["n"]: v for v in shown["versions"]}
            return sorted(by_n[n]["author"]["identity"] for n in shown["siblings"])

        for node in (alice, bob, carol):

            async def both(node: Node = node) -> bool:
                return await siblings(node) == sorted([identity(bob), identity(carol)])

            await wait_for(node, both, "two siblings")
        orders = [
            [v["id"] for v in (await listing(n, post))["versions"]] for n in (alice, bob, carol)
        ]
        assert orders[0] == orders[1] == orders[2]  # the same numbering at every member
        # Alice uploads a merge: it follows both, and resolves them everywhere.
        merged = bobs[:-100] + carols[-100:]
        await update(alice, post, merged, note="merged")
        for node in (alice, bob, carol):

            async def resolved(node: Node = node) -> bool:
                shown = await listing(node, post)
                return shown["siblings"] == [] and len(shown["versions"]) == 4

            await wait_for(node, resolved, "the merge")
            await wait_version(node, post, 4, merged)
            newest = (await listing(node, post))["versions"][3]
            assert sorted(newest["parents"]) == [2, 3]


async def test_picking_a_sibling_resolves_them_everywhere_and_sends_no_chunk_again(
    tmp_path: Path,
) -> None:
    first = os.urandom(SIZE)
    async with work_circle(tmp_path) as (alice, bob, carol):
        post = moment_text(
            (await alice.posting.post("work", "", files=[("budget.xlsx", first, "x/y")])).id
        )
        for node in (bob, carol):
            await wait_version(node, post, 1, first)
        alices, bobs = first[:-5] + b"alice", first[:-3] + b"bob"
        await asyncio.gather(
            update(alice, post, alices, parents=(1,)), update(bob, post, bobs, parents=(1,))
        )
        numbers: dict[str, int] = {}

        async def two(node: Node) -> bool:
            shown = await listing(node, post)
            numbers.update({v["id"]: v["n"] for v in shown["versions"]})
            return len(shown["siblings"]) == 2

        for node in (alice, bob, carol):
            await wait_for(node, lambda node=node: two(node), "two siblings")  # type: ignore[misc]
            for n in (2, 3):

                async def here(node: Node = node, n: int = n) -> bool:
                    return await read_version(node, post, n) in (alices, bobs)

                await wait_for(node, here, f"version {n}")
        got = {"Alice": count_received(alice), "Carol": count_received(carol)}
        shown = await listing(bob, post)
        alices_n = next(
            v["n"] for v in shown["versions"][1:] if v["author"]["identity"] == identity(alice)
        )
        picked = await bob.versions.pick(post, alices_n)  # Alice's (her chunks, her pack)
        for node in (alice, bob, carol):

            async def resolved(node: Node = node) -> bool:
                shown = await listing(node, post)
                return shown["siblings"] == [] and len(shown["versions"]) == 4

            await wait_for(node, resolved, "the pick")
            await wait_version(node, post, 4, alices)
            # It is recorded as using every chunk (13) and its index piece, so that they
            # stay while it is kept, whatever is dropped.

            async def recorded(node: Node = node) -> bool:
                return len(await node.store.run(Store.chunk_uses, picked.id)) == 14

            await wait_for(node, recorded, "the pick's chunks recorded")
        # Only the pick's own chunk index travelled: not one chunk of the file.
        for who, sizes in got.items():
            assert len(sizes) <= 1, (who, sizes)
            assert sum(sizes.values()) < 4096, who


async def test_every_member_keeps_the_newest_ten_and_drops_the_older_ones_content(
    tmp_path: Path,
) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob")]
    async with running(homes[0]) as alice, running(homes[1]) as bob:
        await befriend(alice, bob)
        await alice.circles.create("work", ["Bob"], members_can_post=True)
        await eventually(lambda: bob.circles.all(), what="Bob's manifest")
        post = moment_text(
            (await alice.posting.post("work", "", files=[("notes.txt", b"v1", "x/y")])).id
        )
        for n in range(2, 13):  # a chain, made in turns: each has seen the one before
            author = alice if n % 2 else bob

            async def seen(author: Node = author, n: int = n) -> bool:
                try:
                    return len((await listing(author, post))["versions"]) == n - 1
                except NotFoundError:
                    return False

            await wait_for(author, seen, f"version {n - 1}")
            await update(author, post, f"v{n}".encode())

        async def twelve(node: Node) -> bool:
            return len((await listing(node, post))["versions"]) == 12

        for node in (alice, bob):
            await wait_for(node, lambda node=node: twelve(node), "12 versions")  # type: ignore[misc]
            shown = await listing(node, post)
            assert [v["n"] for v in shown["versions"] if v["dropped"]] == [1, 2]
            for n in (1, 2):
                with pytest.raises(NotFoundError, match="dropped"):
                    await node.versions.reader(post, n)
            assert await read_version(node, post, 3) == b"v3"
            # The dropped versions' chunks are gone from disk (ours from our packs too).
            drawn = await node.versions.listing(post)
            gone = [a for i in drawn.history.order[:2] for a in drawn.file(i).chunks]

            async def deleted(node: Node = node, gone: list[bytes] = gone) -> bool:
                packed = await node.store.run(Store.packed_at, gone)
                loose = await asyncio.to_thread(lambda: [node.moments.blobs.has(a) for a in gone])
                return not packed and not any(loose)

            await wait_for(node, deleted, "the dropped chunks deleted")


async def test_a_version_met_while_its_author_is_away_later_brings_only_its_new_chunks(
    tmp_path: Path,
) -> None:
    """Alice holds Bob's version record (relayed, imported) before she meets Bob: when
    they link, only its new chunks come, not the ones she posted herself (her packs)."""
    first = os.urandom(SIZE)
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob")]
    async with running(homes[0]) as alice:
        async with running(homes[1]) as bob:
            await befriend(alice, bob)
            await alice.circles.create("work", ["Bob"], members_can_post=True)
            await eventually(lambda: bob.circles.all(), what="Bob's manifest")
            post = moment_text(
                (await alice.posting.post("work", "", files=[("b.xlsx", first, "x/y")])).id
            )
            await wait_version(bob, post, 1, first)
            bob_port = bob.listen_port
        # Bob, offline, makes a version; its record reaches Alice without him.
        second = first[: 3 * BIG_CHUNK_SIZE] + os.urandom(100) + first[3 * BIG_CHUNK_SIZE + 100 :]
        async with running(homes[1], listen=Address(host="127.0.0.1", port=bob_port or 0)) as bob:
            bob.links.forget(bytes(alice.identity.public.verify_key))  # not yet linked
            version = await update(bob, post, second)
            envelope = (await bob.moments.row_of(alice_id(version))).envelope  # type: ignore[union-attr]
        got = count_received(alice)
        assert [m.id for m in await alice.replication.receive([envelope])]
        async with running(homes[1], listen=Address(host="127.0.0.1", port=bob_port or 0)):
            await wait_version(alice, post, 2, second)
        assert len(got) == 2  # the one chunk that changed, and the index piece
