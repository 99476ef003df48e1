"""A circle's photos by date (spec/openapi.yaml, /circles/{ref}/photos): pages of
photos, newest first, and every photo that is here as one zip, streamed.

Read through the feed (`Moments.feed_page`): a page of photos is whole posts, cut at a
post with the feed's own cursor, so a post's photos are never split across pages.
"""

from __future__ import annotations

import asyncio
import io
import time
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO

from p2pmoments.core.blobs import BlobKind, BlobRef
from p2pmoments.moments import MAX_FEED, BlobReader, Moments, encode_cursor
from p2pmoments.views import MomentView

__all__ = ["MAX_PHOTO_PAGE", "MAX_SCAN", "GalleryPage", "GalleryPhoto", "photo_page", "zip_photos"]

MAX_PHOTO_PAGE = 1000  # photos in one page at most (plus the rest of the post it ends in)
MAX_SCAN = 2000  # posts read for one page at most: a circle of text alone ends a page early
ZIP_BATCH = 4 << 20  # plaintext read, decrypted and zipped off the loop at once
# A zip's dates run from 1980 to 2107; a post's time is its author's word (any uint).
ZIP_EPOCH, ZIP_END = 315532800, 4354819199
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif"}


@dataclass(frozen=True, slots=True, kw_only=True)
class GalleryPhoto:
    """One photo of a post, with the post it belongs to."""

    view: MomentView
    n: int  # from 1, among the post's photos
    ref: BlobRef
    held: int  # chunks here, its thumbnail's included


@dataclass(frozen=True, slots=True, kw_only=True)
class GalleryPage:
    """Photos newest first, and where the next page starts (None: this is the last)."""

    photos: list[GalleryPhoto]
    next_cursor: str | None


def _photos(view: MomentView) -> list[GalleryPhoto]:
    if view.moment is None:
        return []
    out: list[GalleryPhoto] = []
    for ref, held in zip(view.moment.content.blobs, view.held, strict=True):
        if ref.kind is BlobKind.PHOTO:
            out.append(GalleryPhoto(view=view, n=len(out) + 1, ref=ref, held=held))
    return out


async def photo_page(
    moments: Moments, circle_ref: str, limit: int, cursor: str | None
) -> GalleryPage:
    """At least `limit` photos unless it is the last page (whole posts: at most a post's
    photos more), reading at most MAX_SCAN posts."""
    photos: list[GalleryPhoto] = []
    scanned = 0
    while scanned < MAX_SCAN:
        page = await moments.feed_page(circle_ref, min(MAX_FEED, limit), cursor=cursor)
        for view in page.moments:
            scanned += 1
            photos += _photos(view)
            if len(photos) >= limit or scanned >= MAX_SCAN:
                last = view.row
                more = view is not page.moments[-1] or page.next_cursor is not None
                return GalleryPage(
                    photos=photos,
                    next_cursor=encode_cursor(last.created, last.moment_id) if more else None,
                )
        cursor = page.next_cursor
        if cursor is None:
            break
    return GalleryPage(photos=photos, next_cursor=cursor)


def _zip_time(photo: GalleryPhoto) -> int:
    return min(max(photo.view.row.created, ZIP_EPOCH), ZIP_END)


def zip_name(photo: GalleryPhoto) -> str:
    """A photo's name in the zip: when it was posted (UTC), which post, which photo. Made
    of nothing a peer chose but the time, so always a safe name."""
    stamp = time.strftime("%Y-%m-%d %H%M%S", time.gmtime(_zip_time(photo)))
    post = photo.view.row.moment_id.hex()[:8]
    return f"{stamp} {post} {photo.n}.{EXTENSIONS.get(photo.ref.media_type, 'bin')}"


class _Sink(io.RawIOBase):
    """Where the zip is written: taken out a batch at a time (not seekable, so zipfile
    writes each entry's sizes after its data)."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.buffer += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self.buffer)
        self.buffer.clear()
        return out


def _copy(reader: BlobReader, first: int, count: int, entry: IO[bytes]) -> None:
    for plain in reader.read_many(first, count):
        entry.write(plain)


async def zip_photos(moments: Moments, circle_ref: str) -> AsyncIterator[bytes]:
    """Every photo of a circle that is wholly here, newest first, as a zip (stored, not
    compressed: photos are compressed already), a batch of bytes at a time."""
    sink = _Sink()
    archive = zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED)
    cursor: str | None = None
    while True:  # bounded: each page moves the cursor on, to the circle's oldest post
        page = await photo_page(moments, circle_ref, MAX_FEED, cursor)
        for photo in page.photos:
            if photo.held < photo.ref.total():
                continue  # still arriving: not in the zip
            reader = await moments.open_blob(photo.ref)
            info = zipfile.ZipInfo(zip_name(photo), time.gmtime(_zip_time(photo))[:6])
            entry = archive.open(info, "w", force_zip64=photo.ref.size > 2**31)
            step = max(1, ZIP_BATCH // photo.ref.chunk_size)
            for first in range(0, len(reader.addresses), step):
                await asyncio.to_thread(_copy, reader, first, step, entry)
                yield sink.take()
            entry.close()
            yield sink.take()
        cursor = page.next_cursor
        if cursor is None:
            break
    archive.close()
    yield sink.take()
