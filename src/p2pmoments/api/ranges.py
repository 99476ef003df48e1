"""HTTP range requests for photos and files (RFC 9110 section 14): one byte range, so a
page can seek in a video. Pure: a header and a size in, a range or a refusal out."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MAX_RANGE_HEADER", "ByteRange", "RangeNotSatisfiable", "parse_range"]

MAX_RANGE_HEADER = 200  # longer: not one range we serve (served whole)
_ONE = re.compile(r"bytes=([0-9]{0,19})-([0-9]{0,19})", re.ASCII)


@dataclass(frozen=True, slots=True, kw_only=True)
class ByteRange:
    """Bytes first to last, both included, of a representation of `size` bytes."""

    first: int
    last: int
    size: int

    @property
    def length(self) -> int:
        """How many bytes it holds."""
        return self.last - self.first + 1

    def content_range(self) -> str:
        """Its Content-Range header."""
        return f"bytes {self.first}-{self.last}/{self.size}"


class RangeNotSatisfiable(ValueError):
    """A well-formed range that lies wholly past the end (answer 416)."""


def parse_range(header: str, size: int) -> ByteRange | None:
    """The one range a Range header asks of `size` bytes; None to send it whole (no
    range, several ranges, another unit, or a malformed header: RFC 9110 14.2 lets a
    server ignore it); RangeNotSatisfiable for a range past the end."""
    if len(header) > MAX_RANGE_HEADER:
        return None
    match = _ONE.fullmatch(header.strip())
    if match is None or (not match[1] and not match[2]):
        return None
    if not match[1]:  # the last N bytes
        suffix = int(match[2])
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable("an empty suffix")
        return ByteRange(first=max(0, size - suffix), last=size - 1, size=size)
    first = int(match[1])
    last = int(match[2]) if match[2] else None
    if last is not None and last < first:
        return None  # invalid: ignored, as RFC 9110 14.1.1 says
    if first >= size:
        raise RangeNotSatisfiable(f"byte {first} is past the end ({size} bytes)")
    last = size - 1 if last is None else last
    return ByteRange(first=first, last=min(last, size - 1), size=size)
