"""A member reusing one file reference in many moments costs the others one index, not
one a moment (issue 22, 4; spec/moments.md section 4.3)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from p2pmoments.core.blobs import BIG_CHUNK_SIZE, INDEX_PIECE, BlobKind, BlobRef
from p2pmoments.core.moment import Content, Kind, seal_moment
from p2pmoments.core.replication.messages import T_MOMENTS
from p2pmoments.node import Node
from tests.hostile_refs import hostile_index
from tests.multinode import befriend, eventually, make_home, running, until

REUSES = 40


def claim() -> tuple[BlobRef, bytes, bytes]:
    """A file of 8 GiB as a hostile author makes it: one index piece naming 16,384
    chunks that exist nowhere. (reference, piece address, piece)."""
    return hostile_index(1)


async def uses(node: Node) -> int:
    """Rows naming a chunk a moment uses: what a follower of an index records."""
    return int(
        await node.store.run(
            lambda s: s._conn.execute("SELECT COUNT(*) FROM moment_chunks").fetchone()[0]
        )
    )


async def test_a_reference_reused_by_many_moments_is_followed_once(tmp_path: Path) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob")]
    async with running(homes[0]) as alice, running(homes[1]) as bob:
        await befriend(alice, bob)
        manifest = await alice.circles.create("c", ["Bob"], members_can_post=True)
        await eventually(lambda: bob.circles.all(), what="the manifest")
        key = alice.circles.key_for(manifest)
        ref, address, piece = claim()
        await asyncio.to_thread(alice.moments.blobs.put, address, piece)  # Alice serves it
        envelopes = [
            seal_moment(
                alice.identity,
                manifest,
                key,
                seq=seq,
                time=int(time.time()),
                content=Content(kind=Kind.POST, text=f"{seq}", blobs=(ref,)),
            ).envelope
            for seq in range(1, REUSES + 2)
        ]
        opened = await alice.moments.open_many(envelopes)
        await alice.moments.store_many(opened.moments)
        bob_key = bytes(bob.identity.public.verify_key)
        assert alice.links.send(bob_key, {0: T_MOMENTS, 1: manifest.circle_id, 2: envelopes})
        await until(
            bob,
            lambda: asyncio.to_thread(bob.moments.blobs.has, address),
            what="Bob to fetch the index piece",
        )
        # The piece names its 16,384 chunks once it is kept (one transaction): for the
        # first moment; each of the others records only the piece it names itself.
        await until(
            bob,
            lambda: _at_least(bob, INDEX_PIECE),
            what="the chunks the piece names",
        )
        assert await uses(bob) == INDEX_PIECE + REUSES + 1
        assert bob.replication.engine.statistics()["chunks_wanted"] <= INDEX_PIECE + 1
        assert bob_key in alice.links.linked()  # a member's post, not junk: its link stays


async def _at_least(node: Node, count: int) -> bool:
    return await uses(node) >= count


async def test_a_file_of_several_index_pieces_is_followed_a_piece_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver names the chunks of one index piece at a time (the next once those are
    here), so a file of any size, 1 TiB honest or claimed, costs it one piece's chunk
    names at once; the file still arrives whole."""
    from p2pmoments.core.replication import chunks
    from p2pmoments.errors import NotFoundError
    from p2pmoments.views import moment_text

    monkeypatch.setattr("p2pmoments.core.blobs.INDEX_PIECE", 4)  # 10 chunks: 3 pieces
    followed: list[int] = []
    follow = chunks.ChunkScheduler._follow

    def counting(self: chunks.ChunkScheduler, *args: Any) -> Any:
        out = follow(self, *args)
        followed.append(len(self._users))
        return out

    monkeypatch.setattr(chunks.ChunkScheduler, "_follow", counting)
    data = os.urandom(9 * BIG_CHUNK_SIZE + 5)
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob")]
    async with running(homes[0]) as alice, running(homes[1]) as bob:
        await befriend(alice, bob)
        await alice.circles.create("c", ["Bob"], members_can_post=False)
        await eventually(lambda: bob.circles.all(), what="the manifest")
        alice.posting.ahead = None  # every chunk fetched, none sent ahead (sync.md 4.10)
        moment = await alice.posting.post("c", "", files=[("big.bin", data, "x/y")])
        await eventually(lambda: bob.moments.pieces or followed, what="Bob to follow it")

        async def ref() -> BlobRef | None:
            try:
                return await bob.moments.blob(moment_text(moment.id), BlobKind.FILE, 1, False)
            except NotFoundError:
                return None

        async def whole() -> bool:
            found = await ref()
            if found is None:
                return False
            try:
                await bob.moments.open_blob(found)
            except NotFoundError:
                return False
            return True

        await until(bob, whole, timeout=30, what="every chunk")
        found = await ref()
        assert found is not None
        assert len(found.index) == 3
        reader = await bob.moments.open_blob(found)
        got = b"".join(await asyncio.to_thread(reader.read_many, 0, len(reader.addresses)))
        assert got == data
    assert max(followed) <= 4 + 1  # one piece's chunks (and a piece) at a time, never 10


async def test_a_file_read_a_piece_at_a_time_resumes_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bob's daemon stops with only the first index piece's chunks here: started again,
    it reads the next pieces at link-up, and the file arrives whole."""
    from p2pmoments.holding import Holding

    monkeypatch.setattr("p2pmoments.core.blobs.INDEX_PIECE", 4)  # 10 chunks: 3 pieces
    data = os.urandom(9 * BIG_CHUNK_SIZE + 5)
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob")]
    async with running(homes[0]) as alice:
        with monkeypatch.context() as stalled:

            async def never(self: Holding, moment_id: bytes) -> None:
                return None  # the next piece is never read: Bob stops there

            stalled.setattr(Holding, "refill", never)
            async with running(homes[1]) as bob:
                await befriend(alice, bob)
                await alice.circles.create("c", ["Bob"], members_can_post=False)
                await eventually(lambda: bob.circles.all(), what="the manifest")
                alice.posting.ahead = None  # every chunk fetched, none sent ahead (sync.md 4.10)
                moment = await alice.posting.post("c", "", files=[("big.bin", data, "x/y")])
                await eventually(
                    lambda: _held(bob) >= 5 and not _in_flight(bob), what="the first piece's chunks"
                )
                assert _held(bob) == 4 + 1  # the first piece and its 4 chunks, no more
        async with running(homes[1]) as bob:
            done = await eventually(lambda: _done(bob), timeout=30, what="the whole file")
            assert done == moment.id


def _held(node: Node) -> int:
    """The most chunks a transfer.chunk event said were here."""
    return max(
        (int(e.data["held"]) for e in node.events.after(0)[0] if e.kind == "transfer.chunk"),
        default=0,
    )


def _in_flight(node: Node) -> int:
    return node.replication.engine.statistics()["chunks_in_flight"]


def _done(node: Node) -> bytes | None:
    from p2pmoments.core.ids import IdKind, decode_id

    for e in node.events.after(0)[0]:
        if e.kind == "transfer.done":
            return decode_id(e.data["moment"], IdKind.MOMENT)
    return None
