"""Per-circle replication decisions, sans-I/O (spec/sync.md).

The shell tells a `Sync` what happens (a link came up or went, a message
arrived, we posted, we stored moments) and gets back `Send` actions: which
message to send to which peer. It never sends anything about a circle to a peer
that is not a member of the circle's latest manifest (the check sits here, at
the point of sending), and never a moment to a peer outside that moment's epoch.

Holdings are summarised per circle as a vector {(author, epoch): highest
sequence held}. Every transfer is an ascending range that starts right after
what the receiver holds, so holdings stay gap-free per (author, epoch) and the
maximum says everything; per epoch, because a member of epochs 0 and 2 but not
1 rightly lacks epoch 1 (tests/test_sync_model.py found the per-author form
unsound). The shell stores the moments and answers `Want` with the envelopes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAX_VECTOR",
    "T_HAVE",
    "T_MANIFESTS",
    "T_MOMENTS",
    "Membership",
    "Send",
    "SendManifests",
    "Sync",
    "Want",
    "decode_have",
    "encode_have",
]

T_MANIFESTS, T_HAVE, T_MOMENTS, T_WANT_CHUNKS, T_CHUNK = 16, 17, 18, 19, 20
MAX_VECTOR = 151  # authors: the owner and up to 150 members
MAX_EPOCHS = 4096  # manifest epochs named in one have


@dataclass(frozen=True, slots=True)
class Membership:
    """Who is in a circle: per epoch, and the latest epoch."""

    latest: int
    members: Mapping[int, frozenset[bytes]]  # epoch -> identity keys

    def in_latest(self, peer: bytes) -> bool:
        return peer in self.members.get(self.latest, frozenset())

    def epochs_of(self, peer: bytes) -> frozenset[int]:
        return frozenset(e for e, who in self.members.items() if peer in who)


@dataclass(frozen=True, slots=True)
class Send:
    """Send `body` (a link message, key 0 its type) to `peer`."""

    peer: bytes
    body: dict[int, Any]


@dataclass(frozen=True, slots=True)
class SendManifests:
    """Send `peer` our signed manifests of `circle` for these epochs (the shell holds
    them), before anything else about the circle."""

    peer: bytes
    circle: bytes
    epochs: frozenset[int]


@dataclass(frozen=True, slots=True)
class Want:
    """Send `peer` our moments of `author` in `circle` with first <= seq <= last, of the
    given epochs only, in order (the shell reads them from its store)."""

    peer: bytes
    circle: bytes
    author: bytes
    first: int
    last: int
    epochs: frozenset[int]


Slot = tuple[bytes, int]  # (author, epoch)


Action = Send | SendManifests | Want


def encode_have(circle: bytes, vector: Mapping[Slot, int], epochs: Iterable[int]) -> dict[int, Any]:
    """A have message: what we hold of one circle, moments and manifests.

    No epochs means we hold no manifest of the circle: a plea for them."""
    return {
        0: T_HAVE,
        1: circle,
        2: [[a, e, s] for (a, e), s in sorted(vector.items())],
        3: sorted(epochs),
    }


def decode_have(body: Mapping[int, Any]) -> tuple[bytes, dict[Slot, int], frozenset[int]] | None:
    """(circle, vector, manifest epochs held) from a have message, or None if malformed."""
    circle, entries, epochs = body.get(1), body.get(2), body.get(3, [])
    if type(circle) is not bytes or len(circle) != 32 or type(entries) is not list:
        return None
    if len(entries) > MAX_VECTOR * 64 or type(epochs) is not list or len(epochs) > MAX_EPOCHS:
        return None
    if not all(type(e) is int and 0 <= e < 1 << 32 for e in epochs):
        return None
    vector: dict[Slot, int] = {}
    for entry in entries:
        if (
            type(entry) is not list
            or len(entry) != 3
            or type(entry[0]) is not bytes
            or len(entry[0]) != 32
            or type(entry[1]) is not int
            or entry[1] < 0
            or type(entry[2]) is not int
            or entry[2] < 0
        ):
            return None
        vector[(entry[0], entry[1])] = entry[2]
    return circle, vector, frozenset(epochs)


@dataclass(slots=True)
class _Peer:
    # What we know the peer holds, per circle and author (from its haves and our sends).
    has: dict[bytes, dict[Slot, int]] = field(default_factory=dict)
    # The last vector and manifest epochs we told it, per circle, so we do not repeat
    # ourselves.
    told: dict[bytes, tuple[dict[Slot, int], frozenset[int]]] = field(default_factory=dict)
    # The manifest epochs it holds, per circle (from its haves): it can open only those.
    epochs: dict[bytes, frozenset[int]] = field(default_factory=dict)


class Sync:
    """Replication decisions of one daemon."""

    def __init__(self, me: bytes) -> None:
        self.me = me
        self._circles: dict[bytes, Membership] = {}
        self._held: dict[bytes, dict[Slot, int]] = {}
        self._peers: dict[bytes, _Peer] = {}

    # --- what the shell tells us -------------------------------------------------

    def set_circle(self, circle: bytes, membership: Membership) -> list[Action]:
        """A circle we are in, or its new manifest: returns haves for the linked members
        (they learn which manifests we hold; newly allowed peers, what we hold)."""
        before = self._circles.get(circle)
        self._circles[circle] = membership
        self._held.setdefault(circle, {})
        out: list[Action] = []
        for peer in self._peers:
            was = before is not None and before.in_latest(peer)
            if membership.in_latest(peer):
                out.append(self._tell(peer, circle, force=not was))
        return [o for o in out if not (isinstance(o, Send) and not o.body)]

    def seed(self, circle: bytes, author: bytes, epoch: int, seq: int) -> None:
        """What the store already holds, at start-up (no messages)."""
        vector = self._held.setdefault(circle, {})
        vector[(author, epoch)] = max(seq, vector.get((author, epoch), 0))

    def forget_circle(self, circle: bytes) -> None:
        """We left or deleted a circle."""
        self._circles.pop(circle, None)
        self._held.pop(circle, None)
        for state in self._peers.values():
            state.has.pop(circle, None)
            state.told.pop(circle, None)

    def stored(
        self, circle: bytes, author: bytes, seq: int, epoch: int, source: bytes | None
    ) -> list[Action]:
        """We now hold a moment (ours if `source` is None, else received from `source`).

        Our own moments are pushed at once to every linked member of their epoch that
        holds its manifest (others could not open them: they get a have);
        others' are announced with a have, and whoever is behind asks for them.
        """
        slot = (author, epoch)
        vector = self._held.setdefault(circle, {})
        if seq <= vector.get(slot, 0):
            return []
        vector[slot] = seq
        if source is not None and source in self._peers:
            known = self._peers[source].has.setdefault(circle, {})
            known[slot] = max(seq, known.get(slot, 0))
        membership = self._circles.get(circle)
        if membership is None:
            return []
        out: list[Action] = []
        for peer, state in self._peers.items():
            if peer == source or not membership.in_latest(peer):
                continue
            if epoch not in membership.epochs_of(peer):
                continue
            known = state.has.setdefault(circle, {})
            if source is None and epoch in state.epochs.get(circle, ()):
                # Everything they lack of this slot, not just the new one: a range
                # that starts right after what they hold keeps their holdings gap-free.
                out.append(
                    Want(peer, circle, author, known.get(slot, 0) + 1, seq, frozenset({epoch}))
                )
                known[slot] = seq
            elif known.get(slot, 0) < seq:
                out.append(self._tell(peer, circle))
        return [o for o in out if not (isinstance(o, Send) and not o.body)]

    def stored_many(
        self, circle: bytes, moments: Iterable[tuple[bytes, int, int]], source: bytes | None
    ) -> list[Action]:
        """Like `stored` for a batch of (author, seq, epoch) of one circle, with at most
        one have per peer."""
        top: dict[Slot, int] = {}
        for author, seq, epoch in moments:
            top[(author, epoch)] = max(seq, top.get((author, epoch), 0))
        wants: list[Action] = []
        haves: dict[bytes, Send] = {}
        for (author, epoch), seq in top.items():
            for action in self.stored(circle, author, seq, epoch, source):
                if isinstance(action, Send):
                    haves[action.peer] = action  # a later have says all an earlier one did
                else:
                    wants.append(action)
        return [*wants, *haves.values()]

    def link_up(self, peer: bytes) -> list[Action]:
        """A link to `peer` is open: tell it what we hold of every circle it is in."""
        self._peers[peer] = _Peer()
        return [
            self._tell(peer, c, force=True) for c, m in self._circles.items() if m.in_latest(peer)
        ]

    def link_down(self, peer: bytes) -> None:
        """The link to `peer` is gone."""
        self._peers.pop(peer, None)

    def received_have(self, peer: bytes, body: Mapping[int, Any]) -> list[Action]:
        """A peer told us what it holds: send what it lacks; ask for what we lack."""
        parsed = decode_have(body)
        state = self._peers.get(peer)
        if parsed is None or state is None:
            return []
        circle, theirs, their_epochs = parsed
        membership = self._circles.get(circle)
        if membership is None:
            # A circle we hold no manifest of: say so, and a member's manifests follow.
            # Never in answer to such a plea, so two daemons cannot ping-pong.
            return [Send(peer, encode_have(circle, {}, ()))] if their_epochs else []
        if not membership.in_latest(peer):
            return []  # not for them to know
        state.epochs[circle] = their_epochs
        out: list[Action] = []
        lacking = (membership.epochs_of(peer) | {membership.latest}) - their_epochs
        if lacking:
            out.append(SendManifests(peer, circle, frozenset(lacking)))
        known = state.has.setdefault(circle, {})
        for slot, seq in theirs.items():
            known[slot] = max(known.get(slot, 0), seq)
        ours = self._held.get(circle, {})
        epochs = membership.epochs_of(peer)
        for (author, epoch), seq in ours.items():
            if epoch in epochs and seq > known.get((author, epoch), 0):
                first = known.get((author, epoch), 0) + 1
                out.append(Want(peer, circle, author, first, seq, frozenset({epoch})))
                known[(author, epoch)] = seq
        readable = membership.epochs_of(self.me)
        if any(seq > ours.get((a, e), 0) for (a, e), seq in theirs.items() if e in readable):
            # They are ahead: our have is a request, so it goes even if unchanged. No
            # loop: the side that is ahead answers with moments, not with a have.
            out.append(self._tell(peer, circle, force=True))
        return [o for o in out if not (isinstance(o, Send) and not o.body)]

    # --- internals -------------------------------------------------------------------

    def _tell(self, peer: bytes, circle: bytes, *, force: bool = False) -> Send:
        vector = dict(self._held.get(circle, {}))
        membership = self._circles.get(circle)
        epochs = frozenset(membership.members) if membership else frozenset()
        state = self._peers[peer]
        if not force and state.told.get(circle) == (vector, epochs):
            return Send(peer, {})  # nothing new to say; filtered out by callers
        state.told[circle] = (vector, epochs)
        return Send(peer, encode_have(circle, vector, epochs))

    def circles_of(self, peer: bytes) -> Iterable[bytes]:
        """The circles whose traffic may go to `peer`."""
        return [c for c, m in self._circles.items() if m.in_latest(peer)]
