"""The moments one daemon holds and the blobs they use (spec/moments.md sections 2-6):
storing them (ours and received), opening what peers send, what a stored moment still
lacks (chunk indexes included, spec/moments.md section 4), and deleting what expired
or what nothing uses. `Moments` (moments.py) adds reading them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from p2pmoments.blobstore import BlobStore, Location
from p2pmoments.circles import Circles
from p2pmoments.core.blobs import BlobRef, open_index_piece
from p2pmoments.core.errors import NO_KEY_YET, DecodeError, RejectedError
from p2pmoments.core.moment import (
    Kind,
    Moment,
    PersonLookup,
    Unsigned,
    open_content,
    open_moment,
    placed,
    read_envelope,
    still_admitted,
)
from p2pmoments.core.replication.chunks import Lacking
from p2pmoments.events import EventBus
from p2pmoments.openedcache import OpenedCache
from p2pmoments.store import AsyncStore, Freed, NewMoment, Store, StoredMoment
from p2pmoments.verifying import PROCESS_BATCH, Verifier
from p2pmoments.views import circle_text, moment_text

__all__ = ["CHUNK_SWEEP", "EXPIRY_SWEEP", "Holding", "IndexPiece", "Opened", "flatten"]

log = logging.getLogger(__name__)

VERIFY_THREADS = min(4, os.cpu_count() or 1)  # worker threads checking one batch of moments
OPEN_PIECE = 512  # envelopes of a big batch read, checked and decrypted together
EXPIRY_SWEEP = 30.0  # seconds between sweeps for expired moments
CHUNK_SWEEP = 3600.0  # seconds between sweeps for chunks no moment uses (and one at start)
SWEEP_GRACE = 3600.0  # a chunk file younger than this is never swept: its moment may be coming


@dataclass(frozen=True, slots=True)
class Opened:
    """Moments verified and decrypted, not yet stored; and those refused, as
    (reason, size)."""

    moments: list[Moment]
    rejected: list[tuple[str, int]]
    seconds: float


_KIND_NAMES = {k: k.name.lower() for k in Kind}


@dataclass(frozen=True, slots=True)
class IndexPiece:
    """A piece of a chunk index we wait for: which moment's blob it names chunks of."""

    moment: bytes
    circle: bytes
    epoch: int
    ref: BlobRef
    piece: int


def flatten(refs: Sequence[BlobRef]) -> list[BlobRef]:
    """Every blob of these, thumbnails included."""
    return [r for ref in refs for r in (ref, *((ref.thumbnail,) if ref.thumbnail else ()))]


def _target_event(target: bytes, circle: bytes | None = None) -> dict[str, Any]:
    """A retraction's event data, or an edit's or a read receipt's (with its circle)."""
    return {"id": moment_text(target)} | ({} if circle is None else {"circle": circle_text(circle)})


def _added_event(moment: Moment) -> dict[str, Any]:
    """moment.added's data: a comment or reaction names its moment, so a page can
    refresh just that one."""
    c = moment.content
    replying = {} if c.reply_to is None else {"reply_to": moment_text(c.reply_to)}
    return {
        "id": moment_text(moment.id),
        "circle": circle_text(moment.circle_id),
        "kind": _KIND_NAMES[c.kind],
        **replying,
    }


