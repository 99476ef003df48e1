"""Test photos with a known location in their EXIF."""

from __future__ import annotations

import io

from PIL import Image

from p2pmoments.media import GPS_IFD


def photo_with_location(width: int = 1200, height: int = 800, fmt: str = "JPEG") -> bytes:
    image = Image.effect_noise((width, height), 60).convert("RGB")
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    gps = exif.get_ifd(GPS_IFD)
    gps[1], gps[2] = "N", (48.0, 51.0, 29.0)
    gps[3], gps[4] = "E", (2.0, 17.0, 40.0)
    out = io.BytesIO()
    image.save(out, format=fmt, exif=exif.tobytes(), **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


def has_location(data: bytes) -> bool:
    return GPS_IFD in Image.open(io.BytesIO(data)).getexif()


def pixels(data: bytes) -> bytes:
    return Image.open(io.BytesIO(data)).convert("RGB").tobytes()
