"""Replication between the members of a circle, over links (spec/sync.md).

The shell around core.sync: it feeds the sync core what happens and carries out
what it decides, reading and writing the store. Every send is checked again at
the point of sending: a circle's manifests, moments and chunks go only to peers
in the circle's latest manifest, and a moment only to members of its epoch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from p2pmoments.core.budget import JunkScore, TokenBucket
from p2pmoments.core.circles import (
    Manifest,
    RejectedError,
    decode_manifest,
    decode_removal,
    epoch_key,
)
from p2pmoments.core.sync import (
    T_CHUNK,
    T_HAVE,
    T_MANIFESTS,
    T_MOMENTS,
    T_WANT_CHUNKS,
    Action,
    Membership,
    Send,
    SendManifests,
    Sync,
    Want,
    decode_have,
)
from p2pmoments.moments import Opened, moment_text
from p2pmoments.store import Store

if TYPE_CHECKING:
    from p2pmoments.core.circles import Moment
    from p2pmoments.moments import Moments
    from p2pmoments.node import Node

__all__ = ["MAX_BATCH", "Replication"]

log = logging.getLogger(__name__)

MAX_BATCH = 900 * 1024  # bytes of envelopes in one message (the link's limit is 1 MiB)
MAX_CHUNK_WANTS = 16  # chunks asked of one peer at once
MAX_ENVELOPES = 4096  # envelopes read from one message
MAX_MANIFESTS = 64  # manifests read from one message
MAX_SERVE_QUEUE = 4 * MAX_CHUNK_WANTS  # chunk requests of one peer waiting to be served
VERIFY_RATE = 50_000  # envelopes a second one peer may make us verify (then we read it later)
VERIFY_BURST = 20_000
JUNK_LIMIT = 256  # units of junk (malformed, forged, unasked for) before a peer is dropped
JUNK_DECAY = 4.0  # units forgiven a second
MAX_INBOX = 8  # messages of one peer waiting to be handled (then its link is read later)
T_REMOVED = 21  # removal notices (spec/sync.md section 3)
MAX_REMOVALS = 64  # notices read from one message


@dataclass(slots=True)
class _Peer:
    """What replication keeps about one linked peer; its bounds."""

    wanted: list[bytes] = field(default_factory=list)  # chunks still to ask it for
    in_flight: set[bytes] = field(default_factory=set)  # asked, not yet come
    serve: deque[bytes] = field(default_factory=deque)  # it asked, not yet sent
    serving: bool = False
    verify: TokenBucket = field(default_factory=lambda: TokenBucket(VERIFY_RATE, VERIFY_BURST))
    junk: JunkScore = field(default_factory=lambda: JunkScore(JUNK_LIMIT, JUNK_DECAY))
    # Messages waiting to be handled, in order; moments are being verified meanwhile.
    inbox: deque[tuple[dict[int, Any], asyncio.Future[Opened] | None]] = field(
        default_factory=deque
    )
    working: bool = False
    handling: object = None  # the type of the message being handled
    room: asyncio.Event = field(default_factory=asyncio.Event)


def _envelopes(body: dict[int, Any]) -> list[bytes]:
    """The envelopes of a moments message, as many as we read of one."""
    return [e for e in body[2][:MAX_ENVELOPES] if type(e) is bytes]


class Replication:
    """Keeps the circles of one node in sync with its linked co-members."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.sync = Sync(node.me)
        self._peers: dict[bytes, _Peer] = {}
        # Transfers under way: moment -> chunks not here yet, and how many it uses.
        self._remaining: dict[bytes, set[bytes]] = {}
        self._totals: dict[bytes, int] = {}
        self._users: dict[bytes, set[bytes]] = {}  # chunk -> moments waiting for it
        self._lacking: dict[bytes, set[bytes]] = {}  # chunk -> peers asked that lacked it
        self._asked: dict[bytes, bytes] = {}  # chunk -> the peer it is asked of
        self.handled = 0  # messages from peers handled so far (statistics)

    @property
    def _moments(self) -> Moments:
        return self.node.moments

    def membership(self, circle: bytes) -> Membership | None:
        """Who is in a circle, per epoch, from the manifests we hold."""
        epochs = self._moments.epochs(circle)
        if not epochs:
            return None
        return Membership(
            latest=max(epochs),
            members={
                e: frozenset(bytes(x.verify_key) for x in m.members) for e, m in epochs.items()
            },
        )

    async def load(self) -> None:
        """Tell the sync core what we hold, at start-up."""
        for manifest in self._moments.circles():
            if self._moments.removed(manifest.circle_id) is not None:
                continue  # we are out of it: nothing to sync
            membership = self.membership(manifest.circle_id)
            if membership is not None:
                self.sync.set_circle(manifest.circle_id, membership)
        for circle, author, epoch, seq in await self.node.store.run(Store.holdings):
            self.sync.seed(circle, author, epoch, seq)

    # --- link events -------------------------------------------------------------

    async def link_up(self, peer: bytes) -> None:
        """Tell the peer what we hold of every circle it is in (its answer says which
        manifests it lacks: they go first), and resume transfers a cut left unfinished."""
        self._peers[peer] = _Peer()
        await self.tell_removed(peer)
        await self._perform(self.sync.link_up(peer))
        missing = await self._moments.missing_in(list(self.sync.circles_of(peer)))
        for moment_id, (total, lacking) in missing.items():
            self._track(moment_id, total, lacking)
        self._want(peer, [a for _, lacking in missing.values() for a in lacking])

    async def tell_removed(self, peer: bytes) -> None:
        """Hand a linked peer the owner's notices that it was removed from our circles."""
        if peer not in self._peers:
            return
        notices = await self.node.store.run(Store.removals_for, peer)
        for start in range(0, len(notices), MAX_REMOVALS):
            self.node.send(peer, {0: T_REMOVED, 1: notices[start : start + MAX_REMOVALS]})

    async def _on_removed(self, peer: bytes, raws: object) -> None:
        if type(raws) is not list:
            self._junk(peer, 1, "a malformed removal message")
            return
        for raw in raws[:MAX_REMOVALS]:
            try:
                removal = decode_removal(raw if type(raw) is bytes else b"")
            except RejectedError as exc:
                self._junk(peer, 1, f"a removal notice: {exc.reason}")
                continue
            if await self._moments.accept_removal(removal):
                self.sync.forget_circle(removal.circle_id)

    def link_down(self, peer: bytes) -> None:
        """The link to a peer is gone."""
        self.sync.link_down(peer)
        state = self._peers.pop(peer, None)
        if state is not None:
            state.room.set()  # release a reader waiting for room
            orphans = [a for a in (*state.wanted, *state.in_flight) if self._asked.get(a) == peer]
            for address in orphans:
                del self._asked[address]
            if orphans and self._peers:  # someone else linked may hold them
                self.node.spawn(self._ask_elsewhere(peer, orphans, lacked=False), "re-ask")

    def _junk(self, peer: bytes, units: float, what: str) -> None:
        """Count junk from a peer; past the limit, drop it."""
        state = self._peers.get(peer)
        if state is not None and state.junk.add(units, time.monotonic()):
            self.node.drop_misbehaving(peer, f"too much junk (last: {what})")

    def _want(self, peer: bytes, addresses: Sequence[bytes]) -> None:
        """Queue chunks to ask `peer` for; at most MAX_CHUNK_WANTS are in flight. A chunk
        already asked of another linked peer is not asked twice."""
        state = self._peers.get(peer)
        if state is None:
            return
        queued = set(state.wanted)
        for a in addresses:
            holder = self._asked.get(a)
            if holder is not None and holder != peer and holder in self._peers:
                continue
            if a not in state.in_flight and a not in queued:
                state.wanted.append(a)
                queued.add(a)
                self._asked[a] = peer
        ask = []
        while state.wanted and len(state.in_flight) < MAX_CHUNK_WANTS:
            address = state.wanted.pop(0)
            state.in_flight.add(address)
            ask.append(address)
        if ask:
            self.node.send(peer, {0: T_WANT_CHUNKS, 1: ask})

    def _track(self, moment_id: bytes, total: int, missing: Sequence[bytes]) -> None:
        """Follow a moment's chunks as they arrive (transfer events)."""
        if not missing:
            return
        self._totals[moment_id] = total
        self._remaining.setdefault(moment_id, set()).update(missing)
        for address in missing:
            self._users.setdefault(address, set()).add(moment_id)

    async def circle_changed(self, manifest: Manifest) -> None:
        """We made or changed a circle: its members hear of it first."""
        membership = self.membership(manifest.circle_id)
        if membership is None:
            return
        named = membership.members.get(manifest.epoch, frozenset())
        for peer in self.node.linked_peers():
            # Only to those it names: an old epoch's membership is not for later members.
            if membership.in_latest(peer) and peer in named:
                self.node.send(peer, {0: T_MANIFESTS, 1: [manifest.raw]})
        await self._perform(self.sync.set_circle(manifest.circle_id, membership))

    async def stored(self, moment: Moment, source: bytes | None) -> None:
        """A moment was stored: push ours, announce others'."""
        await self._perform(
            self.sync.stored(
                moment.circle_id, bytes(moment.author), moment.seq, moment.epoch, source
            )
        )

    # --- messages from peers -----------------------------------------------------------

    async def on_message(self, peer: bytes, body: dict[int, Any]) -> None:
        """A replication message from a linked peer: queued, and handled in order by the
        peer's own worker. Moments start verifying at once, on worker threads, so one
        batch is checked while the one before is stored. At most MAX_INBOX messages
        wait; beyond that this waits, and the peer's link is read later."""
        state = self._peers.get(peer)
        if state is None:
            return
        while len(state.inbox) >= MAX_INBOX and self._peers.get(peer) is state:
            state.room.clear()
            await state.room.wait()
        opening: asyncio.Future[Opened] | None = None
        if body.get(0) == T_MOMENTS and type(body.get(2)) is list:
            # A peer may make us verify only so much a second; beyond that, its link
            # is read later (this waits in its link's task alone).
            delay = state.verify.take(min(len(body[2]), MAX_ENVELOPES), time.monotonic())
            if delay > 0:
                await asyncio.sleep(delay)
            ahead = [state.handling, *(queued.get(0) for queued, _ in state.inbox)]
            if T_MANIFESTS not in ahead:
                # Nothing queued can change which keys open them: verify now.
                opening = asyncio.ensure_future(self._moments.open_many(_envelopes(body)))
        state.inbox.append((body, opening))
        if not state.working:
            state.working = True
            self.node.spawn(self._work(peer, state), name="replication-inbox")

    async def _work(self, peer: bytes, state: _Peer) -> None:
        """Handle a peer's messages in order, until its inbox is empty or it is gone."""
        try:
            while state.inbox and self._peers.get(peer) is state:
                body, opening = state.inbox.popleft()
                state.handling = body.get(0)
                try:
                    if body.get(0) == T_CHUNK:
                        # Chunks queued together are checked and written together.
                        chunks = [body]
                        while state.inbox and state.inbox[0][0].get(0) == T_CHUNK:
                            chunks.append(state.inbox.popleft()[0])
                        state.room.set()
                        await self._on_chunks(peer, chunks)
                    else:
                        state.room.set()
                        await self._handle(peer, body, opening)
                except Exception:
                    # A bug in handling one message costs that peer's link only.
                    log.exception("handling a message from %s failed", peer.hex()[:12])
                    self.node.drop_misbehaving(peer, "internal error")
                    return
                finally:
                    self.handled += 1
        finally:
            state.working = False
            state.handling = None
            for _, opening in state.inbox:
                if opening is not None:
                    opening.cancel()
            if self._peers.get(peer) is not state:
                state.inbox.clear()
            state.room.set()

    async def _handle(
        self, peer: bytes, body: dict[int, Any], opening: asyncio.Future[Opened] | None
    ) -> None:
        kind = body.get(0)
        if kind == T_MANIFESTS:
            await self._on_manifests(peer, body.get(1))
        elif kind == T_HAVE:
            if decode_have(body) is None:
                self._junk(peer, 1, "a malformed have")
                return
            await self._perform(self.sync.received_have(peer, body))
        elif kind == T_MOMENTS:
            if opening is None and type(body.get(2)) is list:
                opening = asyncio.ensure_future(self._moments.open_many(_envelopes(body)))
            await self._on_moments(peer, body.get(1), opening)
        elif kind == T_WANT_CHUNKS:
            self._on_want_chunks(peer, body.get(1))
        elif kind == T_REMOVED:
            await self._on_removed(peer, body.get(1))

    async def _on_manifests(self, peer: bytes, raws: object) -> None:
        if type(raws) is not list:
            self._junk(peer, 1, "a malformed manifest message")
            return
        for raw in raws[:MAX_MANIFESTS]:
            if type(raw) is not bytes:
                self._junk(peer, 1, "a malformed manifest")
                continue
            try:
                manifest = decode_manifest(raw)
                epoch_key(manifest, self.node.identity)  # only circles we are in
            except RejectedError as exc:
                self._junk(peer, 1, f"a manifest: {exc.reason}")
                continue
            current = self._moments.current(manifest.circle_id)
            if self._moments.manifest_for(manifest.circle_id, manifest.epoch) is not None:
                continue
            if await self._moments.save(
                manifest, "circle.joined" if current is None else "circle.changed"
            ):
                await self.circle_changed(manifest)  # pass it on: manifests travel first

    async def _on_moments(
        self, peer: bytes, circle: object, opening: asyncio.Future[Opened] | None
    ) -> None:
        if type(circle) is not bytes or opening is None:
            self._junk(peer, 1, "a malformed moments message")
            return
        opened = await opening
        membership = self.membership(circle)
        if membership is None or not membership.in_latest(peer):
            return  # only the circle's current members exchange its moments
        # Only moments of the circle the message names: the peer's membership was
        # checked for that circle alone.
        elsewhere = [m for m in opened.moments if m.circle_id != circle]
        if elsewhere:
            opened = Opened(
                [m for m in opened.moments if m.circle_id == circle],
                [
                    *opened.rejected,
                    *(
                        ("a moment of another circle than its message", len(m.envelope))
                        for m in elsewhere
                    ),
                ],
                opened.seconds,
            )
        added, rejected = await self._moments.accept(opened, peer)
        if rejected:
            self._junk(peer, rejected, "moments that failed verification")
        if not added:
            return
        await self._perform(
            self.sync.stored_many(circle, [(bytes(m.author), m.seq, m.epoch) for m in added], peer)
        )
        with_blobs = [m for m in added if m.content.blobs]
        if with_blobs:
            needs = await asyncio.to_thread(
                lambda: [(m.id, *self._moments.missing_chunks(m)) for m in with_blobs]
            )
            for moment_id, total, missing in needs:
                self._track(moment_id, total, missing)
            self._want(peer, [a for _, _, missing in needs for a in missing])

    def _on_want_chunks(self, peer: bytes, addresses: object) -> None:
        state = self._peers.get(peer)
        if state is None:
            return
        if type(addresses) is not list or len(addresses) > MAX_CHUNK_WANTS:
            self._junk(peer, 1, "a malformed or oversized chunk request")
            return
        for address in addresses:
            if type(address) is not bytes or len(address) != 32:
                self._junk(peer, 1, "a malformed chunk address")
            elif len(state.serve) >= MAX_SERVE_QUEUE:
                self._junk(peer, 1, "more chunk requests than allowed in flight")
            else:
                state.serve.append(address)
        if state.serve and not state.serving:
            state.serving = True
            self.node.spawn(self._serve_chunks(peer, state), name="serve-chunks")

    async def _serve_chunks(self, peer: bytes, state: _Peer) -> None:
        """Send the chunks a peer asked for, at the pace it reads them."""
        try:
            while state.serve and self._peers.get(peer) is state:
                asked = [state.serve.popleft() for _ in range(min(8, len(state.serve)))]
                uses = await self.node.store.run(Store.chunks_circles, asked)
                allowed = [  # never a chunk of a moment the peer may not read
                    a for a in asked if any(self._may_have(peer, c, e) for c, e in uses.get(a, []))
                ]
                chunks = await asyncio.to_thread(self._moments.blobs.get_many, allowed)
                held = {address for address, _ in chunks}
                for address in allowed:
                    if address not in held:  # say so: it asks someone else
                        self.node.send(peer, {0: T_CHUNK, 1: address})
                for address, data in chunks:
                    if not await self.node.send_paced(peer, {0: T_CHUNK, 1: address, 2: data}):
                        return
        finally:
            state.serving = False

    async def _on_chunks(self, peer: bytes, bodies: list[dict[int, Any]]) -> None:
        state = self._peers.get(peer)
        if state is None:
            return
        got: list[tuple[bytes, bytes]] = []
        lacking: list[bytes] = []
        for body in bodies:
            address, data = body.get(1), body.get(2, None)
            if type(address) is not bytes or (data is not None and type(data) is not bytes):
                self._junk(peer, 4, "a malformed chunk")
            elif address not in state.in_flight:
                self._junk(peer, 4, "a chunk we did not ask for")
            else:
                state.in_flight.discard(address)
                if data is None:
                    lacking.append(address)  # it does not hold it
                else:
                    got.append((address, data))
        if lacking:
            await self._ask_elsewhere(peer, lacking)
        for address, _ in got:
            self._asked.pop(address, None)
        if not got:
            self._want(peer, [])
            return
        self._want(peer, [])  # top up: the next ones travel while these are written
        began = time.perf_counter()
        used = await self.node.store.run(Store.chunks_circles, [a for a, _ in got])
        wanted = [(a, d) for a, d in got if a in used]  # others: retracted or expired meanwhile
        looked = time.perf_counter()
        # Hashing and writing off the loop; a chunk that is not what its address names
        # is not kept.
        kept = set(await asyncio.to_thread(self._moments.blobs.put_received, wanted))
        log.debug(
            "%d chunks: looked up in %.1f ms, checked and written in %.1f ms",
            len(got),
            1000 * (looked - began),
            1000 * (time.perf_counter() - looked),
        )
        if len(kept) < len(wanted):
            self._junk(peer, 16 * (len(wanted) - len(kept)), "chunks not what their address names")
        for address, data in got:
            if address in kept:
                self._chunk_arrived(address, len(data))

    async def _ask_elsewhere(
        self, peer: bytes, addresses: list[bytes], *, lacked: bool = True
    ) -> None:
        """Chunks a peer said it does not hold (or could not send: its link went): ask
        another linked member who may read them (each peer at most once per chunk it
        lacked; the next link-up tries again)."""
        uses = await self.node.store.run(Store.chunks_circles, addresses)
        for address in addresses:
            if self._asked.get(address) == peer:
                del self._asked[address]
            tried = self._lacking.setdefault(address, set())
            if lacked:
                tried.add(peer)
            for other in self._peers:
                if other not in tried and any(
                    self._may_have(other, c, e) for c, e in uses.get(address, [])
                ):
                    self._want(other, [address])
                    break

    def _chunk_arrived(self, address: bytes, size: int) -> None:
        self._lacking.pop(address, None)
        for moment_id in self._users.pop(address, set()):
            remaining = self._remaining.get(moment_id)
            if remaining is None:
                continue
            remaining.discard(address)
            total = self._totals[moment_id]
            self.node.events.publish(
                "transfer.chunk",
                moment=moment_text(moment_id),
                held=total - len(remaining),
                total=total,
                size=size,
            )
            if not remaining:
                del self._remaining[moment_id], self._totals[moment_id]
                self.node.events.publish("transfer.done", moment=moment_text(moment_id))

    def _may_have(self, peer: bytes, circle: bytes, epoch: int) -> bool:
        membership = self.membership(circle)
        return (
            membership is not None
            and membership.in_latest(peer)
            and epoch in membership.epochs_of(peer)
        )

    # --- carrying out decisions -----------------------------------------------------

    async def _perform(self, actions: Sequence[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                if action.body:
                    self.node.send(action.peer, action.body)
            elif isinstance(action, SendManifests):
                self._send_manifests(action)
            else:
                await self._send_range(action)

    def _send_manifests(self, action: SendManifests) -> None:
        membership = self.membership(action.circle)
        if membership is None or not membership.in_latest(action.peer):
            return  # checked again at the point of sending
        raws = []
        for epoch in sorted(action.epochs):
            kept = self._moments.manifest_for(action.circle, epoch)
            if kept is not None and (
                epoch == membership.latest or self._may_have(action.peer, action.circle, epoch)
            ):
                raws.append(kept.raw)
        for start in range(0, len(raws), MAX_MANIFESTS):
            self.node.send(action.peer, {0: T_MANIFESTS, 1: raws[start : start + MAX_MANIFESTS]})

    async def _send_range(self, want: Want) -> None:
        for epoch in sorted(want.epochs):
            if not self._may_have(want.peer, want.circle, epoch):
                continue  # checked again at the point of sending
            rows = await self.node.store.run(
                Store.envelopes,
                want.circle,
                want.author,
                epoch,
                want.first,
                want.last,
                int(time.time()),
            )
            batch: list[bytes] = []
            size = 0
            for _seq, envelope in rows:
                if size + len(envelope) > MAX_BATCH and batch:
                    self.node.send(want.peer, {0: T_MOMENTS, 1: want.circle, 2: batch})
                    batch, size = [], 0
                batch.append(envelope)
                size += len(envelope)
            if batch:
                self.node.send(want.peer, {0: T_MOMENTS, 1: want.circle, 2: batch})
