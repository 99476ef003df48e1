"""Moments: an envelope its author signs over the circle, epoch, author, sequence, time
and a ciphertext of its content under the epoch key (spec/moments.md sections 2-5).

The content repeats the author, so a signature cannot be swapped. Everything here
is pure: callers pass in time, randomness comes from crypto.

Why so long: the content of every kind of moment (posts, comments, reactions,
retractions, versions, notes' moments, edits, read receipts) is checked here, in one
place, so that what spec/moments.md section 3 allows reads as one list beside the codec.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from p2pmoments.core import notes, wire
from p2pmoments.core.blobs import BlobKind, BlobRef, decode_ref
from p2pmoments.core.crypto import (
    BadSignatureError,
    CryptoError,
    VerifyKey,
    random_bytes,
    xaead_decrypt,
    xaead_encrypt,
)
from p2pmoments.core.errors import DecodeError, RejectedError
from p2pmoments.core.identity import Identity
from p2pmoments.core.manifest import Manifest

__all__ = [
    "MAX_BLOBS",
    "MAX_EMOJI",
    "MAX_ENVELOPE",
    "MAX_NOTE",
    "MAX_PARENTS",
    "MAX_TEXT",
    "TARGETED",
    "Content",
    "Kind",
    "ManifestLookup",
    "Moment",
    "PersonLookup",
    "SnapshotPart",
    "Unsigned",
    "moment_id",
    "open_content",
    "open_moment",
    "placed",
    "read_envelope",
    "seal_moment",
    "still_admitted",
    "verify_envelope",
]

VERSION = 1
MOMENT_CONTEXT = b"p2pmoments/moment/1\x00"
MAX_ENVELOPE = 64 * 1024
MAX_TEXT = 16 * 1024
MAX_BLOBS = 32
MAX_EMOJI = 32
NONCE_LEN = 24
MAX_PARENTS = 8  # a file's version names at most this many earlier ones (section 9)
MAX_NOTE = 1024  # bytes of UTF-8 in a version's note
MAX_COVERS = 256  # authors named by one snapshot part (devices of a circle of 150)


class Kind(enum.IntEnum):
    """What a moment is."""

    POST = 1
    COMMENT = 2
    REACTION = 3
    RETRACTION = 4
    VERSION = 5  # a new version of a post's file (spec/moments.md section 9)
    NOTE = 6  # a note written together: its first update (spec/notes.md)
    NOTE_EDIT = 7  # an edit of a note: one update
    NOTE_SNAPSHOT = 8  # one part of a note's compacted document
    EDIT = 9  # new text for one of its author's moments (spec/moments.md section 10)
    READ = 10  # a read receipt: its author has read up to its target (section 11)


# The kinds that name a target (key 6): retractions, edits and read receipts.
TARGETED = frozenset({Kind.RETRACTION, Kind.EDIT, Kind.READ})
_POSTS = (Kind.POST, Kind.VERSION)  # who may post may make a new version of a file
_NOTE_KINDS = (Kind.NOTE, Kind.NOTE_EDIT, Kind.NOTE_SNAPSHOT)


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotPart:
    """Which part of which snapshot a NOTE_SNAPSHOT carries, and the edits it holds: per
    author, the highest sequence number of that author's moments of the note in it."""

    index: int
    count: int
    digest: bytes
    covers: tuple[tuple[bytes, int], ...]

    def as_list(self) -> list[Any]:
        """Content field 11."""
        return [self.index, self.count, self.digest, [[a, s] for a, s in self.covers]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Content:
    """The encrypted part of a moment."""

    kind: Kind
    text: str = ""
    reply_to: bytes | None = None  # comments and reactions: the moment they answer
    emoji: str = ""  # reactions
    target: bytes | None = None  # retractions, edits, read receipts: the moment they name
    expires: int | None = None  # Unix time after which no daemon keeps or serves it
    blobs: tuple[BlobRef, ...] = ()  # photos and files (spec/moments.md §4), decoded once
    parents: tuple[bytes, ...] = ()  # versions: the versions it follows (section 9)
    update: bytes | None = None  # notes: a Yjs update, or a snapshot's part (spec/notes.md)
    part: SnapshotPart | None = None  # note snapshots


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
        fields[8] = [ref.as_map() for ref in content.blobs]
    if content.parents:
        fields[9] = list(content.parents)
    if content.update is not None:
        fields[10] = content.update
    if content.part is not None:
        fields[11] = content.part.as_list()
    return wire.encode_map(fields)


def _check_content(content: Content) -> None:
    if len(content.text.encode("utf-8")) > MAX_TEXT:
        raise RejectedError(f"text over {MAX_TEXT} bytes")
    if len(content.blobs) > MAX_BLOBS:
        raise RejectedError(f"more than {MAX_BLOBS} photos and files")
    needs_reply = content.kind in (
        Kind.COMMENT,
        Kind.REACTION,
        Kind.VERSION,
        Kind.NOTE_EDIT,
        Kind.NOTE_SNAPSHOT,
    )
    if needs_reply != (content.reply_to is not None):
        raise RejectedError(
            "comments, reactions, versions and note edits, and only they, answer a moment"
        )
    if (content.kind is Kind.VERSION) != bool(content.parents):
        raise RejectedError("a version, and only it, names the versions it follows")
    if content.kind is Kind.VERSION:
        _check_version(content)
    if content.kind in _NOTE_KINDS:
        _check_note(content)
    elif content.update is not None or content.part is not None:
        raise RejectedError("only notes carry updates")
    if (content.kind in TARGETED) != (content.target is not None):
        raise RejectedError("only a retraction, edit or read receipt names its target")
    if content.kind is Kind.READ and (content.text or content.expires is not None):
        raise RejectedError("a read receipt carries no text and no expiry")
    if content.blobs and content.kind not in (Kind.POST, Kind.VERSION):
        # A comment costs a member what its envelope costs, whatever the circle's posting
        # rule: never a file of any claimed size to follow (spec/moments.md section 3); a
        # version carries its file under the same posting rule as a post (section 9).
        raise RejectedError("only a post or a version carries photos and files")
    if content.kind is Kind.REACTION and not 0 < len(content.emoji.encode()) <= MAX_EMOJI:
        raise RejectedError("a reaction is one short emoji")
    for ref in (content.reply_to, content.target):
        if ref is not None and len(ref) != 32:
            raise RejectedError("a moment reference is 32 bytes")


def _check_version(content: Content) -> None:
    """Section 10: one file, 1 to MAX_PARENTS distinct parents, a short note."""
    parents = content.parents
    if len(parents) > MAX_PARENTS or len(set(parents)) != len(parents):
        raise RejectedError(f"a version follows 1 to {MAX_PARENTS} distinct versions")
    if not all(len(p) == 32 for p in parents):
        raise RejectedError("a version's parent is a moment id (32 bytes)")
    if len(content.blobs) != 1 or content.blobs[0].kind is not BlobKind.FILE:
        raise RejectedError("a version carries exactly one file")
    if len(content.text.encode("utf-8")) > MAX_NOTE:
        raise RejectedError(f"a version's note is at most {MAX_NOTE} bytes")
    if content.expires is not None:
        raise RejectedError("a version expires with its post, not on its own")


def _check_note(content: Content) -> None:
    if content.text or content.emoji or content.blobs or content.expires is not None:
        raise RejectedError("a note's moments carry only its updates")
    if content.update is None:
        raise RejectedError("a note's moment carries an update")
    if content.kind is Kind.NOTE_SNAPSHOT:
        part = content.part
        if part is None:
            raise RejectedError("a note's snapshot says which part it is")
        if len(content.update) > notes.PART or not 0 <= part.index < part.count:
            raise RejectedError("a malformed part of a note's snapshot")
        if part.count > notes.MAX_PARTS or len(part.covers) > MAX_COVERS:
            raise RejectedError("a note's snapshot too large")
        return
    if content.part is not None:
        raise RejectedError("only a note's snapshot has parts")
    notes.check_update(content.update)


def _read_part(raw: Any) -> SnapshotPart:
    """Content field 11, checked exactly (spec/notes.md §3)."""
    if type(raw) is not list or len(raw) != 4:
        raise RejectedError("malformed snapshot part")
    index, count, digest, covers = raw
    if (
        type(index) is not int
        or type(count) is not int
        or type(digest) is not bytes
        or len(digest) != 32
        or type(covers) is not list
        or len(covers) > MAX_COVERS
    ):
        raise RejectedError("malformed snapshot part")
    pairs = []
    for pair in covers:
        if (
            type(pair) is not list
            or len(pair) != 2
            or type(pair[0]) is not bytes
            or len(pair[0]) != 32
            or type(pair[1]) is not int
            or pair[1] < 0
        ):
            raise RejectedError("malformed snapshot part")
        pairs.append((pair[0], pair[1]))
    return SnapshotPart(index=index, count=count, digest=digest, covers=tuple(pairs))


def seal_moment(
    author: Identity,
    manifest: Manifest,
    key: bytes,
    *,
    seq: int,
    time: int,
    content: Content,
    nonce: bytes | None = None,
    person: VerifyKey | None = None,
) -> Moment:
    """Encrypt and sign a moment for the circle of `manifest` at its epoch; `person` if
    the author is a device of a person (spec/devices.md section 7), not the person.

    `nonce` is for the worked examples of spec/moments.md only; leave it out."""
    _check_content(content)
    who = person if person is not None else author.public.verify_key
    if not manifest.may_post(who) and content.kind in _POSTING:
        raise RejectedError("only the owner may post in this circle")
    if not manifest.is_member(who):
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
    person: VerifyKey  # whose device the author is: the author itself but for devices


ManifestLookup = Callable[[bytes, int], Manifest | None]
# Whose the author of a moment of (circle, seq) is (spec/devices.md section 7): a person
# for a device their roster accepts there, the key itself for a key no roster claims,
# None for one it must not count as anyone's (revoked past its cut-off, claimed twice).
PersonLookup = Callable[[bytes, bytes, int], bytes | None]


def _own_person(author: bytes, circle: bytes, seq: int) -> bytes | None:
    return author


@dataclass(frozen=True, slots=True)
class Unsigned:
    """An envelope read and its author found a member of its epoch; its signature not
    yet checked (`signed` is what the signature covers)."""

    envelope: bytes
    header: Header
    manifest: Manifest
    signed: bytes
    signature: bytes

    def signature_check(self) -> tuple[bytes, bytes, bytes]:
        """(key, signature, message): a job for crypto.verify_many."""
        return bytes(self.header.author), self.signature, self.signed


def verify_envelope(envelope: bytes, manifest_for: ManifestLookup) -> Header:
    """Check structure, membership and signature (not the content); RejectedError says why."""
    return _verified(envelope, manifest_for)[0]


_BODY_KEYS = list(range(1, 9))


def _verified(
    envelope: bytes, manifest_for: ManifestLookup, person_of: PersonLookup = _own_person
) -> tuple[Header, Manifest]:
    """verify_envelope, and the manifest of the moment's circle and epoch."""
    unsigned = read_envelope(envelope, manifest_for, person_of)
    try:
        unsigned.header.author.verify(unsigned.signed, unsigned.signature)
    except BadSignatureError:
        raise RejectedError("bad signature") from None
    return unsigned.header, unsigned.manifest


def read_envelope(
    envelope: bytes, manifest_for: ManifestLookup, person_of: PersonLookup = _own_person
) -> Unsigned:
    """An envelope's structure and membership checked, not its signature (a batch has its
    signatures checked together: crypto.verify_many); RejectedError says why.

    Written for speed as much as clarity: a catch-up opens 10,000 envelopes, and all
    but the signature check runs under Python's lock (one core)."""
    try:
        outer = wire.decode_map(envelope, max_size=MAX_ENVELOPE)
        body, signature = outer.get(1), outer.get(2)
        if len(outer) != 2 or type(body) is not bytes or type(signature) is not bytes:
            raise RejectedError("malformed envelope")
        fields = wire.decode_map(body, max_size=MAX_ENVELOPE)
    except RejectedError:
        raise
    except DecodeError as exc:
        raise RejectedError(f"too large or malformed envelope: {exc}") from None
    # decode_map leaves the keys in ascending order: all eight, exactly.
    if fields.get(1) != VERSION or list(fields) != _BODY_KEYS:
        raise RejectedError("unknown envelope version or fields")
    circle_id, epoch, author_raw, seq, time, nonce, ciphertext = (
        fields[2],
        fields[3],
        fields[4],
        fields[5],
        fields[6],
        fields[7],
        fields[8],
    )
    if (
        type(circle_id) is not bytes
        or type(epoch) is not int
        or type(author_raw) is not bytes
        or type(seq) is not int
        or type(time) is not int
        or type(nonce) is not bytes
        or type(ciphertext) is not bytes
    ):
        raise RejectedError("malformed envelope fields")
    if len(circle_id) != 32 or len(author_raw) != 32 or len(nonce) != NONCE_LEN or seq < 0:
        raise RejectedError("malformed envelope fields")
    manifest = manifest_for(circle_id, epoch)
    if manifest is None:
        raise RejectedError("unknown circle or epoch")
    author = VerifyKey(author_raw)
    person_raw = person_of(author_raw, circle_id, seq)
    if person_raw is None:
        raise RejectedError("the author's device does not count as its person's here")
    person = author if person_raw == author_raw else VerifyKey(person_raw)
    if not manifest.is_member(person):
        raise RejectedError("the author is not a member of this circle at this epoch")
    header = Header(
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
        person=person,
    )
    return Unsigned(envelope, header, manifest, MOMENT_CONTEXT + body, signature)


_KINDS = {int(k): k for k in Kind}
_CONTENT_TYPES: dict[int, type] = {
    1: bytes,
    2: int,
    3: str,
    4: bytes,
    5: str,
    6: bytes,
    7: int,
    10: bytes,
}
# Who may post may make a new version of a file and write notes (spec/notes.md §2).
_POSTING = (*_POSTS, *_NOTE_KINDS)


def open_moment(
    envelope: bytes,
    manifest_for: ManifestLookup,
    key_for: Callable[[Manifest], bytes],
    person_of: PersonLookup = _own_person,
) -> Moment:
    """Verify and decrypt a moment; RejectedError with the reason if it must not be kept."""
    header, manifest = _verified(envelope, manifest_for, person_of)
    return open_content(Unsigned(envelope, header, manifest, b"", b""), key_for)


def open_content(unsigned: Unsigned, key_for: Callable[[Manifest], bytes]) -> Moment:
    """Decrypt and check the content of an envelope read by read_envelope. Its signature
    must be checked too (open_moment does both); RejectedError says why not."""
    envelope, header, manifest = unsigned.envelope, unsigned.header, unsigned.manifest
    epoch_key = key_for(manifest)  # its RejectedError says why with its own reason
    try:
        plaintext = xaead_decrypt(epoch_key, header.nonce, header.header_bytes, header.ciphertext)
        fields = wire.decode_map(plaintext, max_size=MAX_ENVELOPE)
    except CryptoError:
        raise RejectedError("the content does not decrypt under the epoch key") from None
    except DecodeError as exc:
        raise RejectedError(f"malformed content: {exc}") from None
    if fields.get(1) != bytes(header.author):
        raise RejectedError("the content names another author than the signer")
    for key, value in fields.items():
        kind_of = _CONTENT_TYPES.get(key)
        if kind_of is None:
            if key not in (8, 9, 11):
                raise RejectedError("unknown content fields")
        elif type(value) is not kind_of:
            raise RejectedError(f"malformed content field {key}" if key > 2 else "malformed: kind")
    kind = _KINDS.get(fields[2]) if 2 in fields else None
    if kind is None:
        raise RejectedError("unknown kind of moment" if 2 in fields else "malformed: kind")
    refs: tuple[BlobRef, ...] = ()
    if 8 in fields:
        blobs = fields[8]
        if type(blobs) is not list or not all(type(b) is dict for b in blobs):
            raise RejectedError("malformed blob list")
        decoded = []
        for raw in blobs:
            try:
                decoded.append(decode_ref(raw))
            except DecodeError as exc:
                raise RejectedError(f"malformed photo or file reference: {exc}") from None
        refs = tuple(decoded)
    parents: tuple[bytes, ...] = ()
    if 9 in fields:
        raw_parents = fields[9]
        if (
            type(raw_parents) is not list
            or not 0 < len(raw_parents) <= MAX_PARENTS
            or not all(type(p) is bytes and len(p) == 32 for p in raw_parents)
        ):
            raise RejectedError("malformed list of parent versions")
        parents = tuple(raw_parents)
    content = Content(
        kind=kind,
        text=fields.get(3, ""),
        reply_to=fields.get(4),
        emoji=fields.get(5, ""),
        target=fields.get(6),
        expires=fields.get(7),
        blobs=refs,
        parents=parents,
        update=fields.get(10),
        part=_read_part(fields[11]) if 11 in fields else None,
    )
    _check_content(content)
    if kind in _POSTING and not manifest.may_post(header.person):
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


def still_admitted(
    moment: Moment, manifest_for: ManifestLookup, person_of: PersonLookup = _own_person
) -> bool:
    """True if a moment opened earlier would still be opened today: what open_moment
    checks that can change after it was stored (its circle's epoch still held, its
    author's device still counting as a member there, and as one who may post if it
    is a post). The rest (structure, signature, content under the epoch key) depends
    on the envelope and that epoch's key alone, which never change (spec/store.md
    section 3.1)."""
    manifest = manifest_for(moment.circle_id, moment.epoch)
    if manifest is None:
        return False
    author = bytes(moment.author)
    person_raw = person_of(author, moment.circle_id, moment.seq)
    if person_raw is None:
        return False
    person = moment.author if person_raw == author else VerifyKey(person_raw)
    if not manifest.is_member(person):
        return False
    return moment.content.kind not in _POSTING or manifest.may_post(person)


def placed(time: int, expires: int | None, received: int) -> tuple[int, int | None]:
    """(when, expires) of a moment on this device's clock (spec/moments.md section 6):
    its author's time, but never later than when it reached us (a clock ahead does not
    pin its posts above everyone's for hours), and its expiry the lifetime its author
    gave it (expiry minus time, both on the author's clock) from then."""
    when = min(time, received)
    if expires is None:
        return when, None
    return when, when + max(0, expires - time)
