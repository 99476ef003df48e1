"""Chunks sent ahead of their moment (spec/sync.md section 4, point 10): a post's chunks
reach the members while it is still being uploaded, only the rest is asked for, and
what a peer sends ahead is kept only within the rules."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pmoments.core.ahead import (
    AHEAD_WINDOW,
    T_AHEAD,
    T_AHEAD_OK,
    Ahead,
    AheadBudget,
    AheadOk,
    BadAheadMessage,
    decode_ahead_message,
    encode_ahead,
    encode_ahead_ok,
)
from p2pmoments.core.blobs import BlobKind, chunk_address
from p2pmoments.core.replication.messages import T_CHUNK
from p2pmoments.errors import DiskFullError
from p2pmoments.node import Node
from p2pmoments.views import moment_text
from tests.multinode import befriend, eventually, make_home, running
from tests.test_replication import BIG, BIG_CHUNKS, family_of_two, wait_texts, whole

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.binary(max_size=40),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=3),
)


@settings(max_examples=80)
@given(st.sampled_from([T_AHEAD, T_AHEAD_OK, 0, 42]), st.dictionaries(st.integers(0, 5), values))
def test_an_ahead_message_of_any_fields_is_refused_with_its_own_error(
    kind: int, fields: dict[int, Any]
) -> None:
    for body in ({**fields, 0: kind}, fields):
        with contextlib.suppress(BadAheadMessage):  # any other error fails the test
            decode_ahead_message(body)


def test_the_two_messages_round_trip_and_a_chunk_too_long_is_refused() -> None:
    circle, address = bytes(32), bytes(range(32))
    assert decode_ahead_message(encode_ahead(circle, address, b"x" * 10)) == Ahead(
        circle, address, b"x" * 10
    )
    assert decode_ahead_message(encode_ahead_ok(5)) == AheadOk(5)
    for bad in (
        encode_ahead(circle, address, b"x" * (512 * 1024 + 17)),
        encode_ahead(circle[:31], address, b""),
        {**encode_ahead(circle, address, b""), 4: 1},
        encode_ahead_ok(-1),
    ):
        with contextlib.suppress(BadAheadMessage):
            decode_ahead_message(bad)
            raise AssertionError(f"{bad!r} was taken")


def test_a_peers_budget_keeps_so_much_a_window_then_starts_again() -> None:
    budget = AheadBudget(limit=100)
    assert budget.take(60, now=10.0)
    assert not budget.take(60, now=11.0)  # over: not kept
    assert budget.take(40, now=12.0)
    assert not budget.take(1, now=10.0 + AHEAD_WINDOW - 1)
    assert budget.take(100, now=10.0 + AHEAD_WINDOW)


def counting(node: Node) -> tuple[list[bytes], list[bytes]]:
    """(chunks that came ahead, chunks that came asked for), as they arrive at `node`."""
    ahead: list[bytes] = []
    asked: list[bytes] = []

    def count(key: bytes, body: dict[int, Any]) -> None:
        if body[0] == T_AHEAD:
            ahead.append(body[2])
        elif body[0] == T_CHUNK and 2 in body:
            asked.append(body[1])

    node.on_message = count
    return ahead, asked


def done(node: Node, moment: str) -> bool:
    events = node.events.after(0)[0]
    return any(e.kind == "transfer.done" and e.data["moment"] == moment for e in events)


async def test_a_small_files_chunks_all_come_ahead_and_it_is_done_on_arrival(
    tmp_path: Path,
) -> None:
    data = os.urandom(1 << 20)  # four chunks of the first form: all fit on the link
    async with family_of_two(tmp_path) as (alice, bob):
        await eventually(lambda: bob.me in alice.ahead._accepting, what="Bob's ahead-ok")
        ahead, asked = counting(bob)
        moment = await alice.posting.post("family", "a file", files=[("f.bin", data, "x/y")])
        text = moment_text(moment.id)
        await eventually(lambda: done(bob, text), timeout=20, what="Bob's transfer.done")
        await wait_texts(bob, ["a file"])
        assert len(ahead) == 4
        assert not asked  # nothing was asked for: it was all here
        ref = await bob.moments.blob(text, BlobKind.FILE, 1, False)
        assert await whole(bob, ref) == data


async def test_a_big_files_chunks_that_came_ahead_are_not_asked_for_again(
    tmp_path: Path,
) -> None:
    async with family_of_two(tmp_path) as (alice, bob):
        await eventually(lambda: bob.me in alice.ahead._accepting, what="Bob's ahead-ok")
        ahead, asked = counting(bob)
        moment = await alice.posting.post("family", "", files=[("big.bin", BIG, "x/y")])
        text = moment_text(moment.id)
        await wait_texts(bob, [""])
        ref = await bob.moments.blob(text, BlobKind.FILE, 1, False)
        assert await whole(bob, ref) == BIG
        await eventually(lambda: done(bob, text), timeout=20, what="Bob's transfer.done")
        assert ahead  # some went ahead, the rest (what did not fit on the link) was asked
        assert len(asked) < BIG_CHUNKS


async def test_chunks_ahead_are_kept_from_members_only_within_budget_and_true(
    tmp_path: Path,
) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob", "Carol")]
    async with (
        running(homes[0]) as alice,
        running(homes[1]) as bob,
        running(homes[2]) as carol,
    ):
        for a, b in ((alice, bob), (bob, carol)):
            await befriend(a, b)
        await alice.circles.create("family", ["Bob"], members_can_post=False)
        await eventually(lambda: bob.circles.all(), what="Bob to get the manifest")
        (circle,) = [c.circle_id for c in bob.circles.all()]
        seen: list[int] = []
        bob.on_message = lambda key, body: seen.append(body[0])

        def chunk(n: int) -> tuple[bytes, bytes]:
            data = bytes([n]) * 1000
            return chunk_address(data, 2), data

        # Carol is Bob's friend but not in the circle: not kept (and not her fault).
        stranger = chunk(1)
        assert carol.links.send(bob.me, encode_ahead(circle, *stranger))
        # Alice is: kept, within her budget; beyond it, not kept.
        bob.ahead.budget = 2500
        kept, also, over = chunk(2), chunk(3), chunk(4)
        for c in (kept, also, over):
            assert alice.links.send(bob.me, encode_ahead(circle, *c))
        await eventually(lambda: seen.count(T_AHEAD) >= 4, what="Alice's chunks at Bob")
        await eventually(lambda: bob.ahead.kept >= 2, what="Alice's chunks kept")
        held = await asyncio.to_thread(lambda: [bob.blobs.has(c[0]) for c in (kept, also, over)])
        assert held == [True, True, False]
        assert not await asyncio.to_thread(bob.blobs.has, stranger[0])
        assert bob.me in carol.links.linked()
        # A chunk that is not what its address names drops its sender.
        assert alice.links.send(bob.me, encode_ahead(circle, chunk(5)[0], b"not it"))
        # Within the longest a closing link waits for its peer to read (WRITE_TIMEOUT):
        # a fresh-clone run, with a soak beside it, took over 10 s once.
        await eventually(
            lambda: alice.me not in bob.links.linked(), timeout=40, what="Alice dropped"
        )
        assert not await asyncio.to_thread(bob.blobs.has, chunk(5)[0])


async def test_a_full_disk_while_chunks_come_ahead_leaves_the_link_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One chunk written at a time, at most 2,500 bytes waiting: a small chunk fails to
    # be written while three more wait, then a fifth comes.
    monkeypatch.setattr("p2pmoments.ahead.WRITE_BATCH", 1)
    monkeypatch.setattr("p2pmoments.ahead.MAX_PENDING", 2500)
    async with family_of_two(tmp_path) as (alice, bob):
        (circle,) = [c.circle_id for c in bob.circles.all()]
        real = bob.blobs.put_received
        failed: list[int] = []

        def put(chunks: list[tuple[bytes, bytes]]) -> list[bytes]:
            if not failed:
                failed.append(len(chunks))
                raise DiskFullError("/", "a test")
            return real(chunks)

        monkeypatch.setattr(bob.blobs, "put_received", put)
        for n, size in enumerate((10, 1000, 1000, 1000, 1000)):
            data = bytes([n]) * size
            assert alice.links.send(bob.me, encode_ahead(circle, chunk_address(data, 2), data))
        # What could not be written is forgotten, not counted as waiting: Bob's link is
        # still read.
        await alice.posting.post("family", "still read")
        await wait_texts(bob, ["still read"])
        assert failed
        assert alice.me in bob.links.linked()


async def family(alice: Node, bob: Node) -> bytes:
    """Alice and Bob friends, Alice's circle "family" holding Bob, who has its manifest
    (as tests/test_replication.py's family_of_two, for a Bob who restarts); its id."""
    await befriend(alice, bob)
    await alice.circles.create("family", ["Bob"], members_can_post=False)
    await eventually(lambda: bob.circles.all(), what="Bob to get the manifest")
    (circle,) = [c.circle_id for c in bob.circles.all()]
    return circle


async def test_an_index_piece_that_comes_ahead_after_its_moment_still_names_its_chunks(
    tmp_path: Path,
) -> None:
    """A file's moment reached Bob first (relayed by another member, say), then the
    piece of its index came ahead from Alice, then Bob restarted: the file still
    completes. Before, the piece was kept without the chunks it names being recorded,
    and the file stayed at one chunk of 22 for ever (the chaos soak found it)."""
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob")]
    async with running(homes[0]) as alice:
        async with running(homes[1]) as bob:
            circle = await family(alice, bob)
            alice.posting.ahead = lambda manifest: None  # nothing goes ahead on its own
            transfers = alice.replication._transfers
            read, serving = transfers._read_chunks, asyncio.Event()

            async def held(addresses: list[bytes]) -> list[tuple[bytes, bytes]]:
                await serving.wait()  # Alice serves nothing for now
                return await read(addresses)

            transfers._read_chunks = held  # type: ignore[method-assign]
            moment = await alice.posting.post("family", "", files=[("big.bin", BIG, "x/y")])
            await wait_texts(bob, [""])
            ref = await bob.moments.blob(moment_text(moment.id), BlobKind.FILE, 1, False)
            ((piece, data),) = await read([ref.index[0]])
            seen: list[int] = []
            bob.on_message = lambda key, body: seen.append(body[0])
            assert alice.links.send(bob.me, encode_ahead(circle, piece, data))
            await eventually(lambda: T_AHEAD in seen, what="the piece at Bob")
            await bob.ahead.written(alice.me)
        async with running(homes[1]) as bob:
            serving.set()
            assert await whole(bob, ref) == BIG


async def test_the_chunks_an_index_piece_names_are_stored_with_its_moment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bob holds a file's index piece (it came ahead) when its moment comes: the chunks
    the piece names are recorded in the same transaction as the moment. Before, they
    were recorded in a second one; a daemon killed in between (the chaos soak kills
    them every few seconds) kept a file at one chunk of 57 for ever."""
    from p2pmoments.blobstore import BlobStore
    from p2pmoments.paths import resolve_paths
    from p2pmoments.store import Store

    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob")]
    async with running(homes[0]) as alice:
        async with running(homes[1]) as bob:
            await family(alice, bob)
        moment = await alice.posting.post("family", "", files=[("big.bin", BIG, "x/y")])
        ref = await alice.moments.blob(moment_text(moment.id), BlobKind.FILE, 1, False)
        ((piece, data),) = await alice.replication._transfers._read_chunks([ref.index[0]])
        blobs = BlobStore(resolve_paths(homes[1]).blob_dir)
        await asyncio.to_thread(blobs.put, piece, data)  # here before its moment
        # No second transaction ever happens: as if Bob were killed before it.
        monkeypatch.setattr(Store, "add_chunks", lambda store, uses: None)
        async with running(homes[1]) as bob:
            await wait_texts(bob, [""])
        monkeypatch.undo()
        async with running(homes[1]) as bob:
            assert await whole(bob, ref) == BIG
