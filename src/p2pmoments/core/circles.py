"""Circles and moments: signed manifests, sealed epoch keys, signed envelopes (spec/moments.md).

A circle belongs to its owner; its state is a manifest the owner signs: id,
epoch, name, members (both keys of each), who may post, and the epoch's key
sealed to every member. A moment is an envelope its author signs over the
circle, epoch, author, sequence, time and a ciphertext of its content under the
epoch key; the content repeats the author, so a signature cannot be swapped.

Everything here is pure: callers pass in time, randomness comes from crypto.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from p2pmoments.core import wire
from p2pmoments.core.blobs import BlobRef, decode_ref
from p2pmoments.core.crypto import (
    BadSignatureError,
    CryptoError,
    LinkPublicKey,
    VerifyKey,
    open_sealed,
    random_bytes,
    seal,
    xaead_decrypt,
    xaead_encrypt,
)
from p2pmoments.core.errors import DecodeError
from p2pmoments.core.identity import Identity
from p2pmoments.core.profile import check_display_name

__all__ = [
    "MAX_ENVELOPE",
    "MAX_MANIFEST",
    "MAX_MEMBERS",
    "MAX_TEXT",
    "Content",
    "Kind",
    "Manifest",
    "Member",
    "Moment",
    "RejectedError",
    "Removal",
    "create_manifest",
    "create_removal",
    "decode_manifest",
    "decode_removal",
    "epoch_key",
    "moment_id",
    "open_moment",
    "seal_moment",
]

VERSION = 1
MANIFEST_CONTEXT = b"p2pmoments/manifest/1\x00"
MOMENT_CONTEXT = b"p2pmoments/moment/1\x00"
REMOVAL_CONTEXT = b"p2pmoments/removal/1\x00"
MAX_REMOVAL = 512
MAX_MEMBERS = 151  # the owner and up to 150 friends
MAX_MANIFEST = 64 * 1024
MAX_ENVELOPE = 64 * 1024
MAX_TEXT = 16 * 1024
MAX_BLOBS = 32
MAX_EMOJI = 32
NONCE_LEN = 24
KEY_LEN = 32


class RejectedError(DecodeError):
    """A manifest or moment that must not be stored; `reason` says why (spec/moments.md §5)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Kind(enum.IntEnum):
    """What a moment is."""

    POST = 1
    COMMENT = 2
    REACTION = 3
    RETRACTION = 4


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Content:
    """The encrypted part of a moment."""

    kind: Kind
    text: str = ""
    reply_to: bytes | None = None  # comments and reactions: the moment they answer
    emoji: str = ""  # reactions
    target: bytes | None = None  # retractions: the moment retracted
    expires: int | None = None  # Unix time after which no daemon keeps or serves it
    blobs: tuple[dict[int, Any], ...] = ()  # photo and file references (spec/moments.md §4)
    refs: tuple[BlobRef, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The blob references, decoded once (open_moment has checked them).
        object.__setattr__(self, "refs", tuple(decode_ref(raw) for raw in self.blobs))


@dataclass(frozen=True, slots=True, kw_only=True)
class Moment:
    """A verified, decrypted moment."""

    id: bytes
    circle_id: bytes
    epoch: int
    author: VerifyKey
    seq: int
    time: int
    content: Content
    envelope: bytes


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
) -> Manifest:
    """Sign a manifest for `members` (the owner is added), sealing `key` to each."""
    name = check_display_name(name)
    me = Member(verify_key=owner.public.verify_key, link_key=owner.public.link_key)
    everyone = _sorted_members([me, *members])
    if len(everyone) > MAX_MEMBERS:
        raise ValueError(f"a circle has at most {MAX_MEMBERS - 1} members besides its owner")
    if len(circle_id) != 32 or len(key) != KEY_LEN or epoch < 0:
        raise ValueError("bad circle id, key or epoch")
    body = wire.encode_map(
        {
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
    )
    signature = owner.signing_key.sign(MANIFEST_CONTEXT + body)
    return decode_manifest(wire.encode_map({1: body, 2: signature}))


def _field(fields: dict[int, Any], key: int, kind: type, what: str) -> Any:
    value = fields.get(key)
    if type(value) is not kind:
        raise RejectedError(f"malformed: {what}")
    return value


def decode_manifest(data: bytes) -> Manifest:
    """A verified manifest; RejectedError if malformed, oversized or not signed by its owner."""
    try:
        outer = wire.decode_map(data, max_size=MAX_MANIFEST)
    except DecodeError as exc:
        raise RejectedError(f"too large or malformed manifest: {exc}") from None
    body, signature = outer.get(1), outer.get(2)
    if set(outer) != {1, 2} or type(body) is not bytes or type(signature) is not bytes:
        raise RejectedError("malformed manifest")
    try:
        fields = wire.decode_map(body, max_size=MAX_MANIFEST)
    except DecodeError as exc:
        raise RejectedError(f"malformed manifest body: {exc}") from None
    if fields.get(1) != VERSION or set(fields) != set(range(1, 10)):
        raise RejectedError("unknown manifest version or fields")
    circle_id = _field(fields, 2, bytes, "circle id")
    epoch = _field(fields, 3, int, "epoch")
    owner_raw = _field(fields, 5, bytes, "owner")
    raw_members = _field(fields, 6, list, "members")
    sealed = _field(fields, 9, list, "sealed keys")
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
        name = check_display_name(_field(fields, 4, str, "name"))
    except DecodeError as exc:
        raise RejectedError(f"bad circle name: {exc}") from None
    manifest = Manifest(
        circle_id=circle_id,
        epoch=epoch,
        name=name,
        owner=owner,
        members=tuple(members),
        members_can_post=_field(fields, 7, bool, "posting rule"),
        created=_field(fields, 8, int, "time"),
        sealed_keys=tuple(sealed),
        raw=data,
    )
    if not manifest.is_member(owner):
        raise RejectedError("the owner is not a member of their own circle")
    return manifest


def epoch_key(manifest: Manifest, identity: Identity) -> bytes:
    """Our copy of the epoch key; RejectedError if we are not a member of this epoch."""
    me = identity.public.verify_key
    for member, sealed in zip(manifest.members, manifest.sealed_keys, strict=True):
        if member.verify_key == me:
            try:
                key = open_sealed(identity.link_secret, sealed)
            except CryptoError:
                break
            if len(key) == KEY_LEN:
                return key
            break
    raise RejectedError("we are not a member of this circle at this epoch")


def moment_id(envelope: bytes) -> bytes:
    """A moment's id: the hash of its whole signed envelope."""
    return hashlib.blake2b(envelope, digest_size=32, person=b"p2pm-moment-id").digest()


def _encode_content(author: VerifyKey, content: Content) -> bytes:
    fields: dict[int, Any] = {1: bytes(author), 2: int(content.kind)}
    if content.text:
        fields[3] = content.text
    if content.reply_to is not None:
        fields[4] = content.reply_to
    if content.emoji:
        fields[5] = content.emoji
    if content.target is not None:
        fields[6] = content.target
    if content.expires is not None:
        fields[7] = content.expires
    if content.blobs:
        fields[8] = list(content.blobs)
    return wire.encode_map(fields)


def _check_content(content: Content) -> None:
    if len(content.text.encode("utf-8")) > MAX_TEXT:
        raise RejectedError(f"text over {MAX_TEXT} bytes")
    if len(content.blobs) > MAX_BLOBS:
        raise RejectedError(f"more than {MAX_BLOBS} photos and files")
    needs_reply = content.kind in (Kind.COMMENT, Kind.REACTION)
    if needs_reply != (content.reply_to is not None):
        raise RejectedError("comments and reactions, and only they, answer a moment")
    if (content.kind is Kind.RETRACTION) != (content.target is not None):
        raise RejectedError("a retraction, and only it, names its target")
    if content.kind is Kind.REACTION and not 0 < len(content.emoji.encode()) <= MAX_EMOJI:
        raise RejectedError("a reaction is one short emoji")
    for ref in (content.reply_to, content.target):
        if ref is not None and len(ref) != 32:
            raise RejectedError("a moment reference is 32 bytes")


def seal_moment(
    author: Identity,
    manifest: Manifest,
    key: bytes,
    *,
    seq: int,
    time: int,
    content: Content,
    nonce: bytes | None = None,
) -> Moment:
    """Encrypt and sign a moment for the circle of `manifest` at its epoch.

    `nonce` is for the worked examples of spec/moments.md only; leave it out."""
    _check_content(content)
    if not manifest.may_post(author.public.verify_key) and content.kind is Kind.POST:
        raise RejectedError("only the owner may post in this circle")
    if not manifest.is_member(author.public.verify_key):
        raise RejectedError("the author is not a member of this circle")
    nonce = random_bytes(NONCE_LEN) if nonce is None else nonce
    header: dict[int, Any] = {
        1: VERSION,
        2: manifest.circle_id,
        3: manifest.epoch,
        4: bytes(author.public.verify_key),
        5: seq,
        6: time,
        7: nonce,
    }
    plaintext = _encode_content(author.public.verify_key, content)
    ciphertext = xaead_encrypt(key, nonce, wire.encode_map(header), plaintext)
    body = wire.encode_map({**header, 8: ciphertext})
    envelope = wire.encode_map({1: body, 2: author.signing_key.sign(MOMENT_CONTEXT + body)})
    if len(envelope) > MAX_ENVELOPE:
        raise RejectedError(f"the moment is over {MAX_ENVELOPE} bytes")
    return Moment(
        id=moment_id(envelope),
        circle_id=manifest.circle_id,
        epoch=manifest.epoch,
        author=author.public.verify_key,
        seq=seq,
        time=time,
        content=content,
        envelope=envelope,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Header:
    """What anyone holding an envelope can check without the key."""

    circle_id: bytes
    epoch: int
    author: VerifyKey
    seq: int
    time: int
    nonce: bytes
    ciphertext: bytes
    header_bytes: bytes


ManifestLookup = Callable[[bytes, int], Manifest | None]


def verify_envelope(envelope: bytes, manifest_for: ManifestLookup) -> Header:
    """Check structure, membership and signature (not the content); RejectedError says why."""
    try:
        outer = wire.decode_map(envelope, max_size=MAX_ENVELOPE)
        body, signature = outer.get(1), outer.get(2)
        if set(outer) != {1, 2} or type(body) is not bytes or type(signature) is not bytes:
            raise RejectedError("malformed envelope")
        fields = wire.decode_map(body, max_size=MAX_ENVELOPE)
    except RejectedError:
        raise
    except DecodeError as exc:
        raise RejectedError(f"too large or malformed envelope: {exc}") from None
    if fields.get(1) != VERSION or set(fields) != set(range(1, 9)):
        raise RejectedError("unknown envelope version or fields")
    circle_id, epoch = _field(fields, 2, bytes, "circle id"), _field(fields, 3, int, "epoch")
    author_raw, seq = _field(fields, 4, bytes, "author"), _field(fields, 5, int, "sequence")
    time, nonce = _field(fields, 6, int, "time"), _field(fields, 7, bytes, "nonce")
    ciphertext = _field(fields, 8, bytes, "ciphertext")
    if len(circle_id) != 32 or len(author_raw) != 32 or len(nonce) != NONCE_LEN or seq < 0:
        raise RejectedError("malformed envelope fields")
    manifest = manifest_for(circle_id, epoch)
    if manifest is None:
        raise RejectedError("unknown circle or epoch")
    author = VerifyKey(author_raw)
    if not manifest.is_member(author):
        raise RejectedError("the author is not a member of this circle at this epoch")
    try:
        author.verify(MOMENT_CONTEXT + body, signature)
    except BadSignatureError:
        raise RejectedError("bad signature") from None
    return Header(
        circle_id=circle_id,
        epoch=epoch,
        author=author,
        seq=seq,
        time=time,
        nonce=nonce,
        ciphertext=ciphertext,
        # Fields 1-7, the associated data: the body less its last entry, the ciphertext
        # (the body is deterministic, checked by decode_map).
        header_bytes=wire.without_last_bytes_entry(body, ciphertext),
    )


def open_moment(
    envelope: bytes,
    manifest_for: ManifestLookup,
    key_for: Callable[[Manifest], bytes],
) -> Moment:
    """Verify and decrypt a moment; RejectedError with the reason if it must not be kept."""
    header = verify_envelope(envelope, manifest_for)
    manifest = manifest_for(header.circle_id, header.epoch)
    assert manifest is not None
    try:
        plaintext = xaead_decrypt(
            key_for(manifest), header.nonce, header.header_bytes, header.ciphertext
        )
        fields = wire.decode_map(plaintext, max_size=MAX_ENVELOPE)
    except CryptoError:
        raise RejectedError("the content does not decrypt under the epoch key") from None
    except DecodeError as exc:
        raise RejectedError(f"malformed content: {exc}") from None
    if fields.get(1) != bytes(header.author):
        raise RejectedError("the content names another author than the signer")
    if not set(fields) <= set(range(1, 9)):
        raise RejectedError("unknown content fields")
    try:
        kind = Kind(_field(fields, 2, int, "kind"))
    except ValueError:
        raise RejectedError("unknown kind of moment") from None
    blobs = fields.get(8, [])
    if type(blobs) is not list or not all(type(b) is dict for b in blobs):
        raise RejectedError("malformed blob list")
    for raw in blobs:
        try:
            decode_ref(raw)
        except DecodeError as exc:
            raise RejectedError(f"malformed photo or file reference: {exc}") from None
    content = Content(
        kind=kind,
        text=_opt(fields, 3, str, ""),
        reply_to=_opt(fields, 4, bytes, None),
        emoji=_opt(fields, 5, str, ""),
        target=_opt(fields, 6, bytes, None),
        expires=_opt(fields, 7, int, None),
        blobs=tuple(blobs),
    )
    _check_content(content)
    if kind is Kind.POST and not manifest.may_post(header.author):
        raise RejectedError("only the owner may post in this circle")
    return Moment(
        id=moment_id(envelope),
        circle_id=header.circle_id,
        epoch=header.epoch,
        author=header.author,
        seq=header.seq,
        time=header.time,
        content=content,
        envelope=envelope,
    )


def _opt(fields: dict[int, Any], key: int, kind: type, default: Any) -> Any:
    if key not in fields:
        return default
    if type(fields[key]) is not kind:
        raise RejectedError(f"malformed content field {key}")
    return fields[key]


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
    try:
        outer = wire.decode_map(data, max_size=MAX_REMOVAL)
        body, signature = outer.get(1), outer.get(2)
        if set(outer) != {1, 2} or type(body) is not bytes or type(signature) is not bytes:
            raise RejectedError("malformed removal notice")
        fields = wire.decode_map(body, max_size=MAX_REMOVAL)
    except RejectedError:
        raise
    except DecodeError as exc:
        raise RejectedError(f"malformed removal notice: {exc}") from None
    if fields.get(1) != VERSION or set(fields) != set(range(1, 7)):
        raise RejectedError("unknown removal notice version or fields")
    circle_id, epoch = _field(fields, 2, bytes, "circle id"), _field(fields, 3, int, "epoch")
    member, owner = _field(fields, 4, bytes, "member"), _field(fields, 5, bytes, "owner")
    time = _field(fields, 6, int, "time")
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
