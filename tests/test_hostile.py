"""Hostile peers against a running node: each bad link ends alone; friends keep theirs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from p2pmoments.core.identity import Identity
from p2pmoments.core.link import MODE_IK, Link
from p2pmoments.net.links import MAX_HANDSHAKING
from p2pmoments.node import Node
from tests.multinode import befriend, eventually, make_home, running


@pytest.fixture(autouse=True)
def quick_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stalled handshake is dropped after 0.5 s instead of 10 (spec/transport.md section 5)."""
    monkeypatch.setattr("p2pmoments.core.link.HANDSHAKE_TIMEOUT", 0.5)


@pytest.fixture
async def friends(tmp_path: Path) -> AsyncIterator[tuple[Node, Node]]:
    a_home, b_home = await make_home(tmp_path, "Alice"), await make_home(tmp_path, "Bob")
    async with running(a_home) as alice, running(b_home) as bob:
        link, _ = await alice.pairings.new_code()
        await bob.pairings.wait((await bob.pairings.pair(link)).id, timeout=10)
        await eventually(lambda: alice.links.peers() and bob.links.peers(), what="friends linked")
        yield alice, bob


async def connect(node: Node) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", node.listen_port)


async def reply_to(node: Node, data: bytes) -> bytes:
    """What the node sends back to a connection that sends `data` (b"" = closed silently)."""
    reader, writer = await connect(node)
    writer.write(data)
    await writer.drain()
    try:
        async with asyncio.timeout(15):
            return await reader.read(1024)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


def still_linked(alice: Node, bob: Node) -> bool:
    return len(alice.links.peers()) == 1 and len(bob.links.peers()) == 1


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00\x61" + bytes([MODE_IK]) + b"\x00" * 96,  # low-order ephemeral key, all zeros
        b"\x00\x10" + bytes([MODE_IK]) + b"short",  # truncated handshake
        b"\x00\x61" + bytes([9]) + b"\x01" * 96,  # unknown mode
        b"\xff\xff" + b"\x01" * 100,  # announces a maximal frame, sends little
        b"\x00\x61" + bytes([2]) + b"\x02" * 96,  # pairing mode with no valid token
    ],
)
async def test_garbage_gets_silence_and_friends_are_untouched(
    friends: tuple[Node, Node], data: bytes
) -> None:
    alice, bob = friends
    assert await reply_to(alice, data) == b""
    assert still_linked(alice, bob)


async def test_a_replayed_handshake_from_a_friend_gets_no_session(
    friends: tuple[Node, Node],
) -> None:
    """A recorded message 1 replayed by someone else: Alice answers, but the replayer cannot
    read the answer or send anything valid, and the friends' real link survives."""
    alice, bob = friends
    link = Link(
        identity=bob.identity,
        name="Bob",
        initiator=True,
        now=0.0,
        remote_link_key=bytes(alice.identity.public.link_key),
    )
    first = link.data_to_send()
    for _ in range(2):  # replayed twice
        reader, writer = await connect(alice)
        writer.write(first)
        writer.write(b"\x00\x20" + b"\x00" * 32)  # garbage where a transport frame should be
        await writer.drain()
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(15):
                while await reader.read(4096):
                    pass  # the answer, useless without Bob's ephemeral key; then the close
        writer.close()
    assert still_linked(alice, bob)


async def flood(node: Node, count: int, hosts: int = 8) -> list[asyncio.StreamWriter]:
    """`count` idle connections to `node` from `hosts` loopback addresses, never a byte sent."""
    held = []
    for i in range(count):
        local = f"127.0.0.{2 + i % hosts}"
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection(
                "127.0.0.1", node.listen_port, local_addr=(local, 0)
            )
            held.append(writer)
    return held


def still_open(writers: list[asyncio.StreamWriter]) -> int:
    return sum(1 for w in writers if not w.is_closing() and not w.transport.is_closing())


