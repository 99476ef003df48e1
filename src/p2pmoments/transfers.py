"""Replication's chunks (spec/sync.md): serving those a linked peer asks for, at the pace
it reads them, the next batch read from disk while one goes out; and checking and
writing those it sends while its next messages are handled, the chunk indexes among
them read as they arrive. What to ask and whom to drop stays the engine's, carried out
by `Replication` (replication.py), which owns a `Transfers` and each peer's `_Inbox`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from p2pmoments.blobstore import Location
from p2pmoments.core.blobs import chunk_matches, open_index_piece
from p2pmoments.core.budget import TokenBucket
from p2pmoments.core.errors import DecodeError
from p2pmoments.core.replication import messages
from p2pmoments.core.replication.engine import Action, Replicator, Serve, WriteChunks
from p2pmoments.core.replication.messages import Chunk, Message
from p2pmoments.errors import DiskFullError
from p2pmoments.moments import IndexPiece, Moments, Opened
from p2pmoments.net.links import Links
from p2pmoments.store import AsyncStore, Store

__all__ = ["Transfers"]

log = logging.getLogger(__name__)

MAX_SERVE_QUEUE = 64  # chunk requests of one peer waiting to be served
SERVE_BATCH = 8  # chunks read from disk together
VERIFY_RATE = 50_000  # envelopes a second one peer may make us verify (then we read it later)
VERIFY_BURST = 20_000
# Batches of one peer's chunks written at once, while its next messages are read. Two:
# with 64 chunks asked at once, a 100 MB file's transfer took 1.43 s against 2.17 s with
# one (interleaved, 4 rounds, load 10 to 14; three were no better; issue 22).
MAX_WRITES = 2


@dataclass(slots=True)
class _Inbox:
    """One linked peer's queue and bounds."""

    verify: TokenBucket = field(default_factory=lambda: TokenBucket(VERIFY_RATE, VERIFY_BURST))
    # Messages waiting to be handled, in order; moments are being opened meanwhile.
    queue: deque[tuple[Message, asyncio.Future[Opened] | None]] = field(default_factory=deque)
    working: bool = False
    handling: type | None = None  # the kind of message being handled
    opening: asyncio.Future[Opened] | None = None  # its last batch of moments being opened
    room: asyncio.Event = field(default_factory=asyncio.Event)
    serve: deque[bytes] = field(default_factory=deque)  # chunks it asked, not yet sent
    serving: bool = False
    # Batches of its chunks being checked and written while its next ones are read.
    writing: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_WRITES))


