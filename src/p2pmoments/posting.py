"""Our own moments: posts with their photos and files, comments, reactions, retractions.

A post's photos and files are an `Upload`: encrypted and hashed as they arrive, a piece
at a time on a worker thread, and appended to one pack (blobstore.py), never held whole
in memory; the pack is synced to disk once, then the moment is stored with where each
chunk lies, and only then acknowledged. A refused post deletes its pack: it leaves
nothing on disk. Concurrent posts share one commit: each gets the next sequence number
of its circle in the order the calls were made, and all are stored in one transaction.

Why so long: every moment we author goes through the one commit queue here (sequence
numbers, batched commits, a pack per upload); edits, read receipts, versions and notes
each add a short method to it rather than a second queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, TypeVar

from p2pmoments.blobstore import Location, PackWriter
from p2pmoments.circles import Circles
from p2pmoments.core.blobs import (
    MAX_CAPTION,
    MAX_MEDIA_TYPE,
    MEDIA_TYPE,
    BlobEncoder,
    BlobKind,
    BlobRef,
)
from p2pmoments.core.crypto import VerifyKey
from p2pmoments.core.errors import DecodeError, P2PMomentsError, RejectedError
from p2pmoments.core.identity import Identity
from p2pmoments.core.manifest import Manifest
from p2pmoments.core.moment import MAX_BLOBS, MAX_TEXT, Content, Kind, Moment, seal_moment
from p2pmoments.core.versions import VersionEncoder
from p2pmoments.errors import NotOwnerError, PostingError, TooLargeError, UserInputError
from p2pmoments.media import prepare_photo
from p2pmoments.moments import Moments
from p2pmoments.reactions import check_emoji
from p2pmoments.store import AsyncStore, Store

__all__ = ["FEED_SIZE", "MAX_DECODES", "Posting", "Upload"]

T = TypeVar("T")

log = logging.getLogger(__name__)

MAX_DECODES = 1  # photos decoded at once (each may take 4 bytes a pixel: media.MAX_PIXELS)
FEED_SIZE = 1 << 20  # plaintext handed to the worker thread at once
MAX_FILE_NAME = 255  # bytes of UTF-8 (spec/moments.md section 4)

Posted = Callable[[Sequence[Moment]], Awaitable[None]]  # ours, just stored: to be pushed


async def _nothing(moments: Sequence[Moment]) -> None:
    return None


@dataclass(slots=True)
class _Pending:
    """A moment waiting to be sealed and stored by the next commit."""

    manifest: Manifest
    content: Content
    done: asyncio.Future[Moment]
    uses: tuple[bytes, ...] = ()  # every chunk it uses (ours: its indexes' too)
    packed: list[tuple[bytes, Location]] = field(default_factory=list)


class Upload:
    """The photos and files of one post as they arrive: each encrypted and hashed a piece
    at a time on a worker thread (while the next piece arrives) and appended to the
    post's pack. Use as `async with posting.upload() as upload:`; leaving it without
    having posted deletes the pack."""

    def __init__(self, posting: Posting) -> None:
        self._posting = posting
        self._pack: PackWriter | None = None
        self.refs: list[BlobRef] = []
        self.addresses: list[bytes] = []  # every chunk written, in order
        self.posted = False
        self._busy: set[asyncio.Future[Any]] = set()  # work on the pack, on threads
        # Sends each chunk ahead to the circle's members as it is made (ahead.py).
        self._ahead: Callable[[list[tuple[bytes, bytes]]], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> Upload:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Delete the pack unless the post was stored (safe to call twice)."""
        if self._busy:
            # A cancelled request leaves its thread working on the pack: let it end
            # before the pack is aborted (never two threads closing its file).
            await asyncio.wait(self._busy)
        pack, self._pack = self._pack, None
        if pack is None:
            return
        try:
            if not self.posted:
                await asyncio.to_thread(pack.abort)
        finally:
            self._posting._moments.writing[pack.pack] -= 1
            if self._posting._moments.writing[pack.pack] <= 0:
                del self._posting._moments.writing[pack.pack]

    async def _on_pack(self, work: Callable[[], T]) -> T:
        """Run `work` (which writes to the pack) on a thread. A cancellation of the
        caller does not leave it running unseen: close() waits for it."""
        done = asyncio.ensure_future(asyncio.to_thread(work))
        self._busy.add(done)
        done.add_done_callback(self._busy.discard)
        return await asyncio.shield(done)

    async def _writer(self) -> PackWriter:
        if self._pack is None:
            self._pack = await asyncio.to_thread(self._posting._moments.blobs.new_pack)
            self._posting._moments.writing[self._pack.pack] += 1
        return self._pack

    def _check_count(self) -> None:
        if len(self.refs) >= MAX_BLOBS:
            raise UserInputError(f"a moment has at most {MAX_BLOBS} photos and files")

    async def add_photo(self, data: bytes, label: str = "") -> None:
        """A photo, whole (it is decoded to strip its location and make its thumbnail)."""
        self._check_count()
        posting = self._posting
        async with posting._decoding:
            photo = await asyncio.to_thread(
                prepare_photo,
                data,
                keep_location=posting._keep_location,
                label=label or f"photo {len(self.refs) + 1}",
            )
        pack = await self._writer()

        def encrypt() -> BlobRef:
            thumb = self._encrypt_whole(
                pack,
                photo.thumbnail,
                kind=BlobKind.PHOTO,
                media_type="image/jpeg",
                width=photo.thumb_width,
                height=photo.thumb_height,
            )
            return self._encrypt_whole(
                pack,
                photo.data,
                kind=BlobKind.PHOTO,
                media_type=photo.media_type,
                width=photo.width,
                height=photo.height,
                thumbnail=thumb,
            )

        self.refs.append(await self._on_pack(encrypt))

    def caption_last(self, caption: str) -> None:
        """Give the photo added last its caption (spec/moments.md section 4, key 13)."""
        if not self.refs or self.refs[-1].kind is not BlobKind.PHOTO or self.refs[-1].caption:
            raise UserInputError("a caption follows the photo it belongs to, once")
        caption = caption.strip()
        if len(caption.encode("utf-8")) > MAX_CAPTION:
            raise UserInputError(f"a photo's caption is at most {MAX_CAPTION} bytes")
        self.refs[-1] = replace(self.refs[-1], caption=caption)

    def _encrypt_whole(self, pack: PackWriter, data: bytes, **meta: object) -> BlobRef:
        encoder = BlobEncoder()
        chunks = encoder.feed(data)
        ref, last = encoder.finish(**meta)
        self._append(pack, chunks + last)
        return ref

    def _append(self, pack: PackWriter, chunks: list[tuple[bytes, bytes]]) -> None:
        pack.append(chunks)
        self.addresses += [a for a, _ in chunks]
        send, loop = self._ahead, self._loop
        if send is not None and loop is not None and chunks:
            loop.call_soon_threadsafe(send, chunks)  # on the loop, which owns the links

    def send_ahead(self, circle_ref: str) -> None:
        """Send this post's chunks to the members of its circle as they are made, before
        the moment exists (spec/sync.md section 4, point 10), if any linked member takes
        them. Call once the circle is known (and checked)."""
        ahead = self._posting.ahead
        if ahead is not None and self._ahead is None:
            self._loop = asyncio.get_running_loop()
            self._ahead = ahead(self._posting._circles.resolve(circle_ref))

    async def add_file(
        self,
        name: str,
        media_type: str,
        pieces: AsyncIterable[bytes],
        encoder: BlobEncoder | None = None,
    ) -> None:
        """A file, read from `pieces` as they come: never held whole. `encoder`: a new
        version's, which borrows its parent's unchanged chunks (core/versions.py)."""
        self._check_count()
        pack = await self._writer()
        encoder = encoder or BlobEncoder()
        loop = asyncio.get_running_loop()

        def feed(data: bytes) -> None:
            self._append(pack, encoder.feed(data))

        working: asyncio.Future[None] | None = None
        gathered: list[bytes] = []
        size = 0
        try:
            async for piece in pieces:
                gathered.append(piece)
                size += len(piece)
                if size >= FEED_SIZE:
                    if working is not None:
                        await working  # one piece in the worker's hands at a time
                    data = b"".join(gathered)
                    gathered, size = [], 0
                    working = loop.run_in_executor(None, feed, data)
            if working is not None:
                await working
                working = None
            rest = b"".join(gathered)
            await self._on_pack(lambda: feed(rest))
        except DecodeError as exc:
            raise TooLargeError(str(exc)) from None
        finally:
            if working is not None:
                # Never leave the worker writing while the pack is deleted.
                await asyncio.wait([working])

        def finish() -> BlobRef:
            ref, last = encoder.finish(
                kind=BlobKind.FILE, media_type=_media_type(media_type), name=_file_name(name)
            )
            self._append(pack, last)
            if isinstance(encoder, VersionEncoder):  # it uses them too, from other packs
                self.addresses += encoder.borrowed()
            return ref

        self.refs.append(await self._on_pack(finish))

    async def _finish(self) -> list[tuple[bytes, Location]]:
        """Sync the pack to disk: where each chunk lies."""
        assert self._pack is not None
        return await self._on_pack(self._pack.finish)


