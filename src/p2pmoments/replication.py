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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from p2pmoments.core.blobs import chunk_address
from p2pmoments.core.circles import Manifest, RejectedError, decode_manifest, epoch_key
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
)
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


class Replication:
    """Keeps the circles of one node in sync with its linked co-members."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.sync = Sync(node.me)
        # Chunks still to ask each peer for, and those asked and not yet come.
        self._wanted: dict[bytes, list[bytes]] = {}
        self._in_flight: dict[bytes, set[bytes]] = {}

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
            membership = self.membership(manifest.circle_id)
            if membership is not None:
                self.sync.set_circle(manifest.circle_id, membership)
        for circle, author, epoch, seq in await self.node.store.run(Store.holdings):
            self.sync.seed(circle, author, epoch, seq)

    # --- link events -------------------------------------------------------------

    async def link_up(self, peer: bytes) -> None:
        """Tell the peer what we hold of every circle it is in (its answer says which
        manifests it lacks: they go first), and resume transfers a cut left unfinished."""
        await self._perform(self.sync.link_up(peer))
        self._want(peer, await self._moments.missing_in(list(self.sync.circles_of(peer))))

    def link_down(self, peer: bytes) -> None:
        """The link to a peer is gone."""
        self.sync.link_down(peer)
        self._wanted.pop(peer, None)
        self._in_flight.pop(peer, None)

    def _want(self, peer: bytes, addresses: Sequence[bytes]) -> None:
        """Queue chunks to ask `peer` for; at most MAX_CHUNK_WANTS are in flight."""
        queue = self._wanted.setdefault(peer, [])
        flying = self._in_flight.setdefault(peer, set())
        queue.extend(a for a in addresses if a not in flying and a not in queue)
        ask = []
        while queue and len(flying) < MAX_CHUNK_WANTS:
            address = queue.pop(0)
            flying.add(address)
            ask.append(address)
        if ask:
            self.node.send(peer, {0: T_WANT_CHUNKS, 1: ask})

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
        """A replication message from a linked peer."""
        kind = body.get(0)
        if kind == T_MANIFESTS:
            await self._on_manifests(peer, body.get(1))
        elif kind == T_HAVE:
            await self._perform(self.sync.received_have(peer, body))
        elif kind == T_MOMENTS:
            await self._on_moments(peer, body.get(1), body.get(2))
        elif kind == T_WANT_CHUNKS:
            await self._on_want_chunks(peer, body.get(1))
        elif kind == T_CHUNK:
            await self._on_chunk(peer, body.get(1), body.get(2))

    async def _on_manifests(self, peer: bytes, raws: object) -> None:
        if type(raws) is not list:
            return
        for raw in raws[:MAX_MANIFESTS]:
            if type(raw) is not bytes:
                continue
            try:
                manifest = decode_manifest(raw)
                epoch_key(manifest, self.node.identity)  # only circles we are in
            except RejectedError:
                continue
            current = self._moments.current(manifest.circle_id)
            if self._moments.manifest_for(manifest.circle_id, manifest.epoch) is not None:
                continue
            await self._moments.save(
                manifest, "circle.joined" if current is None else "circle.changed"
            )
            await self.circle_changed(manifest)  # pass it on: manifests travel first

    async def _on_moments(self, peer: bytes, circle: object, envelopes: object) -> None:
        if type(circle) is not bytes or type(envelopes) is not list:
            return
        membership = self.membership(circle)
        if membership is None or not membership.in_latest(peer):
            return  # only the circle's current members exchange its moments
        batch = [e for e in envelopes[:MAX_ENVELOPES] if type(e) is bytes]
        added = [m for m in await self._moments.receive_many(batch, peer) if m.circle_id == circle]
        if not added:
            return
        await self._perform(
            self.sync.stored_many(circle, [(bytes(m.author), m.seq, m.epoch) for m in added], peer)
        )
        if any(m.content.blobs for m in added):
            missing = await asyncio.to_thread(
                lambda: [a for m in added for a in self._moments.missing_chunks(m)]
            )
            self._want(peer, missing)

    async def _on_want_chunks(self, peer: bytes, addresses: object) -> None:
        if type(addresses) is not list:
            return
        for address in addresses[:MAX_CHUNK_WANTS]:
            if type(address) is not bytes or len(address) != 32:
                continue
            uses = await self.node.store.run(Store.chunk_circles, address)
            if not any(self._may_have(peer, c, e) for c, e in uses):
                continue  # never a chunk of a moment the peer may not read
            data = await asyncio.to_thread(self._moments.blobs.get, address)
            if data is not None:
                self.node.send(peer, {0: T_CHUNK, 1: address, 2: data})

    async def _on_chunk(self, peer: bytes, address: object, data: object) -> None:
        if type(address) is not bytes or type(data) is not bytes:
            return
        flying = self._in_flight.get(peer, set())
        if address not in flying:
            return  # we did not ask this peer for it
        flying.discard(address)
        self._want(peer, [])  # top up
        if chunk_address(data) != address:
            return  # not the chunk its address names
        if not await self.node.store.run(Store.chunk_circles, address):
            return  # nobody asked for it
        await asyncio.to_thread(self._moments.blobs.put, address, data)
        self.node.events.publish("transfer.chunk", address=address.hex()[:16], size=len(data))

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
