"""Roster entries: their bytes, checked as hostile input, and signed (spec/devices.md §2, §4,
§5.1). Pure: no I/O and no clock. The roster's state is core.devices."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from p2pmoments.core import wire
from p2pmoments.core.crypto import BadSignatureError, LinkSecretKey, SigningKey, VerifyKey
from p2pmoments.core.errors import DecodeError
from p2pmoments.core.profile import check_display_name

__all__ = [
    "MAX_CUTOFFS",
    "MAX_ENTRY",
    "MAX_MESSAGE_ENTRIES",
    "MAX_PARENTS",
    "ROSTER_CONTEXT",
    "T_ROSTER",
    "VERSION",
    "Entry",
    "EntryKind",
    "RosterError",
    "blake",
    "bytes32",
    "consent_message",
    "decode_entry",
    "decode_roster_message",
    "encode_roster_message",
    "manifests_scope",
    "name_field",
    "ops_scope",
    "parents_field",
    "recovery_keys",
    "scope_tag",
    "sign_entry",
    "signed_body",
    "uint_field",
    "verify_by",
]

VERSION = 1
ROSTER_CONTEXT = b"p2pmoments/roster/1\x00"
CONSENT_CONTEXT = b"p2pmoments/device/1\x00"
MAX_ENTRY = 16 * 1024
MAX_PARENTS = 16
MAX_CUTOFFS = 512
TAG_LEN = 16


class RosterError(DecodeError):
    """A roster entry or circle op that must not be kept: malformed, forged, or not ours."""


def blake(data: bytes, person: bytes, *, key: bytes = b"", size: int = 32) -> bytes:
    return hashlib.blake2b(data, digest_size=size, key=key, person=person).digest()


def consent_message(person: bytes, device: bytes, link: bytes) -> bytes:
    """What a device signs to agree to be `person`'s, with its link key (§2)."""
    return CONSENT_CONTEXT + person + device + link


def scope_tag(device: bytes, scope: bytes) -> bytes:
    """A cut-off's tag: only those who know the scope (a circle) recognise it (§4)."""
    return blake(device, b"p2pm-cutoff", key=scope, size=TAG_LEN)


def ops_scope(circle_id: bytes) -> bytes:
    """The scope id of the owner's edits of a circle (§4)."""
    return blake(circle_id, b"p2pm-circle-ops")


def manifests_scope(circle_id: bytes) -> bytes:
    """The scope id of a circle's manifests, sequenced by epoch (§4)."""
    return blake(circle_id, b"p2pm-circle-mfs")


def recovery_keys(secret: bytes) -> tuple[SigningKey, LinkSecretKey, bytes]:
    """R's signing key, R's link key and the backup key, from the recovery secret (§5.1)."""
    if len(secret) != 32:
        raise ValueError("a recovery secret is 32 bytes")
    return (
        SigningKey(blake(secret, b"p2pm-rec-sign")),
        LinkSecretKey(blake(secret, b"p2pm-rec-link")),
        blake(secret, b"p2pm-rec-backup"),
    )


# --- roster entries (§2) ---------------------------------------------------------------


class EntryKind(enum.IntEnum):
    """What a roster entry does."""

    ADD = 1
    REVOKE = 2
    RENAME = 3
    SET_RECOVERY = 4
    SET_BOX = 5


# The kind-specific keys of each kind: a decoder refuses any other.
_ENTRY_KEYS = {
    EntryKind.ADD: {7, 8, 9, 10},
    EntryKind.REVOKE: {7, 11},
    EntryKind.RENAME: {7, 9},
    EntryKind.SET_RECOVERY: {12, 13},
    EntryKind.SET_BOX: {14},
}
_COMMON = {1, 2, 3, 4, 5, 6}


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """A verified roster entry."""

    id: bytes
    person: bytes
    parents: tuple[bytes, ...]
    kind: EntryKind
    signer: bytes
    time: int
    device: bytes = b""  # add, revoke, rename
    link: bytes = b""  # add
    name: str = ""  # add, rename
    cutoffs: tuple[tuple[bytes, int], ...] = ()  # revoke
    key: bytes = b""  # set-recovery: R's Ed25519 key; set-box-key: B
    recovery_link: bytes = b""  # set-recovery
    raw: bytes = field(repr=False)


