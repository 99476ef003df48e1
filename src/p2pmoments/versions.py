"""Files with versions on one daemon (spec/moments.md section 9): a new version of a
post's file, the versions listed, any one read, siblings picked or merged, and the
content of dropped versions let go. The decisions are core/versions.py's; version
records are moments (kind VERSION), replicated as every moment is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from p2pmoments.blobstore import Location
from p2pmoments.circles import Circles
from p2pmoments.core.blobs import BlobKind, BlobRef, open_index_piece
from p2pmoments.core.errors import DecodeError
from p2pmoments.core.ids import IdKind, decode_id
from p2pmoments.core.manifest import Manifest
from p2pmoments.core.moment import MAX_NOTE, Content, Kind, Moment
from p2pmoments.core.replication.chunks import Lacking
from p2pmoments.core.versions import History, Version, VersionEncoder, history, relisted
from p2pmoments.errors import NotFoundError, UserInputError
from p2pmoments.moments import BlobReader, Moments
from p2pmoments.posting import Posting, Upload
from p2pmoments.store import AsyncStore, Store
from p2pmoments.views import People, circle_text, moment_text, person_json

__all__ = ["FileVersions", "Listing", "version_facts", "without_packed"]

log = logging.getLogger(__name__)


async def version_facts(
    store: AsyncStore, moments: Sequence[Moment]
) -> tuple[dict[bytes, bytes], dict[bytes, int]]:
    """What the rules need to judge the versions among received moments (rules.Context)."""
    versions = [m for m in moments if m.content.kind is Kind.VERSION and m.content.reply_to]
    if not versions:
        return {}, {}
    roots = [m.content.reply_to for m in versions if m.content.reply_to is not None]
    ids = [*roots, *(p for m in versions for p in m.content.parents)]
    return await store.run(Store.version_facts, ids, roots)


async def without_packed(store: AsyncStore, missing: dict[bytes, Lacking]) -> dict[bytes, Lacking]:
    """`missing` less the chunks in our own packs (a version borrows its parent's chunks,
    which are ours if we posted the parent): they are here, not to be fetched."""
    wanted = {a for lack in missing.values() for a in lack.missing}
    if not wanted:
        return missing
    packed = await store.run(Store.packed_at, sorted(wanted))
    if not packed:
        return missing
    out = {}
    for moment_id, lack in missing.items():
        left = tuple(a for a in lack.missing if a not in packed)
        if left or lack.unnamed:
            out[moment_id] = Lacking(lack.total, left, lack.unnamed)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Listing:
    """A post's file and its versions, as this daemon holds them."""

    root: Moment
    history: History
    records: Mapping[bytes, Moment]  # version id -> its moment (the root's is the post)

    def file(self, version_id: bytes) -> BlobRef:
        """The file of a version (the post's first file for version 1)."""
        return _file_of(self.records[version_id])

    def by_number(self, n: int) -> bytes:
        """The id of version `n`; NotFoundError if there is none."""
        if not 1 <= n <= len(self.history.order):
            raise NotFoundError(f"this file has {len(self.history.order)} version(s); no {n}")
        return self.history.order[n - 1]


def _file_of(moment: Moment) -> BlobRef:
    files = [r for r in moment.content.blobs if r.kind is BlobKind.FILE]
    if not files:
        raise UserInputError("this moment has no file")
    return files[0]


def _version(moment: Moment) -> Version:
    ref = _file_of(moment)
    return Version(
        id=moment.id,
        parents=moment.content.parents,
        author=bytes(moment.author),
        time=moment.time,
        size=ref.size,
        name=ref.name,
        note=moment.content.text if moment.content.kind is Kind.VERSION else "",
    )


