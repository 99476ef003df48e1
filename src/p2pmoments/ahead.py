"""Chunks sent ahead of their moment (spec/sync.md section 4, point 10; core/ahead.py).

Sending: while one of our posts is uploaded, each chunk is sent as it is made to the
linked members of its circle that said they take chunks ahead (message 41), over the
LAN or a static address (never through Tor), while little waits on their link: a chunk
that does not fit is not sent (it is asked for, as any, once the moment arrives).
Nothing waits for it: the upload goes at its own pace, and the post is acknowledged
as before (its pack synced, its moment committed).

Receiving: a chunk sent ahead by a member of the circle it names (in our latest
manifest), within that peer's budget, matching its address, is kept as a received
chunk that no moment uses yet; when the moment comes, the chunks it names that are
here are not asked for. A chunk that does not match its address drops the peer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from p2pmoments.blobstore import BlobStore
from p2pmoments.core.ahead import (
    AHEAD_BUDGET,
    AHEAD_MESSAGES,
    Ahead,
    AheadBudget,
    AheadOk,
    BadAheadMessage,
    decode_ahead_message,
    encode_ahead,
    encode_ahead_ok,
)
from p2pmoments.core.manifest import Manifest
from p2pmoments.core.replication.engine import Replicator
from p2pmoments.errors import DiskFullError
from p2pmoments.net.links import Links

__all__ = ["AHEAD_MESSAGES", "AHEAD_ROOM", "MAX_PENDING", "ChunksAhead", "Sender"]

log = logging.getLogger(__name__)

AHEAD_ROOM = 3 << 19  # bytes waiting on a link beyond which a chunk is not sent ahead
MAX_PENDING = 8 << 20  # bytes of one peer's chunks waiting to be written (then its link waits)
WRITE_BATCH = 16  # chunks written together

Sender = Callable[[Sequence[tuple[bytes, bytes]]], None]  # (address, chunk) as made


@dataclass(slots=True)
class _Writes:
    """One peer's chunks received ahead, waiting to be written."""

    queue: list[Ahead] = field(default_factory=list)
    size: int = 0
    writing: bool = False
    room: asyncio.Event = field(default_factory=asyncio.Event)


async def _none_in_use(addresses: list[bytes]) -> set[bytes]:
    return set()


