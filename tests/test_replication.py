"""Moments reach every member of their circle, member to member, and no one else."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from p2pmoments.config import Address
from p2pmoments.core.blobs import BlobRef
from p2pmoments.core.replication.messages import (
    T_CHUNK,
    T_HAVE,
    T_MANIFESTS,
    T_MOMENTS,
    T_WANT_CHUNKS,
)
from p2pmoments.errors import NotFoundError, NotOwnerError
from p2pmoments.node import Node
from tests.multinode import befriend, eventually, get_moment, make_home, read_feed, running, until
from tests.photos import photo_with_location, pixels

SYNC_TYPES = {T_MANIFESTS, T_HAVE, T_MOMENTS, T_WANT_CHUNKS, T_CHUNK}
BIG = bytes(range(256)) * (40 * 1024 + 7)  # 21 chunks of 512 KiB, named by an index piece
BIG_CHUNKS = 22  # what travels: the chunks and the index piece


async def whole(node: Node, ref: BlobRef, timeout: float = 30) -> bytes:
    """The blob, once every chunk of it has arrived."""

    async def here() -> bool:
        try:
            await node.moments.open_blob(ref)
        except NotFoundError:
            return False
        return True

    await until(node, here, timeout=timeout, what="every chunk")
    reader = await node.moments.open_blob(ref)
    return b"".join(await asyncio.to_thread(reader.read_many, 0, len(reader.addresses)))


@contextlib.asynccontextmanager
async def family_of_two(tmp_path: Path) -> AsyncIterator[tuple[Node, Node]]:
    """Alice and Bob, running, friends; Alice's circle "family" holds Bob, who has its
    manifest."""
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob")]
    async with running(homes[0]) as alice, running(homes[1]) as bob:
        await befriend(alice, bob)
        await alice.circles.create("family", ["Bob"], members_can_post=False)
        await eventually(lambda: bob.circles.all(), what="Bob to get the manifest")
        yield alice, bob


async def texts(node: Node) -> list[str]:
    return [m["text"] for m in await read_feed(node, 100)]


async def wait_texts(node: Node, expected: list[str], timeout: float = 20) -> None:
    async def arrived() -> bool:
        return sorted(await texts(node)) == sorted(expected)

    await until(node, arrived, timeout=timeout, what=f"{expected}")


def spy(node: Node) -> list[int]:
    seen: list[int] = []
    node.on_message = lambda key, body: seen.append(body[0])
    return seen


async def test_members_receive_and_a_friend_outside_the_circle_receives_nothing(
    tmp_path: Path,
) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob", "Carol", "Dave")]
    async with contextlib.AsyncExitStack() as stack:
        alice, bob, carol, dave = [await stack.enter_async_context(running(h)) for h in homes]
        for other in (bob, carol, dave):
            await befriend(alice, other)
        dave_saw = spy(dave)
        await alice.circles.create("family", ["Bob", "Carol"], members_can_post=True)
        await alice.posting.post("family", "ice cream!")
        await wait_texts(bob, ["ice cream!"])
        await wait_texts(carol, ["ice cream!"])
        assert [m.name for m in bob.circles.all()] == ["family"]
        # Bob comments; Carol gets the comment too (through Alice: they are not friends).
        post_id = (await read_feed(bob, 10))[0]["id"]
        await bob.posting.comment(post_id, "yum")

        async def commented() -> bool:
            return bool((await read_feed(carol, 10))[0]["comments"])

        await until(carol, commented, what="Bob's comment to reach Carol")
        assert not (set(dave_saw) & SYNC_TYPES)  # not one circle message reached Dave
        assert dave.circles.all() == []
        assert await texts(dave) == []


async def test_an_offline_member_catches_up_and_a_removed_member_gets_nothing_new(
    tmp_path: Path,
) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob", "Carol")]
    async with running(homes[0]) as alice:
        async with running(homes[1]) as bob, running(homes[2]) as carol:
            await befriend(alice, bob)
            await befriend(alice, carol)
            await alice.circles.create("family", ["Bob", "Carol"], members_can_post=False)
            await wait_texts(bob, [])
            await eventually(lambda: carol.circles.all(), what="Carol to get the manifest")
            carol_port = carol.listen_port
        # Bob and Carol are offline: Alice posts.
        await alice.posting.post("family", "while you were out")
        async with running(
            homes[2], listen=Address(host="127.0.0.1", port=carol_port or 0)
        ) as carol:
            await wait_texts(carol, ["while you were out"])
            await alice.circles.change("family", remove=["Carol"])
            # Scope is the latest manifest: the new one goes to members only, so Carol
            # is not even told; she simply receives nothing new.
            await alice.posting.post("family", "after Carol left")
            async with running(homes[1]) as bob:
                await wait_texts(bob, ["while you were out", "after Carol left"])
            assert sorted(await texts(carol)) == ["while you were out"]


async def test_a_removed_member_is_told_keeps_what_she_had_and_stops_dialling(
    tmp_path: Path,
) -> None:
    """Bob and Carol are not friends; Alice removes Carol. Carol learns it (and when), keeps
    her moments, cannot post there, and stops dialling Bob; added back, she is a member again."""
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob", "Carol")]
    async with contextlib.AsyncExitStack() as stack:
        alice, bob, carol = [await stack.enter_async_context(running(h, mdns=True)) for h in homes]
        await befriend(alice, bob)
        await befriend(alice, carol)
        bob_key = bytes(bob.identity.public.verify_key)
        await alice.circles.create("family", ["Bob", "Carol"], members_can_post=True)
        await alice.posting.post("family", "before")
        await wait_texts(carol, ["before"])
        await eventually(
            lambda: bob_key in carol.links.linked(), timeout=20, what="Carol to link to Bob"
        )
        assert carol.statistics()["dial_targets"] == 2  # Alice, and Bob for the circle
        await alice.circles.change("family", remove=["Carol"])

        def removal() -> list[object]:
            return [e for e in carol.events.after(0)[0] if e.kind == "circle.removed"]

        await eventually(removal, what="Carol to be told")
        (shown,) = [carol.circles.json(m) for m in carol.circles.all()]
        assert shown["removed"] is not None
        assert shown["removed"]["epoch"] == 1
        assert abs(shown["removed"]["at"] - time.time()) < 60
        assert await texts(carol) == ["before"]  # she keeps what she had
        with pytest.raises(NotOwnerError, match="removed"):
            await carol.posting.post("family", "may I?")
        await eventually(lambda: bob_key not in carol.links.linked(), what="Carol to drop Bob")
        assert carol.statistics()["dial_targets"] == 1  # Alice only
        await alice.posting.post("family", "after")
        await wait_texts(bob, ["before", "after"])
        assert await texts(carol) == ["before"]
        # Back in: the next epoch names her, and she is a member like any other.
        await alice.circles.change("family", add=["Carol"])
        await alice.posting.post("family", "welcome back")
        await wait_texts(carol, ["before", "welcome back"])
        assert carol.circles.json(carol.circles.all()[0])["removed"] is None


async def test_the_author_leaves_and_a_member_relays(tmp_path: Path) -> None:
    """Bob and Carol are not friends; the signed manifest lets them link for the circle."""
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob", "Carol")]
    async with running(homes[1], mdns=True) as bob:
        async with running(homes[0], mdns=True) as alice:
            async with running(homes[2], mdns=True) as carol:
                await befriend(alice, bob)
                await befriend(alice, carol)
                await alice.circles.create("family", ["Bob", "Carol"], members_can_post=True)
                await eventually(lambda: carol.circles.all(), timeout=20)
            await alice.posting.post("family", "relay me")  # Carol is away
            await wait_texts(bob, ["relay me"])
        # Alice has gone too. Carol comes back and only Bob can give it to her.
        async with running(homes[2], mdns=True) as carol:
            await wait_texts(carol, ["relay me"], timeout=30)
            assert bob.friends.get(bytes(carol.identity.public.verify_key)) is None  # not friends


async def test_photos_follow_their_moments(tmp_path: Path) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob")]
    async with running(homes[0]) as alice, running(homes[1]) as bob:
        await befriend(alice, bob)
        await alice.circles.create("family", ["Bob"], members_can_post=False)
        original = photo_with_location(900, 600)
        moment = await alice.posting.post("family", "beach", photos=[original])
        await wait_texts(bob, ["beach"])
        from p2pmoments.core.blobs import BlobKind
        from p2pmoments.views import moment_text

        ref = await bob.moments.blob(moment_text(moment.id), BlobKind.PHOTO, 1, False)
        assert pixels(await whole(bob, ref)) == pixels(original)


async def test_a_retraction_that_arrives_before_its_target_still_retracts_it(
    tmp_path: Path,
) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob")]
    async with running(homes[0]) as alice, running(homes[1]) as bob:
        await befriend(alice, bob)
        circle = await alice.circles.create("family", ["Bob"], members_can_post=False)
        await eventually(lambda: bob.circles.all(), what="Bob to get the manifest")
        from p2pmoments.core.moment import Content, Kind, seal_moment

        key = alice.circles.key_for(circle)
        target = seal_moment(
            alice.identity,
            circle,
            key,
            seq=100,
            time=1,
            content=Content(kind=Kind.POST, text="oops"),
        )
        tombstone = seal_moment(
            alice.identity,
            circle,
            key,
            seq=101,
            time=2,
            content=Content(kind=Kind.RETRACTION, target=target.id),
        )
        assert await bob.replication.receive([tombstone.envelope])
        assert await bob.replication.receive([target.envelope])
        from p2pmoments.views import moment_text

        shown = await get_moment(bob, moment_text(target.id))
        assert shown["retracted"] is True
        assert shown["text"] == ""


async def test_a_file_of_many_chunks_arrives_whole(tmp_path: Path) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob")]
    async with running(homes[0]) as alice, running(homes[1]) as bob:
        await befriend(alice, bob)
        await alice.circles.create("family", ["Bob"], members_can_post=False)
        moment = await alice.posting.post("family", "", files=[("big.bin", BIG, "x/y")])
        await wait_texts(bob, [""])
        from p2pmoments.core.blobs import BlobKind
        from p2pmoments.views import moment_text

        ref = await bob.moments.blob(moment_text(moment.id), BlobKind.FILE, 1, False)
        assert ref.version == 2  # its chunks are named by a chunk index
        assert ref.total() == BIG_CHUNKS > 16  # more than are asked at once
        assert await whole(bob, ref) == BIG


async def test_an_index_its_author_made_wrong_is_fetched_once_and_reads_as_damaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from p2pmoments.core import blobs
    from p2pmoments.core.blobs import BlobKind
    from p2pmoments.views import moment_text

    async with family_of_two(tmp_path) as (alice, bob):
        # Alice's daemon seals its file's chunk index under the wrong nonce: the piece
        # hashes to its address (its author computed it) but does not open.
        with monkeypatch.context() as patch:
            patch.setattr(blobs, "_index_nonce", lambda piece: b"\x02" * 4 + bytes(8))
            moment = await alice.posting.post("family", "", files=[("big.bin", BIG, "x/y")])
        await wait_texts(bob, [""])
        ref = await bob.moments.blob(moment_text(moment.id), BlobKind.FILE, 1, False)
        assert ref.index
        # Bob keeps the piece: nothing is left to ask anyone for, now or at a new link.
        await until(
            bob,
            lambda: asyncio.to_thread(bob.moments.blobs.has, ref.index[0]),
            what="Bob to keep the index piece",
        )
        assert await bob.moments.missing_in([moment.circle_id]) == []
        # Reading the file says what is wrong with it, not "not arrived yet" forever.
        with pytest.raises(NotFoundError, match="damaged from its author"):
            await bob.moments.open_blob(ref)


async def test_a_disk_error_while_serving_costs_that_link_not_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    async with family_of_two(tmp_path) as (alice, _bob):

        def broken(wanted: object) -> list[tuple[bytes, bytes]]:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(alice.moments.blobs, "read_many_packed", broken)
        await alice.posting.post("family", "", files=[("big.bin", BIG, "x/y")])
        await eventually(lambda: not alice.links.peers(), what="the link to end")
        # Alice's daemon goes on: she posts, and her store and parts answer.
        await alice.posting.post("family", "still here")
        assert "still here" in await texts(alice)
        assert alice.statistics()["links"] == 0


async def test_a_transfer_resumes_when_its_holder_returns_and_shows_its_progress(
    tmp_path: Path,
) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob")]
    async with running(homes[0]) as alice:
        async with running(homes[1]) as bob:
            await befriend(alice, bob)
            await alice.circles.create("family", ["Bob"], members_can_post=False)
            await eventually(lambda: bob.circles.all(), what="Bob to get the manifest")
        alice_port = alice.listen_port
        moment = await alice.posting.post("family", "", files=[("big.bin", BIG, "x/y")])
    # Bob has the moment (from some other member, say) but not one chunk of its file.
    async with running(homes[1]) as bob:
        assert await bob.replication.receive([moment.envelope])
        (shown,) = await read_feed(bob, 10)
        assert shown["files"][0]["chunks"] == BIG_CHUNKS
        assert shown["files"][0]["chunks_held"] == 0
        # Alice comes back: the transfer resumes, chunk by chunk, in events.
        async with running(homes[0], listen=Address(host="127.0.0.1", port=alice_port or 0)):

            def done() -> bool:
                return any(e.kind == "transfer.done" for e in bob.events.after(0)[0])

            await eventually(done, timeout=30, what="transfer.done")
        events = [e for e in bob.events.after(0)[0] if e.kind.startswith("transfer.")]
        from p2pmoments.views import moment_text

        assert {e.data["moment"] for e in events} == {moment_text(moment.id)}
        held = [e.data["held"] for e in events if e.kind == "transfer.chunk"]
        # Every chunk once (the index first), progress counting up.
        assert held == list(range(1, BIG_CHUNKS + 1))
        assert {e.data["total"] for e in events if e.kind == "transfer.chunk"} == {BIG_CHUNKS}
        assert events[-1].kind == "transfer.done"
        (shown,) = await read_feed(bob, 10)
        assert shown["files"][0]["chunks_held"] == BIG_CHUNKS


async def test_a_member_flooding_junk_is_dropped_and_the_others_carry_on(tmp_path: Path) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob", "Mallory")]
    async with contextlib.AsyncExitStack() as stack:
        alice, bob, mallory = [await stack.enter_async_context(running(h)) for h in homes]
        await befriend(alice, bob)
        await befriend(alice, mallory)
        await alice.circles.create("family", ["Bob", "Mallory"], members_can_post=True)
        await eventually(lambda: mallory.circles.all(), what="Mallory to get the manifest")
        circle = alice.circles.all()[0].circle_id
        alice_key = bytes(alice.identity.public.verify_key)
        mallory_key = bytes(mallory.identity.public.verify_key)
        # Forged moments by the thousand, then chunks nobody asked for.
        assert mallory.links.send(alice_key, {0: T_MOMENTS, 1: circle, 2: [b"\x00" * 200] * 300})
        for _ in range(100):
            if not mallory.links.send(alice_key, {0: T_CHUNK, 1: b"\x01" * 32, 2: b"junk"}):
                break

        def dropped() -> bool:
            return any(
                e.kind == "peer.disconnected" and "junk" in e.data.get("reason", "")
                for e in alice.events.after(0)[0]
            )

        await eventually(dropped, what="Alice to drop Mallory")
        assert mallory_key not in alice.links.linked()
        # Bob's link is untouched and carries the next moment.
        await alice.posting.post("family", "still here")
        await wait_texts(bob, ["still here"])
        assert await texts(alice) == ["still here"]  # nothing forged was kept


async def test_each_chunk_is_fetched_once_and_a_member_lacking_it_sends_the_asker_elsewhere(
    tmp_path: Path,
) -> None:
    import shutil

    from p2pmoments.paths import resolve_paths

    names = ("Alice", "Bob", "Carol")
    homes = dict(zip(names, [await make_home(tmp_path, n) for n in names], strict=True))
    ports: dict[str, int] = {}

    def at(name: str) -> Address:
        return Address(host="127.0.0.1", port=ports.get(name, 0))

    def forget_blobs(name: str) -> None:
        shutil.rmtree(resolve_paths(homes[name]).blob_dir, ignore_errors=True)

    def done(node: Node) -> bool:
        return any(e.kind == "transfer.done" for e in node.events.after(0)[0])

    async with contextlib.AsyncExitStack() as stack:
        alice, bob, carol = [await stack.enter_async_context(running(homes[n])) for n in names]
        for a, b in ((alice, bob), (alice, carol), (bob, carol)):
            await befriend(a, b)
        ports = {n.name: int(n.listen_port or 0) for n in (alice, bob, carol)}
        await alice.circles.create("family", ["Bob", "Carol"], members_can_post=True)
        await alice.posting.post("family", "", files=[("big.bin", BIG, "x/y")])
        await eventually(lambda: done(bob) and done(carol), timeout=30, what="both to have it")

    # Carol lost her copy; Alice and Bob both hold every chunk: each comes once.
    await asyncio.to_thread(forget_blobs, "Carol")
    async with contextlib.AsyncExitStack() as stack:
        for n in ("Alice", "Bob"):
            await stack.enter_async_context(running(homes[n], listen=at(n)))
        carol = await stack.enter_async_context(running(homes["Carol"], listen=at("Carol")))
        chunks: list[bytes] = []

        def count(key: bytes, body: dict[int, Any]) -> None:
            if body[0] == T_CHUNK and 2 in body:
                chunks.append(body[1])

        carol.on_message = count
        await eventually(lambda: done(carol), timeout=30, what="Carol to have it again")
        assert len(chunks) == BIG_CHUNKS
        assert len(set(chunks)) == BIG_CHUNKS

    # Now Bob lacks them too, and only Bob is there at first: he says so, and Carol
    # gets every chunk once Alice is back.
    await asyncio.to_thread(forget_blobs, "Carol")
    await asyncio.to_thread(forget_blobs, "Bob")
    async with (
        running(homes["Bob"], listen=at("Bob")),
        running(homes["Carol"], listen=at("Carol")) as carol,
    ):
        said: list[bool] = []
        carol.on_message = lambda key, body: said.append(2 in body) if body[0] == T_CHUNK else None
        # Only the index piece can be asked for (it names the rest).
        await eventually(lambda: len(said) >= 1, timeout=30, what="Bob to answer")
        assert not any(said)  # "I do not hold it", for each chunk asked
        async with running(homes["Alice"], listen=at("Alice")):
            await eventually(lambda: done(carol), timeout=30, what="Carol to get them from Alice")
        assert said.count(True) == BIG_CHUNKS


async def test_a_member_cannot_smuggle_another_circles_moment_under_its_own(
    tmp_path: Path,
) -> None:
    """Scope is checked per circle: Mallory is in "pub" but not in "family"; a family
    moment she slips into a message about "pub" is not kept."""
    from p2pmoments.core.moment import Content, Kind, seal_moment

    names = ("Alice", "Bob", "Mallory")
    homes = [await make_home(tmp_path, n) for n in names]
    async with running(homes[1]) as bob, running(homes[2]) as mallory:
        async with running(homes[0]) as alice:
            await befriend(alice, bob)
            await befriend(alice, mallory)
            await befriend(bob, mallory)
            pub = await alice.circles.create("pub", ["Bob", "Mallory"], members_can_post=True)
            family = await alice.circles.create("family", ["Bob"], members_can_post=False)
            await eventually(lambda: len(bob.circles.all()) == 2, what="Bob's circles")
            await eventually(lambda: mallory.circles.all(), what="Mallory's circle")
            forged = seal_moment(
                alice.identity,
                family,
                alice.circles.key_for(family),
                seq=99,
                time=1,
                content=Content(kind=Kind.POST, text="smuggled"),
            )
        # Alice is gone: only Mallory's link reaches Bob, and it keeps order.
        bob_key = bytes(bob.identity.public.verify_key)
        assert mallory.links.send(bob_key, {0: T_MOMENTS, 1: pub.circle_id, 2: [forged.envelope]})
        await mallory.posting.post("pub", "after")  # pushed to Bob on the same link
        await wait_texts(bob, ["after"])
        assert "smuggled" not in await texts(bob)


async def test_a_member_sending_integers_beyond_64_bits_is_refused_and_keeps_its_link(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Sequence numbers, times and expiries of 2^63 and more cannot be stored: a moment
    carrying one is refused at decoding (spec/encoding.md), the rest goes on."""
    from p2pmoments.core import wire
    from p2pmoments.core.moment import Content, Kind, seal_moment

    names = ("Alice", "Bob", "Mallory")
    homes = [await make_home(tmp_path, n) for n in names]
    async with contextlib.AsyncExitStack() as stack:
        alice, bob, mallory = [await stack.enter_async_context(running(h)) for h in homes]
        await befriend(alice, bob)
        await befriend(alice, mallory)
        await befriend(bob, mallory)
        pub = await alice.circles.create("pub", ["Bob", "Mallory"], members_can_post=True)
        await eventually(lambda: mallory.circles.all(), what="Mallory's circle")
        await eventually(lambda: bob.circles.all(), what="Bob's circle")
        key = mallory.circles.key_for(pub)
        forged = []
        with monkeypatch.context() as patch:
            patch.setattr(wire, "INT_MAX", 2**64 - 1)  # only Mallory's encoder is lax
            for seq, when, expires in ((2**63, 1, None), (1, 2**63 + 5, None), (1, 1, 2**64 - 1)):
                content = Content(kind=Kind.POST, text=f"big {seq}", expires=expires)
                forged.append(
                    seal_moment(mallory.identity, pub, key, seq=seq, time=when, content=content)
                )
        bob_key = bytes(bob.identity.public.verify_key)
        mallory_key = bytes(mallory.identity.public.verify_key)
        assert mallory.links.send(
            bob_key, {0: T_MOMENTS, 1: pub.circle_id, 2: [f.envelope for f in forged]}
        )
        await mallory.posting.post("pub", "after")
        await wait_texts(bob, ["after"])
        assert not any(t.startswith("big") for t in await texts(bob))
        assert mallory_key in bob.links.linked()  # three bad moments are not worth a drop


