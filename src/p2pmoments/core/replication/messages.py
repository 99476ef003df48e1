"""The replication messages (spec/sync.md section 3) as frozen dataclasses.

`decode(body)` turns a link message (a CBOR map, key 0 its type) into one of
them or raises `BadMessage`, the peer's fault, with how much junk it counts for
(spec/sync.md section 5); `encode(message)` gives the map back. Every field is
checked exactly: types, lengths, counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from p2pmoments.core.blobs import MAX_CHUNK
from p2pmoments.core.errors import RemoteProtocolError

__all__ = [
    "MAX_ENVELOPES",
    "MAX_EPOCHS",
    "MAX_MANIFESTS",
    "MAX_REMOVALS",
    "MAX_VECTOR",
    "MAX_WANTS",
    "T_CHUNK",
    "T_HAVE",
    "T_MANIFESTS",
    "T_MOMENTS",
    "T_REMOVED",
    "T_WANT_CHUNKS",
    "BadMessage",
    "Chunk",
    "Have",
    "Manifests",
    "Message",
    "Moments",
    "Removed",
    "Slot",
    "Span",
    "Want",
    "WantChunks",
    "decode",
    "encode",
]

T_MANIFESTS, T_HAVE, T_MOMENTS, T_WANT_CHUNKS, T_CHUNK, T_REMOVED = 16, 17, 18, 19, 20, 21
TYPES = frozenset({T_MANIFESTS, T_HAVE, T_MOMENTS, T_WANT_CHUNKS, T_CHUNK, T_REMOVED})
MAX_MANIFESTS = 64  # manifests read from one message
MAX_ENVELOPES = 4096  # envelopes read from one message
MAX_WANTS = 16  # chunks asked of a peer in one message (and in flight)
MAX_REMOVALS = 64
MAX_VECTOR = 151 * 64  # (author, epoch) entries in one have
MAX_EPOCHS = 4096  # manifest epochs named in one have
MAX_U32 = (1 << 32) - 1
MAX_SEQ = (1 << 63) - 1

Slot = tuple[bytes, int]  # (author, epoch)
Span = tuple[bytes, int, int, int]  # (author, epoch, first, last): a range, all of it sent
Want = tuple[bytes, int, int]  # (author, epoch, from): send me that range again, from there


class BadMessage(RemoteProtocolError):
    """A malformed replication message; `junk` is what it counts for (spec/sync.md §5)."""

    def __init__(self, message: str, *, junk: float = 1) -> None:
        super().__init__(message)
        self.junk = junk


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifests:
    """Signed manifests (spec/moments.md section 1), unverified."""

    manifests: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Have:
    """What the sender holds of one circle: the highest sequence per (author, epoch), and
    the manifest epochs it holds (none: a plea for manifests); `wants`, ranges it lacks
    though we may believe otherwise (spec/sync.md section 4, point 11)."""

    circle: bytes
    vector: Mapping[Slot, int]
    epochs: frozenset[int]
    wants: tuple[Want, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Moments:
    """Envelopes of one circle, in ascending sequence order, unverified; `span`, if
    given, says they are all the sender holds of that range (spec/sync.md section 3)."""

    circle: bytes
    envelopes: tuple[bytes, ...]
    span: Span | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WantChunks:
    """Send me these chunks."""

    addresses: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Chunk:
    """A chunk asked for; without `data`: "I do not hold it"."""

    address: bytes
    data: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Removed:
    """Removal notices (spec/moments.md section 8), unverified."""

    notices: tuple[bytes, ...]


Message = Manifests | Have | Moments | WantChunks | Chunk | Removed


def _bytes_list(value: object, what: str, limit: int) -> tuple[bytes, ...]:
    if type(value) is not list or not all(type(x) is bytes for x in value):
        raise BadMessage(f"malformed {what}")
    return tuple(value[:limit])


def _id(value: object, what: str) -> bytes:
    if type(value) is not bytes or len(value) != 32:
        raise BadMessage(f"malformed {what}")
    return value


def _seq_entry(entry: object, size: int) -> TypeGuard[list[Any]]:
    """True if `entry` is [author (32 bytes), epoch (u32), then `size` - 2 sequence numbers]."""
    return (
        type(entry) is list
        and len(entry) == size
        and type(entry[0]) is bytes
        and len(entry[0]) == 32
        and type(entry[1]) is int
        and 0 <= entry[1] <= MAX_U32
        and all(type(x) is int and 0 <= x <= MAX_SEQ for x in entry[2:])
    )


def _wants(value: object) -> tuple[Want, ...]:
    if type(value) is not list or len(value) > MAX_VECTOR:
        raise BadMessage("malformed have")
    if not all(_seq_entry(w, 3) and w[2] >= 1 for w in value):
        raise BadMessage("malformed have")
    return tuple((w[0], w[1], w[2]) for w in value)


def _span(value: object) -> Span | None:
    if value is None:
        return None
    if not _seq_entry(value, 4) or not 1 <= value[2] <= value[3]:
        raise BadMessage("malformed moments message")
    return (value[0], value[1], value[2], value[3])


def _have(body: Mapping[int, Any]) -> Have:
    circle = _id(body.get(1), "have")
    entries, epochs = body.get(2), body.get(3, [])
    if type(entries) is not list or len(entries) > MAX_VECTOR:
        raise BadMessage("malformed have")
    if type(epochs) is not list or len(epochs) > MAX_EPOCHS:
        raise BadMessage("malformed have")
    if not all(type(e) is int and 0 <= e <= MAX_U32 for e in epochs):
        raise BadMessage("malformed have")
    vector: dict[Slot, int] = {}
    for entry in entries:
        if not _seq_entry(entry, 3):
            raise BadMessage("malformed have")
        vector[(entry[0], entry[1])] = entry[2]
    wants = _wants(body[4]) if 4 in body else ()
    return Have(circle=circle, vector=vector, epochs=frozenset(epochs), wants=wants)


def decode(body: Mapping[int, Any]) -> Message:
    """The message in a link message's body; BadMessage if it is not one of ours or is
    malformed."""
    kind = body.get(0)
    if kind == T_MANIFESTS:
        return Manifests(manifests=_bytes_list(body.get(1), "manifest message", MAX_MANIFESTS))
    if kind == T_HAVE:
        return _have(body)
    if kind == T_MOMENTS:
        circle = _id(body.get(1), "moments message")
        return Moments(
            circle=circle,
            envelopes=_bytes_list(body.get(2), "moments message", MAX_ENVELOPES),
            span=_span(body.get(3)),
        )
    if kind == T_WANT_CHUNKS:
        addresses = body.get(1)
        if type(addresses) is not list or len(addresses) > MAX_WANTS:
            raise BadMessage("a malformed or oversized chunk request")
        return WantChunks(addresses=tuple(_id(a, "chunk address") for a in addresses))
    if kind == T_CHUNK:
        address, data = body.get(1), body.get(2)
        if type(address) is not bytes or len(address) != 32:
            raise BadMessage("a malformed chunk", junk=4)
        if data is not None and (type(data) is not bytes or len(data) > MAX_CHUNK):
            raise BadMessage("a malformed or oversized chunk", junk=4)
        return Chunk(address=address, data=data)
    if kind == T_REMOVED:
        return Removed(notices=_bytes_list(body.get(1), "removal message", MAX_REMOVALS))
    raise BadMessage(f"unknown message type {kind!r}")


def encode(message: Message) -> dict[int, Any]:
    """The link message for `message`."""
    if isinstance(message, Manifests):
        return {0: T_MANIFESTS, 1: list(message.manifests)}
    if isinstance(message, Have):
        have: dict[int, Any] = {
            0: T_HAVE,
            1: message.circle,
            2: [[a, e, s] for (a, e), s in sorted(message.vector.items())],
            3: sorted(message.epochs),
        }
        if message.wants:  # absent unless asked: older daemons ignore it
            have[4] = [list(w) for w in message.wants]
        return have
    if isinstance(message, Moments):
        moments: dict[int, Any] = {0: T_MOMENTS, 1: message.circle, 2: list(message.envelopes)}
        if message.span is not None:
            moments[3] = list(message.span)
        return moments
    if isinstance(message, WantChunks):
        return {0: T_WANT_CHUNKS, 1: list(message.addresses)}
    if isinstance(message, Chunk):
        return (
            {0: T_CHUNK, 1: message.address}
            if message.data is None
            else {0: T_CHUNK, 1: message.address, 2: message.data}
        )
    return {0: T_REMOVED, 1: list(message.notices)}