def bytes32(value: object, what: str) -> bytes:
    if type(value) is not bytes or len(value) != 32:
        raise RosterError(f"malformed {what}")
    return value


def uint_field(value: object, what: str) -> int:
    if type(value) is not int or value < 0:
        raise RosterError(f"malformed {what}")
    return value


def name_field(value: object) -> str:
    if type(value) is not str:
        raise RosterError("malformed name")
    try:
        if check_display_name(value) != value:
            raise RosterError("a name must be sent in its normal form")
    except DecodeError as exc:
        raise RosterError(f"bad name: {exc}") from None
    return value


def parents_field(value: object) -> tuple[bytes, ...]:
    if type(value) is not list or len(value) > MAX_PARENTS:
        raise RosterError("malformed parents")
    parents = tuple(bytes32(p, "parent") for p in value)
    if list(parents) != sorted(set(parents)):
        raise RosterError("parents not sorted, or repeated")
    return parents


def signed_body(data: bytes, max_size: int, what: str) -> tuple[dict[int, Any], bytes, bytes]:
    """(body fields, body, signature) of {1: body, 2: signature}; the caller checks the
    signature (each structure has its own context and signer)."""
    try:
        outer = wire.decode_map(data, max_size=max_size)
        body, signature = outer.get(1), outer.get(2)
        if set(outer) != {1, 2} or type(body) is not bytes or type(signature) is not bytes:
            raise RosterError(f"malformed {what}")
        fields = wire.decode_map(body, max_size=max_size)
    except RosterError:
        raise
    except DecodeError as exc:
        raise RosterError(f"too large or malformed {what}: {exc}") from None
    if fields.get(1) != VERSION:
        raise RosterError(f"unknown {what} version {fields.get(1)!r}")
    return fields, body, signature


def verify_by(signer: bytes, message: bytes, signature: bytes, what: str) -> None:
    try:
        VerifyKey(signer).verify(message, signature)
    except BadSignatureError:
        raise RosterError(f"the {what} is not signed by its signer") from None


def decode_entry(data: bytes) -> Entry:
    """A verified roster entry; RosterError if malformed, oversized or forged."""
    fields, body, signature = signed_body(data, MAX_ENTRY, "roster entry")
    kind_raw = fields.get(4)
    if type(kind_raw) is not int or kind_raw not in EntryKind._value2member_map_:
        raise RosterError("unknown kind of roster entry")
    kind = EntryKind(kind_raw)
    if set(fields) != _COMMON | _ENTRY_KEYS[kind]:
        raise RosterError("missing or unknown fields for its kind")
    person, signer = bytes32(fields[2], "person"), bytes32(fields[5], "signer")
    parents = parents_field(fields[3])
    extra: dict[str, Any] = {}
    if kind in (EntryKind.ADD, EntryKind.REVOKE, EntryKind.RENAME):
        extra["device"] = bytes32(fields[7], "device")
    if kind in (EntryKind.ADD, EntryKind.RENAME):
        extra["name"] = name_field(fields[9])
    if kind is EntryKind.ADD:
        extra["link"] = bytes32(fields[8], "link key")
        consent = fields[10]
        if type(consent) is not bytes or len(consent) != 64:
            raise RosterError("malformed consent")
        try:
            VerifyKey(extra["device"]).verify(
                consent_message(person, extra["device"], extra["link"]), consent
            )
        except BadSignatureError:
            raise RosterError("the device did not consent to this person") from None
    elif kind is EntryKind.REVOKE:
        extra["cutoffs"] = _cutoffs(fields[11])
    elif kind is EntryKind.SET_RECOVERY:
        extra["key"] = bytes32(fields[12], "recovery key")
        extra["recovery_link"] = bytes32(fields[13], "recovery link key")
    elif kind is EntryKind.SET_BOX:
        extra["key"] = bytes32(fields[14], "box key")
    verify_by(signer, ROSTER_CONTEXT + body, signature, "roster entry")
    return Entry(
        id=blake(data, b"p2pm-roster-id"),
        person=person,
        parents=parents,
        kind=kind,
        signer=signer,
        time=uint_field(fields[6], "time"),
        raw=data,
        **extra,
    )


