"""Moments on one daemon: storing them (ours and received), opening what peers send,
reading the feed, and deleting what expired (spec/moments.md sections 2-6).

Storing, opening and sweeping are in holding.py (`Holding`); reading the feed, a
moment, and its photos and files are here (`Moments`, a `Holding`). Posting lives in
posting.py; replication in replication.py; JSON in views.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from p2pmoments.blobstore import BlobStore, Location
from p2pmoments.core.blobs import BlobKind, BlobRef, decrypt_chunk, open_index_piece
from p2pmoments.core.errors import DecodeError
from p2pmoments.core.ids import IdKind, decode_id
from p2pmoments.core.moment import Kind, Moment
from p2pmoments.errors import AmbiguousError, NotFoundError, UserInputError
from p2pmoments.holding import CHUNK_SWEEP, EXPIRY_SWEEP, Holding, IndexPiece, Opened, flatten
from p2pmoments.store import Store, StoredMoment
from p2pmoments.views import MomentView, moment_text

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

MAX_FEED = 200
MAX_PREFIX_SEARCH = 10_000  # moments searched for an id given by its first characters


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


class Moments(Holding):
    """The moments one daemon holds (`Holding`), read."""

    # --- reading ----------------------------------------------------------------------

    async def feed_page(
        self,
        circle_ref: str | None,
        limit: int,
        *,
        before: int | None = None,
        cursor: str | None = None,
        conversations: bool | None = None,
    ) -> FeedPage:
        """A page of posts, newest first: those older than `before` (a Unix time), or
        just past `cursor` (the last page's next_cursor, stable and unique: no post is
        skipped or repeated, however many share a second). `conversations`: only the
        conversations' posts (True) or the albums' (False)."""
        circle_id = self._circles.resolve(circle_ref).circle_id if circle_ref else None
        limit = min(limit, MAX_FEED)
        among = (
            None
            if conversations is None
            else [m.circle_id for m in self._circles.all() if m.conversation == conversations]
        )
        rows = await self._store.run(
            Store.posts,
            circle_id=circle_id,
            among=among,
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
        edits = await self._edits(live)
        marks = await self._marks(rows)
        views = []
        for row in rows:
            moment = opened.get(row.moment_id)
            current = self._circles.current(row.circle_id)
            delivered_to, read_by = marks.get(row.moment_id, ((), ()))
            views.append(
                MomentView(
                    row=row,
                    moment=moment,
                    circle_name=current.name if current else "",
                    replies=replies.get(row.moment_id, []),
                    held=[next(held) for _ in moment.content.blobs] if moment else [],
                    edited=edits.get(row.moment_id),
                    delivered_to=delivered_to,
                    read_by=read_by,
                )
            )
        return views

    async def _edits(self, rows: Sequence[StoredMoment]) -> dict[bytes, Moment]:
        """Each post's newest edit by its own author, by sequence (spec/moments.md §10)."""
        posts = {r.moment_id: r for r in rows if r.kind is Kind.POST}
        newest: dict[bytes, Moment] = {}
        if not posts:
            return newest
        for edit in await self._store.run(Store.edits_of, list(posts)):  # by seq
            post = posts.get(edit.reply_to or b"")
            if post is None or (edit.author, edit.circle_id) != (post.author, post.circle_id):
                continue  # someone else's: never shown (the rules refuse it when they can)
            if (opened := self._opened(edit)) is not None:
                newest[post.moment_id] = opened
        return newest

    async def _marks(
        self, rows: Sequence[StoredMoment]
    ) -> dict[bytes, tuple[tuple[bytes, ...], tuple[bytes, ...]]]:
        """For our own posts in conversations: the other members whose daemon holds each,
        and those who read it (spec/moments.md §11), as persons."""
        me = self._circles.device
        ours = [r for r in rows if r.author == me and r.kind is Kind.POST and not r.retracted]
        out: dict[bytes, tuple[tuple[bytes, ...], tuple[bytes, ...]]] = {}
        for circle_id in {r.circle_id for r in ours}:
            manifest = self._circles.current(circle_id)
            if manifest is None or not manifest.conversation:
                continue
            others = [
                bytes(m.verify_key)
                for m in manifest.members
                if bytes(m.verify_key) != self._circles.person
            ]
            holds: dict[tuple[bytes, int], int] = {}
            for person, epoch, seq in await self._store.run(Store.delivered_marks, circle_id):
                holds[(person, epoch)] = seq
            read: dict[bytes, tuple[int, int, int]] = {}
            for author, seq, place in await self._store.run(Store.read_receipts, circle_id):
                person = self.person_of(author, circle_id, seq) or author
                read[person] = max(place, read.get(person, place))
            for row in ours:
                if row.circle_id != circle_id:
                    continue
                at = (row.created, row.place, row.seq)
                readers = tuple(p for p in others if read.get(p, (-1, 0, 0)) >= at)
                held = tuple(
                    p for p in others if p in readers or holds.get((p, row.epoch), 0) >= row.seq
                )
                out[row.moment_id] = (held, readers)
        return out

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
            # Once a reference: many moments may reuse one (a hostile member's 200 posts
            # naming one index of 16,384 chunks cost one count a page, not 200).
            known: dict[tuple[bytes, ...], int] = {}

            def once(ref: BlobRef) -> int:
                key = tuple(ref.addresses())
                if key not in known:
                    known[key] = count(ref)
                return known[key]

            return [sum(once(r) for r in flatten([ref])) for ref in refs]

        return await asyncio.to_thread(counts)

    def _open(self, row: StoredMoment) -> Moment:
        """A stored moment opened; NotFoundError if today's rules refuse it."""
        moment = self._opened(row)
        if moment is None:
            raise NotFoundError(f"moment {moment_text(row.moment_id)} cannot be shown")
        return moment

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
