"""Pairing with any device of a person (spec/devices.md section 8.1), sans-I/O.

A pairing code names the person P and the link key of the device that shows it. When
the device on the other end of a pairing link is not P itself, it introduces its person
with one message: P's own link key and P's signature over it (identity.md section 2:
what a friend's record of P holds), and P's roster, which must make the device a
current device of P with the link key that answered. Only then is P a friend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from p2pmoments.core.crypto import BadSignatureError, LinkPublicKey, VerifyKey
from p2pmoments.core.device_entries import MAX_ENTRY, RosterError, bytes32, decode_entry
from p2pmoments.core.devices import MAX_ENTRIES, Entry, Roster
from p2pmoments.core.identity import PublicIdentity

__all__ = [
    "T_INTRODUCTION",
    "Introduction",
    "IntroductionError",
    "check_introduction",
    "decode_introduction",
    "encode_introduction",
]

# {0: 36, 1: P's link key, 2: P's link-key signature, 3: [P's roster, signed entries]}
T_INTRODUCTION = 36


class IntroductionError(RosterError):
    """An introduction that is malformed, or does not make its sender the person's."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Introduction:
    """What a device other than its person's first says of its person on a pairing link."""

    link_key: bytes  # P's own link key, which friends pin
    link_signature: bytes  # P's signature over it (identity.md section 2)
    entries: tuple[bytes, ...]  # P's roster, as signed


def encode_introduction(
    link_key: bytes, link_signature: bytes, entries: Sequence[bytes]
) -> dict[int, Any]:
    """The link message introducing our person (spec/devices.md section 8.1)."""
    return {0: T_INTRODUCTION, 1: link_key, 2: link_signature, 3: list(entries)}


def decode_introduction(body: dict[int, Any]) -> Introduction:
    """An introduction's fields, checked for shape only; IntroductionError if malformed."""
    if type(body) is not dict or set(body) != {0, 1, 2, 3} or body[0] != T_INTRODUCTION:
        raise IntroductionError("malformed introduction")
    try:
        link_key = bytes32(body[1], "link key")
    except RosterError as exc:
        raise IntroductionError(str(exc)) from None
    signature, entries = body[2], body[3]
    if type(signature) is not bytes or len(signature) != 64:
        raise IntroductionError("an introduction's signature must be 64 bytes")
    if (
        type(entries) is not list
        or not 0 < len(entries) <= MAX_ENTRIES
        or not all(type(e) is bytes and len(e) <= MAX_ENTRY for e in entries)
    ):
        raise IntroductionError("malformed introduction roster")
    return Introduction(link_key=link_key, link_signature=signature, entries=tuple(entries))


def check_introduction(
    intro: Introduction, *, person: bytes, device: bytes, device_link: bytes
) -> list[Entry]:
    """The roster's entries if `intro` makes `device` (which answered with `device_link`)
    a current device of `person` and vouches for P's own link key; else
    IntroductionError. A roster that does not decode or verify is refused whole."""
    try:
        PublicIdentity(
            verify_key=VerifyKey(person),
            link_key=LinkPublicKey(intro.link_key),
            link_signature=intro.link_signature,
        ).verify()
    except (BadSignatureError, ValueError):
        raise IntroductionError("the person does not vouch for that link key") from None
    try:
        entries = [decode_entry(raw) for raw in intro.entries]
    except RosterError as exc:
        raise IntroductionError(f"a roster entry does not verify: {exc}") from None
    if any(e.person != person for e in entries):
        raise IntroductionError("a roster entry of another person")
    roster = Roster(person)
    roster.apply_all(entries)
    if device == person or roster.link_key(device) != device_link:
        raise IntroductionError("the device is not a current device of that person")
    first = roster.link_key(person)
    if first is not None and first != intro.link_key:
        raise IntroductionError("the person's link key is not the one their roster names")
    return entries
