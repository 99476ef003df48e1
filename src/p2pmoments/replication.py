"""Replication's runner: carries out what core.replication decides (spec/sync.md).

Per linked peer it keeps an inbox (messages handled in order by the peer's own worker,
at most MAX_INBOX waiting; beyond that its link is read later), a token bucket on the
moments it makes us verify, and a queue of chunks it asked for, served at the pace it
reads them. Envelopes are opened on worker threads while the batch before is stored;
everything else (what to send whom, what to keep, whom to drop) is the engine's.

A full disk is nobody's fault: the link stays up. Chunks that could not be written are
asked for again, and fetching pauses, until `room` (disk.py); moments that could not be
stored are held (MAX_HELD bytes at most) and stored then.

Chunks, served and received, are transfers.py's (`Transfers`); the rest of the
engine's actions are carried out here.

Why so long: it is the one place where a peer's messages, the store and the engine's
actions meet, in order; its parts (inboxes, storing, the full disk's hold) share the
per-peer state, and splitting them would pass that state around for no reader's gain.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from p2pmoments.circles import Circles
from p2pmoments.core.manifest import Manifest, Removal, decode_removal
from p2pmoments.core.moment import Moment
from p2pmoments.core.replication import messages
from p2pmoments.core.replication.chunks import Lacking, Progress, Refill
from p2pmoments.core.replication.engine import (
    Action,
    Delivered,
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
    sends,
)
from p2pmoments.core.replication.messages import BadMessage, Chunk, Message
from p2pmoments.core.replication.rules import Entry
from p2pmoments.errors import DiskFullError
from p2pmoments.events import EventBus
from p2pmoments.moments import Moments, Opened
from p2pmoments.net.links import Links
from p2pmoments.store import AsyncStore, Store
from p2pmoments.transfers import Transfers, _Inbox
from p2pmoments.verifying import PROCESS_BATCH
from p2pmoments.versions import version_facts, without_packed
from p2pmoments.views import circle_text, moment_text

__all__ = ["MAX_INBOX", "Replication"]

log = logging.getLogger(__name__)

MAX_INBOX = 8  # messages of one peer waiting to be handled (then its link is read later)
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
        # (circle, person, epoch) -> the highest seq of ours its daemon holds, as kept.
        self._delivered_to: dict[tuple[bytes, bytes, int], int] = {}
        # Moments verified and kept by the rules, not stored: the disk was full.
        self._held: list[tuple[bytes | None, bytes, list[Moment], list[Moment] | None]] = []
        self._held_size = 0
        self.on_full: Callable[[], None] = lambda: None  # the node's Disk hears of it
        # Told of moments newly stored from peers (the node's FileVersions prunes).
        self.on_stored: Callable[[Sequence[Moment]], Coroutine[Any, Any, None]] | None = None
        self._transfers = Transfers(
            engine,
            store=store,
            moments=moments,
            links=links,
            spawn=spawn,
            peers=self._peers,
            perform=self._perform,
            disk_full=self._disk_full,
        )

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

    async def tick(self, now: float) -> None:
        """Time passed: what a peer did not answer is asked of another."""
        await self._perform(self.engine.tick(now))

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
        if (
            isinstance(message, messages.Have)
            and self.engine.behind(peer, message) >= PROCESS_BATCH
        ):
            # A catch-up is coming: signature checking gets ready before it does.
            await self._moments.verifier.warm()
        # Room comes from the peer's worker: without one at work (it stopped on an error,
        # its link being dropped), waiting would hold this link's reader for ever.
        while len(inbox.queue) >= MAX_INBOX and self._peers.get(peer) is inbox and inbox.working:
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
                self._transfers.queue_serving(action)
            elif isinstance(action, WriteChunks):
                await self._transfers.start_writing(action)
            elif isinstance(action, Reject):
                await self._moments.reject(action.reasons, action.peer)
            elif isinstance(action, Drop):
                self._links.drop_misbehaving(action.peer, action.reason)
            elif isinstance(action, LeaveCircle):
                await self._leave(action.removal)
            elif isinstance(action, Delivered):
                await self._delivered(action)
            elif isinstance(action, Refill):
                found = await self._moments.refill(action.moment)
                if found is not None:
                    circle, epoch, lack = found
                    await self._perform(
                        self.engine.refill(action.moment, circle, epoch, lack, action.peer)
                    )
            else:
                self._progress(action)

    async def _delivered(self, action: Delivered) -> None:
        """A member holds our moments up to these: kept (once per rise), and told to the
        pages as `moment.delivered` (spec/sync.md §4, point 9)."""
        rising = [
            (epoch, seq)
            for epoch, seq in action.held
            if seq > self._delivered_to.get((action.circle, action.person, epoch), 0)
        ]
        if not rising:
            return
        for epoch, seq in rising:
            self._delivered_to[(action.circle, action.person, epoch)] = seq
        if await self._store.run(Store.record_delivered, action.circle, action.person, rising):
            self._events.publish("moment.delivered", circle=circle_text(action.circle))

    def _send(self, peer: bytes, message: Message) -> None:
        self._links.send(peer, messages.encode(message))

    async def _send_range(self, action: SendRange) -> None:
        now = int(time.time())
        for epoch in sorted(action.epochs):
            items = await self._store.run(
                Store.seq_envelopes,
                action.circle,
                action.author,
                epoch,
                action.first,
                action.last,
                now,
            )
            for send in sends(action, epoch, items):  # each naming what it covers
                self._send(send.peer, send.message)

    async def _open(self, action: Open, opening: asyncio.Future[Opened] | None) -> None:
        opened = await (opening or self._moments.open_many(action.envelopes))
        await self._keep(action.peer, action.circle, opened)

    async def _keep(self, peer: bytes | None, circle: bytes, opened: Opened) -> list[Moment]:
        """Judge opened moments by the rules, store those kept, and act on what is new."""
        owners = await self._moments.owners(opened.moments)
        entries = {m.id: Entry.of(m) for m in opened.moments}
        files, versions = await version_facts(self._store, opened.moments)
        accepted, actions = self.engine.opened(
            peer,
            circle,
            list(entries.values()),
            opened.rejected,
            owners,
            time.monotonic(),
            files=files,
            versions=versions,
        )
        await self._perform(actions)
        keep = {e.id: e for e in accepted}
        kept = [m for m in opened.moments if m.id in keep]
        return await self._store_kept(peer, circle, kept, entries=keep)

    async def _store_kept(
        self,
        peer: bytes | None,
        circle: bytes,
        moments: list[Moment],
        added: list[Moment] | None = None,
        entries: Mapping[bytes, Entry] | None = None,
    ) -> list[Moment]:
        """Store moments the rules kept (unless `added`: stored already), and act on
        those that are new (`entries`: theirs, if made already). A full disk holds them,
        to be stored when there is room."""
        try:
            followed: tuple[dict[bytes, Lacking], list[tuple[bytes, bytes]]] | None = None
            if added is None:
                # The chunks that indexes already here name are recorded with their moment,
                # in one transaction: a kill between the two left a file whose index piece
                # was held and whose chunks no one asked for, after a restart, ever.
                with_blobs = [m for m in moments if m.content.blobs]
                followed = await self._moments.follow(with_blobs) if with_blobs else ({}, [])
                named: dict[bytes, list[bytes]] = {}
                for moment_id, address in followed[1]:
                    named.setdefault(moment_id, []).append(address)
                added = await self._moments.store_many(moments, named=named)
            if added:
                missing: dict[bytes, Lacking] = {}
                with_blobs = [m for m in added if m.content.blobs]
                if with_blobs:
                    if followed is None:  # stored by the caller: followed only now
                        followed = await self._moments.follow(with_blobs)
                        if followed[1]:
                            await self._store.run(Store.add_chunks, followed[1])
                    fresh = {m.id for m in with_blobs}
                    missing = {i: lack for i, lack in followed[0].items() if i in fresh}
                    # A file's version borrows chunks that may be in our own packs.
                    missing = await without_packed(self._store, missing)
                known = entries or {}
                new = [known.get(m.id) or Entry.of(m) for m in added]
                await self._perform(self.engine.stored(circle, new, peer, missing))
                for m in with_blobs:  # here whole on arrival (sent ahead): said as done
                    if peer is not None and m.id not in missing:
                        total = sum(ref.total() for ref in m.content.blobs)
                        self._progress(Progress(m.id, total, total, 0))
                if self.on_stored is not None:
                    await self.on_stored(added)
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


def verify_manifest(circles: Circles) -> Callable[[bytes], KnownManifest]:
    """The engine's manifest check: signed by its owner, of a circle we are in."""

    def verify(raw: bytes) -> KnownManifest:
        return known_manifest(circles.verify(raw))

    return verify
