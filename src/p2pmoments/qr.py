"""Pairing QR codes with segno: terminal, SVG and PNG (spec/pairing.md section 4)."""

from __future__ import annotations

import io

import segno

from p2pmoments.core.errors import P2PMomentsError

__all__ = [
    "QrDecodeError",
    "decode_image",
    "render_png",
    "render_svg",
    "render_terminal",
    "version",
]

# Phones scan a code from a screen easily at version 10 or below, error
# correction M, at least 4 px a module, with a 4-module quiet zone.
ERROR = "m"
PNG_SCALE = 8
BORDER = 4
MAX_PIXELS = 50_000_000  # a photo of a code; more is a decompression bomb


class QrDecodeError(P2PMomentsError):
    """No pairing code could be read from an image."""


def _make(text: str) -> segno.QRCode:
    return segno.make(text, error=ERROR, micro=False, boost_error=False)


def version(text: str) -> int:
    """The QR version (size) the text needs at our error correction level."""
    return int(_make(text).version)


def render_svg(text: str) -> bytes:
    """An SVG image of the QR code."""
    out = io.BytesIO()
    _make(text).save(out, kind="svg", scale=PNG_SCALE, border=BORDER, xmldecl=True)
    return out.getvalue()


def render_png(text: str) -> bytes:
    """A PNG image of the QR code."""
    out = io.BytesIO()
    _make(text).save(out, kind="png", scale=PNG_SCALE, border=BORDER)
    return out.getvalue()


def render_terminal(text: str) -> str:
    """The QR code as text, two modules per character row, for a terminal."""
    qr = _make(text)
    rows = [[bool(v) for v in row] for row in qr.matrix_iter(scale=1, border=BORDER)]
    if len(rows) % 2:
        rows.append([False] * len(rows[0]))
    chars = {
        (False, False): " ",
        (True, False): "\u2580",
        (False, True): "\u2584",
        (True, True): "\u2588",
    }
    lines = [
        "".join(chars[(top, bottom)] for top, bottom in zip(rows[i], rows[i + 1], strict=True))
        for i in range(0, len(rows), 2)
    ]
    # Dark modules as light text would invert the code: draw dark-on-light explicitly.
    return "\n".join(f"\x1b[30;47m{line}\x1b[0m" for line in lines)


def decode_image(data: bytes) -> list[str]:
    """The texts of every QR code in an image."""
    import zxingcpp
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_PIXELS:  # checked before decoding a pixel
            raise QrDecodeError(f"this image is too large ({image.width}×{image.height})")
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError):
        raise QrDecodeError(
            "this is not an image that can be read (a photo or screenshot: PNG, JPEG, …)"
        ) from None
    results = zxingcpp.read_barcodes(image)
    return [r.text for r in results if r.format == zxingcpp.BarcodeFormat.QRCode]
