"""What the replication engine asks its shell to do (spec/sync.md), and the verified
manifests and removal notices it reasons about: small dataclasses, documented one by one.
`p2pmoments.core.replication.engine` decides them and re-exports each."""

from __future__ import annotations

from dataclasses import dataclass, field

from p2pmoments.core.replication.chunks import Progress, Refill
from p2pmoments.core.replication.vectors import Send, SendRange

__all__ = [
    "Action",
    "Delivered",
    "Drop",
    "KeepManifest",
    "KnownManifest",
    "KnownRemoval",
    "LeaveCircle",
    "Open",
    "Reject",
    "Serve",
    "WriteChunks",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class KnownManifest:
    """A verified manifest of a circle we are in, as the engine needs it."""

    circle: bytes
    epoch: int
    owner: bytes
    members: frozenset[bytes]
    raw: bytes
    source: object = field(default=None, compare=False)  # the shell's own decoded form


@dataclass(frozen=True, slots=True, kw_only=True)
class KnownRemoval:
    """A verified removal notice (spec/moments.md section 8)."""

    circle: bytes
    epoch: int
    member: bytes
    owner: bytes
    time: int
    raw: bytes
    source: object = field(default=None, compare=False)  # the shell's own decoded form


@dataclass(frozen=True, slots=True)
class KeepManifest:
    """Keep a manifest a peer sent (store it, tell the user); `joined` if it is the first
    of its circle we hold. Comes before anything it lets us send."""

    manifest: KnownManifest
    joined: bool


@dataclass(frozen=True, slots=True)
class Open:
    """Verify and decrypt these envelopes of `circle` from `peer` (on worker threads),
    then call `opened`."""

    peer: bytes
    circle: bytes
    envelopes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Serve:
    """`peer` asks for these chunks: send those it may read (see `may_read`) at its pace;
    for those we do not hold, say so."""

    peer: bytes
    addresses: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class WriteChunks:
    """Chunks we asked `peer` for: check each against its address, write it, then call
    `chunks_written`."""

    peer: bytes
    chunks: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Reject:
    """Record why these things a peer sent were refused, as (reason, size)."""

    peer: bytes | None
    reasons: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Drop:
    """End the link to a peer for abuse; neither side links again for a while."""

    peer: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class Delivered:
    """A member's have named what it holds of our own moments in a circle: per epoch, the
    highest sequence number (spec/sync.md §4, point 9: delivered marks)."""

    person: bytes  # whose daemon: the peer's person (spec/devices.md section 7)
    circle: bytes
    held: tuple[tuple[int, int], ...]  # (epoch, seq)


@dataclass(frozen=True, slots=True)
class LeaveCircle:
    """The owner removed us from a circle: record it; we keep what we had."""

    removal: KnownRemoval


Action = (
    Send
    | SendRange
    | KeepManifest
    | Open
    | Serve
    | WriteChunks
    | Reject
    | Drop
    | LeaveCircle
    | Progress
    | Delivered
    | Refill
)