class Holding:
    """The moments one daemon holds: stored, opened, and swept."""

    def __init__(
        self,
        store: AsyncStore,
        blobs: BlobStore,
        events: EventBus,
        circles: Circles,
    ) -> None:
        self._store = store
        self.blobs = blobs
        self._events = events
        self._circles = circles
        # Packs of posts in progress: on disk, not yet used by a stored moment.
        self.writing: Counter[bytes] = Counter()
        # Pieces of chunk indexes we wait for (spec/moments.md section 4), by address.
        self.pieces: dict[bytes, list[IndexPiece]] = {}
        self.verifier = Verifier()
        # Stored moments opened, so a read does not verify and decrypt them again.
        self.opened = OpenedCache()
        # Whose device a moment's author is (persons.Persons.author_person): itself,
        # until the node wires the rosters in.
        self.person_of: PersonLookup = lambda author, circle, seq: author

    # --- storing ----------------------------------------------------------------------

    async def store_many(
        self,
        moments: Sequence[Moment],
        *,
        uses: dict[bytes, Sequence[bytes]] | None = None,
        named: Mapping[bytes, Sequence[bytes]] | None = None,
        packed: Sequence[tuple[bytes, Location]] = (),
    ) -> list[Moment]:
        """Store verified moments in one transaction; returns those that were new. `uses`
        may give every chunk a moment uses (ours: its indexes' chunks too); `named` adds
        chunks that its index pieces here name; `packed`: where our own chunks lie.

        A retraction deletes its target's content and blobs, whichever arrives first."""
        uses, named = uses or {}, named or {}
        now = int(time.time())
        when = {m.id: placed(m.time, m.content.expires, now) for m in moments}
        rows = [
            NewMoment(
                moment_id=m.id,
                circle_id=m.circle_id,
                author=bytes(m.author),
                seq=m.seq,
                epoch=m.epoch,
                created=when[m.id][0],
                kind=m.content.kind,
                reply_to=m.content.reply_to if m.content.reply_to is not None else m.content.target,
                expires=when[m.id][1],
                envelope=m.envelope,
                chunks=(
                    *(uses.get(m.id) or [a for ref in m.content.blobs for a in ref.addresses()]),
                    *named.get(m.id, ()),
                ),
            )
            for m in moments
        ]
        # Stored with, in the same visit to the store, the new ones whose retraction came
        # before them (relays deliver in any order).
        flags, early = await self._store.run(
            Store.add_moments_and_find_retracted,
            rows,
            [(a, w.pack, w.offset, w.length) for a, w in packed],
        )
        added = [m for m, new in zip(moments, flags, strict=True) if new]
        events: list[tuple[str, Callable[[], dict[str, Any]]]] = []
        for moment in added:
            c = moment.content
            if moment.id in early:
                await self._retract(moment.id)
            elif c.kind is Kind.RETRACTION and c.target is not None:
                await self._retract(c.target)
                events.append(("moment.retracted", partial(_target_event, c.target)))
            elif c.kind in (Kind.EDIT, Kind.READ) and c.target is not None:
                # A page redraws the post it names: new text, or who read it.
                kind = "moment.edited" if c.kind is Kind.EDIT else "moment.read"
                events.append((kind, partial(_target_event, c.target, moment.circle_id)))
            else:
                events.append(("moment.added", partial(_added_event, moment)))
        # Made only for those the events' history keeps (a catch-up stores thousands).
        self._events.publish_all(events)
        return added

    async def _retract(self, moment_id: bytes) -> None:
        await self.free(await self._store.run(Store.retract, moment_id))

    async def free(self, freed: Freed) -> None:
        """Delete the chunks and packs nothing uses any more; forget the moments whose
        content went."""
        self.opened.forget(freed.moments)
        if freed.chunks:
            await asyncio.to_thread(self.blobs.delete, list(freed.chunks))
        if freed.packs:
            await asyncio.to_thread(self.blobs.delete_packs, list(freed.packs))

    # --- receiving --------------------------------------------------------------------

    async def open_many(self, envelopes: Sequence[bytes]) -> Opened:
        """Verify and decrypt moments; nothing is stored yet. A big batch is read and
        decrypted on a thread while its signatures are checked in a worker process
        (verifying.py), a piece at a time; a small one on worker threads (signature
        checks release the GIL)."""
        if not envelopes:
            return Opened([], [], 0.0)
        if len(envelopes) >= PROCESS_BATCH:
            return await self._open_big(envelopes)
        began = time.perf_counter()
        parts = max(1, min(VERIFY_THREADS, len(envelopes) // 64))
        size = -(-len(envelopes) // parts)
        results = await asyncio.gather(
            *(
                asyncio.to_thread(self._open_all, envelopes[i : i + size])
                for i in range(0, len(envelopes), size)
            )
        )
        return Opened(
            [m for part, _ in results for m in part],
            [r for _, part in results for r in part],
            time.perf_counter() - began,
        )

    async def _open_big(self, envelopes: Sequence[bytes]) -> Opened:
        began = time.perf_counter()
        pieces = []
        for start in range(0, len(envelopes), OPEN_PIECE):
            part = envelopes[start : start + OPEN_PIECE]
            read = await asyncio.to_thread(self._read_all, part)
            checks = [r.signature_check() for r in read if isinstance(r, Unsigned)]
            # Checked in the worker process while this piece is decrypted and the next read.
            verdicts = asyncio.ensure_future(self.verifier.verify(checks))
            pieces.append((part, read, verdicts, asyncio.to_thread(self._open_contents, read)))
        moments: list[Moment] = []
        rejected: list[tuple[str, int]] = []
        for part, read, verdicts, contents in pieces:
            opened = await contents
            good = iter(await verdicts)
            for envelope, first, then in zip(part, read, opened, strict=True):
                # The reasons in open_moment's order: the envelope, its signature, then
                # its content.
                if not isinstance(first, Unsigned):
                    rejected.append((first, len(envelope)))
                elif not next(good):
                    rejected.append(("bad signature", len(envelope)))
                elif isinstance(then, Moment):
                    moments.append(then)
                else:
                    rejected.append((then or "malformed envelope", len(envelope)))
        return Opened(moments, rejected, time.perf_counter() - began)

    def _read_all(self, envelopes: Sequence[bytes]) -> list[Unsigned | str]:
        out: list[Unsigned | str] = []
        for envelope in envelopes:
            try:
                out.append(read_envelope(envelope, self._circles.manifest_for, self.person_of))
            except RejectedError as exc:
                out.append(exc.reason)
        return out

    def _open_contents(self, read: Sequence[Unsigned | str]) -> list[Moment | str | None]:
        out: list[Moment | str | None] = []
        for unsigned in read:
            if not isinstance(unsigned, Unsigned):
                out.append(None)
                continue
            try:
                out.append(open_content(unsigned, self._circles.key_for))
            except RejectedError as exc:
                out.append(exc.reason)
        return out

    async def close(self) -> None:
        """Stop what opening moments started (the signature-checking process)."""
        await self.verifier.close()

    def _open_all(self, envelopes: Sequence[bytes]) -> tuple[list[Moment], list[tuple[str, int]]]:
        opened: list[Moment] = []
        rejected: list[tuple[str, int]] = []
        for envelope in envelopes:
            try:
                opened.append(
                    open_moment(
                        envelope,
                        self._circles.manifest_for,
                        self._circles.key_for,
                        self.person_of,
                    )
                )
            except RejectedError as exc:
                rejected.append((exc.reason, len(envelope)))
        return opened, rejected

    async def owners(self, moments: Sequence[Moment]) -> dict[bytes, tuple[bytes, bytes]]:
        """(circle, author) of the stored moments these answer or retract."""
        refs = [r for m in moments for r in (m.content.reply_to, m.content.target) if r]
        return await self._store.run(Store.moment_owners, refs) if refs else {}

    async def reject(self, reasons: Sequence[tuple[str, int]], sender: bytes | None) -> None:
        """Record why things a peer sent were not kept; those that only wait for their
        epoch's key from another device of ours are not rejections (spec/devices.md 9)."""
        refused = [r for r in reasons if r[0] != NO_KEY_YET]
        if len(refused) < len(reasons):
            log.debug("%d moment(s) wait for a key", len(reasons) - len(refused))
        if refused:
            await self._store.run(Store.record_rejections, int(time.time()), refused, sender)
            log.info("rejected %d moment(s): %s", len(refused), refused[0][0])

    async def follow(
        self, moments: Sequence[Moment]
    ) -> tuple[dict[bytes, Lacking], list[tuple[bytes, bytes]]]:
        """`lacking` for received moments, where a chunk index that several moments share
        is followed for one of them only: the first stored, else the first of these
        (spec/moments.md 4.3). A member reusing one reference in many moments costs us a
        lookup a moment, not the index's thousands of chunk names again (issue 22)."""
        indexed = [(m.id, r.index[0]) for m in moments for r in flatten(m.content.blobs) if r.index]
        firsts = [first for _, first in indexed]
        owners = await self._store.run(Store.first_users, firsts) if firsts else {}
        for moment_id, first in indexed:
            owners.setdefault(first, moment_id)
        return await asyncio.to_thread(self.lacking, moments, owners)

    def lacking(
        self, moments: Sequence[Moment], owners: dict[bytes, bytes] | None = None
    ) -> tuple[dict[bytes, Lacking], list[tuple[bytes, bytes]]]:
        """Of these (received) moments, those whose photos and files are not all here:
        moment id -> what they lack; and (moment, address) of the chunks that index
        pieces already here name, to record (blocking: call it off the loop). Index
        pieces still to come are remembered in `pieces`. `owners` (first_users): an
        index whose first piece another moment owns is that moment's to follow."""
        out: dict[bytes, Lacking] = {}
        uses: list[tuple[bytes, bytes]] = []
        owners = owners or {}
        for moment in moments:
            missing: list[bytes] = []
            unnamed = 0
            refs = flatten(moment.content.blobs)
            for ref in refs:
                if not ref.index:
                    missing += [a for a in ref.chunks if not self.blobs.has(a)]
                    continue
                if owners.get(ref.index[0], moment.id) != moment.id:
                    continue  # shared: followed through the moment that owns it
                # A window of one piece: the chunks of the first piece not all here are
                # followed; the pieces after it, and their chunks, wait (unnamed) until
                # those are here (a Refill): a file of any size, honest or not, costs at
                # most one piece's 16,384 chunk names at a time (issue 22).
                following = True
                for piece, address in enumerate(ref.index):
                    length = ref.index_piece_length(piece)
                    if not following:
                        unnamed += length + 1  # its chunks, and the piece itself
                        continue
                    named = self._read_piece(ref, piece)
                    if named is None:
                        missing.append(address)
                        unnamed += length
                        waiting = IndexPiece(moment.id, moment.circle_id, moment.epoch, ref, piece)
                        if waiting not in self.pieces.get(address, []):
                            self.pieces.setdefault(address, []).append(waiting)
                        following = False
                    else:
                        lack = [a for a in named if not self.blobs.has(a)]
                        if lack:  # recorded once, when the window reaches it
                            uses += [(moment.id, a) for a in named]
                            missing += lack
                            following = False
            if missing or unnamed:
                total = sum(ref.total() for ref in moment.content.blobs)
                out[moment.id] = Lacking(total, tuple(dict.fromkeys(missing)), unnamed)
        return out, uses

    async def refill(self, moment_id: bytes) -> tuple[bytes, int, Lacking] | None:
        """(circle, epoch, what it lacks) of a stored moment whose chunks followed so far
        are here, its next index piece read (chunks.Refill); None if it is gone."""
        stored = await self._store.run(Store.moments_by_id, [moment_id])
        moments = [m for r in stored if not r.retracted and (m := self._opened(r)) is not None]
        if not moments:
            return None
        lacking, uses = await self.follow(moments)
        if uses:
            await self._store.run(Store.add_chunks, uses)
        moment = moments[0]
        total = sum(ref.total() for ref in moment.content.blobs)
        return moment.circle_id, moment.epoch, lacking.get(moment.id, Lacking(total, ()))

    def _read_piece(self, ref: BlobRef, piece: int) -> list[bytes] | None:
        """The chunk addresses a piece of a blob's index names, if the piece is here (none
        if it does not open: its author made it wrong, and there is nothing to fetch)."""
        data = self.blobs.get(ref.index[piece])
        if data is None:
            return None
        try:
            return open_index_piece(ref, piece, data)
        except DecodeError:  # it hashes right but is not this blob's: its author's doing
            return []

    async def missing_in(
        self, circle_ids: Sequence[bytes]
    ) -> list[tuple[bytes, bytes, int, Lacking]]:
        """(moment, circle, epoch, what it lacks) of the moments of these circles whose
        photos or files have not all arrived (to resume after a cut)."""
        rows = await self._store.run(Store.chunks_of_circles, circle_ids)
        if not rows:
            return []

        def incomplete() -> list[bytes]:
            uses: dict[bytes, list[bytes]] = {}
            for moment_id, _, _, address in rows:
                uses.setdefault(moment_id, []).append(address)
            return [m for m, used in uses.items() if not all(self.blobs.has(a) for a in used)]

        ids = await asyncio.to_thread(incomplete)
        if not ids:
            return []
        stored = await self._store.run(Store.moments_by_id, ids)
        moments = [m for r in stored if not r.retracted and (m := self._opened(r)) is not None]
        lacking, uses = await self.follow(moments)
        if uses:
            await self._store.run(Store.add_chunks, uses)
        # A file's version borrows chunks that may be in our own packs (moments.md §9.3).
        named = sorted({a for lack in lacking.values() for a in lack.missing})
        packed = await self._store.run(Store.packed_at, named) if named else {}
        if packed:
            left = {
                i: replace(lack, missing=tuple(a for a in lack.missing if a not in packed))
                for i, lack in lacking.items()
            }
            lacking = {i: lack for i, lack in left.items() if lack.missing or lack.unnamed}
        return [(m.id, m.circle_id, m.epoch, lacking[m.id]) for m in moments if m.id in lacking]

    def _opened(self, row: StoredMoment, *, remember: bool = True) -> Moment | None:
        """A stored moment opened, or None if today's rules refuse what an older daemon
        accepted (e.g. a photo declared as a web page, refused since spec/moments.md
        version 3): it is not shown, and nothing built from it is served. One opened
        before is taken from `opened`, its membership checked again (spec/store.md
        section 3.1); `remember`: keep it there (not for what is read once)."""
        known = self.opened.get(row.moment_id)
        # The same envelope (a retracted row has none): what opening it gave still holds.
        if known is not None and known.envelope == row.envelope:
            if still_admitted(known, self._circles.manifest_for, self.person_of):
                return known
            return None
        try:
            moment = open_moment(
                row.envelope, self._circles.manifest_for, self._circles.key_for, self.person_of
            )
        except RejectedError as exc:
            log.debug("stored moment %s is not shown: %s", moment_text(row.moment_id), exc)
            return None
        if remember:
            self.opened.put(moment)
        return moment

    # --- expiry and sweeping ----------------------------------------------------------------

    async def expire(self) -> int:
        """Delete every expired moment now; returns how many."""
        count, freed = await self._store.run(Store.delete_expired, int(time.time()))
        await self.free(freed)
        if count:
            self._events.publish("moment.expired", count=count)
        return int(count)

    async def sweep_chunks(self) -> int:
        """Delete chunk files that no moment uses (left by a crash, or by a moment gone
        while its chunks were arriving) and packs of posts never stored (a crash
        mid-upload); returns how many. Packs of posts in progress and files younger than
        SWEEP_GRACE are left alone. A received moment's row is stored before its chunks
        are asked for, and the chunks an index names are recorded before the index piece
        is kept, so those it still awaits are in use."""
        before = time.time() - SWEEP_GRACE
        found = await asyncio.to_thread(self.blobs.old_chunks, before)
        packs = await asyncio.to_thread(self.blobs.old_packs, before)
        unused: list[bytes] = []
        if found:
            used = await self._store.run(Store.chunks_in_use, found)
            unused = [a for a in found if a not in used]
        if unused:
            await asyncio.to_thread(self.blobs.delete, unused)
            log.info("swept %d chunk(s) no moment uses", len(unused))
        stray: list[bytes] = []
        if packs:
            kept = await self._store.run(Store.packs_in_use, packs)
            stray = [p for p in packs if p not in kept and p not in self.writing]
        if stray:
            await asyncio.to_thread(self.blobs.delete_packs, stray)
            log.info("swept %d pack(s) of posts that were never stored", len(stray))
        return len(unused) + len(stray)

    async def expiry_loop(self) -> None:
        """Sweep expired moments, and now and then unused chunks, until cancelled."""
        next_chunk_sweep = 0.0
        while True:
            await self.expire()
            if time.monotonic() >= next_chunk_sweep:
                await self.sweep_chunks()
                next_chunk_sweep = time.monotonic() + CHUNK_SWEEP
            await asyncio.sleep(EXPIRY_SWEEP)
