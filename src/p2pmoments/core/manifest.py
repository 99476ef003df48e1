"""Manifests: a circle's members and rules at one epoch, signed by its owner, with the
epoch key sealed to each member; and removal notices (spec/moments.md sections 1, 7, 8).

Everything here is pure: callers pass in time, randomness comes from crypto.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from p2pmoments.core import wire
from p2pmoments.core.crypto import (
    BadSignatureError,
    CryptoError,
    LinkPublicKey,
    LinkSecretKey,
    VerifyKey,
    open_sealed,
    random_bytes,
    seal,
)
from p2pmoments.core.errors import NO_KEY_YET, DecodeError, RejectedError
from p2pmoments.core.identity import Identity
from p2pmoments.core.profile import check_display_name

__all__ = [
    "KEY_LEN",
    "MAX_MANIFEST",
    "MAX_MEMBERS",
    "MAX_REMOVAL",
    "Manifest",
    "Member",
    "Removal",
    "create_manifest",
    "create_removal",
    "decode_manifest",
    "decode_removal",
    "epoch_key",
    "field_of",
    "new_circle_id",
    "new_epoch_key",
    "signed_fields",
]

VERSION = 1
MANIFEST_CONTEXT = b"p2pmoments/manifest/1\x00"
REMOVAL_CONTEXT = b"p2pmoments/removal/1\x00"
MAX_MEMBERS = 151  # the owner and up to 150 friends
ALBUM, CONVERSATION = 1, 2  # key 10, the kind of circle (absent: an album)
MAX_MANIFEST = 64 * 1024
MAX_REMOVAL = 512
KEY_LEN = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    """A member of a circle: both public keys."""

    verify_key: VerifyKey
    link_key: LinkPublicKey


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """A circle's state at one epoch, as its owner signed it."""

    circle_id: bytes
    epoch: int
    name: str
    owner: VerifyKey
    members: tuple[Member, ...]
    members_can_post: bool
    created: int
    sealed_keys: tuple[bytes, ...]  # aligned with members
    raw: bytes  # the signed encoding: what travels and what is stored
    conversation: bool = False  # a chat (key 10 = 2), not an album (spec/moments.md 1.1)
    _member_keys: frozenset[bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Every received moment asks whether its author is a member: a set answers that.
        keys = frozenset(bytes(m.verify_key) for m in self.members)
        object.__setattr__(self, "_member_keys", keys)

    def is_member(self, key: VerifyKey) -> bool:
        """True if `key` is in this epoch's member list."""
        return bytes(key) in self._member_keys

    def may_post(self, key: VerifyKey) -> bool:
        """True if `key` may author posts in this epoch."""
        return key == self.owner or (self.members_can_post and self.is_member(key))

    def __repr__(self) -> str:
        return f"Manifest(name={self.name!r}, epoch={self.epoch}, members={len(self.members)})"


def _sorted_members(members: Sequence[Member]) -> list[Member]:
    unique = {bytes(m.verify_key): m for m in members}
    return [unique[k] for k in sorted(unique)]


def create_manifest(
    owner: Identity,
    *,
    circle_id: bytes,
    epoch: int,
    name: str,
    members: Sequence[Member],
    members_can_post: bool,
    created: int,
    key: bytes,
    conversation: bool = False,
) -> Manifest:
    """Sign a manifest for `members` (the owner is added), sealing `key` to each; a
    conversation's carries key 10 (an album's does not, as before: spec/moments.md 1.1)."""
    name = check_display_name(name)
    me = Member(verify_key=owner.public.verify_key, link_key=owner.public.link_key)
    everyone = _sorted_members([me, *members])
    if len(everyone) > MAX_MEMBERS:
        raise ValueError(f"a circle has at most {MAX_MEMBERS - 1} members besides its owner")
    if len(circle_id) != 32 or len(key) != KEY_LEN or epoch < 0:
        raise ValueError("bad circle id, key or epoch")
    fields: dict[int, Any] = {
        1: VERSION,
        2: circle_id,
        3: epoch,
        4: name,
        5: bytes(owner.public.verify_key),
        6: [[bytes(m.verify_key), bytes(m.link_key)] for m in everyone],
        7: members_can_post,
        8: created,
        9: [seal(m.link_key, key) for m in everyone],
    }
    if conversation:
        fields[10] = CONVERSATION
    body = wire.encode_map(fields)
    signature = owner.signing_key.sign(MANIFEST_CONTEXT + body)
    return decode_manifest(wire.encode_map({1: body, 2: signature}))


def field_of(fields: dict[int, Any], key: int, kind: type, what: str) -> Any:
    """A required field of exactly that type; RejectedError naming it otherwise."""
    value = fields.get(key)
    if type(value) is not kind:
        raise RejectedError(f"malformed: {what}")
    return value


def signed_fields(
    data: bytes, *, max_size: int, what: str, keys: int, optional: frozenset[int] = frozenset()
) -> tuple[bytes, bytes, dict[int, Any]]:
    """(body, signature, body fields) of a signed structure {1: body, 2: signature} whose
    body is a version-1 map with keys 1..`keys` (and any of `optional`); RejectedError
    naming `what` otherwise. The signature is the caller's to check (each has its own
    context and signer)."""
    try:
        outer = wire.decode_map(data, max_size=max_size)
        body, signature = outer.get(1), outer.get(2)
        if set(outer) != {1, 2} or type(body) is not bytes or type(signature) is not bytes:
            raise RejectedError(f"malformed {what}")
        fields = wire.decode_map(body, max_size=max_size)
    except RejectedError:
        raise
    except DecodeError as exc:
        raise RejectedError(f"too large or malformed {what}: {exc}") from None
    if fields.get(1) != VERSION or set(fields) - optional != set(range(1, keys + 1)):
        raise RejectedError(f"unknown {what} version or fields")
    return body, signature, fields


def decode_manifest(data: bytes) -> Manifest:
    """A verified manifest; RejectedError if malformed, oversized or not signed by its owner."""
    body, signature, fields = signed_fields(
        data, max_size=MAX_MANIFEST, what="manifest", keys=9, optional=frozenset({10})
    )
    kind = fields.get(10, ALBUM)
    if type(kind) is not int or kind not in (ALBUM, CONVERSATION):
        raise RejectedError("malformed: circle kind")
    circle_id = field_of(fields, 2, bytes, "circle id")
    epoch = field_of(fields, 3, int, "epoch")
    owner_raw = field_of(fields, 5, bytes, "owner")
    raw_members = field_of(fields, 6, list, "members")
    sealed = field_of(fields, 9, list, "sealed keys")
    if len(circle_id) != 32 or epoch < 0 or len(owner_raw) != 32:
        raise RejectedError("malformed manifest ids")
    if not 1 <= len(raw_members) <= MAX_MEMBERS or len(sealed) != len(raw_members):
        raise RejectedError("bad member list")
    members = []
    for entry in raw_members:
        if (
            type(entry) is not list
            or len(entry) != 2
            or not all(type(k) is bytes and len(k) == 32 for k in entry)
        ):
            raise RejectedError("malformed member")
        members.append(Member(verify_key=VerifyKey(entry[0]), link_key=LinkPublicKey(entry[1])))
    keys = [bytes(m.verify_key) for m in members]
    if keys != sorted(set(keys)):
        raise RejectedError("members not in order, or repeated")
    if not all(type(s) is bytes and len(s) == KEY_LEN + 48 for s in sealed):
        raise RejectedError("malformed sealed key")
    owner = VerifyKey(owner_raw)
    try:
        owner.verify(MANIFEST_CONTEXT + body, signature)
    except BadSignatureError:
        raise RejectedError("the manifest is not signed by its owner") from None
    try:
        name = check_display_name(field_of(fields, 4, str, "name"))
    except DecodeError as exc:
        raise RejectedError(f"bad circle name: {exc}") from None
    manifest = Manifest(
        circle_id=circle_id,
        epoch=epoch,
        name=name,
        owner=owner,
        members=tuple(members),
        members_can_post=field_of(fields, 7, bool, "posting rule"),
        created=field_of(fields, 8, int, "time"),
        sealed_keys=tuple(sealed),
        raw=data,
        conversation=kind == CONVERSATION,
    )
    if not manifest.is_member(owner):
        raise RejectedError("the owner is not a member of their own circle")
    return manifest


def epoch_key(
    manifest: Manifest,
    identity: Identity,
    person_link: LinkSecretKey | None = None,
    person: VerifyKey | None = None,
) -> bytes:
    """Our copy of the epoch key; RejectedError if we are not a member of this epoch.
    With `person_link` (a device recovered from a sheet, spec/devices.md section 5.3):
    the copy sealed to the member whose link key that is, our person. With `person` (a
    device other than its person's first): if the person is a member, the reason is
    NO_KEY_YET, as another device of ours gives this one the key (section 9)."""
    me = identity.public.verify_key
    for member, sealed in zip(manifest.members, manifest.sealed_keys, strict=True):
        secret = identity.link_secret if member.verify_key == me else None
        if person_link is not None and bytes(member.link_key) == bytes(person_link.public_key):
            secret = person_link
        if secret is not None:
            try:
                key = open_sealed(secret, sealed)
            except CryptoError:
                break
            if len(key) == KEY_LEN:
                return key
            break
    if person is not None and manifest.is_member(person):
        raise RejectedError(NO_KEY_YET)
    raise RejectedError("we are not a member of this circle at this epoch")


def new_circle_id() -> bytes:
    """A fresh random circle id."""
    return random_bytes(32)


def new_epoch_key() -> bytes:
    """A fresh random epoch key."""
    return random_bytes(KEY_LEN)


@dataclass(frozen=True, slots=True, kw_only=True)
class Removal:
    """The owner's signed word to a member that it is no longer in a circle, from an
    epoch on (spec/moments.md section 8)."""

    circle_id: bytes
    epoch: int  # the first epoch without the member
    member: VerifyKey
    owner: VerifyKey
    time: int
    raw: bytes


def create_removal(
    owner: Identity, *, circle_id: bytes, epoch: int, member: VerifyKey, time: int
) -> Removal:
    """Sign a removal notice for `member`, who is not in `circle_id` from `epoch` on."""
    body = wire.encode_map(
        {
            1: VERSION,
            2: circle_id,
            3: epoch,
            4: bytes(member),
            5: bytes(owner.public.verify_key),
            6: time,
        }
    )
    signature = owner.signing_key.sign(REMOVAL_CONTEXT + body)
    return decode_removal(wire.encode_map({1: body, 2: signature}))


def decode_removal(data: bytes) -> Removal:
    """A verified removal notice; RejectedError if malformed or not signed by its owner."""
    body, signature, fields = signed_fields(
        data, max_size=MAX_REMOVAL, what="removal notice", keys=6
    )
    circle_id, epoch = field_of(fields, 2, bytes, "circle id"), field_of(fields, 3, int, "epoch")
    member, owner = field_of(fields, 4, bytes, "member"), field_of(fields, 5, bytes, "owner")
    time = field_of(fields, 6, int, "time")
    if len(circle_id) != 32 or len(member) != 32 or len(owner) != 32 or epoch < 1 or time < 0:
        raise RejectedError("malformed removal notice fields")
    try:
        VerifyKey(owner).verify(REMOVAL_CONTEXT + body, signature)
    except BadSignatureError:
        raise RejectedError("the removal notice is not signed by its owner") from None
    return Removal(
        circle_id=circle_id,
        epoch=epoch,
        member=VerifyKey(member),
        owner=VerifyKey(owner),
        time=time,
        raw=data,
    )
