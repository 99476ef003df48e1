"""Chunks sent ahead of their moment (spec/sync.md section 4, point 10): the two link
messages and the receiver's budget. Pure: the shell (ahead.py) writes what is kept.

    ahead-ok   {0: 41, 1: bytes it keeps ahead of one peer an hour}
    ahead      {0: 40, 1: circle id, 2: chunk address, 3: the encrypted chunk}

While one of our posts is uploaded, each chunk is sent, as it is made, to the linked
members of its circle that said ahead-ok; they keep it as a received chunk that no
moment uses yet. When the moment arrives, its chunks are here: only what was not sent
ahead is asked for. A chunk no moment comes to use is swept after an hour, as any
chunk no moment uses (spec/store.md section 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from p2pmoments.core.blobs import MAX_CHUNK
from p2pmoments.core.errors import DecodeError

__all__ = [
    "AHEAD_BUDGET",
    "AHEAD_MESSAGES",
    "AHEAD_WINDOW",
    "T_AHEAD",
    "T_AHEAD_OK",
    "Ahead",
    "AheadBudget",
    "AheadOk",
    "BadAheadMessage",
    "decode_ahead_message",
    "encode_ahead",
    "encode_ahead_ok",
]

T_AHEAD, T_AHEAD_OK = 40, 41
AHEAD_MESSAGES = frozenset({T_AHEAD, T_AHEAD_OK})
AHEAD_WINDOW = 3600.0  # seconds: a chunk no moment uses is swept when this old
AHEAD_BUDGET = 2 << 30  # bytes we keep ahead of one peer in a window (a 2 GiB file)
MAX_BUDGET = 1 << 40  # what an ahead-ok may say (1 TiB, the largest blob)
ID_LEN = 32


class BadAheadMessage(DecodeError):
    """A message 40 or 41 that is not exactly one."""


@dataclass(frozen=True, slots=True)
class AheadOk:
    """The sender keeps chunks sent ahead, up to `budget` bytes of ours an hour."""

    budget: int


@dataclass(frozen=True, slots=True)
class Ahead:
    """A chunk of a post of the sender's to `circle`, sent before its moment."""

    circle: bytes
    address: bytes
    data: bytes = field(repr=False)


def encode_ahead_ok(budget: int = AHEAD_BUDGET) -> dict[int, Any]:
    """Message 41."""
    return {0: T_AHEAD_OK, 1: budget}


def encode_ahead(circle: bytes, address: bytes, data: bytes) -> dict[int, Any]:
    """Message 40 (the chunk last: it is framed where it lies, never copied)."""
    return {0: T_AHEAD, 1: circle, 2: address, 3: data}


def decode_ahead_message(body: Mapping[int, Any]) -> Ahead | AheadOk:
    """Message 40 or 41, every field checked; BadAheadMessage otherwise."""
    kind = body.get(0)
    if kind == T_AHEAD_OK:
        budget = body.get(1)
        if set(body) != {0, 1} or type(budget) is not int or not 0 <= budget <= MAX_BUDGET:
            raise BadAheadMessage("malformed ahead-ok")
        return AheadOk(budget)
    if kind == T_AHEAD:
        circle, address, data = body.get(1), body.get(2), body.get(3)
        if (
            set(body) != {0, 1, 2, 3}
            or type(circle) is not bytes
            or len(circle) != ID_LEN
            or type(address) is not bytes
            or len(address) != ID_LEN
            or type(data) is not bytes
            or len(data) > MAX_CHUNK
        ):
            raise BadAheadMessage("malformed ahead")
        return Ahead(circle, address, data)
    raise BadAheadMessage(f"not an ahead message: {kind!r}")


@dataclass(slots=True)
class AheadBudget:
    """Bytes one peer sent us ahead in the current window of AHEAD_WINDOW seconds: what
    is over `limit` is not kept (it is asked for when its moment comes). Chunks kept
    ahead that no moment uses are swept once a window old, by a sweep that runs every
    window: each lives two windows at most, so what one peer can make us hold for
    nothing is at most three windows' worth (3 * `limit`: 6 GiB)."""

    limit: int = AHEAD_BUDGET
    used: int = 0
    since: float | None = None

    def take(self, size: int, now: float) -> bool:
        """True if `size` more bytes may be kept (and counts them)."""
        if self.since is None or now - self.since >= AHEAD_WINDOW or now < self.since:
            self.since, self.used = now, 0
        if self.used + size > self.limit:
            return False
        self.used += size
        return True
