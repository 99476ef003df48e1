"""The link runner over real loopback sockets: closing and eviction."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Any

import pytest

from p2pmoments.core.identity import Identity
from p2pmoments.core.link import AcceptRequest, CloseCode, Event, Link
from p2pmoments.net.transport import LinkRunner
from tests.multinode import eventually


async def test_closing_a_link_while_bytes_still_arrive_raises_nothing_in_asyncio() -> None:
    """A daemon shutting down closes links while they are busy (here: deciding whether to
    accept) and bytes keep arriving; asyncio used to log "AssertionError: feed_data after
    feed_eof" for each such link."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    deciding, decide = asyncio.Event(), asyncio.Event()

    async def on_connection(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await accepted.put((r, w))

    async def slow_decision(runner: LinkRunner, event: Event) -> None:
        if isinstance(event, AcceptRequest):
            deciding.set()
            await decide.wait()  # as the node does when it asks the store

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, client = await asyncio.open_connection("127.0.0.1", port)
    reader, writer = await accepted.get()
    bob = Identity.generate()
    link = Link(identity=bob, name="Bob", initiator=False, now=time.monotonic())
    runner = LinkRunner(link, reader, writer, slow_decision)
    running = asyncio.ensure_future(runner.run())
    dialler = Link(
        identity=Identity.generate(),
        name="Alice",
        initiator=True,
        now=0.0,
        remote_link_key=bytes(bob.public.link_key),
    )
    try:
        client.write(dialler.data_to_send())
        await asyncio.wait_for(deciding.wait(), 5)
        runner.close(CloseCode.SHUTDOWN, "shutting down")
        client.write(b"\x01" * 100)  # bytes keep coming after the close
        await client.drain()
        # They are read (into the stream's buffer) while the decision is still pending.
        await eventually(lambda: len(reader._buffer) >= 100, timeout=5, what="the bytes read")
        decide.set()
        closed = await asyncio.wait_for(running, 5)
        assert closed.code is CloseCode.SHUTDOWN
        assert not errors, errors
    finally:
        client.close()
        with contextlib.suppress(ConnectionError):
            await client.wait_closed()
        server.close()
        await server.wait_closed()
        loop.set_exception_handler(None)


QUEUED = 2 << 20


async def test_over_tor_bulk_waits_for_a_near_empty_queue_and_small_messages_do_not() -> None:
    """spec/tor.md section 7: chunks (which wait in writable()) leave room for small
    messages on a slow Tor link; on the LAN the same queue lets bulk go on."""
    readers: asyncio.Queue[asyncio.StreamReader] = asyncio.Queue()

    async def on_connection(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        # A peer that does not read, for now, with a receive buffer of fixed size: left to
        # the kernel's autotuning it grew past the 2 MiB queued when the machine was busy,
        # and the Tor side's queue drained with nobody reading (a full run, once).
        w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        await readers.put(r)

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def runner(over_tor: bool) -> tuple[LinkRunner, asyncio.StreamReader]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        link = Link(identity=Identity.generate(), name="A", initiator=False, now=time.monotonic())
        runner = LinkRunner(link, reader, writer, lambda r, e: asyncio.sleep(0))
        if over_tor:
            runner.over_tor()
        return runner, await readers.get()

    async with server:
        lan, _ = await runner(over_tor=False)
        tor, tor_peer = await runner(over_tor=True)
        assert (tor.path, tor.remote_host) == ("tor", None)
        for r in (lan, tor):
            r._writer.write(bytes(QUEUED))  # chunks queued for a peer that reads slowly
        await asyncio.wait_for(lan.writable(), 5)  # the LAN's queue holds more
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(tor.writable(), 0.5)  # the next chunk waits ...
        tor._writer.write(b"small")  # ... a small message never does (send() writes at once)
        got = 0
        while got < QUEUED + 5:  # once the peer takes the queue, bulk may go on
            got += len(await tor_peer.read(65536))
        await asyncio.wait_for(tor.writable(), 5)
        for r in (lan, tor):
            r._writer.close()
