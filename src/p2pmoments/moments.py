"""Moments on one daemon: storing them (ours and received), opening what peers send,
reading the feed, and deleting what expired (spec/moments.md sections 2-6).

Posting lives in posting.py; replication in replication.py; JSON in views.py.

Why so long: the moments a daemon holds and the blobs they use are one holding: what
is here, what a stored moment still lacks (chunk indexes included, spec/moments.md
section 4), reading a blob back, and sweeping what nothing uses share the store, the
blob store and the circles' keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from p2pmoments.blobstore import BlobStore, Location
from p2pmoments.circles import Circles
from p2pmoments.core.blobs import BlobKind, BlobRef, decrypt_chunk, open_index_piece
from p2pmoments.core.errors import DecodeError, RejectedError
from p2pmoments.core.ids import IdKind, decode_id
from p2pmoments.core.moment import (
    Kind,
    Moment,
    PersonLookup,
    Unsigned,
    open_content,
    open_moment,
    placed,
    read_envelope,
)
from p2pmoments.core.replication.chunks import Lacking
from p2pmoments.errors import AmbiguousError, NotFoundError, UserInputError
from p2pmoments.events import EventBus
from p2pmoments.store import AsyncStore, Freed, NewMoment, Store, StoredMoment
from p2pmoments.verifying import PROCESS_BATCH, Verifier
from p2pmoments.views import MomentView, circle_text, moment_text

__all__ = [
    "CHUNK_SWEEP",
    "EXPIRY_SWEEP",
    "MAX_FEED",
    "BlobReader",
    "FeedPage",
    "IndexPiece",
    "Moments",
    "Opened",
    "decode_cursor",
    "encode_cursor",
]

log = logging.getLogger(__name__)

VERIFY_THREADS = min(4, os.cpu_count() or 1)  # worker threads checking one batch of moments
OPEN_PIECE = 512  # envelopes of a big batch read, checked and decrypted together
EXPIRY_SWEEP = 30.0  # seconds between sweeps for expired moments
CHUNK_SWEEP = 3600.0  # seconds between sweeps for chunks no moment uses (and one at start)
SWEEP_GRACE = 3600.0  # a chunk file younger than this is never swept: its moment may be coming
MAX_FEED = 200
MAX_PREFIX_SEARCH = 10_000  # moments searched for an id given by its first characters


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


class BlobReader:
    """Reads a blob we hold whole, chunk by chunk, checked and decrypted (blocking)."""

    def __init__(
        self, blobs: BlobStore, ref: BlobRef, addresses: list[bytes], packed: dict[bytes, Location]
    ) -> None:
        self.ref = ref
        self.addresses = addresses  # its chunks, in order
        self._blobs = blobs
        self._packed = packed

    def read(self, index: int) -> bytes:
        """The plaintext of chunk `index`; NotFoundError if it went meanwhile."""
        address = self.addresses[index]
        where = self._packed.get(address)
        data = self._blobs.read_packed(where) if where else self._blobs.get(address)
        if data is None:
            raise NotFoundError("a chunk of this photo or file went missing")
        return decrypt_chunk(self.ref, index, data, address)

    def read_many(self, first: int, count: int) -> list[bytes]:
        """Plaintexts of chunks first .. first + count - 1."""
        return [self.read(i) for i in range(first, min(first + count, len(self.addresses)))]


def flatten(refs: Sequence[BlobRef]) -> list[BlobRef]:
    """Every blob of these, thumbnails included."""
    return [r for ref in refs for r in (ref, *((ref.thumbnail,) if ref.thumbnail else ()))]


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedPage:
    """A page of the feed and where the next one starts (None: this is the last)."""

    moments: list[MomentView]
    next_cursor: str | None
    next_before: int | None


_CURSOR = re.compile(r"(-?[0-9]{1,19})\.([a-z2-7]{56})", re.ASCII)


def encode_cursor(created: int, moment_id: bytes) -> str:
    """Where a feed page ends: the last post's time and id (opaque to clients)."""
    return f"{created}.{moment_text(moment_id)}"


