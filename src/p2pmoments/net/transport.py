"""Running a sans-I/O Link over an asyncio stream (spec/transport.md).

The runner owns the socket: it feeds the link what arrives, writes what the
link produces with backpressure, calls tick() on time, and hands events to the
node. A peer that stops reading is dropped after WRITE_TIMEOUT, a link never
blocks another, and every error ends only that link.

Over Tor (spec/tor.md section 7) a link carries a megabyte a second or less, so bulk
data (photo chunks, sent through `writable()`) waits until less than TOR_BULK_QUEUE
bytes are queued, and the socket to tor keeps a small kernel buffer: what is small
(manifests, haves, text moments, sent at once) then waits behind at most one chunk
and that little, not behind megabytes of photo.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from p2pmoments.core.link import CloseCode, Closed, Event, Link, LinkState

__all__ = [
    "PATHS",
    "READ_SIZE",
    "STREAM_LIMIT",
    "TOR_BULK_QUEUE",
    "WRITE_TIMEOUT",
    "LinkRunner",
]

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024  # several frames a read: each is decrypted where it lies
# The stream reader of a link (asyncio.open_connection / start_server `limit`): it stops
# reading the socket above twice this. asyncio's 64 KiB stopped it at nearly every read of
# a fast transfer (a 256 KiB recv is over 2 x 64 KiB): two epoll_ctl calls and a loop turn
# a read (840 epoll_ctl a 100 MB file, 67 with this). A link holds at most ~3 reads.
STREAM_LIMIT = READ_SIZE
WRITE_TIMEOUT = 30.0
MAX_WRITE_BUFFER = 4 << 20  # a peer this far behind is not reading
WRITE_QUEUE = 1 << 20  # queued before writers wait (drain)
TOR_BULK_QUEUE = 64 << 10  # over Tor: bulk waits until the queue is below a quarter of this
TOR_SOCKET_BUFFER = 64 << 10  # over Tor: the kernel's send buffer (it doubles it)
PATHS = ("lan", "static", "tor")  # what carries a link (spec/tor.md section 7)


class LinkRunner:
    """One link on one connection."""

    def __init__(
        self,
        link: Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_event: Callable[[LinkRunner, Event], Awaitable[None]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.link = link
        self._reader = reader
        self._writer = writer
        self._on_event = on_event
        self._clock = clock
        # Keep up to 1 MiB queued before writers wait (drain): enough to keep a fast
        # link busy, far below the MAX_WRITE_BUFFER at which a peer counts as gone.
        writer.transport.set_write_buffer_limits(high=WRITE_QUEUE)
        peer = writer.get_extra_info("peername")
        self.remote_host: str | None = peer[0] if peer else None
        self.remote_port: int | None = peer[1] if peer else None
        if link.initiator:  # the wall-clock time: benchmarks time a catch-up from the dial
            log.debug("dialled %s:%s at %.6f", self.remote_host, self.remote_port, time.time())
        self.closed: Closed | None = None
        self.opened = clock()
        # What the node knows of why this link exists, and what carries it.
        self.found_via = "incoming"
        self.path = "lan"
        self.pairing_id: int | None = None  # we dialled to complete this pairing
        self.pairing_token: bytes | None = None  # they used this token of ours

    def over_tor(self) -> None:
        """This link is a stream through tor: its address is tor's own (so none is
        kept), and bulk data is paced to leave room for small messages."""
        self.path = "tor"
        self.remote_host = self.remote_port = None
        self._writer.transport.set_write_buffer_limits(high=TOR_BULK_QUEUE)
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, TOR_SOCKET_BUFFER)

    def send(self, body: dict[str, Any] | dict[int, Any]) -> None:
        """Queue an application message; drops the link if the peer is far behind."""
        self.link.send(body)  # type: ignore[arg-type]
        self._write_pending()

    def queued(self) -> int:
        """Bytes written to this link that the socket has not taken yet."""
        return self._writer.transport.get_write_buffer_size()

    async def writable(self) -> None:
        """Wait until the peer has taken most of what we sent (at most WRITE_TIMEOUT);
        ConnectionError if the link is gone. Bulk data waits here; over Tor until less
        than a quarter of TOR_BULK_QUEUE is queued."""
        if self.closed is not None or self._writer.is_closing():
            raise ConnectionResetError("the link is closed")
        async with asyncio.timeout(WRITE_TIMEOUT):
            await self._writer.drain()

    def close(self, code: CloseCode = CloseCode.NORMAL, reason: str = "") -> None:
        """Say goodbye and end the link; the run loop then returns."""
        if self.link.state is not LinkState.CLOSED:
            self.link.close(code, reason)
            self._write_pending()
            self.closed = Closed(code=code, reason=reason, by_peer=False)
        self._wake_reader()

    def abort(self) -> None:
        """End the link at once without a word (a connection that proved nothing)."""
        self.closed = self.closed or Closed(
            code=CloseCode.OVERLOAD, reason="evicted", by_peer=False
        )
        self._writer.transport.abort()
        self._wake_reader()

    def _wake_reader(self) -> None:
        # Wake the run loop's pending read with an error rather than feed_eof(): data may
        # still arrive on the socket, and feeding data after EOF trips asyncio's assertion
        # ("feed_data after feed_eof"), logged at every busy shutdown.
        if self._reader.exception() is None:
            self._reader.set_exception(ConnectionAbortedError("link closed"))

    def _write_pending(self) -> None:
        data = self.link.data_to_send()
        if data and not self._writer.is_closing():
            self._writer.write(data)
            self.link.mark_sent(self._clock())
            if self._writer.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
                self.link.close(CloseCode.OVERLOAD, "peer is not reading")
                self.closed = Closed(
                    code=CloseCode.OVERLOAD, reason="peer is not reading", by_peer=False
                )
                self._writer.transport.abort()

    async def _flush(self) -> None:
        self._write_pending()
        if self.path == "tor" and self._writer.transport.get_write_buffer_size() <= WRITE_QUEUE:
            # Over Tor the queue's limits pace bulk data only: the reading side goes on
            # (answering pings, taking requests) until as much is queued as on the LAN.
            return
        async with asyncio.timeout(WRITE_TIMEOUT):
            await self._writer.drain()

    async def run(self) -> Closed:
        """Run until the link closes; returns why."""
        try:
            await self._flush()
            while self.link.state is not LinkState.CLOSED and self.closed is None:
                deadline = self.link.next_deadline()
                wait = None if deadline is None else max(0.0, deadline - self._clock())
                try:
                    async with asyncio.timeout(wait):
                        data = await self._reader.read(READ_SIZE)
                except TimeoutError:
                    events = self.link.tick(self._clock())
                else:
                    events = self.link.receive_data(data, self._clock())
                for event in events:
                    if isinstance(event, Closed):
                        self.closed = self.closed or event
                    await self._on_event(self, event)
                await self._flush()
        except (ConnectionError, TimeoutError, OSError) as exc:
            self.closed = self.closed or Closed(
                code=CloseCode.TIMEOUT if isinstance(exc, TimeoutError) else CloseCode.NORMAL,
                reason=str(exc) or type(exc).__name__,
                by_peer=True,
            )
        finally:
            if self.link.state is not LinkState.CLOSED:
                self.link.close(CloseCode.SHUTDOWN, "shutting down")
                with contextlib.suppress(Exception):
                    self._write_pending()
            self._writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._writer.wait_closed()
        result = self.closed or Closed(code=CloseCode.NORMAL, reason="closed", by_peer=False)
        if self.link.state is LinkState.CLOSED and self.closed is None:
            self.closed = result
        return result