async def test_a_circle_handed_over_by_two_members_at_once_is_joined_once(tmp_path: Path) -> None:
    """Two members pass Carol the same new manifest at the same moment: one circle.joined."""
    import asyncio

    from p2pmoments.core.manifest import Member, create_manifest, new_circle_id, new_epoch_key

    names = ("Alice", "Bob", "Carol")
    homes = [await make_home(tmp_path, n) for n in names]
    async with contextlib.AsyncExitStack() as stack:
        alice, bob, carol = [await stack.enter_async_context(running(h)) for h in homes]
        for a, b in ((alice, bob), (alice, carol), (bob, carol)):
            await befriend(a, b)
        keys = {n.name: bytes(n.identity.public.verify_key) for n in (alice, bob, carol)}
        await eventually(lambda: len(carol.links.linked()) == 2, what="Carol linked to both")
        members = [
            Member(verify_key=n.identity.public.verify_key, link_key=n.identity.public.link_key)
            for n in (bob, carol)
        ]
        manifest = create_manifest(
            alice.identity,
            circle_id=new_circle_id(),
            epoch=0,
            name="family",
            members=members,
            members_can_post=True,
            created=1,
            key=new_epoch_key(),
        )
        body = {0: T_MANIFESTS, 1: [manifest.raw]}
        before = carol.statistics()["sync_messages"]
        await asyncio.gather(
            carol.replication.on_message(keys["Alice"], body),
            carol.replication.on_message(keys["Bob"], body),
        )
        await eventually(
            lambda: carol.statistics()["sync_messages"] >= before + 2,
            what="both handovers handled",
        )
        joined = [e for e in carol.events.after(0)[0] if e.kind == "circle.joined"]
        assert len(joined) == 1