class Posting:
    """What we post."""

    def __init__(
        self,
        store: AsyncStore,
        moments: Moments,
        circles: Circles,
        identity: Identity,
        *,
        keep_location: bool,
        on_posted: Posted = _nothing,
        person: bytes | None = None,
    ) -> None:
        self._store = store
        self._moments = moments
        self._circles = circles
        self._identity = identity
        self._me = bytes(identity.public.verify_key)  # the author: this device
        # Who posts: the person this device is one of (spec/devices.md section 7).
        self._person = VerifyKey(person or self._me)
        self._keep_location = keep_location
        self.on_posted = on_posted
        # What sends an upload's chunks ahead to a circle's members (ahead.py), if set.
        self.ahead: Callable[[Manifest], Callable[[list[tuple[bytes, bytes]]], None] | None] | None
        self.ahead = None
        self._waiting: list[_Pending] = []
        self._committing = asyncio.Lock()
        self._decoding = asyncio.Semaphore(MAX_DECODES)

    def upload(self) -> Upload:
        """The photos and files of a post to come (`async with`)."""
        return Upload(self)

    def check(self, circle_ref: str, text: str = "") -> None:
        """UserInputError or NotFoundError now if a post with this text to this circle
        would be refused (so an upload can be refused before it is read)."""
        _check_text(text)
        self._check_may_post(self._circles.resolve(circle_ref))

    async def post(
        self,
        circle_ref: str,
        text: str,
        expires_in: int | None = None,
        *,
        photos: Sequence[bytes] = (),
        files: Sequence[tuple[str, bytes, str]] = (),
        upload: Upload | None = None,
    ) -> Moment:
        """Post text, and photos and files: given whole (files as (name, data, media
        type)), or as an `upload` that has read them already."""
        if upload is None and (photos or files):
            if len(photos) + len(files) > MAX_BLOBS:
                raise UserInputError(f"a moment has at most {MAX_BLOBS} photos and files")
            self.check(circle_ref, text)
            async with self.upload() as made:
                made.send_ahead(circle_ref)
                for n, data in enumerate(photos, 1):
                    await made.add_photo(data, f"photo {n}")
                for name, data, kind in files:
                    await made.add_file(name, kind, _once(data))
                return await self.post(circle_ref, text, expires_in, upload=made)
        refs = tuple(upload.refs) if upload is not None else ()
        if not text.strip() and not refs:
            raise UserInputError("a moment needs some text, a photo or a file")
        _check_text(text)
        manifest = self._circles.resolve(circle_ref)
        self._check_may_post(manifest)
        expires = int(time.time()) + expires_in if expires_in else None
        content = Content(kind=Kind.POST, text=text, expires=expires, blobs=refs)
        if upload is None or not refs:
            return await self._publish(manifest, content)
        return await self.publish_upload(manifest, content, upload)

    async def publish_upload(self, manifest: Manifest, content: Content, upload: Upload) -> Moment:
        """Seal and store a moment whose photos and files `upload` has read (a post, a
        file's version)."""
        # Sealed once as a check (the envelope's size, every rule) before the pack is synced.
        self._seal(manifest, content, seq=1, now=int(time.time()))

        async def store() -> Moment:
            began = time.perf_counter()
            placed = await upload._finish()
            synced = time.perf_counter()
            moment = await self._publish(
                manifest, content, uses=tuple(upload.addresses), packed=placed
            )
            upload.posted = True
            log.debug(
                "a post of %d chunks: synced in %.1f ms, stored in %.1f ms",
                len(placed),
                1000 * (synced - began),
                1000 * (time.perf_counter() - synced),
            )
            return moment

        # Once the pack is being synced, the post goes to its end even if its request is
        # cancelled (a daemon stopping): a moment stored while its pack was deleted would
        # name chunks that no longer exist, for every member.
        storing = asyncio.ensure_future(store())
        try:
            return await asyncio.shield(storing)
        except asyncio.CancelledError:
            await asyncio.wait([storing])
            raise

    async def comment(self, ref: str, text: str) -> Moment:
        """Comment on a moment, in its circle."""
        target = await self._moments.target(ref)
        if not text.strip():
            raise UserInputError("a comment needs some text")
        _check_text(text)
        return await self._publish(
            self._current(target), Content(kind=Kind.COMMENT, text=text, reply_to=target.id)
        )

    async def react(self, ref: str, emoji: str) -> Moment:
        """React to a moment with one emoji."""
        emoji = check_emoji(emoji)
        target = await self._moments.target(ref)
        return await self._publish(
            self._current(target), Content(kind=Kind.REACTION, emoji=emoji, reply_to=target.id)
        )

    async def retract(self, ref: str) -> bytes:
        """Retract one of our moments: its content goes everywhere, a marker stays."""
        target = await self._moments.target(ref)
        if bytes(target.author) != self._me:
            raise NotOwnerError("only its author can retract a moment")
        if target.content.kind is Kind.VERSION:  # later versions follow it (moments.md 9.1)
            raise UserInputError(
                "a version stays in its file's history: retract the post to remove the file"
            )
        await self._publish(self._current(target), Content(kind=Kind.RETRACTION, target=target.id))
        return target.id

    @property
    def me(self) -> bytes:
        """The author of what we post: this device's key."""
        return self._me

    async def publish(self, manifest: Manifest, content: Content) -> Moment:
        """Seal, store and push one of our moments of another kind than those above (a
        note's: notes.py), in the circle of `manifest`, if we may post there."""
        self._check_may_post(manifest)
        return await self._publish(manifest, content)

    async def edit(self, ref: str, text: str) -> Moment:
        """New text for one of our posts (spec/moments.md section 10): every member shows
        the newest edit, marked edited; its photos and files stay."""
        target = await self._moments.target(ref)
        if bytes(target.author) != self._me:
            raise NotOwnerError("only its author can edit a moment")
        if target.content.kind is not Kind.POST:
            raise UserInputError("only a post's text can be edited")
        if not text.strip() and not target.content.blobs:
            raise UserInputError("a moment needs some text, a photo or a file")
        _check_text(text)
        return await self._publish(
            self._current(target), Content(kind=Kind.EDIT, text=text, target=target.id)
        )

    async def read_receipt(self, manifest: Manifest, post: bytes) -> Moment:
        """Tell a conversation's members we read up to `post` (section 11)."""
        return await self._publish(manifest, Content(kind=Kind.READ, target=post))

    # --- internals -----------------------------------------------------------------------

    def _current(self, target: Moment) -> Manifest:
        manifest = self._circles.current(target.circle_id)
        if manifest is None:
            raise NotOwnerError("this moment's circle is gone from this device")
        return manifest

    def _check_may_post(self, manifest: Manifest) -> None:
        me = self._person
        if not manifest.is_member(me):
            raise UserInputError(f"you are no longer a member of the circle {manifest.name!r}")
        if not manifest.may_post(me):
            raise UserInputError("only the owner may post in this circle")

    def _seal(self, manifest: Manifest, content: Content, *, seq: int, now: int) -> Moment:
        try:
            return seal_moment(
                self._identity,
                manifest,
                self._circles.key_for(manifest),
                seq=seq,
                time=now,
                content=content,
                person=self._person,
            )
        except RejectedError as exc:  # too big, or a rule our own input broke
            raise UserInputError(exc.reason) from None

    async def _publish(
        self,
        manifest: Manifest,
        content: Content,
        *,
        uses: tuple[bytes, ...] = (),
        packed: list[tuple[bytes, Location]] | None = None,
    ) -> Moment:
        """Seal and store one of our moments; concurrent calls share one commit."""
        if self._circles.removed(manifest.circle_id) is not None:
            raise NotOwnerError(
                f"you were removed from {manifest.name!r}: you keep what you had, "
                "but cannot post, comment or react there"
            )
        pending = _Pending(
            manifest, content, asyncio.get_running_loop().create_future(), uses, packed or []
        )
        self._waiting.append(pending)
        async with self._committing:
            if not pending.done.done():
                batch, self._waiting = self._waiting, []
                await self._commit(batch)
        return pending.done.result()

    async def _commit(self, batch: list[_Pending]) -> None:
        """Seal and store a batch of our moments; every one's future is resolved."""
        try:
            seqs: dict[bytes, int] = {}
            for circle_id in {p.manifest.circle_id for p in batch}:
                seqs[circle_id] = await self._store.run(Store.next_seq, circle_id, self._me)
            sealed: list[tuple[_Pending, Moment]] = []
            now = int(time.time())
            for pending in batch:
                circle_id = pending.manifest.circle_id
                try:
                    moment = self._seal(
                        pending.manifest, pending.content, seq=seqs[circle_id], now=now
                    )
                except UserInputError as exc:
                    pending.done.set_exception(exc)
                    continue
                seqs[circle_id] += 1
                sealed.append((pending, moment))
            added = (
                {
                    m.id
                    for m in await self._moments.store_many(
                        [m for _, m in sealed],
                        uses={m.id: p.uses for p, m in sealed if p.uses},
                        packed=[placed for p, _ in sealed for placed in p.packed],
                    )
                }
                if sealed
                else set()
            )
        except BaseException as exc:
            failure = exc if isinstance(exc, P2PMomentsError) else PostingError(f"{exc!r}")
            for pending in batch:
                if not pending.done.done():
                    pending.done.set_exception(failure)
            if not isinstance(exc, Exception):
                raise  # cancelled: the others are told, this one stops
            return
        for pending, moment in sealed:
            if moment.id in added:
                pending.done.set_result(moment)
            else:  # a bug: our own sequence number taken
                pending.done.set_exception(PostingError("the moment could not be stored"))
        await self.on_posted([m for _, m in sealed if m.id in added])


async def _once(data: bytes) -> AsyncIterable[bytes]:
    yield data


def _check_text(text: str) -> None:
    size = len(text.encode("utf-8"))
    if size > MAX_TEXT:
        raise UserInputError(
            f"a moment's text is at most {MAX_TEXT >> 10} KiB ({MAX_TEXT:,} bytes); "
            f"this one is {size:,} bytes"
        )


def _file_name(name: str) -> str:
    """A file's name as a moment carries it: at most MAX_FILE_NAME bytes of UTF-8."""
    clipped = name.strip().encode("utf-8")[:MAX_FILE_NAME].decode("utf-8", errors="ignore")
    return clipped or "file"


def _media_type(given: str) -> str:
    """type/subtype, lower case, without parameters; anything else is octet-stream."""
    kind = given.partition(";")[0].strip().lower()
    if len(kind) <= MAX_MEDIA_TYPE and MEDIA_TYPE.fullmatch(kind):
        return kind
    return "application/octet-stream"
