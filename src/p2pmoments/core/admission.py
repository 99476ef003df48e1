"""Who may link to us, and which connection makes room under a flood (spec/transport.md
sections 1, 8 and 9). Pure decisions; the shell looks things up and carries them out."""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "Admission",
    "Claim",
    "Client",
    "Known",
    "Verdict",
    "admit",
    "control_room",
    "keep_new_link",
    "make_room",
    "stream_room",
]

T = TypeVar("T")


class Claim(enum.Enum):
    """What the store says of a pairing token presented to us."""

    OK = "ok"  # unclaimed, or claimed by this same device before
    USED = "used"  # claimed by another device
    EXPIRED = "expired"


class Verdict(enum.Enum):
    """What to do with an initiator that finished message 1."""

    ACCEPT = "accept"
    REFUSE = "refuse"  # in silence: a stranger learns nothing
    REFUSE_PAIRING = "refuse_pairing"  # it proved it holds our code: tell it why


@dataclass(frozen=True, slots=True, kw_only=True)
class Known:
    """What we know of the key that dialled us (the shell looks it up)."""

    friend: bool = False  # a friend, not blocked
    blocked: bool = False
    co_member: bool = False  # in a circle we are in, by its latest manifest
    cooling: bool = False  # dropped for abuse a moment ago
    claim: Claim | None = None  # with a pairing token: what the store says of it
    friends: int = 0  # how many friends we have
    max_friends: int = 150


@dataclass(frozen=True, slots=True, kw_only=True)
class Admission:
    """A verdict, and the reason recorded (and, for REFUSE_PAIRING, said)."""

    verdict: Verdict
    reason: str = ""


_CLAIM_REASONS = {
    Claim.USED: "this code was already used by another device",
    Claim.EXPIRED: "this code has expired",
}


def admit(known: Known) -> Admission:
    """Whether to answer an initiator (spec/transport.md section 1, spec/pairing.md)."""
    if known.claim is not None:  # it used one of our pairing codes
        if known.claim is not Claim.OK:
            return Admission(verdict=Verdict.REFUSE_PAIRING, reason=_CLAIM_REASONS[known.claim])
        if not known.friend and not known.blocked and known.friends >= known.max_friends:
            return Admission(
                verdict=Verdict.REFUSE_PAIRING,
                reason=f"at the friend limit ({known.max_friends})",
            )
        return Admission(verdict=Verdict.ACCEPT)  # re-pairing unblocks a blocked friend
    if known.cooling or known.blocked:
        return Admission(verdict=Verdict.REFUSE)
    if known.friend or known.co_member:
        return Admission(verdict=Verdict.ACCEPT)
    return Admission(verdict=Verdict.REFUSE)


@dataclass(frozen=True, slots=True, kw_only=True)
class Half(Generic[T]):
    """A connection still in its handshake."""

    conn: T
    host: str
    opened: float
    awaiting_first_message: bool


def make_room(
    handshakes: Sequence[Half[T]],
    host: str,
    *,
    links: int,
    max_links: int,
    max_handshakes: int,
    max_per_host: int,
) -> tuple[bool, list[T]]:
    """Whether a new connection from `host` may start a handshake, and the connections to
    close first to make room: at a handshake bound (all, or this host's), the oldest one
    that has not even sent a whole message 1 (spec/transport.md section 9)."""
    evict: list[T] = []
    remaining = list(handshakes)
    for bound, of_host in ((max_per_host, True), (max_handshakes, False)):
        crowd = [h for h in remaining if h.host == host or not of_host]
        if len(crowd) < bound:
            continue
        idle = [h for h in crowd if h.awaiting_first_message]
        if not idle:
            return False, []
        oldest = min(idle, key=lambda h: h.opened)
        remaining.remove(oldest)
        evict.append(oldest.conn)
    return links + len(remaining) < max_links, evict


@dataclass(frozen=True, slots=True, kw_only=True)
class Client(Generic[T]):
    """A connection to the control port."""

    conn: T
    host: str  # the address it comes from
    idle_since: float  # when it opened or was last answered
    busy: bool  # a request of its is being answered: never evicted
    heard: bool = True  # it has sent something: one not yet read from goes last
    opened: float = 0.0  # when it was accepted


def control_room(
    conns: Sequence[Client[T]],
    host: str,
    *,
    max_conns: int,
    max_per_host: int,
    now: float = 0.0,
    grace: float = 0.0,
) -> tuple[bool, list[T]]:
    """Whether a new connection from `host` to the control port may stay, and the
    connections to close first to make room: at a bound (this host's, or all), the one
    idle longest, never one being answered. The flood this is against sends request
    heads slowly, so it only ever holds idle connections, and it makes room for
    everyone else's; a newcomer is refused only when every connection is at work. A
    connection not yet read from goes last, and not at all in its first `grace`
    seconds: accepted in the same burst as a flood, its whole request may be waiting
    unread (the next read of the loop would have found it)."""
    evict: list[T] = []
    remaining = list(conns)
    for bound, of_host in ((max_per_host, True), (max_conns, False)):
        while True:
            crowd = [c for c in remaining if c.host == host or not of_host]
            if len(crowd) < bound:
                break
            idle = [c for c in crowd if not c.busy and (c.heard or now - c.opened >= grace)]
            if not idle:
                return False, []
            oldest = min(idle, key=lambda c: (not c.heard, c.idle_since))
            remaining.remove(oldest)
            evict.append(oldest.conn)
    return True, evict


def stream_room(
    holders: Sequence[str], session: str, *, max_streams: int, max_per_session: int
) -> tuple[bool, int | None]:
    """Whether `session` may open another event stream, given the session holding each
    one open (oldest first), and which of those to end first to make room: at the bound
    for all, the oldest stream of the session holding the most, if it holds more than
    this one would. A session at its own bound is refused, so the pages of one session
    can never starve the others'."""
    mine = sum(1 for h in holders if h == session)
    if mine >= max_per_session:
        return False, None
    if len(holders) < max_streams:
        return True, None
    counts = Counter(holders)
    top = max(counts.values())
    if top <= mine + 1:
        return False, None
    return True, next(i for i, h in enumerate(holders) if counts[h] == top)


def keep_new_link(
    me: bytes,
    peer: bytes,
    *,
    old_dialled_by_us: bool,
    new_dialled_by_us: bool,
    old_over_tor: bool = False,
    new_over_tor: bool = False,
) -> bool:
    """Two links to the same peer: True to keep the new one (spec/transport.md section 8).
    A direct link (LAN or a static address) beats one over Tor: faster, and both sides
    know which is which (the dialler dialled an onion; the other side took it on its
    onion service's own port). Otherwise both sides keep the link dialled by the lower
    identity; a redial by the same side replaces the older link (probably dead, not yet
    detected)."""
    if old_over_tor != new_over_tor:
        return old_over_tor
    if old_dialled_by_us == new_dialled_by_us:
        return True
    new_dialler = me if new_dialled_by_us else peer
    old_dialler = me if old_dialled_by_us else peer
    return new_dialler < old_dialler
