"""Our own moments: posts with their photos and files, comments, reactions, retractions.

Everything a post needs is checked before anything is stored, so a refused post leaves
nothing on disk. Concurrent posts share one commit: each gets the next sequence number
of its circle in the order the calls were made, and all are stored in one transaction.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from p2pmoments.circles import Circles
from p2pmoments.core.blobs import BlobKind, BlobRef, encrypt_blob
from p2pmoments.core.errors import P2PMomentsError, RejectedError
from p2pmoments.core.identity import Identity
from p2pmoments.core.manifest import Manifest
from p2pmoments.core.moment import MAX_BLOBS, MAX_TEXT, Content, Kind, Moment, seal_moment
from p2pmoments.errors import NotOwnerError, PostingError, UserInputError
from p2pmoments.media import prepare_photo
from p2pmoments.moments import Moments
from p2pmoments.reactions import check_emoji
from p2pmoments.store import AsyncStore, Store

__all__ = ["MAX_DECODES", "Posting"]

log = logging.getLogger(__name__)

MAX_DECODES = 1  # photos decoded at once (each may take 4 bytes a pixel: media.MAX_PIXELS)
MAX_FILE_NAME = 255  # bytes of UTF-8 (spec/moments.md section 4)
MAX_MEDIA_TYPE = 100
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*", re.ASCII)

Posted = Callable[[Sequence[Moment]], Awaitable[None]]  # ours, just stored: to be pushed


async def _nothing(moments: Sequence[Moment]) -> None:
    return None


@dataclass(slots=True)
class _Pending:
    """A moment waiting to be sealed and stored by the next commit."""

    manifest: Manifest
    content: Content
    done: asyncio.Future[Moment]


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
    ) -> None:
        self._store = store
        self._moments = moments
        self._circles = circles
        self._identity = identity
        self._me = bytes(identity.public.verify_key)
        self._keep_location = keep_location
        self.on_posted = on_posted
        self._waiting: list[_Pending] = []
        self._committing = asyncio.Lock()
        self._decoding = asyncio.Semaphore(MAX_DECODES)

    async def post(
        self,
        circle_ref: str,
        text: str,
        expires_in: int | None = None,
        *,
        photos: Sequence[bytes] = (),
        files: Sequence[tuple[str, bytes, str]] = (),
    ) -> Moment:
        """Post text, photos and files (name, data, media type) to a circle."""
        if not text.strip() and not photos and not files:
            raise UserInputError("a moment needs some text, a photo or a file")
        _check_text(text)
        if len(photos) + len(files) > MAX_BLOBS:
            raise UserInputError(f"a moment has at most {MAX_BLOBS} photos and files")
        manifest = self._circles.resolve(circle_ref)
        self._check_may_post(manifest)
        expires = int(time.time()) + expires_in if expires_in else None
        refs, chunks = await self._make_blobs(photos, files)
        content = Content(kind=Kind.POST, text=text, expires=expires, blobs=tuple(refs))
        if not chunks:
            return await self._publish(manifest, content)
        # Sealed once as a check (the envelope's size, every rule) before a chunk is written.
        self._seal(manifest, content, seq=1, now=int(time.time()))
        addresses = Counter(a for a, _ in chunks)
        self._moments.writing += addresses
        stored = False
        try:
            await asyncio.to_thread(self._moments.blobs.put_many, chunks)
            moment = await self._publish(manifest, content)
            stored = True
            return moment
        finally:
            self._moments.writing -= addresses
            if not stored:
                await asyncio.to_thread(self._moments.blobs.delete, list(addresses))

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
        await self._publish(self._current(target), Content(kind=Kind.RETRACTION, target=target.id))
        return target.id

    # --- internals -----------------------------------------------------------------------

    def _current(self, target: Moment) -> Manifest:
        manifest = self._circles.current(target.circle_id)
        if manifest is None:
            raise NotOwnerError("this moment's circle is gone from this device")
        return manifest

    def _check_may_post(self, manifest: Manifest) -> None:
        me = self._identity.public.verify_key
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
            )
        except RejectedError as exc:  # too big, or a rule our own input broke
            raise UserInputError(exc.reason) from None

    async def _publish(self, manifest: Manifest, content: Content) -> Moment:
        """Seal and store one of our moments; concurrent calls share one commit."""
        if self._circles.removed(manifest.circle_id) is not None:
            raise NotOwnerError(
                f"you were removed from {manifest.name!r}: you keep what you had, "
                "but cannot post, comment or react there"
            )
        pending = _Pending(manifest, content, asyncio.get_running_loop().create_future())
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
                {m.id for m in await self._moments.store_many([m for _, m in sealed])}
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

    async def _make_blobs(
        self, photos: Sequence[bytes], files: Sequence[tuple[str, bytes, str]]
    ) -> tuple[list[BlobRef], list[tuple[bytes, bytes]]]:
        """The references and encrypted chunks of a new moment's photos and files, in
        memory: nothing is written. Photos are decoded MAX_DECODES at a time."""
        prepared = []
        for n, data in enumerate(photos, 1):
            async with self._decoding:
                prepared.append(
                    await asyncio.to_thread(
                        prepare_photo, data, keep_location=self._keep_location, label=f"photo {n}"
                    )
                )
        named = [(_file_name(name), data, _media_type(kind)) for name, data, kind in files]

        def encrypt() -> tuple[list[BlobRef], list[tuple[bytes, bytes]]]:
            refs, chunks = [], []
            for photo in prepared:
                thumb, thumb_chunks = encrypt_blob(
                    photo.thumbnail,
                    kind=BlobKind.PHOTO,
                    media_type="image/jpeg",
                    width=photo.thumb_width,
                    height=photo.thumb_height,
                )
                full, full_chunks = encrypt_blob(
                    photo.data,
                    kind=BlobKind.PHOTO,
                    media_type=photo.media_type,
                    width=photo.width,
                    height=photo.height,
                    thumbnail=thumb,
                )
                chunks += thumb_chunks + full_chunks
                refs.append(full)
            for name, data, media_type in named:
                ref, file_chunks = encrypt_blob(
                    data, kind=BlobKind.FILE, media_type=media_type, name=name
                )
                chunks += file_chunks
                refs.append(ref)
            return refs, chunks

        return await asyncio.to_thread(encrypt)


def _check_text(text: str) -> None:
    size = len(text.encode("utf-8"))
    if size > MAX_TEXT:
        raise UserInputError(
            f"a moment's text is at most {MAX_TEXT >> 10} KiB ({MAX_TEXT:,} bytes of UTF-8); "
            f"this one is {size:,} bytes"
        )


def _file_name(name: str) -> str:
    """A file's name as a moment carries it: at most MAX_FILE_NAME bytes of UTF-8."""
    clipped = name.strip().encode("utf-8")[:MAX_FILE_NAME].decode("utf-8", errors="ignore")
    return clipped or "file"


def _media_type(given: str) -> str:
    """type/subtype, lower case, without parameters; anything else is octet-stream."""
    kind = given.partition(";")[0].strip().lower()
    if len(kind) <= MAX_MEDIA_TYPE and _MEDIA_TYPE.fullmatch(kind):
        return kind
    return "application/octet-stream"
