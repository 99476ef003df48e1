"""Profile pictures on links (spec/identity.md section 5): the three messages and the
rule of which picture of a person we keep. Pure: what the bytes of a picture are is
checked by pictures.py (Pillow), never here.

    head    {0: 31, 1: set at (Unix seconds), 2: SHA-256 of the picture}  (no 2: none)
    want    {0: 32, 1: SHA-256}
    picture {0: 33, 1: the picture's bytes}
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from p2pmoments.core.errors import DecodeError

__all__ = [
    "MAX_PICTURE",
    "MAX_SET_AT",
    "PICTURE_MESSAGES",
    "T_PICTURE",
    "T_PICTURE_HEAD",
    "T_PICTURE_WANT",
    "BadPictureMessage",
    "Head",
    "Picture",
    "Want",
    "decode_picture_message",
    "digest_of",
    "encode_head",
    "newer",
]

T_PICTURE_HEAD, T_PICTURE_WANT, T_PICTURE = 31, 32, 33
PICTURE_MESSAGES = frozenset({T_PICTURE_HEAD, T_PICTURE_WANT, T_PICTURE})
MAX_PICTURE = 64 * 1024  # bytes of one picture, encoded
MAX_SET_AT = 2**53  # any Unix second, bounded
DIGEST_LEN = 32


class BadPictureMessage(DecodeError):
    """A picture message that is not exactly one of the three."""


@dataclass(frozen=True, slots=True)
class Head:
    """The sender's person's picture was set (digest) or removed (None) at `set_at`."""

    set_at: int
    digest: bytes | None


@dataclass(frozen=True, slots=True)
class Want:
    """Send me the picture of this digest."""

    digest: bytes


@dataclass(frozen=True, slots=True)
class Picture:
    """A picture's bytes (unchecked: pictures.py decodes them)."""

    data: bytes


def digest_of(data: bytes) -> bytes:
    """The SHA-256 a head names a picture by."""
    return hashlib.sha256(data).digest()


def _digest(value: object) -> bytes:
    if type(value) is not bytes or len(value) != DIGEST_LEN:
        raise BadPictureMessage("a picture digest is 32 bytes")
    return value


def decode_picture_message(body: Mapping[int, Any]) -> Head | Want | Picture:
    """One of the three messages; BadPictureMessage if it is malformed."""
    kind = body.get(0)
    if kind == T_PICTURE_HEAD and set(body) in ({0, 1}, {0, 1, 2}):
        set_at = body[1]
        if type(set_at) is not int or not 0 <= set_at <= MAX_SET_AT:
            raise BadPictureMessage("a picture head's time is out of range")
        return Head(set_at, _digest(body[2]) if 2 in body else None)
    if kind == T_PICTURE_WANT and set(body) == {0, 1}:
        return Want(_digest(body[1]))
    if kind == T_PICTURE and set(body) == {0, 1}:
        data = body[1]
        if type(data) is not bytes or not 0 < len(data) <= MAX_PICTURE:
            raise BadPictureMessage(f"a picture is 1 to {MAX_PICTURE} bytes")
        return Picture(data)
    raise BadPictureMessage("malformed picture message")


def encode_head(head: Head) -> dict[int, Any]:
    """The head message of `head`."""
    body: dict[int, Any] = {0: T_PICTURE_HEAD, 1: head.set_at}
    if head.digest is not None:
        body[2] = head.digest
    return body


def newer(held: Head | None, heard: Head) -> bool:
    """Whether a heard head replaces the one we hold: the later `set_at` wins; at the
    same second, a picture over none and the larger digest (so every device agrees)."""
    if held is None:
        return True
    if heard.set_at != held.set_at:
        return heard.set_at > held.set_at
    return (heard.digest or b"") > (held.digest or b"")