class Transfers:
    """The chunks of one daemon's linked peers: served and received."""

    def __init__(
        self,
        engine: Replicator,
        *,
        store: AsyncStore,
        moments: Moments,
        links: Links,
        spawn: Callable[[Coroutine[Any, Any, None], str], None],
        peers: dict[bytes, _Inbox],
        perform: Callable[[Sequence[Action]], Coroutine[Any, Any, None]],
        disk_full: Callable[[], None],
    ) -> None:
        self.engine = engine
        self._store = store
        self._moments = moments
        self._links = links
        self._spawn = spawn
        self._peers = peers  # Replication's: a peer's inbox is here while it is linked
        self._perform = perform  # Replication's: carries out the engine's actions
        self._disk_full = disk_full

    def _send(self, peer: bytes, message: Message) -> None:
        self._links.send(peer, messages.encode(message))

    def queue_serving(self, action: Serve) -> None:
        """Queue the chunks a peer asked for, and serve them unless that is under way."""
        inbox = self._peers.get(action.peer)
        if inbox is None:
            return
        overflow = 0
        for address in action.addresses:
            if len(inbox.serve) >= MAX_SERVE_QUEUE:
                overflow += 1
            else:
                inbox.serve.append(address)
        if overflow:
            drop = self.engine.junk(
                action.peer,
                overflow,
                "more chunk requests than allowed in flight",
                time.monotonic(),
            )
            self._spawn(self._perform(drop), "junk")
        if inbox.serve and not inbox.serving:
            inbox.serving = True
            self._spawn(self._serve(action.peer, inbox), "serve-chunks")

    async def _serve(self, peer: bytes, inbox: _Inbox) -> None:
        """Send the chunks a peer asked for, at the pace it reads them; the next batch is
        read from disk while this one goes out."""
        ahead: asyncio.Future[tuple[list[bytes], list[tuple[bytes, bytes]]]] | None = None
        try:
            while self._peers.get(peer) is inbox:
                if ahead is None:
                    if not inbox.serve:
                        break
                    ahead = asyncio.ensure_future(self._fetch(peer, inbox))
                asked, chunks = await ahead
                ahead = asyncio.ensure_future(self._fetch(peer, inbox)) if inbox.serve else None
                held = {address for address, _ in chunks}
                # Every chunk asked and not sent is said to be lacking: one we do not
                # hold, one no moment we hold uses, one of a moment the peer may not read,
                # alike (it learns nothing, and asks someone else at once instead of
                # waiting for an answer that never comes: spec/sync.md section 4.6).
                for address in asked:
                    if address not in held:
                        self._send(peer, Chunk(address=address, data=None))
                for address, data in chunks:
                    body = messages.encode(Chunk(address=address, data=data))
                    if not await self._links.send_paced(peer, body):
                        return
        except Exception:
            # Our disk or a bug, not the peer: it costs this peer's link only (it asks
            # again, or elsewhere), never the daemon.
            log.exception("serving a peer's chunks failed")
            self._links.drop_misbehaving(peer, "internal error")
        finally:
            if ahead is not None:
                ahead.cancel()
            inbox.serving = False

    async def _fetch(
        self, peer: bytes, inbox: _Inbox
    ) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
        """The next SERVE_BATCH chunks the peer asked for, and those of them it may read
        and we hold, read."""
        asked = [inbox.serve.popleft() for _ in range(min(SERVE_BATCH, len(inbox.serve)))]
        uses = await self._store.run(Store.chunks_circles, asked)
        allowed = [  # never a chunk of a moment the peer may not read
            a for a in asked if any(self.engine.may_read(peer, c, e) for c, e in uses.get(a, []))
        ]
        return asked, await self._read_chunks(allowed)

    async def _read_chunks(self, addresses: list[bytes]) -> list[tuple[bytes, bytes]]:
        """(address, chunk) of those of these we hold: ours from their packs, others'
        loose (checked against their address)."""
        if not addresses:
            return []
        located = await self._store.run(Store.packed_at, addresses)
        blobs = self._moments.blobs
        packed = [(a, Location(*located[a])) for a in addresses if a in located]
        loose = [a for a in addresses if a not in located]

        def read() -> list[tuple[bytes, bytes]]:
            return blobs.read_many_packed(packed) + blobs.get_many(loose)

        return await asyncio.to_thread(read)

    async def start_writing(self, action: WriteChunks) -> None:
        """Check and write a batch of chunks while the peer's next messages are handled:
        at most MAX_WRITES batches at once (beyond that this waits, and so does the
        peer's inbox)."""
        inbox = self._peers.get(action.peer)
        if inbox is None:
            return
        await inbox.writing.acquire()

        async def write() -> None:
            try:
                await self._write_chunks(action)
            except DiskFullError as exc:
                # Asked again once there is room (of the same peer, its link kept).
                log.warning("chunks from a peer: %s; fetching pauses", exc)
                self._disk_full()
                addresses = [a for a, _ in action.chunks]
                await self._perform(self.engine.chunks_unwritten(action.peer, addresses))
            except Exception:
                # A bug in handling one message costs that peer's link only.
                log.exception("writing a peer's chunks failed")
                self._links.drop_misbehaving(action.peer, "internal error")
            finally:
                inbox.writing.release()

        self._spawn(write(), "write-chunks")

    async def _write_chunks(self, action: WriteChunks) -> None:
        began = time.perf_counter()
        used = await self._store.run(Store.chunks_circles, [a for a, _ in action.chunks])
        # Others were retracted or expired meanwhile.
        wanted = [(a, d) for a, d in action.chunks if a in used]
        waiting = self._moments.pieces
        pieces = [(a, d, waiting[a]) for a, d in wanted if a in waiting]
        named: list[tuple[bytes, IndexPiece, list[bytes]]] = []
        if pieces:
            # A chunk index's piece: the chunks it names are recorded as used before the
            # piece is kept, so that they are wanted (and a crash leaves no gap).
            named = await asyncio.to_thread(_open_pieces, pieces)
            # A piece that hashes right but does not open is what its author made: it
            # is kept (it names nothing, so nothing more is asked for) and its blob
            # reads as damaged; the peer that carried it is not at fault. One that does
            # not hash right is the peer's (junk, below) and is still awaited.
            opened = {a for a, _, _ in named}
            for address, data, _ in pieces:
                if address not in opened and chunk_matches(address, data):
                    waiting.pop(address, None)
            uses = [(p.moment, c) for _, p, chunks in named for c in chunks]
            if uses:
                await self._store.run(Store.add_chunks, uses)
        looked = time.perf_counter()
        blobs = self._moments.blobs

        def write() -> tuple[set[bytes], list[list[bytes]]]:
            # Hashing and writing off the loop; a chunk that is not what its address
            # names is not kept.
            kept = set(blobs.put_received(wanted))
            lacking = [[c for c in chunks if not blobs.has(c)] for _, _, chunks in named]
            return kept, lacking

        kept, lacking = await asyncio.to_thread(write)
        if any(lacking):  # a file's version borrows chunks that may be in our own packs
            packed = await self._store.run(Store.packed_at, [c for cs in lacking for c in cs])
            lacking = [[c for c in cs if c not in packed] for cs in lacking]
        log.debug(
            "%d chunks: looked up in %.1f ms, checked and written in %.1f ms",
            len(action.chunks),
            1000 * (looked - began),
            1000 * (time.perf_counter() - looked),
        )
        # The chunks a piece names are followed before the piece counts as here: its
        # moment is never seen with nothing left to fetch in between (chunks.Refill).
        for (address, piece, chunks), missing in zip(named, lacking, strict=True):
            if address not in kept:
                continue
            waiting.pop(address, None)
            await self._perform(
                self.engine.named(
                    action.peer, piece.moment, piece.circle, piece.epoch, len(chunks), missing
                )
            )
        sizes = [(a, len(d)) for a, d in wanted if a in kept]
        await self._perform(
            self.engine.chunks_written(
                action.peer, sizes, len(wanted) - len(kept), time.monotonic()
            )
        )


def _open_pieces(
    pieces: list[tuple[bytes, bytes, list[IndexPiece]]],
) -> list[tuple[bytes, IndexPiece, list[bytes]]]:
    """(address, piece, chunks it names) of the index pieces that open (one a moment's
    author made wrong is left out: it names nothing)."""
    out = []
    for address, data, waiting in pieces:
        for piece in waiting:
            try:
                out.append((address, piece, open_index_piece(piece.ref, piece.piece, data)))
            except DecodeError:
                if chunk_matches(address, data):
                    log.warning("an index piece its author made wrong: its file is damaged")
    return out
