"""Photos: what kind they are, a thumbnail, and their location stripped (Pillow).

The location (EXIF GPS) is removed without re-encoding the image: for JPEG the
EXIF segment is rewritten in place, so every pixel stays exactly as taken.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from p2pmoments.errors import UserInputError

__all__ = ["HEIC_READER", "THUMBNAIL_SIZE", "Photo", "prepare_photo"]

THUMBNAIL_SIZE = 320  # the longer side, in pixels
THUMBNAIL_QUALITY = 80
GPS_IFD = 0x8825
ORIENTATION = 0x0112
# EXIF orientation -> what makes the image upright (as PIL.ImageOps.exif_transpose does).
TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
PRE_THUMBNAIL = 4 * THUMBNAIL_SIZE
MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
MAX_PIXELS = 80_000_000  # refuse decompression bombs
# Pillow's own check warns from its limit and refuses only from twice it (issue 10): the
# check in prepare_photo refuses from MAX_PIXELS, read from the header before any pixel
# is decoded, so Pillow's is off and its warning stays out of the daemon's log.
Image.MAX_IMAGE_PIXELS = None
# HEIC/HEIF (iPhones' photos) are read with pillow-heif when it is installed, and posted
# as JPEG: a photo is served only as one of four image types (spec/moments.md 4.5).
try:
    import pillow_heif
except ImportError:  # pragma: no cover - a platform without its wheel
    HEIC_READER = False
else:
    pillow_heif.register_heif_opener()
    HEIC_READER = True
HEIC_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")
HEIC_QUALITY = 90


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


def _as_jpeg(
    image: Image.Image, *, keep_location: bool, unreadable: str
) -> tuple[bytes, Image.Image]:
    """A HEIC photo as a JPEG (libheif has already turned it upright), its EXIF kept but
    its location, unless asked; and the JPEG opened, to be checked as any other."""
    try:
        exif = image.getexif()
        if not keep_location and GPS_IFD in exif:
            del exif[GPS_IFD]
        exif[ORIENTATION] = 1  # upright already: no viewer may turn it again
        out = io.BytesIO()
        image.convert("RGB").save(out, format="JPEG", quality=HEIC_QUALITY, exif=exif.tobytes())
        converted = out.getvalue()
        return converted, Image.open(io.BytesIO(converted))
    except Exception:  # a decoder error on hostile bytes is the sender's
        raise UserInputError(unreadable) from None


def prepare_photo(data: bytes, *, keep_location: bool = False, label: str = "") -> Photo:
    """Check an image, strip its location unless asked not to, and make a thumbnail.

    Its size is checked from its header before a pixel is decoded; a JPEG is decoded at
    the smallest scale the thumbnail allows (every byte is still read and checked), so
    at most one full-size image (4 bytes a pixel, MAX_PIXELS) is held, for other formats.
    `label` names the photo in errors ("photo 2")."""
    # Said to a person: what is wrong and what to do, never which library found it.
    unreadable = (
        f"{label} is not a picture (a photo is a JPEG, PNG, WebP or GIF): send it as a file"
        if label
        else "this is not a picture (a photo is a JPEG, PNG, WebP or GIF): send it as a file"
    )
    label = label or "this photo"
    heic = data[4:8] == b"ftyp" and data[8:12] in HEIC_BRANDS
    if heic and not HEIC_READER:
        raise UserInputError(
            f"{label} is a HEIC photo (as iPhones take): reading it needs pillow-heif, "
            "which is not installed with this daemon (pip install pillow-heif); "
            "send it as a file, or as a JPEG"
        )
    try:
        image: Image.Image = Image.open(io.BytesIO(data))
        media_type = MEDIA_TYPES.get(image.format or "")
        width, height = image.size
    except Exception:  # whatever Pillow makes of hostile bytes
        raise UserInputError(unreadable) from None
    if image.format in ("HEIF", "AVIF") and width * height <= MAX_PIXELS:
        data, image = _as_jpeg(image, keep_location=keep_location, unreadable=unreadable)
        media_type = "image/jpeg"
    if media_type is None:
        raise UserInputError(f"{label} is a {image.format} image, not supported: send it as a file")
    if width * height > MAX_PIXELS:
        raise UserInputError(
            f"{label} is {width}×{height} pixels ({width * height / 1e6:.0f} megapixels), more "
            f"than the {MAX_PIXELS // 1_000_000} megapixels a photo may have: send it as a file"
        )
    try:
        if image.format == "JPEG":
            image.draft("RGB", (THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        image.load()
        exif = image.getexif()
        if not keep_location and image.format != "JPEG" and GPS_IFD in exif:
            del exif[GPS_IFD]
            out = io.BytesIO()
            image.save(out, format=image.format, exif=exif.tobytes())  # lossless formats
            data = out.getvalue()
        orientation = exif.get(ORIENTATION, 1)
        upright = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
        if image.mode in ("RGBA", "LA") and max(image.size) > PRE_THUMBNAIL:
            # Pillow resizes these through a full-size copy with premultiplied alpha:
            # a nearest-neighbour step to a few times the thumbnail's size comes first.
            scale = PRE_THUMBNAIL / max(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.NEAREST)  # the full size is freed
        image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))  # in place: the full size is freed
        thumb = image.convert("RGB")
        if orientation in TRANSPOSE:
            thumb = thumb.transpose(TRANSPOSE[orientation])
        out = io.BytesIO()
        thumb.save(out, format="JPEG", quality=THUMBNAIL_QUALITY)  # no EXIF at all
    except Exception:  # a decoder error on hostile bytes is the sender's
        raise UserInputError(unreadable) from None
    if not keep_location and media_type == "image/jpeg":
        data = _strip_jpeg_gps(data)
    return Photo(
        data=data,
        media_type=media_type,
        width=upright[0],
        height=upright[1],
        thumbnail=out.getvalue(),
        thumb_width=thumb.width,
        thumb_height=thumb.height,
    )
