"""Profile pictures (spec/identity.md section 5): ours, chosen through the API and
re-encoded here, and those of the people we link with (friends, co-members), heard
as a head on each link, asked for when new and checked before they are kept.

A picture travels only from its person's own devices (the link says who sent it),
never relayed: a co-member sees it once linked with one of that person's devices.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable
from typing import Any

from PIL import Image, ImageOps

from p2pmoments.core.budget import TokenBucket
from p2pmoments.core.errors import DecodeError
from p2pmoments.core.picture import (
    MAX_PICTURE,
    PICTURE_MESSAGES,
    T_PICTURE,
    T_PICTURE_WANT,
    BadPictureMessage,
    Head,
    Picture,
    Want,
    decode_picture_message,
    digest_of,
    encode_head,
    newer,
)
from p2pmoments.errors import UserInputError
from p2pmoments.events import EventBus
from p2pmoments.friends import identity_text
from p2pmoments.media import MAX_PIXELS
from p2pmoments.net.links import Links
from p2pmoments.store import AsyncStore

__all__ = [
    "PICTURE_MESSAGES",
    "PICTURE_TYPES",
    "SIDE",
    "BadPicture",
    "Pictures",
    "check_picture",
    "make_picture",
]

log = logging.getLogger(__name__)

SIDE = 256  # the side of the square we make
MAX_SIDE = 512  # the largest side we take from a peer
PICTURE_TYPES = {"JPEG": "image/jpeg", "WEBP": "image/webp"}
QUALITIES = (80, 65, 50, 35, 20)  # tried in turn until the picture fits MAX_PICTURE
PICTURE_RATE, PICTURE_BURST = 0.2, 4.0  # pictures a second one peer may make us decode


class BadPicture(DecodeError):
    """A peer's picture that is not a small JPEG or WebP image."""


def check_picture(data: bytes) -> str:
    """The media type of a peer's picture, after decoding it whole; BadPicture unless it
    is one still JPEG or WebP image of at most MAX_SIDE pixels a side and MAX_PICTURE
    bytes. Its size is read from the header before any pixel is decoded."""
    if not 0 < len(data) <= MAX_PICTURE:
        raise BadPicture(f"a picture is 1 to {MAX_PICTURE} bytes")
    try:
        image = Image.open(io.BytesIO(data), formats=list(PICTURE_TYPES))
        media_type = PICTURE_TYPES[image.format or ""]
        width, height = image.size
        if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
            raise BadPicture(f"a picture is at most {MAX_SIDE}×{MAX_SIDE} pixels")
        if getattr(image, "n_frames", 1) != 1:
            raise BadPicture("a picture is one still image")
        image.load()
    except BadPicture:
        raise
    except Exception:  # whatever Pillow makes of hostile bytes
        raise BadPicture("not a JPEG or WebP picture") from None
    return media_type


def make_picture(data: bytes) -> tuple[str, bytes]:
    """Our picture from whatever image the person chose: its middle square, upright,
    SIDE pixels a side, as WebP of at most MAX_PICTURE bytes, with no metadata.
    UserInputError if it is not an image Pillow reads."""
    unreadable = "This is not a picture (choose a JPEG, PNG, WebP, GIF or HEIC photo)"
    try:
        image: Image.Image = Image.open(io.BytesIO(data))
        width, height = image.size
    except Exception:
        raise UserInputError(unreadable) from None
    if width * height > MAX_PIXELS:
        raise UserInputError(
            f"This picture is {width}×{height} pixels, more than the "
            f"{MAX_PIXELS // 1_000_000} megapixels a photo may have"
        )
    try:
        if image.format == "JPEG":
            image.draft("RGB", (SIDE, SIDE))
        image.load()
        upright = ImageOps.exif_transpose(image).convert("RGB")
        square = ImageOps.fit(upright, (SIDE, SIDE), Image.Resampling.LANCZOS)
    except Exception:  # a decoder error on what the person chose
        raise UserInputError(unreadable) from None
    for quality in QUALITIES:
        out = io.BytesIO()
        square.save(out, format="WEBP", quality=quality)  # no EXIF, no ICC, nothing else
        if out.tell() <= MAX_PICTURE:
            return "image/webp", out.getvalue()
    raise UserInputError("This picture cannot be made small enough")  # pragma: no cover