class FileVersions:
    """The versions of the files of posts this daemon holds."""

    def __init__(
        self, store: AsyncStore, moments: Moments, posting: Posting, circles: Circles
    ) -> None:
        self._store = store
        self._moments = moments
        self._posting = posting
        self._circles = circles

    async def listing(self, ref: str) -> Listing:
        """A post's file and its versions, by the post's id (or any version's)."""
        moment = await self._moments.target(ref)
        if moment.content.kind is Kind.VERSION and moment.content.reply_to is not None:
            moment = await self._moments.target(moment_text(moment.content.reply_to))
        if moment.content.kind is not Kind.POST:
            raise UserInputError("only a post's file has versions")
        _file_of(moment)
        return await self._listing(moment)

    async def _listing(self, root: Moment) -> Listing:
        rows = await self._store.run(Store.versions_of, root.id)
        opened = [m for r in rows if (m := self._moments._opened(r)) is not None]
        records = {root.id: root, **{m.id: m for m in opened}}
        drawn = history(_version(root), [_version(m) for m in opened])
        return Listing(root=root, history=drawn, records=records)

    async def update(
        self,
        ref: str,
        upload: Upload,
        name: str,
        media_type: str,
        pieces: AsyncIterable[bytes],
        *,
        note: str = "",
        parents: Sequence[int] = (),
    ) -> Moment:
        """A new version of a post's file, read from `pieces` into `upload`: it follows
        the versions numbered `parents`, or else every head (so a new version made while
        there are siblings merges them)."""
        if len(note.encode("utf-8")) > MAX_NOTE:
            raise UserInputError(f"a version's note is at most {MAX_NOTE} bytes")
        listing = await self.listing(ref)
        manifest = self._manifest(listing.root)
        follows = self._parents(listing, parents)
        lender = next(i for i in listing.history.order[::-1] if i in follows)
        lent = listing.file(lender)
        try:
            chunks = (await self._moments.open_blob(lent)).addresses if lent.index else []
        except NotFoundError:
            chunks = []  # not all here: nothing is borrowed, every chunk is made anew
        await upload.add_file(name, media_type, pieces, encoder=VersionEncoder(lent, chunks))
        content = Content(
            kind=Kind.VERSION,
            text=note,
            reply_to=listing.root.id,
            blobs=tuple(upload.refs),
            parents=follows,
        )
        moment = await self._posting.publish_upload(manifest, content, upload)
        await self.stored([moment])
        return moment

    async def pick(self, ref: str, n: int, note: str = "") -> Moment:
        """Resolve siblings by picking version `n`: a version following every head whose
        file is version n's, the very same chunks (nothing is encrypted or sent again)."""
        listing = await self.listing(ref)
        chosen = listing.by_number(n)
        heads = listing.history.heads
        if len(heads) < 2:
            raise UserInputError("there is nothing to pick: this file has one newest version")
        if chosen not in heads:
            raise UserInputError(f"version {n} is not one of the versions to pick from")
        manifest = self._manifest(listing.root)
        ref_n = listing.file(chosen)
        chunks = (await self._moments.open_blob(ref_n)).addresses
        picked, pieces = relisted(ref_n, chunks)
        content = Content(
            kind=Kind.VERSION,
            text=note or f"picked version {n}",
            reply_to=listing.root.id,
            blobs=(picked,),
            parents=heads,
        )
        if not pieces:  # the first form: the same reference (its chunks are listed)
            moment = await self._posting._publish(manifest, content, uses=tuple(chunks))
        else:
            async with self._posting.upload() as upload:
                pack = await upload._writer()
                await upload._on_pack(lambda: upload._append(pack, pieces))
                upload.addresses += chunks
                upload.refs.append(picked)
                moment = await self._posting.publish_upload(manifest, content, upload)
        await self.stored([moment])
        return moment

    async def reader(self, ref: str, n: int) -> tuple[BlobRef, BlobReader]:
        """Version `n` of a post's file, to read; NotFoundError if it was dropped or has
        not all arrived."""
        listing = await self.listing(ref)
        version_id = listing.by_number(n)
        if version_id in listing.history.dropped:
            raise NotFoundError(
                f"version {n} was dropped: members keep the newest versions and the unresolved"
            )
        file = listing.file(version_id)
        return file, await self._moments.open_blob(file)

    async def stored(self, moments: Sequence[Moment]) -> None:
        """Moments were stored (ours or received): drop, for each file a version among
        them is of, what its graph says every member lets go."""
        roots = {m.content.reply_to for m in moments if m.content.kind is Kind.VERSION}
        for root_id in roots:
            if root_id is None:
                continue
            root = await self._moments.row_of(root_id)
            opened = self._moments._opened(root) if root and not root.retracted else None
            if opened is None or opened.content.kind is not Kind.POST:
                continue
            try:
                await self.prune(await self._listing(opened))
            except UserInputError:
                continue  # a post with no file: nothing of it is a version

    async def prune(self, listing: Listing) -> int:
        """Let go of the chunks of the versions the graph drops (those a kept version
        borrows stay: it uses them too); returns how many chunk uses went."""
        uses: list[tuple[bytes, bytes]] = []
        for version_id in listing.history.dropped:
            file = listing.file(version_id)
            held = set(await self._store.run(Store.chunk_uses, version_id))
            if not held:
                continue
            mine = set(await self._file_chunks(file)) | set(file.addresses())
            uses += [(version_id, a) for a in held & mine]
        if not uses:
            return 0
        freed = await self._store.run(Store.drop_chunk_uses, uses)
        await self._moments.free(freed)
        log.info("dropped %d chunk use(s) of old versions of a file", len(uses))
        return len(uses)

    async def summary(self, moment_id: bytes, people: People) -> dict[str, Any] | None:
        """What the feed says of a post's file that has versions: the newest, and the
        siblings if unresolved; None if it has none."""
        if not await self._store.run(Store.versions_of, moment_id):
            return None
        try:
            listing = await self.listing(moment_text(moment_id))
        except (NotFoundError, UserInputError):
            return None
        if len(listing.history.order) < 2:
            return None
        drawn = listing.history
        return {
            "count": len(drawn.order),
            "newest": self.version_json(listing, drawn.newest, people),
            "siblings": [self.version_json(listing, i, people) for i in drawn.siblings],
        }

    async def annotate(self, shown: list[dict[str, Any]], people: People) -> None:
        """Add `versions` (summary) to the posts, as the API shows them, whose file has
        versions: the feed shows the newest, and the siblings while unresolved."""
        for post in shown:
            if post.get("files") and not post.get("retracted"):
                summary = await self.summary(decode_id(post["id"], IdKind.MOMENT), people)
                if summary is not None:
                    post["versions"] = summary

    def listing_json(self, listing: Listing, people: People) -> dict[str, Any]:
        """GET /moments/{id}/versions."""
        drawn = listing.history
        return {
            "moment": moment_text(listing.root.id),
            "name": listing.file(drawn.newest).name,
            "versions": [self.version_json(listing, i, people) for i in drawn.order],
            "newest": drawn.number(drawn.newest),
            "siblings": [drawn.number(i) for i in drawn.siblings],
            "pending": len(drawn.pending),
        }

    def version_json(self, listing: Listing, version_id: bytes, people: People) -> dict[str, Any]:
        """One version, as the API shows it."""
        drawn = listing.history
        moment = listing.records[version_id]
        file = listing.file(version_id)
        return {
            "n": drawn.number(version_id),
            "id": moment_text(version_id),
            "author": person_json(people(bytes(moment.author))),
            "time": moment.time,
            "name": file.name,
            "size": file.size,
            "note": moment.content.text if moment.content.kind is Kind.VERSION else "",
            "parents": [drawn.number(p) for p in moment.content.parents if p in drawn.order],
            "head": version_id in drawn.heads,
            "dropped": version_id in drawn.dropped,
        }

    # --- internals -------------------------------------------------------------------

    def _manifest(self, root: Moment) -> Manifest:
        manifest = self._circles.current(root.circle_id)
        if manifest is None:
            raise UserInputError("this file's circle is gone from this device")
        self._posting.check(circle_text(root.circle_id))
        return manifest

    @staticmethod
    def _parents(listing: Listing, numbers: Sequence[int]) -> tuple[bytes, ...]:
        if not numbers:
            return listing.history.heads
        if len(set(numbers)) != len(numbers):
            raise UserInputError("a version follows each version at most once")
        return tuple(listing.by_number(n) for n in numbers)

    async def _file_chunks(self, ref: BlobRef) -> list[bytes]:
        """Every chunk a file uses: its own addresses and, for the second form, those its
        index pieces here name."""
        if not ref.index:
            return list(ref.chunks)
        located = await self._store.run(Store.packed_at, list(ref.index))
        blobs = self._moments.blobs

        def named() -> list[bytes]:
            out: list[bytes] = []
            for piece, address in enumerate(ref.index):
                where = located.get(address)
                data = blobs.read_packed(Location(*where)) if where else blobs.get(address)
                if data is None:
                    continue
                try:
                    out += open_index_piece(ref, piece, data)
                except DecodeError:
                    continue
            return out

        return [*ref.index, *await asyncio.to_thread(named)]
