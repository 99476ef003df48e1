"""Replication's runner: carries out what core.replication decides (spec/sync.md).

Per linked peer it keeps an inbox (messages handled in order by the peer's own worker,
at most MAX_INBOX waiting; beyond that its link is read later), a token bucket on the
moments it makes us verify, and a queue of chunks it asked for, served at the pace it
reads them. Envelopes are opened on worker threads while the batch before is stored;
everything else (what to send whom, what to keep, whom to drop) is the engine's.

A full disk is nobody's fault: the link stays up. Chunks that could not be written are
asked for again, and fetching pauses, until `room` (disk.py); moments that could not be
stored are held (MAX_HELD bytes at most) and stored then.

Why so long: each of the engine's actions is carried out here, with the bounds that keep
one peer from costing others (inboxes, paced serving, chunks written while the next are
read, chunk indexes read as they arrive).
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
from p2pmoments.circles import Circles
from p2pmoments.core.blobs import chunk_matches, open_index_piece
from p2pmoments.core.budget import TokenBucket
from p2pmoments.core.errors import DecodeError
from p2pmoments.core.manifest import Manifest, Removal, decode_removal
from p2pmoments.core.moment import Moment
from p2pmoments.core.replication import messages
from p2pmoments.core.replication.chunks import Lacking, Progress
from p2pmoments.core.replication.engine import (
    Action,
    Drop,
    KeepManifest,
    KnownManifest,
    KnownRemoval,
    LeaveCircle,
    Open,
    Reject,
    Replicator,
    Send,
    SendRange,
    Serve,
    WriteChunks,
    batches,
)
from p2pmoments.core.replication.messages import BadMessage, Chunk, Message
from p2pmoments.core.replication.rules import Entry
from p2pmoments.errors import DiskFullError
from p2pmoments.events import EventBus
from p2pmoments.moments import IndexPiece, Moments, Opened
from p2pmoments.net.links import Links
from p2pmoments.store import AsyncStore, Store
from p2pmoments.views import moment_text

__all__ = ["MAX_INBOX", "Replication"]

log = logging.getLogger(__name__)

MAX_SERVE_QUEUE = 64  # chunk requests of one peer waiting to be served
SERVE_BATCH = 8  # chunks read from disk together
VERIFY_RATE = 50_000  # envelopes a second one peer may make us verify (then we read it later)
VERIFY_BURST = 20_000
MAX_INBOX = 8  # messages of one peer waiting to be handled (then its link is read later)
# Batches of one peer's chunks written at once, while its next messages are read: one
# on a worker thread is enough to keep both cores busy (more only contend for them).
MAX_WRITES = 1
MAX_HELD = 16 << 20  # bytes of envelopes held, verified, while the disk is full


def known_manifest(manifest: Manifest) -> KnownManifest:
    """What the engine needs of a verified manifest."""
    return KnownManifest(
        circle=manifest.circle_id,
        epoch=manifest.epoch,
        owner=bytes(manifest.owner),
        members=frozenset(bytes(m.verify_key) for m in manifest.members),
        raw=manifest.raw,
        source=manifest,
    )


def known_removal(raw: bytes) -> KnownRemoval:
    """A removal notice, verified (DecodeError if it is not one)."""
    removal = decode_removal(raw)
    return KnownRemoval(
        circle=removal.circle_id,
        epoch=removal.epoch,
        member=bytes(removal.member),
        owner=bytes(removal.owner),
        time=removal.time,
        raw=raw,
        source=removal,
    )


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


class Replication:
    """Keeps the circles of one daemon in step with its linked co-members."""

    def __init__(
        self,
        engine: Replicator,
        *,
        store: AsyncStore,
        moments: Moments,
        circles: Circles,
        links: Links,
        events: EventBus,
        spawn: Callable[[Coroutine[Any, Any, None], str], None],
    ) -> None:
        self.engine = engine
        self._store = store
        self._moments = moments
        self._circles = circles
        self._links = links
        self._events = events
        self._spawn = spawn
        self._peers: dict[bytes, _Inbox] = {}
        self.handled = 0  # messages from peers handled so far (statistics)
        # Moments verified and kept by the rules, not stored: the disk was full.
        self._held: list[tuple[bytes | None, bytes, list[Moment], list[Moment] | None]] = []
        self._held_size = 0
        self.on_full: Callable[[], None] = lambda: None  # the node's Disk hears of it

    async def load(self) -> None:
        """Tell the engine what we hold, at start-up."""
        holdings = await self._store.run(Store.holdings)
        left = [m.circle_id for m in self._circles.all() if self._circles.removed(m.circle_id)]
        self.engine.load(
            [known_manifest(m) for m in self._circles.every_manifest()], holdings, left
        )

    # --- what the daemon tells us ---------------------------------------------------------

    async def link_up(self, peer: bytes) -> None:
        """A peer linked: removal notices for it, haves, and transfers to resume."""
        self._peers[peer] = _Inbox()
        await self._send_notices(peer)
        await self._perform(self.engine.link_up(peer))
        missing = await self._moments.missing_in(self.engine.circles_of(peer))
        await self._perform(self.engine.resume(peer, missing))

    async def relink(self, peer: bytes) -> None:
        """What circles a linked peer is in changed (its device became someone's): it is
        told, as at link-up, what we hold of each."""
        if peer in self._peers:
            await self._perform(self.engine.relink(peer))

    async def keys_arrived(self) -> None:
        """Another device of ours gave us epoch keys: what we could not open, asked again."""
        await self._perform(self.engine.keys_arrived())

    async def link_down(self, peer: bytes) -> None:
        """A peer's link went."""
        inbox = self._peers.pop(peer, None)
        if inbox is not None:
            inbox.room.set()  # release a reader waiting for room
        await self._perform(self.engine.link_down(peer))

    async def circle_changed(self, manifest: Manifest) -> None:
        """We made or kept a manifest: members hear of it first."""
        await self._perform(self.engine.add_manifest(known_manifest(manifest)))

    def circle_deleted(self, circle: bytes) -> None:
        """We deleted a circle (leaving one the owner removed us from is the engine's own
        decision, made when the notice came)."""
        self.engine.forget_circle(circle)

    async def tell_removed(self, peers: Sequence[bytes]) -> None:
        """Members we just removed, if linked, get their notices at once."""
        for peer in peers:
            if peer in self._peers:
                await self._send_notices(peer)

    async def _send_notices(self, peer: bytes) -> None:
        notices = await self._circles.notices_for(peer)
        for start in range(0, len(notices), messages.MAX_REMOVALS):
            part = tuple(notices[start : start + messages.MAX_REMOVALS])
            self._send(peer, messages.Removed(notices=part))

    async def posted(self, moments: Sequence[Moment]) -> None:
        """Our own moments were stored: push them to members as they are."""
        by_circle: dict[bytes, list[Moment]] = {}
        for moment in moments:
            by_circle.setdefault(moment.circle_id, []).append(moment)
        for circle, own in by_circle.items():
            await self._perform(
                self.engine.stored(
                    circle,
                    [Entry.of(m) for m in own],
                    None,
                    envelopes={m.id: m.envelope for m in own},
                )
            )

    # --- messages from peers ------------------------------------------------------------

    async def on_message(self, peer: bytes, body: dict[int, Any]) -> None:
        """A replication message from a linked peer: queued, and handled in order by the
        peer's own worker. Moments start opening at once, on worker threads, so one batch
        is checked while the one before is stored. At most MAX_INBOX messages wait;
        beyond that this waits, and the peer's link is read later."""
        inbox = self._peers.get(peer)
        if inbox is None:
            return
        try:
            message = messages.decode(body)
        except BadMessage as exc:
            await self._perform(self.engine.junk(peer, exc.junk, str(exc), time.monotonic()))
            return
        while len(inbox.queue) >= MAX_INBOX and self._peers.get(peer) is inbox:
            inbox.room.clear()
            await inbox.room.wait()
        opening: asyncio.Future[Opened] | None = None
        if isinstance(message, messages.Moments):
            # A peer may make us verify only so much a second; beyond that, its link is
            # read later (this waits in its link's task alone).
            delay = inbox.verify.take(len(message.envelopes), time.monotonic())
            if delay > 0:
                await asyncio.sleep(delay)
            ahead = [inbox.handling, *(type(queued) for queued, _ in inbox.queue)]
            if messages.Manifests not in ahead and self._may_open(peer, message):
                # Nothing queued can change which keys open them: open them as soon as
                # the batch before is open (each batch takes every verifying thread: the
                # first is stored while the next opens, rather than all at the end).
                opening = asyncio.ensure_future(self._open_after(inbox.opening, message.envelopes))
                inbox.opening = opening
        inbox.queue.append((message, opening))
        if not inbox.working:
            inbox.working = True
            self._spawn(self._work(peer, inbox), "replication-inbox")

    async def _open_after(
        self, ahead: asyncio.Future[Opened] | None, envelopes: Sequence[bytes]
    ) -> Opened:
        if ahead is not None and not ahead.done():
            await asyncio.wait([ahead])
        return await self._moments.open_many(envelopes)

    def _may_open(self, peer: bytes, message: messages.Moments) -> bool:
        membership = self.engine.membership(message.circle)
        return membership is not None and membership.in_latest(peer)

    async def _work(self, peer: bytes, inbox: _Inbox) -> None:
        """Handle a peer's messages in order, until its inbox is empty or it is gone."""
        try:
            while inbox.queue and self._peers.get(peer) is inbox:
                message, opening = inbox.queue.popleft()
                inbox.handling = type(message)
                try:
                    if isinstance(message, Chunk):
                        # Chunks queued together are checked and written together.
                        chunks = [message]
                        while inbox.queue and isinstance(inbox.queue[0][0], Chunk):
                            queued = inbox.queue.popleft()[0]
                            assert isinstance(queued, Chunk)
                            chunks.append(queued)
                        inbox.room.set()
                        await self._perform(
                            self.engine.receive_chunks(peer, chunks, time.monotonic()), opening
                        )
                    else:
                        inbox.room.set()
                        actions = self.engine.receive(peer, message, time.monotonic())
                        await self._perform(actions, opening)
                except DiskFullError as exc:
                    # Not the peer's fault: its link stays. What could not be kept comes
                    # again (a manifest in the next have; moments are held, above).
                    log.warning("a message from a peer: %s", exc)
                    self._disk_full()
                except Exception:
                    # A bug in handling one message costs that peer's link only.
                    log.exception("handling a message from a peer failed")
                    self._links.drop_misbehaving(peer, "internal error")
                    return
                finally:
                    self.handled += 1
        finally:
            inbox.working = False
            inbox.handling = None
            for _, opening in inbox.queue:
                if opening is not None:
                    opening.cancel()
            if self._peers.get(peer) is not inbox:
                inbox.queue.clear()
            inbox.room.set()

    # --- carrying out the engine's actions ------------------------------------------------

    async def _perform(
        self, actions: Sequence[Action], opening: asyncio.Future[Opened] | None = None
    ) -> None:
        for action in actions:
            if isinstance(action, Send):
                self._send(action.peer, action.message)
            elif isinstance(action, SendRange):
                await self._send_range(action)
            elif isinstance(action, KeepManifest):
                manifest = action.manifest.source
                assert isinstance(manifest, Manifest)
                await self._circles.keep(
                    manifest, "circle.joined" if action.joined else "circle.changed"
                )
            elif isinstance(action, Open):
                await self._open(action, opening)
                opening = None
            elif isinstance(action, Serve):
                self._queue_serving(action)
            elif isinstance(action, WriteChunks):
                await self._start_writing(action)
            elif isinstance(action, Reject):
                await self._moments.reject(action.reasons, action.peer)
            elif isinstance(action, Drop):
                self._links.drop_misbehaving(action.peer, action.reason)
            elif isinstance(action, LeaveCircle):
                await self._leave(action.removal)
            else:
                self._progress(action)

    def _send(self, peer: bytes, message: Message) -> None:
        self._links.send(peer, messages.encode(message))

    async def _send_range(self, action: SendRange) -> None:
        now = int(time.time())
        for epoch in sorted(action.epochs):
            envelopes = await self._store.run(
                Store.envelopes, action.circle, action.author, epoch, action.first, action.last, now
            )
            for send in batches(action.peer, action.circle, envelopes):
                self._send(send.peer, send.message)

    async def _open(self, action: Open, opening: asyncio.Future[Opened] | None) -> None:
        opened = await (opening or self._moments.open_many(action.envelopes))
        await self._keep(action.peer, action.circle, opened)

    async def _keep(self, peer: bytes | None, circle: bytes, opened: Opened) -> list[Moment]:
        """Judge opened moments by the rules, store those kept, and act on what is new."""
        owners = await self._moments.owners(opened.moments)
        entries = {m.id: Entry.of(m) for m in opened.moments}
        accepted, actions = self.engine.opened(
            peer, circle, list(entries.values()), opened.rejected, owners, time.monotonic()
        )
        await self._perform(actions)
        keep = {e.id for e in accepted}
        return await self._store_kept(peer, circle, [m for m in opened.moments if m.id in keep])

    async def _store_kept(
        self,
        peer: bytes | None,
        circle: bytes,
        moments: list[Moment],
        added: list[Moment] | None = None,
    ) -> list[Moment]:
        """Store moments the rules kept (unless `added`: stored already), and act on
        those that are new. A full disk holds them, to be stored when there is room."""
        try:
            if added is None:
                added = await self._moments.store_many(moments)
            if added:
                missing: dict[bytes, Lacking] = {}
                with_blobs = [m for m in added if m.content.blobs]
                if with_blobs:
                    missing, uses = await asyncio.to_thread(self._moments.lacking, with_blobs)
                    if uses:  # chunks that indexes already here name
                        await self._store.run(Store.add_chunks, uses)
                entries = [Entry.of(m) for m in added]
                await self._perform(self.engine.stored(circle, entries, peer, missing))
        except DiskFullError as exc:
            self._disk_full()
            size = sum(len(m.envelope) for m in moments)
            if self._held_size + size > MAX_HELD:
                # Its sender believes we hold them: they come again when it next links.
                log.warning(
                    "%d moments not stored (%s): held moments are at their bound",
                    len(moments),
                    exc,
                )
            else:
                self._held.append((peer, circle, moments, added))
                self._held_size += size
            return []
        return added

    async def receive(self, envelopes: Sequence[bytes]) -> list[Moment]:
        """Moments that reached us other than from a linked peer (an import, a test): they
        are opened and judged as any, stored, and announced; returns those that were new."""
        opened = await self._moments.open_many(envelopes)
        if opened.rejected:
            await self._moments.reject(opened.rejected, None)
        added: list[Moment] = []
        for circle in dict.fromkeys(m.circle_id for m in opened.moments):
            mine = Opened([m for m in opened.moments if m.circle_id == circle], [], 0.0)
            added += await self._keep(None, circle, mine)
        return added

    async def _leave(self, removal: KnownRemoval) -> None:
        notice = removal.source
        assert isinstance(notice, Removal)
        await self._circles.left(notice)

    def _progress(self, progress: Progress) -> None:
        self._events.publish(
            "transfer.chunk",
            moment=moment_text(progress.moment),
            held=progress.held,
            total=progress.total,
            size=progress.size,
        )
        if progress.done:
            self._events.publish("transfer.done", moment=moment_text(progress.moment))

    # --- chunks -------------------------------------------------------------------------

    def _queue_serving(self, action: Serve) -> None:
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
                allowed, chunks = await ahead
                ahead = asyncio.ensure_future(self._fetch(peer, inbox)) if inbox.serve else None
                held = {address for address, _ in chunks}
                for address in allowed:
                    if address not in held:  # say so: it asks someone else
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
        """The next SERVE_BATCH chunks the peer asked for: those it may read, and those of
        them we hold, read."""
        asked = [inbox.serve.popleft() for _ in range(min(SERVE_BATCH, len(inbox.serve)))]
        uses = await self._store.run(Store.chunks_circles, asked)
        allowed = [  # never a chunk of a moment the peer may not read
            a for a in asked if any(self.engine.may_read(peer, c, e) for c, e in uses.get(a, []))
        ]
        return allowed, await self._read_chunks(allowed)

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

    async def _start_writing(self, action: WriteChunks) -> None:
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
        log.debug(
            "%d chunks: looked up in %.1f ms, checked and written in %.1f ms",
            len(action.chunks),
            1000 * (looked - began),
            1000 * (time.perf_counter() - looked),
        )
        sizes = [(a, len(d)) for a, d in wanted if a in kept]
        await self._perform(
            self.engine.chunks_written(
                action.peer, sizes, len(wanted) - len(kept), time.monotonic()
            )
        )
        for (address, piece, chunks), missing in zip(named, lacking, strict=True):
            if address not in kept:
                continue
            waiting.pop(address, None)
            await self._perform(
                self.engine.named(
                    action.peer, piece.moment, piece.circle, piece.epoch, len(chunks), missing
                )
            )

    def _disk_full(self) -> None:
        self.engine.disk_full()
        self.on_full()

    async def room(self) -> None:
        """There is room on the disk again: moments held are stored, fetching resumes."""
        held, self._held, self._held_size = self._held, [], 0
        for peer, circle, moments, added in held:
            await self._store_kept(peer, circle, moments, added)
        if not self._held:
            await self._perform(self.engine.room())

    def statistics(self) -> dict[str, int]:
        """What replication is doing."""
        return {
            "sync_messages": self.handled,
            "moments_held": sum(len(m) for _, _, m, _ in self._held),
            **self.engine.statistics(),
        }


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


def verify_manifest(circles: Circles) -> Callable[[bytes], KnownManifest]:
    """The engine's manifest check: signed by its owner, of a circle we are in."""

    def verify(raw: bytes) -> KnownManifest:
        return known_manifest(circles.verify(raw))

    return verify
