"""What the store holds, as named types: rows are dataclasses, states are enums."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from p2pmoments.core.moment import Kind
from p2pmoments.core.pairing import Direction, PairingState

__all__ = [
    "Counts",
    "Freed",
    "FriendRecord",
    "FriendState",
    "NewMoment",
    "PairingRecord",
    "StoredMoment",
    "TokenRecord",
    "record",
]

R = TypeVar("R")


class FriendState(enum.StrEnum):
    """A friend, or one we blocked (every link refused)."""

    FRIEND = "friend"
    BLOCKED = "blocked"


@dataclass(frozen=True, slots=True, kw_only=True)
class Counts:
    """How many of each thing the store holds."""

    friends: int
    circles: int
    moments: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FriendRecord:
    """A friend (or a blocked one) as stored."""

    verify_key: bytes
    link_key: bytes
    link_signature: bytes
    name: str  # what we call them (they may rename; we keep our label)
    their_name: str  # what they call themselves
    state: FriendState
    since: int
    last_seen: int | None
    host: str | None
    port: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRecord:
    """A pairing token we issued."""

    token: bytes
    created: int
    expires: int
    claimed_by: bytes | None  # the link key that used it


@dataclass(frozen=True, slots=True, kw_only=True)
class PairingRecord:
    """One pairing attempt, ours (OUT: we scanned) or theirs (IN: they scanned ours)."""

    id: int
    direction: Direction
    identity: bytes | None
    link_key: bytes
    name: str
    token: bytes
    expires: int
    host: str | None
    port: int | None
    state: PairingState
    reason: str
    created: int
    updated: int
    onion: bytes | None = None  # the owner's onion address key, from the code (spec/tor.md)


@dataclass(frozen=True, slots=True, kw_only=True)
class NewMoment:
    """A verified moment to store, and the blob chunks it uses."""

    moment_id: bytes
    circle_id: bytes
    author: bytes
    seq: int
    epoch: int
    created: int
    kind: Kind
    reply_to: bytes | None  # comments and reactions: what they answer; retractions: target
    expires: int | None
    envelope: bytes
    chunks: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Freed:
    """What deleting moments left unused: chunk addresses, and packs none of whose chunks
    is used any more (spec/store.md section 1)."""

    chunks: tuple[bytes, ...] = ()
    packs: tuple[bytes, ...] = ()
    # The moments whose content went (deleted, or retracted): forgotten once opened.
    moments: tuple[bytes, ...] = ()

    def __add__(self, other: Freed) -> Freed:
        return Freed(
            chunks=self.chunks + other.chunks,
            packs=self.packs + other.packs,
            moments=self.moments + other.moments,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredMoment:
    """A moment as stored: enough to list and expire it without opening the envelope."""

    moment_id: bytes
    circle_id: bytes
    author: bytes
    seq: int
    epoch: int
    created: int
    kind: Kind
    reply_to: bytes | None
    expires: int | None
    retracted: bool
    envelope: bytes  # empty once retracted
    # Where it stands among the posts of its second (schema 7): the order this device
    # stored them in, but one author's in the order they were posted.
    place: int


# Columns stored as their values, read back as these types.
_CONVERT: dict[type, dict[str, Callable[[Any], Any]]] = {
    FriendRecord: {"state": FriendState},
    PairingRecord: {"state": PairingState, "direction": Direction},
    StoredMoment: {"kind": Kind, "retracted": bool},
}


def record(cls: type[R], row: tuple[object, ...]) -> R:
    """A row, its columns selected in the order of the dataclass's fields, as `cls`."""
    values = dict(zip(cls.__dataclass_fields__, row, strict=True))  # type: ignore[attr-defined]
    for name, convert in _CONVERT.get(cls, {}).items():
        values[name] = convert(values[name])
    return cls(**values)


def columns(cls: type) -> str:
    """The column list of a record type, in field order (constant SQL)."""
    return ", ".join(cls.__dataclass_fields__)  # type: ignore[attr-defined]