def _cutoffs(value: object) -> tuple[tuple[bytes, int], ...]:
    if type(value) is not list or len(value) > MAX_CUTOFFS:
        raise RosterError("malformed cut-offs")
    out = []
    for item in value:
        if type(item) is not list or len(item) != 2:
            raise RosterError("malformed cut-off")
        tag, seq = item
        if type(tag) is not bytes or len(tag) != TAG_LEN:
            raise RosterError("malformed cut-off tag")
        out.append((tag, uint_field(seq, "cut-off")))
    tags = [t for t, _ in out]
    if tags != sorted(set(tags)):
        raise RosterError("cut-offs not sorted, or repeated")
    return tuple(out)


def sign_entry(
    signer: SigningKey,
    *,
    person: bytes,
    parents: Iterable[bytes],
    kind: EntryKind,
    time: int,
    device: bytes = b"",
    link: bytes = b"",
    name: str = "",
    consent: bytes = b"",
    cutoffs: Iterable[tuple[bytes, int]] = (),
    key: bytes = b"",
    recovery_link: bytes = b"",
) -> Entry:
    """Sign a roster entry of `kind` (its fields as §2 lists them), and decode it back."""
    body: dict[int, Any] = {
        1: VERSION,
        2: person,
        3: sorted(set(parents)),
        4: int(kind),
        5: bytes(signer.verify_key),
        6: time,
    }
    if kind in (EntryKind.ADD, EntryKind.REVOKE, EntryKind.RENAME):
        body[7] = device
    if kind is EntryKind.ADD:
        body[8], body[10] = link, consent
    if kind in (EntryKind.ADD, EntryKind.RENAME):
        body[9] = check_display_name(name)
    if kind is EntryKind.REVOKE:
        body[11] = [[t, s] for t, s in sorted(dict(cutoffs).items())]
    if kind is EntryKind.SET_RECOVERY:
        body[12], body[13] = key, recovery_link
    if kind is EntryKind.SET_BOX:
        body[14] = key
    encoded = wire.encode_map(body)
    signature = signer.sign(ROSTER_CONTEXT + encoded)
    return decode_entry(wire.encode_map({1: encoded, 2: signature}))


# --- the roster message (spec/devices.md section 8) ---------------------------------------

T_ROSTER = 24  # {0: 24, 1: person, 2: [signed entries]}, on a link
MAX_MESSAGE_ENTRIES = 1024


def encode_roster_message(person: bytes, entries: Iterable[bytes]) -> dict[int, Any]:
    """A link message carrying `person`'s roster entries (as signed, in roster order)."""
    return {0: T_ROSTER, 1: person, 2: list(entries)}


def decode_roster_message(body: dict[int, Any]) -> tuple[bytes, list[bytes]]:
    """(person, entries as signed) of a roster message; RosterError if it is malformed
    (each entry is decoded and verified apart)."""
    if set(body) != {0, 1, 2} or body[0] != T_ROSTER:
        raise RosterError("malformed roster message")
    person, entries = bytes32(body[1], "person"), body[2]
    if (
        type(entries) is not list
        or not 0 < len(entries) <= MAX_MESSAGE_ENTRIES
        or not all(type(e) is bytes and len(e) <= MAX_ENTRY for e in entries)
    ):
        raise RosterError("malformed roster entries")
    return person, entries
