"""Moments on one daemon: storing them (ours and received), opening what peers send,
reading the feed, and deleting what expired (spec/moments.md sections 2-6).

Posting lives in posting.py; replication in replication.py; JSON in views.py.
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

from p2pmoments.blobstore import BlobStore
from p2pmoments.circles import Circles
from p2pmoments.core.blobs import BlobKind, BlobRef, decrypt_chunk
from p2pmoments.core.errors import DecodeError, RejectedError
from p2pmoments.core.ids import IdKind, decode_id
from p2pmoments.core.moment import Kind, Moment, open_moment
from p2pmoments.errors import AmbiguousError, NotFoundError, UserInputError
from p2pmoments.events import EventBus
from p2pmoments.store import AsyncStore, NewMoment, Store, StoredMoment
from p2pmoments.views import MomentView, circle_text, moment_text

__all__ = [
    "CHUNK_SWEEP",
    "EXPIRY_SWEEP",
    "MAX_FEED",
    "FeedPage",
    "Moments",
    "Opened",
    "decode_cursor",
    "encode_cursor",
]

log = logging.getLogger(__name__)

VERIFY_THREADS = min(4, os.cpu_count() or 1)  # worker threads checking one batch of moments
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
        # Chunks of posts in progress: on disk, not yet used by a stored moment.
        self.writing: Counter[bytes] = Counter()

    # --- storing ----------------------------------------------------------------------

    async def store_many(self, moments: Sequence[Moment]) -> list[Moment]:
        """Store verified moments in one transaction; returns those that were new.

        A retraction deletes its target's content and blobs, whichever arrives first."""
        rows = [
            NewMoment(
                moment_id=m.id,
                circle_id=m.circle_id,
                author=bytes(m.author),
                seq=m.seq,
                epoch=m.epoch,
                created=m.time,
                kind=m.content.kind,
                reply_to=m.content.reply_to if m.content.reply_to is not None else m.content.target,
                expires=m.content.expires,
                envelope=m.envelope,
                chunks=tuple(a for ref in m.content.blobs for a in ref.addresses()),
            )
            for m in moments
        ]
        flags = await self._store.run(Store.add_moments, rows)
        added = [m for m, new in zip(moments, flags, strict=True) if new]
        # A retraction that came before its target (relays deliver in any order).
        early = await self._store.run(
            Store.retracted_among, [m.id for m in added if m.content.kind is not Kind.RETRACTION]
        )
        for moment in added:
            c = moment.content
            if moment.id in early:
                await self._retract(moment.id)
            elif c.kind is Kind.RETRACTION and c.target is not None:
                await self._retract(c.target)
                self._events.publish("moment.retracted", id=moment_text(c.target))
            else:
                # A comment or reaction names its moment, so a page can refresh just that one.
                replying = {} if c.reply_to is None else {"reply_to": moment_text(c.reply_to)}
                self._events.publish(
                    "moment.added",
                    id=moment_text(moment.id),
                    circle=circle_text(moment.circle_id),
                    kind=c.kind.name.lower(),
                    **replying,
                )
        return added

    async def _retract(self, moment_id: bytes) -> None:
        freed = await self._store.run(Store.retract, moment_id)
        await asyncio.to_thread(self.blobs.delete, freed)

    # --- receiving --------------------------------------------------------------------

    async def open_many(self, envelopes: Sequence[bytes]) -> Opened:
        """Verify and decrypt moments on worker threads (signature checks release the
        GIL, so a big batch is split over the cores); nothing is stored yet."""
        if not envelopes:
            return Opened([], [], 0.0)
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

    def _open_all(self, envelopes: Sequence[bytes]) -> tuple[list[Moment], list[tuple[str, int]]]:
        opened: list[Moment] = []
        rejected: list[tuple[str, int]] = []
        for envelope in envelopes:
            try:
                opened.append(
                    open_moment(envelope, self._circles.manifest_for, self._circles.key_for)
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

    def missing(self, moments: Sequence[Moment]) -> dict[bytes, tuple[int, list[bytes]]]:
        """Of these moments, those with photos or files not all here: moment id -> (how
        many chunks it uses, those not here) (blocking: call it off the loop)."""
        out = {}
        for moment in moments:
            addresses = [a for ref in moment.content.blobs for a in ref.addresses()]
            lacking = [a for a in addresses if not self.blobs.has(a)]
            if lacking:
                out[moment.id] = (len(addresses), lacking)
        return out

    async def missing_in(
        self, circle_ids: Sequence[bytes]
    ) -> list[tuple[bytes, bytes, int, int, list[bytes]]]:
        """(moment, circle, epoch, chunks it uses, chunks not here) of the moments of these
        circles whose photos or files have not all arrived (to resume after a cut)."""
        rows = await self._store.run(Store.chunks_of_circles, circle_ids)

        def missing() -> list[tuple[bytes, bytes, int, int, list[bytes]]]:
            uses: dict[tuple[bytes, bytes, int], list[bytes]] = {}
            for moment_id, circle_id, epoch, address in rows:
                uses.setdefault((moment_id, circle_id, epoch), []).append(address)
            out = []
            for (moment_id, circle_id, epoch), addresses in uses.items():
                lacking = [a for a in addresses if not self.blobs.has(a)]
                if lacking:
                    out.append((moment_id, circle_id, epoch, len(addresses), lacking))
            return out

        return await asyncio.to_thread(missing)

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
            replies.setdefault(reply.reply_to, []).append(self._open(reply))
        opened = {r.moment_id: self._open(r) for r in live}
        refs = [ref for m in opened.values() for ref in m.content.blobs]
        held = iter(await asyncio.to_thread(self._held, refs) if refs else [])
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

    def _held(self, refs: Sequence[BlobRef]) -> list[int]:
        return [sum(1 for a in ref.addresses() if self.blobs.has(a)) for ref in refs]

    def _open(self, row: StoredMoment) -> Moment:
        return open_moment(row.envelope, self._circles.manifest_for, self._circles.key_for)

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

    def check_chunks(self, ref: BlobRef) -> None:
        """NotFoundError unless every chunk of the blob is here (blocking)."""
        if not all(self.blobs.has(address) for address in ref.chunks):
            raise NotFoundError("part of this photo or file has not arrived yet")

    def read_chunk(self, ref: BlobRef, index: int) -> bytes:
        """One verified, decrypted chunk of a blob we hold (blocking)."""
        ciphertext = self.blobs.get(ref.chunks[index])
        if ciphertext is None:
            raise NotFoundError("a chunk of this photo or file went missing")
        return decrypt_chunk(ref, index, ciphertext)

    # --- expiry and sweeping ----------------------------------------------------------------

    async def expire(self) -> int:
        """Delete every expired moment now; returns how many."""
        count, freed = await self._store.run(Store.delete_expired, int(time.time()))
        await asyncio.to_thread(self.blobs.delete, freed)
        if count:
            self._events.publish("moment.expired", count=count)
        return int(count)

    async def sweep_chunks(self) -> int:
        """Delete chunk files that no moment uses (left by a crash, or by a moment gone
        while its chunks were arriving); returns how many. Chunks of posts in progress
        and files younger than SWEEP_GRACE are left alone. A received moment's row is
        stored before its chunks are asked for, so those it still awaits are in use."""
        found = await asyncio.to_thread(self.blobs.old_chunks, time.time() - SWEEP_GRACE)
        if not found:
            return 0
        used = await self._store.run(Store.chunks_in_use, found)
        unused = [a for a in found if a not in used and a not in self.writing]
        if unused:
            await asyncio.to_thread(self.blobs.delete, unused)
            log.info("swept %d chunk(s) no moment uses", len(unused))
        return len(unused)

    async def expiry_loop(self) -> None:
        """Sweep expired moments, and now and then unused chunks, until cancelled."""
        next_chunk_sweep = 0.0
        while True:
            await self.expire()
            if time.monotonic() >= next_chunk_sweep:
                await self.sweep_chunks()
                next_chunk_sweep = time.monotonic() + CHUNK_SWEEP
            await asyncio.sleep(EXPIRY_SWEEP)