async def test_a_flood_of_half_open_connections_is_bounded(
    friends: tuple[Node, Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bounds themselves, not a timeout, hold the flood: with the deadlines long, at most
    MAX_HANDSHAKING connections are held at once, and the extra ones are closed at once."""
    monkeypatch.setattr("p2pmoments.core.link.HANDSHAKE_TIMEOUT", 60.0)
    monkeypatch.setattr("p2pmoments.core.link.FIRST_MESSAGE_TIMEOUT", 60.0)
    alice, bob = friends
    extra = 40
    held = await flood(alice, MAX_HANDSHAKING + extra)
    try:
        stats = alice.statistics()
        assert stats["handshaking"] <= MAX_HANDSHAKING
        assert stats["evicted"] >= extra  # the oldest idle ones made room for the newest

        async def closed_by_alice(writer: asyncio.StreamWriter) -> bool:
            reader = writer.transport.get_protocol()._stream_reader  # type: ignore[attr-defined]
            try:
                async with asyncio.timeout(2):
                    return await reader.read(1) == b""
            except (TimeoutError, ConnectionError):
                return isinstance(reader.exception(), ConnectionError)

        closed = sum([await closed_by_alice(w) for w in held[:extra]])
        assert closed == extra  # evicted without a byte
        assert still_linked(alice, bob)
        # The friend link still carries messages while the flood is held open.
        got: list[dict[int, object]] = []
        alice.on_message = lambda key, body: got.append(body)
        assert bob.links.send(bytes(alice.identity.public.verify_key), {0: 99, 1: "still here"})
        await eventually(lambda: got, what="a message through the flood")
        assert got == [{0: 99, 1: "still here"}]
    finally:
        for writer in held:
            writer.close()


async def test_a_friend_gets_in_while_a_flood_holds_every_handshake_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle connections from many addresses, reopened as fast as they are dropped, cannot
    keep a friend's daemon or a new pairing out (spec/transport.md section 9)."""
    monkeypatch.setattr("p2pmoments.core.link.HANDSHAKE_TIMEOUT", 60.0)
    monkeypatch.setattr("p2pmoments.core.link.FIRST_MESSAGE_TIMEOUT", 60.0)
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob", "Carol")]
    async with running(homes[0]) as alice, running(homes[1]) as bob, running(homes[2]) as carol:
        await befriend(alice, bob)
        held = await flood(alice, MAX_HANDSHAKING)
        stop = asyncio.Event()

        async def keep_flooding() -> None:
            # Every slot Alice frees is taken again at once: the table stays full.
            while not stop.is_set():  # ends with the test; each round bounded
                gone = [w for w in held if w.transport.is_closing()]
                for writer in gone:
                    held.remove(writer)
                    writer.close()
                held.extend(await flood(alice, MAX_HANDSHAKING - len(held)))
                await asyncio.sleep(0.02)

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(keep_flooding())
                try:
                    # A new friend pairs, and an old one links again, through the flood.
                    await befriend(alice, carol)
                    await bob.aclose()
                    async with running(homes[1]) as bob_again:
                        await eventually(
                            lambda: (
                                bytes(alice.identity.public.verify_key) in bob_again.links.linked()
                            ),
                            timeout=20,
                            what="Bob to link again through the flood",
                        )
                finally:
                    stop.set()
            assert alice.statistics()["evicted"] > 0
        finally:
            for writer in held:
                writer.close()


async def test_a_stranger_with_a_real_key_gets_silence(friends: tuple[Node, Node]) -> None:
    alice, bob = friends
    stranger = Link(
        identity=Identity.generate(),
        name="Eve",
        initiator=True,
        now=0.0,
        remote_link_key=bytes(alice.identity.public.link_key),
    )
    assert await reply_to(alice, stranger.data_to_send()) == b""
    assert still_linked(alice, bob)


async def test_a_friend_that_stops_reading_is_dropped_not_buffered(
    friends: tuple[Node, Node],
) -> None:
    alice, bob = friends
    bob_key = bytes(bob.identity.public.verify_key)
    await bob.aclose()  # from here on we play Bob by hand, with his keys
    await eventually(lambda: not alice.links.peers(), what="Alice to see Bob go")
    link = Link(
        identity=bob.identity,
        name="Bob",
        initiator=True,
        now=0.0,
        remote_link_key=bytes(alice.identity.public.link_key),
        expected_peer=alice.identity.public.verify_key,
    )
    reader, writer = await connect(alice)
    writer.write(link.data_to_send())
    async with asyncio.timeout(10):
        while link.peer is None:
            link.receive_data(await reader.read(65536), 0.0)
    writer.write(link.data_to_send())  # our hello
    await eventually(lambda: alice.links.peers(), what="Alice to accept the hand-driven Bob")
    # Now never read again. Alice keeps sending; she must drop us, not buffer without end.
    before = alice.events.last_id
    sent = 0
    for _ in range(200):  # at most 200 MB offered
        if not alice.links.send(bob_key, {0: 99, 1: b"x" * 1_000_000}):
            break
        sent += 1
        await asyncio.sleep(0)

    def dropped() -> list[str]:
        return [
            e.data["reason"] for e in alice.events.after(before)[0] if e.kind == "peer.disconnected"
        ]

    await eventually(dropped, what="the slow reader to be dropped")
    assert dropped() == ["peer is not reading"]
    assert sent < 50  # dropped after a few MB, not after everything was queued
    writer.close()


async def test_more_friends_on_one_host_than_the_handshake_bound_all_link(
    tmp_path: Path,
) -> None:
    """The per-host bound is on handshakes in progress, not on links: twenty daemons on
    one machine (one address) all stay linked to the same friend."""
    from p2pmoments.net.links import MAX_HANDSHAKING_PER_HOST
    from tests.multinode import befriend

    count = MAX_HANDSHAKING_PER_HOST + 4
    homes = [await make_home(tmp_path, f"N{i}") for i in range(count + 1)]
    async with contextlib.AsyncExitStack() as stack:
        hub, *others = [await stack.enter_async_context(running(h)) for h in homes]
        for other in others:
            await befriend(hub, other)
        await eventually(lambda: len(hub.links.linked()) == count, what="every friend linked")
