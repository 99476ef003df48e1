"""Photos: what kind they are, a thumbnail, and their location stripped (Pillow).

The location (EXIF GPS) is removed without re-encoding the image: for JPEG the
EXIF segment is rewritten in place, so every pixel stays exactly as taken.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from p2pmoments.core.errors import DecodeError

__all__ = ["THUMBNAIL_SIZE", "Photo", "prepare_photo"]

THUMBNAIL_SIZE = 320  # the longer side, in pixels
THUMBNAIL_QUALITY = 80
GPS_IFD = 0x8825
MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
MAX_PIXELS = 80_000_000  # refuse decompression bombs
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


@dataclass(frozen=True, slots=True, kw_only=True)
class Photo:
    """A photo ready to post."""

    data: bytes
    media_type: str
    width: int
    height: int
    thumbnail: bytes  # JPEG
    thumb_width: int
    thumb_height: int


def _strip_jpeg_gps(data: bytes) -> bytes:
    """The JPEG with the GPS part of its EXIF removed; the image data is untouched."""
    if data[:2] != b"\xff\xd8":
        return data
    out, pos = bytearray(data[:2]), 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan: the rest is image data
            break
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        segment = data[pos : pos + 2 + length]
        if marker == 0xE1 and segment[4:10] == b"Exif\x00\x00":
            exif = Image.Exif()
            exif.load(segment[10:])
            if GPS_IFD in exif:
                del exif[GPS_IFD]
                payload = b"Exif\x00\x00" + exif.tobytes()
                segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
        out += segment
        pos += 2 + length
    out += data[pos:]
    return bytes(out)


def prepare_photo(data: bytes, *, keep_location: bool = False) -> Photo:
    """Check an image, strip its location unless asked not to, and make a thumbnail."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise DecodeError(f"this is not a photo that can be read: {exc}") from None
    media_type = MEDIA_TYPES.get(image.format or "")
    if media_type is None:
        raise DecodeError(f"{image.format} images are not supported; send it as a file")
    if not keep_location:
        if image.format == "JPEG":
            data = _strip_jpeg_gps(data)
        elif GPS_IFD in image.getexif():
            exif = image.getexif()
            del exif[GPS_IFD]
            out = io.BytesIO()
            image.save(out, format=image.format, exif=exif.tobytes())  # lossless formats
            data = out.getvalue()
    upright = ImageOps.exif_transpose(image)
    thumb = upright.convert("RGB")
    thumb.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=THUMBNAIL_QUALITY)  # no EXIF at all
    return Photo(
        data=data,
        media_type=media_type,
        width=upright.width,
        height=upright.height,
        thumbnail=out.getvalue(),
        thumb_width=thumb.width,
        thumb_height=thumb.height,
    )
