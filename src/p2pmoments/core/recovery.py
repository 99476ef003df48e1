"""The recovery sheet (spec/devices.md section 5): its text, checked as hostile input, and
the keys made from it. Pure: no I/O and no clock.

A sheet carries the person P, a 32-byte secret S and P's link secret (the X25519 key
every circle seals the person's epoch keys to). From S come the recovery key R (which
outranks every device in the roster) and the sheet's own device, certified in the roster
when the sheet is made, which a new machine becomes when the person recovers.
"""

from __future__ import annotations

import base64
import hashlib
import string
from dataclasses import dataclass

from p2pmoments.core.crypto import LinkSecretKey, SigningKey
from p2pmoments.core.device_entries import blake, recovery_keys
from p2pmoments.core.errors import DecodeError
from p2pmoments.core.identity import Identity, link_key_message

__all__ = [
    "SHEET_PREFIX",
    "T_FRIENDSHIP",
    "RecoveryError",
    "RecoverySheet",
    "decode_friendship_message",
    "decode_sheet",
    "encode_friendship_message",
    "encode_sheet",
    "sheet_device",
    "sheet_lines",
]

SHEET_PREFIX = "P2PM-RECOVERY:1/"
CHECK_LEN = 5
MAX_SHEET_TEXT = 1024  # characters, spaces and line breaks included
_B32 = set(string.ascii_uppercase + "234567")


class RecoveryError(DecodeError):
    """A recovery sheet's text that does not decode: mistyped, cut, or not a sheet."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoverySheet:
    """What a recovery sheet holds; its repr shows only the person."""

    person: bytes
    secret: bytes
    person_link: bytes  # P's X25519 link secret

    def __repr__(self) -> str:
        return f"RecoverySheet(person={self.person.hex()[:12]}…)"

    def recovery_key(self) -> tuple[SigningKey, LinkSecretKey]:
        """R: its signing key and its link key (spec/devices.md section 5.1)."""
        signing, link, _ = recovery_keys(self.secret)
        return signing, link


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=")


def _check(text: str) -> str:
    digest = hashlib.blake2b(
        text.encode("ascii"), digest_size=CHECK_LEN, person=b"p2pm-recovery"
    ).digest()
    return _b32(digest)


def encode_sheet(sheet: RecoverySheet) -> str:
    """The sheet as one line: P2PM-RECOVERY:1/<P>/<S>/<P's link secret>/<CHECK>."""
    for value in (sheet.person, sheet.secret, sheet.person_link):
        if len(value) != 32:
            raise ValueError("every part of a recovery sheet is 32 bytes")
    body = SHEET_PREFIX + "/".join(_b32(v) for v in (sheet.person, sheet.secret, sheet.person_link))
    return f"{body}/{_check(body)}"


def sheet_lines(text: str, group: int = 4, per_line: int = 8) -> list[str]:
    """The sheet's text in groups of `group` characters, `per_line` groups a line: what
    is printed for a person to copy by hand (the decoder ignores the spaces)."""
    groups = [text[i : i + group] for i in range(0, len(text), group)]
    return [" ".join(groups[i : i + per_line]) for i in range(0, len(groups), per_line)]


def _field(text: str, what: str) -> bytes:
    if len(text) != 52 or not set(text) <= _B32:
        raise RecoveryError(f"the {what} is not 52 characters of base32 (A-Z, 2-7)")
    try:
        raw = base64.b32decode(text + "=" * 4)
    except ValueError:
        raise RecoveryError(f"the {what} is not valid base32") from None
    if _b32(raw) != text:  # non-canonical trailing bits
        raise RecoveryError(f"the {what} is not valid base32")
    return raw


def decode_sheet(text: object) -> RecoverySheet:
    """A sheet from its text, as typed back or read from its file: spaces, line breaks
    and case do not matter; a typo fails the check. RecoveryError if it does not decode."""
    if not isinstance(text, str):
        raise RecoveryError("a recovery sheet is text")
    if len(text) > MAX_SHEET_TEXT:
        raise RecoveryError("too long for a recovery sheet")
    compact = "".join(text.split()).upper()
    if not compact.startswith(SHEET_PREFIX):
        raise RecoveryError(f"a recovery sheet starts with {SHEET_PREFIX}")
    parts = compact[len(SHEET_PREFIX) :].split("/")
    if len(parts) != 4:
        raise RecoveryError("a recovery sheet has four parts after its prefix")
    body, check = compact.rsplit("/", 1)
    if check != _check(body):
        raise RecoveryError("the sheet's check does not match: a character is mistyped")
    names = ("person", "secret", "key")
    person, secret, link = (_field(p, w) for p, w in zip(parts[:3], names, strict=True))
    return RecoverySheet(person=person, secret=secret, person_link=link)


def sheet_device(secret: bytes) -> Identity:
    """The sheet's own device: its signing and link keys come from the secret, so a
    new machine given the sheet is that device (spec/devices.md section 5.3)."""
    if len(secret) != 32:
        raise ValueError("a recovery secret is 32 bytes")
    signing = SigningKey(blake(secret, b"p2pm-rec-device"))
    link = LinkSecretKey(blake(secret, b"p2pm-rec-devlnk"))
    signature = signing.sign(link_key_message(signing.verify_key, link.public_key))
    return Identity(signing_key=signing, link_secret=link, link_signature=signature)


# --- the friendship message (spec/devices.md section 5.3) ------------------------------

T_FRIENDSHIP = 30  # {0: 30}: "I count your person as my friend", to a device of a friend


def encode_friendship_message() -> dict[int, object]:
    """What a daemon tells a device of a friend at link-up."""
    return {0: T_FRIENDSHIP}


def decode_friendship_message(body: object) -> None:
    """RecoveryError unless `body` is exactly the friendship message."""
    if not isinstance(body, dict) or body != {0: T_FRIENDSHIP}:
        raise RecoveryError("a friendship message is {0: 30} and nothing else")