def decode_cursor(text: str) -> tuple[int, bytes]:
    """(time, id) from a cursor; UserInputError if it is not one encode_cursor makes."""
    match = _CURSOR.fullmatch(text)
    if match is None or not -(2**63) <= int(match[1]) < 2**63:
        raise UserInputError("this cursor is not one the feed gave (use next_cursor as it is)")
    try:
        return int(match[1]), decode_id(match[2], IdKind.MOMENT)
    except DecodeError:
        raise UserInputError("this cursor is not one the feed gave") from None


class Moments:
    """The moments one daemon holds."""

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
        # Whose device a moment's author is (persons.Persons.author_person): itself,
        # until the node wires the rosters in.
        self.person_of: PersonLookup = lambda author, circle, seq: author

    # --- storing ----------------------------------------------------------------------

    async def store_many(
        self,
        moments: Sequence[Moment],
        *,
        uses: dict[bytes, Sequence[bytes]] | None = None,
        packed: Sequence[tuple[bytes, Location]] = (),
    ) -> list[Moment]:
        """Store verified moments in one transaction; returns those that were new. `uses`
        may give every chunk a moment uses (ours: its indexes' chunks too), and `packed`
        where our own chunks lie.

        A retraction deletes its target's content and blobs, whichever arrives first."""
        uses = uses or {}
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
                chunks=tuple(
                    uses.get(m.id) or [a for ref in m.content.blobs for a in ref.addresses()]
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
        circles: dict[bytes, str] = {}
        for moment in added:
            c = moment.content
            if moment.id in early:
                await self._retract(moment.id)
            elif c.kind is Kind.RETRACTION and c.target is not None:
                await self._retract(c.target)
                self._events.publish("moment.retracted", id=moment_text(c.target))
            else:
                circle = circles.get(moment.circle_id) or circles.setdefault(
                    moment.circle_id, circle_text(moment.circle_id)
                )
                # A comment or reaction names its moment, so a page can refresh just that one.
                replying = {} if c.reply_to is None else {"reply_to": moment_text(c.reply_to)}
                self._events.publish(
                    "moment.added",
                    id=moment_text(moment.id),
                    circle=circle,
                    kind=_KIND_NAMES[c.kind],
                    **replying,
                )
        return added

    async def _retract(self, moment_id: bytes) -> None:
        await self.free(await self._store.run(Store.retract, moment_id))

    async def free(self, freed: Freed) -> None:
        """Delete the chunks and packs nothing uses any more."""
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
        """Record why things a peer sent were not kept."""
        await self._store.run(Store.record_rejections, int(time.time()), list(reasons), sender)
        log.info("rejected %d moment(s): %s", len(reasons), reasons[0][0])

    def lacking(
        self, moments: Sequence[Moment]
    ) -> tuple[dict[bytes, Lacking], list[tuple[bytes, bytes]]]:
        """Of these (received) moments, those whose photos and files are not all here:
        moment id -> what they lack; and (moment, address) of the chunks that index
        pieces already here name, to record (blocking: call it off the loop). Index
        pieces still to come are remembered in `pieces`."""
        out: dict[bytes, Lacking] = {}
        uses: list[tuple[bytes, bytes]] = []
        for moment in moments:
            missing: list[bytes] = []
            unnamed = 0
            refs = flatten(moment.content.blobs)
            for ref in refs:
                if not ref.index:
                    missing += [a for a in ref.chunks if not self.blobs.has(a)]
                    continue
                for piece, address in enumerate(ref.index):
                    named = self._read_piece(ref, piece)
                    if named is None:
                        missing.append(address)
                        unnamed += ref.index_piece_length(piece)
                        waiting = IndexPiece(moment.id, moment.circle_id, moment.epoch, ref, piece)
                        if waiting not in self.pieces.get(address, []):
                            self.pieces.setdefault(address, []).append(waiting)
                    else:
                        uses += [(moment.id, a) for a in named]
                        missing += [a for a in named if not self.blobs.has(a)]
            if missing or unnamed:
                total = sum(ref.total() for ref in moment.content.blobs)
                out[moment.id] = Lacking(total, tuple(dict.fromkeys(missing)), unnamed)
        return out, uses

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
        lacking, uses = await asyncio.to_thread(self.lacking, moments)
        if uses:
            await self._store.run(Store.add_chunks, uses)
        return [(m.id, m.circle_id, m.epoch, lacking[m.id]) for m in moments if m.id in lacking]

    # --- reading ----------------------------------------------------------------------

    async def feed_page(
        self,
        circle_ref: str | None,
        limit: int,
        *,
        before: int | None = None,
        cursor: str | None = None,
    ) -> FeedPage:
        """A page of posts, newest first: those older than `before` (a Unix time), or
        just past `cursor` (the last page's next_cursor, stable and unique: no post is
        skipped or repeated, however many share a second)."""
        circle_id = self._circles.resolve(circle_ref).circle_id if circle_ref else None
        limit = min(limit, MAX_FEED)
        rows = await self._store.run(
            Store.posts,
            circle_id=circle_id,
            before=before,
            after=None if cursor is None else decode_cursor(cursor),
            limit=limit + 1,  # one more: is there a next page?
            now=int(time.time()),
        )
        more, rows = len(rows) > limit, rows[:limit]
        last = rows[-1] if rows else None
        return FeedPage(
            moments=await self._views(rows),
            next_cursor=encode_cursor(last.created, last.moment_id) if more and last else None,
            next_before=last.created if more and last else None,
        )

    async def get(self, ref: str) -> MomentView:
        """One moment by id or id prefix, with its comments and reactions."""
        row = await self._row(ref)
        return (await self._views([row]))[0]

    async def _views(self, rows: Sequence[StoredMoment]) -> list[MomentView]:
        """Posts opened, with their replies (one query for the page) and the chunks of
        their photos and files that are here."""
        now = int(time.time())
        live = [r for r in rows if not r.retracted]
        replies: dict[bytes, list[Moment]] = {}
        for reply in await self._store.run(Store.replies_to, [r.moment_id for r in live], now):
            assert reply.reply_to is not None
            if (opened_reply := self._opened(reply)) is not None:
                replies.setdefault(reply.reply_to, []).append(opened_reply)
        opened = {r.moment_id: m for r in live if (m := self._opened(r)) is not None}
        rows = [r for r in rows if r.retracted or r.moment_id in opened]
        refs = [ref for m in opened.values() for ref in m.content.blobs]
        held = iter(await self._held(refs) if refs else [])
        views = []
        for row in rows:
            moment = opened.get(row.moment_id)
            current = self._circles.current(row.circle_id)
            views.append(
                MomentView(
                    row=row,
                    moment=moment,
                    circle_name=current.name if current else "",
                    replies=replies.get(row.moment_id, []),
                    held=[next(held) for _ in moment.content.blobs] if moment else [],
                )
            )
        return views

    async def _held(self, refs: Sequence[BlobRef]) -> list[int]:
        """How many of each blob's chunks are here (its thumbnail's included)."""
        ours = await self._store.run(
            Store.packed_at, [a for ref in flatten(refs) for a in ref.addresses()[:1]]
        )

        def count(ref: BlobRef) -> int:
            first = (ref.index or ref.chunks)[0]
            if first in ours:  # ours: a post is stored only once all of it is
                return len(ref.index) + ref.chunk_count if ref.index else len(ref.chunks)
            if not ref.index:
                return sum(1 for a in ref.chunks if self.blobs.has(a))
            here = 0
            for piece in range(len(ref.index)):
                named = self._read_piece(ref, piece)
                if named is not None:
                    here += 1 + sum(1 for a in named if self.blobs.has(a))
            return here

        def counts() -> list[int]:
            return [sum(count(r) for r in flatten([ref])) for ref in refs]

        return await asyncio.to_thread(counts)

    def _open(self, row: StoredMoment) -> Moment:
        """A stored moment opened; NotFoundError if today's rules refuse it."""
        moment = self._opened(row)
        if moment is None:
            raise NotFoundError(f"moment {moment_text(row.moment_id)} cannot be shown")
        return moment

    def _opened(self, row: StoredMoment) -> Moment | None:
        """A stored moment opened, or None if today's rules refuse what an older daemon
        accepted (e.g. a photo declared as a web page, refused since spec/moments.md
        version 3): it is not shown, and nothing built from it is served."""
        try:
            return open_moment(
                row.envelope, self._circles.manifest_for, self._circles.key_for, self.person_of
            )
        except RejectedError as exc:
            log.debug("stored moment %s is not shown: %s", moment_text(row.moment_id), exc)
            return None

    async def row_of(self, moment_id: bytes) -> StoredMoment | None:
        """A moment we hold, as stored, unless it expired."""
        return await self._store.run(Store.moment, moment_id, int(time.time()))

    async def stored(self, ref: str) -> StoredMoment:
        """A moment we hold, as stored, by id or id prefix; NotFoundError if none."""
        return await self._row(ref)

    async def target(self, ref: str) -> Moment:
        """A moment we hold, not retracted, by id or id prefix (to answer or retract)."""
        row = await self._row(ref)
        if row.retracted:
            raise NotFoundError(f"no moment {ref!r} (or it was retracted or has expired)")
        return self._open(row)

    async def _row(self, ref: str) -> StoredMoment:
        row = await self._store.run(Store.moment, await self._resolve_id(ref), int(time.time()))
        if row is None:
            raise NotFoundError(f"no moment {ref!r} (or it has expired)")
        return row

    async def _resolve_id(self, ref: str) -> bytes:
        ref = ref.strip().lower()
        with contextlib.suppress(DecodeError):
            return decode_id(ref, IdKind.MOMENT)
        if len(ref) < 6:
            raise NotFoundError(f"{ref!r} is not a moment id (give at least 6 characters)")
        ids = await self._store.run(Store.moment_ids, int(time.time()), MAX_PREFIX_SEARCH)
        matches = {i for i in ids if moment_text(i).startswith(ref)}
        if len(matches) == 1:
            return matches.pop()
        if not matches:
            raise NotFoundError(f"no moment starts with {ref!r}")
        raise AmbiguousError(f"{ref!r} matches {len(matches)} moments; give more of the id")

    # --- photos and files ----------------------------------------------------------------

    async def blob(self, ref: str, kind: BlobKind, n: int, thumbnail: bool) -> BlobRef:
        """The n-th (from 1) photo or file of a moment, or its thumbnail."""
        target = await self.target(ref)
        found = [r for r in target.content.blobs if r.kind is kind]
        if not 1 <= n <= len(found):
            what = "photo" if kind is BlobKind.PHOTO else "file"
            raise NotFoundError(f"this moment has {len(found)} {what}(s); there is no {what} {n}")
        chosen = found[n - 1]
        if thumbnail:
            if chosen.thumbnail is None:
                raise NotFoundError("this photo has no thumbnail")
            return chosen.thumbnail
        return chosen

    async def open_blob(self, ref: BlobRef) -> BlobReader:
        """A reader of a blob we hold whole; NotFoundError if part of it is not here."""
        located = await self._store.run(Store.packed_at, ref.index or ref.chunks)
        packed = {a: Location(*where) for a, where in located.items()}
        if ref.index:

            def named() -> list[bytes] | None:
                out: list[bytes] = []
                for piece, address in enumerate(ref.index):
                    data = self._read_packed_or_loose(address, packed)
                    if data is None:
                        return None
                    try:
                        out += open_index_piece(ref, piece, data)
                    except DecodeError:
                        raise NotFoundError(
                            "this photo or file came damaged from its author: it cannot be read"
                        ) from None
                return out

            addresses = await asyncio.to_thread(named)
            if addresses is None:
                raise NotFoundError("part of this photo or file has not arrived yet")
            located = await self._store.run(Store.packed_at, addresses)
            packed = {a: Location(*where) for a, where in located.items()}
        else:
            addresses = list(ref.chunks)
        if not await asyncio.to_thread(
            lambda: all(a in packed or self.blobs.has(a) for a in addresses)
        ):
            raise NotFoundError("part of this photo or file has not arrived yet")
        return BlobReader(self.blobs, ref, addresses, packed)

    def _read_packed_or_loose(self, address: bytes, packed: dict[bytes, Location]) -> bytes | None:
        where = packed.get(address)
        return self.blobs.read_packed(where) if where else self.blobs.get(address)

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