class ChunksAhead:
    """Sending our posts' chunks ahead, and keeping those sent to us."""

    def __init__(
        self,
        engine: Replicator,
        links: Links,
        blobs: BlobStore,
        spawn: Callable[[Coroutine[Any, Any, None], str], None],
    ) -> None:
        self._engine = engine
        self._links = links
        self._blobs = blobs
        self._spawn = spawn
        self.disk_full: Callable[[], bool] = lambda: False  # while the disk is known full
        # Those of some chunks that a moment we hold already uses (Store.chunks_in_use).
        self.in_use: Callable[[list[bytes]], Awaitable[set[bytes]]] = _none_in_use
        self._accepting: dict[bytes, int] = {}  # linked peers that take chunks ahead: budget
        self._budgets: dict[bytes, AheadBudget] = {}
        self._writes: dict[bytes, _Writes] = {}
        self.budget = AHEAD_BUDGET  # bytes kept ahead of one peer in a window
        self.sent = 0  # chunks sent ahead (statistics, tests)
        self.kept = 0  # chunks kept ahead

    # --- links ------------------------------------------------------------------------

    def link_up(self, peer: bytes) -> None:
        """Say that we take chunks ahead."""
        self._links.send(peer, encode_ahead_ok())

    def link_down(self, peer: bytes) -> None:
        self._accepting.pop(peer, None)
        writes = self._writes.pop(peer, None)
        if writes is not None:
            writes.queue.clear()
            writes.room.set()

    async def on_message(self, peer: bytes, body: dict[int, Any]) -> None:
        """Message 40 or 41 from a linked peer; a malformed one drops the peer."""
        try:
            message = decode_ahead_message(body)
        except BadAheadMessage as exc:
            self._links.drop_misbehaving(peer, f"bad ahead message: {exc}")
            return
        if isinstance(message, AheadOk):
            self._accepting[peer] = message.budget
            return
        membership = self._engine.membership(message.circle)
        if membership is None or not membership.in_latest(peer) or self.disk_full():
            return  # not kept: asked for when its moment comes, if it does
        budget = self._budgets.setdefault(peer, AheadBudget(self.budget))
        if not budget.take(len(message.data), time.monotonic()):
            return
        writes = self._writes.setdefault(peer, _Writes())
        while writes.size >= MAX_PENDING and self._writes.get(peer) is writes:
            writes.room.clear()
            await writes.room.wait()  # its link is read later
        if self._writes.get(peer) is not writes:
            return
        writes.queue.append(message)
        writes.size += len(message.data)
        if not writes.writing:
            writes.writing = True
            self._spawn(self._write(peer, writes), "write-ahead")

    async def written(self, peer: bytes) -> None:
        """Return once the chunks this peer has sent ahead so far are written (or
        dropped): what follows them on its link, their moment, then finds them here and
        does not ask for them again. (Its link is read in order, so no more come
        meanwhile.)"""
        writes = self._writes.get(peer)
        while writes is not None and writes.writing and self._writes.get(peer) is writes:
            writes.room.clear()
            await writes.room.wait()

    async def _write(self, peer: bytes, writes: _Writes) -> None:
        """Write a peer's chunks received ahead, a batch at a time, while its link is
        read."""
        try:
            while writes.queue and self._writes.get(peer) is writes:
                batch, writes.queue = writes.queue[:WRITE_BATCH], writes.queue[WRITE_BATCH:]
                # A chunk its moment already uses (the moment came first, relayed by
                # another member) is the ordinary fetch's: a piece of its file's index,
                # kept here, would not name the chunks it lists (transfers.py records
                # them before it keeps the piece), and the file would never complete.
                used = await self.in_use([m.address for m in batch])
                chunks = [(m.address, m.data) for m in batch if m.address not in used]
                try:
                    kept = await asyncio.to_thread(self._blobs.put_received, chunks)
                except DiskFullError as exc:
                    log.warning("chunks sent ahead: %s; not kept", exc)  # the store told Disk
                    kept = [a for a, _ in chunks]  # none is the peer's fault
                    writes.queue.clear()
                else:
                    self.kept += len(kept)
                finally:  # what still waits (none, after a full disk)
                    writes.size = sum(len(m.data) for m in writes.queue)
                    writes.room.set()
                if len(kept) < len(chunks):
                    self._links.drop_misbehaving(peer, "a chunk sent ahead is not its address's")
                    return
        except Exception:  # our disk or a bug: this peer's link only, never the daemon
            log.exception("writing chunks sent ahead failed")
            self._links.drop_misbehaving(peer, "internal error")
        finally:
            writes.writing = False
            writes.room.set()

    # --- sending ------------------------------------------------------------------------

    def sender(self, manifest: Manifest) -> Sender | None:
        """What sends the chunks of a post to `manifest`'s circle ahead, as they are made
        (call it on the event loop), or None if no linked member takes them."""
        paths = {p.key: p.path for p in self._links.peers()}
        circle, epoch = manifest.circle_id, manifest.epoch
        left = {
            peer: budget
            for peer, budget in self._accepting.items()
            if paths.get(peer, "tor") != "tor" and self._engine.may_read(peer, circle, epoch)
        }
        if not left:
            return None

        def send(chunks: Sequence[tuple[bytes, bytes]]) -> None:
            for peer in list(left):
                for address, data in chunks:
                    if left[peer] < len(data):
                        del left[peer]  # its budget is spent: the rest is asked for
                        break
                    if self._links.send_if_room(
                        peer, encode_ahead(circle, address, data), AHEAD_ROOM
                    ):
                        left[peer] -= len(data)
                        self.sent += 1

        return send