class Pictures:
    """Our profile picture and those we hold of others; the picture messages on links."""

    def __init__(
        self,
        store: AsyncStore,
        events: EventBus,
        links: Links,
        person: bytes,
        person_of: Callable[[bytes], bytes],
    ) -> None:
        self._store, self._events, self._links = store, events, links
        self._me = person
        self._person_of = person_of
        self._heads: dict[bytes, Head] = {}  # person -> what we hold of their picture
        self._asked: dict[bytes, Head] = {}  # linked key -> the head we asked it for
        self._budget: dict[bytes, TokenBucket] = {}

    async def load(self) -> None:
        """What the store holds."""
        rows = await self._store.run(lambda s: s.picture_heads())
        self._heads = {person: Head(set_at, digest) for person, set_at, digest in rows}

    def digests(self) -> dict[bytes, bytes]:
        """person -> digest of each picture we hold (ours among them)."""
        return {p: h.digest for p, h in self._heads.items() if h.digest is not None}

    async def picture(self, person: bytes) -> tuple[str, bytes] | None:
        """(media type, bytes) of a person's picture, or None."""
        if person not in self.digests():
            return None
        return await self._store.run(lambda s: s.picture(person))

    async def set(self, data: bytes) -> Head:
        """Make ours from what the person chose, keep it, tell every linked device."""
        media_type, image = await asyncio.to_thread(make_picture, data)
        head = Head(self._next_time(), digest_of(image))
        await self._keep(self._me, head, (media_type, image))
        return head

    async def remove(self) -> None:
        """We have no picture any more; every linked device is told."""
        await self._keep(self._me, Head(self._next_time(), None), None)

    def _next_time(self) -> int:
        held = self._heads.get(self._me)
        return max(int(time.time()), held.set_at + 1 if held else 0)

    async def _keep(self, person: bytes, head: Head, picture: tuple[str, bytes] | None) -> None:
        await self._store.run(lambda s: s.put_picture(person, head.set_at, head.digest, picture))
        self._heads[person] = head
        self._events.publish("person.picture", identity=identity_text(person))
        if person == self._me:
            for key in self._links.linked():
                self._links.send(key, encode_head(head))

    def link_up(self, key: bytes) -> None:
        """A new link: our head, if we ever had a picture."""
        ours = self._heads.get(self._me)
        if ours is not None:
            self._links.send(key, encode_head(ours))

    def link_down(self, key: bytes) -> None:
        """A link ended: forget what we asked on it."""
        self._asked.pop(key, None)
        self._budget.pop(key, None)

    async def on_message(self, key: bytes, body: dict[int, Any]) -> None:
        """A head, want or picture from a linked device; a malformed one drops the peer."""
        try:
            message = decode_picture_message(body)
        except BadPictureMessage as exc:
            self._links.drop_misbehaving(key, f"bad picture message: {exc}")
            return
        person = self._person_of(key)
        if isinstance(message, Head):
            if newer(self._heads.get(person), message):
                if message.digest is None:
                    await self._keep(person, message, None)
                else:
                    self._asked[key] = message
                    self._links.send(key, {0: T_PICTURE_WANT, 1: message.digest})
        elif isinstance(message, Want):
            ours = self._heads.get(self._me)
            if ours is not None and ours.digest == message.digest:
                held = await self._store.run(lambda s: s.picture(self._me))
                if held is not None:
                    await self._links.send_paced(key, {0: T_PICTURE, 1: held[1]})
        else:
            await self._received(key, person, message)

    async def _received(self, key: bytes, person: bytes, message: Picture) -> None:
        asked = self._asked.get(key)
        if asked is None or asked.digest != digest_of(message.data):
            return  # not what we asked for (it changed since): the next head says
        del self._asked[key]
        bucket = self._budget.setdefault(key, TokenBucket(PICTURE_RATE, PICTURE_BURST))
        wait = bucket.take(1, time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)  # a peer changing its picture often is slowed down
        try:
            media_type = await asyncio.to_thread(check_picture, message.data)
        except BadPicture as exc:
            self._links.drop_misbehaving(key, f"bad picture: {exc}")
            return
        if newer(self._heads.get(person), asked):
            await self._keep(person, asked, (media_type, message.data))
