"""Text forms of identities, circles and moments, with a check (spec/ids.md).

A text id is the RFC 4648 base32 form, lowercase and unpadded, of the 32 raw
bytes followed by a 3-byte check: BLAKE2b over the raw bytes, personalised
with the kind. 35 bytes make exactly 56 characters. A typo, a swapped pair of
characters or an id of another kind fails the check.
"""

from __future__ import annotations

import base64
import enum
import hashlib

from p2pmoments.core.errors import DecodeError

__all__ = ["ID_LEN", "TEXT_LEN", "IdKind", "decode_id", "encode_id"]

ID_LEN = 32
CHECK_LEN = 3
TEXT_LEN = 56  # (ID_LEN + CHECK_LEN) * 8 / 5


class IdKind(enum.Enum):
    """What an id names; each kind has its own check, so kinds cannot be confused."""

    IDENTITY = b"p2pm-id-identity"
    CIRCLE = b"p2pm-id-circle"
    MOMENT = b"p2pm-id-moment"


def _check(raw: bytes, kind: IdKind) -> bytes:
    return hashlib.blake2b(raw, digest_size=CHECK_LEN, person=kind.value).digest()


_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
# Two base32 characters a table lookup: the standard library's b32encode loops in Python
# over every 5 bytes, and a catch-up names 10,000 moments in its events.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_MASK = (1 << 10) - 1


def encode_id(raw: bytes, kind: IdKind) -> str:
    """The 56-character text form of a 32-byte id."""
    if not isinstance(raw, bytes) or len(raw) != ID_LEN:
        raise ValueError(f"an id is {ID_LEN} bytes")
    n = int.from_bytes(raw + _check(raw, kind), "big")  # 280 bits: 28 pairs of characters
    return "".join([_PAIRS[(n >> shift) & _MASK] for shift in range(270, -1, -10)])


def decode_id(text: str, kind: IdKind) -> bytes:
    """The 32 raw bytes of a text id; spaces, dashes and case are ignored."""
    cleaned = "".join(text.split()).replace("-", "").upper()
    if len(cleaned) != TEXT_LEN:
        raise DecodeError(f"an id has {TEXT_LEN} characters, this one has {len(cleaned)}")
    try:
        data = base64.b32decode(cleaned)
    except ValueError:
        raise DecodeError("an id uses only the letters a-z and the digits 2-7") from None
    raw, check = data[:ID_LEN], data[ID_LEN:]
    if _check(raw, kind) != check:
        raise DecodeError(f"this is not a valid {kind.name.lower()} id (the check does not match)")
    return raw
