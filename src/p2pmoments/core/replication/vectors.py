"""Per-circle sequence vectors: who holds what, and which ranges to send (spec/sync.md §2, §4).

Holdings are summarised per circle as a vector {(author, epoch): highest
sequence held}. Every transfer is an ascending range that starts right after
what the receiver holds, so holdings stay gap-free per (author, epoch) and the
maximum says everything; per epoch, because a member of epochs 0 and 2 but not
1 rightly lacks epoch 1 (tests/test_sync_model.py found the per-author form
unsound). Nothing about a circle goes to a peer outside its latest manifest,
and no moment to a peer outside its epoch: the checks sit here, where the
actions are made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from p2pmoments.core.replication.messages import Have, Message, Slot, Want
from p2pmoments.core.replication.peerview import PeerView

__all__ = [
    "ASK_PATIENCE",
    "WANT_AGAIN",
    "Eager",
    "Membership",
    "Send",
    "SendManifests",
    "SendRange",
    "VectorSync",
    "everyone",
    "same_person",
]

# Seconds we wait for the one peer we asked for a circle's moments (or for their author,
# linked, to push them) before asking another that is ahead (spec/sync.md section 4.8).
ASK_PATIENCE = 5.0
# What a peer can make us remember of ranges we could not take, or asked again: slots.
MAX_MISSED = 1024
WANT_GAP = 1.0  # seconds at least between two haves asking a peer again for a range
WANT_AGAIN = 5.0  # seconds at least between two ranges of a slot sent again on a peer's word
# Seconds a range we sent may go unconfirmed by the peer's haves before it is sent again,
# and how many times (spec/sync.md section 4, point 11); a version 2 daemon confirms nothing.
ACK_WAIT = 30.0
ACK_TRIES = 2


def same_person(device: bytes) -> bytes:
    """A key that is its own person: everyone, until rosters say otherwise."""
    return device


Eager = Callable[[bytes, bytes], bool]  # (peer, circle) -> a mesh link of that circle


def everyone(peer: bytes, circle: bytes) -> bool:
    """Every linked member is a mesh link (a full mesh)."""
    return True


@dataclass(frozen=True, slots=True)
class Membership:
    """Who is in a circle: per epoch, and the latest epoch. Manifests name persons; a
    peer is a device, and `person_of` says whose (spec/devices.md section 7: a current
    device of a member is the member; anyone else is themselves)."""

    latest: int
    members: Mapping[int, frozenset[bytes]]  # epoch -> identity keys (persons)
    person_of: Callable[[bytes], bytes] = same_person

    def in_latest(self, peer: bytes) -> bool:
        return self.person_of(peer) in self.members.get(self.latest, frozenset())

    def epochs_of(self, peer: bytes) -> frozenset[int]:
        person = self.person_of(peer)
        return frozenset(e for e, who in self.members.items() if person in who)

    def may_read(self, peer: bytes, epoch: int) -> bool:
        """True if `peer` is in the latest manifest and in `epoch` (holds its key)."""
        return self.in_latest(peer) and self.person_of(peer) in self.members.get(epoch, frozenset())


@dataclass(frozen=True, slots=True)
class Send:
    """Send `message` to `peer`."""

    peer: bytes
    message: Message


@dataclass(frozen=True, slots=True)
class SendManifests:
    """Send `peer` our signed manifests of `circle` for these epochs, before anything
    else about the circle."""

    peer: bytes
    circle: bytes
    epochs: frozenset[int]


@dataclass(frozen=True, slots=True)
class SendRange:
    """Send `peer` our moments of `author` in `circle` with first <= seq <= last, of the
    given epochs only, in order (the shell reads them from its store, or has them)."""

    peer: bytes
    circle: bytes
    author: bytes
    first: int
    last: int
    epochs: frozenset[int]


Action = Send | SendManifests | SendRange


class VectorSync:
    """Replication decisions by sequence vectors, for one daemon."""

    def __init__(self, me: bytes, eager: Eager = everyone) -> None:
        self.me = me
        # Whether a linked peer is one of the circle's mesh links (spec/sync.md section
        # 7): new moments are pushed or announced over those only; every link still
        # exchanges haves at link-up and answers what it is asked.
        self._eager = eager
        self._circles: dict[bytes, Membership] = {}
        self._held: dict[bytes, dict[Slot, int]] = {}
        self._peers: dict[bytes, PeerView] = {}
        # Per circle, the one peer we asked for what we lack, and when (or an author we
        # wait for: it pushes its own moments): one copy of a moment, not one a neighbour.
        self._asked: dict[bytes, tuple[bytes, float]] = {}
        # Per circle, the peers asked that let ASK_PATIENCE pass without our catching up
        # (what they claim may have expired there): not asked again until they claim
        # more, or we store something of the circle. So a hole no one can fill costs one
        # ask a peer, not one every few seconds for ever.
        self._tried: dict[bytes, set[bytes]] = {}
        self._now = 0.0  # the time of the last event that told us the time
        # Ranges not taken (they did not continue what we held), and sent again (asked
        # for again, or unconfirmed): spec/sync.md section 4, point 11.
        self.refused = 0
        self.resent = 0

    # --- what the shell tells us ---------------------------------------------

    def set_circle(self, circle: bytes, membership: Membership) -> list[Action]:
        """A circle we are in, or its new manifest: haves for the linked members (they
        learn which manifests we hold; newly allowed peers, what we hold)."""
        before = self._circles.get(circle)
        self._circles[circle] = membership
        self._held.setdefault(circle, {})
        out: list[Action] = []
        for peer in self._peers:
            if membership.in_latest(peer):
                was = before is not None and before.in_latest(peer)
                out += self._tell(peer, circle, force=not was)
        return out

    def membership(self, circle: bytes) -> Membership | None:
        """Who is in a circle, as far as we know."""
        return self._circles.get(circle)

    def held(self, circle: bytes) -> Mapping[Slot, int]:
        """What we hold of a circle: (author, epoch) -> highest seq."""
        return self._held.get(circle, {})

    def behind(self, have: Have) -> int:
        """How many moments a have claims that we lack, in epochs we may read: the most
        a catch-up from its sender can bring (retracted and expired ones are left out)."""
        membership = self._circles.get(have.circle)
        if membership is None:
            return 0
        ours = self._held.get(have.circle, {})
        readable = membership.epochs_of(self.me)
        return sum(
            max(0, seq - ours.get((author, epoch), 0))
            for (author, epoch), seq in have.vector.items()
            if epoch in readable
        )

    def seed(self, circle: bytes, author: bytes, epoch: int, seq: int) -> None:
        """What the store already holds, at start-up (no messages)."""
        vector = self._held.setdefault(circle, {})
        vector[(author, epoch)] = max(seq, vector.get((author, epoch), 0))

    def leave_circle(self, circle: bytes) -> None:
        """We are out of a circle (removed, or it was deleted): nothing more about it."""
        self._circles.pop(circle, None)
        self._asked.pop(circle, None)
        self._tried.pop(circle, None)
        for view in self._peers.values():
            view.has.pop(circle, None)
            view.told.pop(circle, None)
            view.epochs.pop(circle, None)
            view.missed.pop(circle, None)
            view.acked.pop(circle, None)
            view.unacked = {k: v for k, v in view.unacked.items() if k[0] != circle}
            view.deaf = {k for k in view.deaf if k[0] != circle}

    def forget_circle(self, circle: bytes) -> None:
        """We deleted a circle and what we held of it."""
        self.leave_circle(circle)
        self._held.pop(circle, None)

    def stored(
        self, circle: bytes, moments: Iterable[tuple[bytes, int, int]], source: bytes | None
    ) -> list[Action]:
        """We now hold these (author, seq, epoch) of one circle: ours if `source` is None,
        else received from `source`. Ours are pushed at once to every linked member of
        their epoch that holds its manifest (others could not open them: they get a
        have); others' are announced with at most one have per peer."""
        top: dict[Slot, int] = {}
        for author, seq, epoch in moments:
            top[(author, epoch)] = max(seq, top.get((author, epoch), 0))
        held = self._held.get(circle, {})
        progressed = any(seq > held.get(slot, 0) for slot, seq in top.items())
        ranges: list[Action] = []
        haves: dict[bytes, list[Action]] = {}
        for (author, epoch), seq in top.items():
            for action in self._stored_one(circle, author, seq, epoch, source):
                if isinstance(action, Send):
                    haves[action.peer] = [action]  # a later have says all an earlier one did
                else:
                    ranges.append(action)
        membership = self._circles.get(circle)
        if source in self._peers and membership is not None and membership.in_latest(source):
            # The sender hears what we now hold: its author learns they were delivered
            # (spec/sync.md §4, point 4). No answer comes back: we are not ahead of it.
            haves[source] = self._tell(source, circle)
        asks = self._settle(circle, progressed)
        return [*ranges, *(a for actions in haves.values() for a in actions), *asks]

    def link_up(self, peer: bytes) -> list[Action]:
        """A link to `peer` is open: tell it what we hold of every circle it is in."""
        self._peers[peer] = PeerView()
        return [
            a
            for c, m in self._circles.items()
            if m.in_latest(peer)
            for a in self._tell(peer, c, force=True)
        ]

    def retell(self) -> list[Action]:
        """Tell every linked peer again what we hold of each circle it is in (we can read
        more now: another device of ours gave us keys), so each sends what we lack."""
        return [
            a
            for peer in list(self._peers)
            for c, m in self._circles.items()
            if m.in_latest(peer)
            for a in self._tell(peer, c, force=True)
        ]

    def link_down(self, peer: bytes) -> list[Action]:
        """The link to `peer` is gone: what we asked of it, we ask of another."""
        self._peers.pop(peer, None)
        out: list[Action] = []
        for circle, (asked, _) in list(self._asked.items()):
            if asked == peer:
                del self._asked[circle]
                out += self._ask_someone(circle)
        return out

    def tick(self, now: float) -> list[Action]:
        """Time passed: a peer asked (or an author awaited) too long ago without an answer
        is passed over, and another that is ahead is asked."""
        self._now = now
        out: list[Action] = []
        for circle, (asked, when) in list(self._asked.items()):
            if now - when >= ASK_PATIENCE:
                del self._asked[circle]
                self._tried.setdefault(circle, set()).add(asked)
                out += self._ask_someone(circle, wait=False)
        for peer in list(self._peers):
            out += self._send_again(peer, now)
        return out

    def _send_again(self, peer: bytes, now: float) -> list[Action]:
        """Ranges sent to `peer` that its haves have not confirmed in ACK_WAIT seconds are
        sent again from what it confirmed (it may have lost them on the way while its link
        stayed up: spec/sync.md section 4, point 11), ACK_TRIES times at most."""
        view = self._peers[peer]
        out: list[Action] = []
        for (circle, slot), (when, tries) in list(view.unacked.items()):
            if now - when < ACK_WAIT:
                continue
            membership = self._circles.get(circle)
            held = self._held.get(circle, {}).get(slot, 0)
            acked = view.acked.get(circle, {}).get(slot, 0)
            if (
                tries >= ACK_TRIES
                or held <= acked
                or membership is None
                or not membership.may_read(peer, slot[1])
            ):
                del view.unacked[(circle, slot)]
                if tries >= ACK_TRIES:
                    view.deaf.add((circle, slot))
                continue
            view.unacked[(circle, slot)] = (now, tries + 1)
            self.resent += 1
            view.has.setdefault(circle, {})[slot] = held
            out.append(SendRange(peer, circle, slot[0], acked + 1, held, frozenset({slot[1]})))
        return out

    def received_have(self, peer: bytes, have: Have, now: float | None = None) -> list[Action]:
        """A peer told us what it holds: send what it lacks; ask for what we lack, of one
        peer at a time."""
        if now is not None:
            self._now = now
        view = self._peers.get(peer)
        if view is None:
            return []
        circle, theirs = have.circle, have.vector
        membership = self._circles.get(circle)
        if membership is None:
            # A circle we hold no manifest of: say so, and a member's manifests follow.
            # Never in answer to such a plea, so two daemons cannot ping-pong.
            plea = Have(circle=circle, vector={}, epochs=frozenset())
            return [Send(peer, plea)] if have.epochs else []
        if not membership.in_latest(peer):
            return []  # not for them to know
        view.epochs[circle] = have.epochs
        out: list[Action] = []
        lacking = (membership.epochs_of(peer) | {membership.latest}) - have.epochs
        if lacking:
            out.append(SendManifests(peer, circle, frozenset(lacking)))
        known = view.has.setdefault(circle, {})
        for slot, seq in theirs.items():
            if seq > known.get(slot, 0):
                known[slot] = seq
                self._tried.get(circle, set()).discard(peer)  # it claims more: ask again
        ours = self._held.get(circle, {})
        epochs = membership.epochs_of(peer)
        for author, epoch, start in have.wants:
            # Lost, or not taken: the range goes again from there (4.11), once in WANT_AGAIN.
            due = epoch in epochs and known.get((author, epoch), 0) >= start
            if due and view.honour(circle, (author, epoch), self._now, WANT_AGAIN):
                known[(author, epoch)] = start - 1
                self.resent += 1
        view.confirmed(circle, theirs, self._now)
        for (author, epoch), seq in ours.items():
            if epoch in epochs and seq > known.get((author, epoch), 0):
                first = known.get((author, epoch), 0) + 1
                out.append(SendRange(peer, circle, author, first, seq, frozenset({epoch})))
                view.sent(circle, (author, epoch), seq, self._now)
        if self._ahead(peer, circle):
            # They are ahead where we may read: our have is a request, so it goes even if
            # unchanged. No loop: the side that is ahead answers with moments, not with a
            # have; and an epoch we are not in is not asked for (two members each holding
            # an epoch the other was never in asked each other for ever: the model found it).
            # Asked of one peer at a time: in a mesh every neighbour announces the same
            # moment, and asking each would bring it once a neighbour.
            out += self._ask(peer, circle)
        return out

    def connects(self, circle: bytes, author: bytes, epoch: int, first: int) -> bool:
        """True if a range starting at `first` continues what we hold of (author, epoch)."""
        return first <= self._held.get(circle, {}).get((author, epoch), 0) + 1

    def gap(
        self, peer: bytes, circle: bytes, author: bytes, epoch: int, now: float
    ) -> list[Action]:
        """A range from `peer` starts past what we hold (a range it sent before never
        reached us, or we could not take it): ask for it again from where ours ends, with
        a have naming it (once per ASK_PATIENCE for the same start)."""
        self._now = now
        self.refused += 1
        view = self._peers.get(peer)
        if view is None or now - view.want_at < WANT_GAP:
            return []  # a have is our whole vector: a peer cannot make us send many
        start = self._held.get(circle, {}).get((author, epoch), 0) + 1
        last = view.wanted.get((circle, (author, epoch)))
        if last is not None and last[0] == start and now - last[1] < ASK_PATIENCE:
            return []
        if len(view.wanted) >= MAX_MISSED:
            view.wanted.clear()
        view.wanted[(circle, (author, epoch))] = (start, now)
        view.want_at = now
        return self._tell(peer, circle, force=True, wants=((author, epoch, start),))

    def missed(self, peer: bytes, circle: bytes, author: bytes, epoch: int) -> None:
        """A range from `peer` we could not take (its circle, or that it is a member, not
        known to us yet): asked for again in our next have to it about that circle."""
        view = self._peers.get(peer)
        if view is not None and sum(len(s) for s in view.missed.values()) < MAX_MISSED:
            view.missed.setdefault(circle, set()).add((author, epoch))

    def circles_of(self, peer: bytes) -> list[bytes]:
        """The circles whose traffic may go to `peer`."""
        return [c for c, m in self._circles.items() if m.in_latest(peer)]

    # --- internals -------------------------------------------------------------

    def _ahead(self, peer: bytes, circle: bytes) -> list[bytes]:
        """The authors of what `peer` holds (as far as we know) of `circle` and we lack,
        in epochs we may read."""
        view = self._peers.get(peer)
        membership = self._circles.get(circle)
        if view is None or membership is None or not membership.in_latest(peer):
            return []
        ours = self._held.get(circle, {})
        readable = membership.epochs_of(self.me)
        return [
            author
            for (author, epoch), seq in view.has.get(circle, {}).items()
            if epoch in readable and seq > ours.get((author, epoch), 0)
        ]

    def _ask(self, peer: bytes, circle: bytes, *, wait: bool = True) -> list[Action]:
        """Ask `peer` for what we lack of `circle` (our have), unless another peer asked
        not long ago may still answer, or (with `wait`) the one author of all of it is
        linked with us (an author pushes its own moments to every linked reader at once:
        a neighbour's have often comes before the author's push)."""
        if peer in self._tried.get(circle, ()):
            return []
        asked = self._asked.get(circle)
        if (
            asked is not None
            and asked[0] != peer
            and asked[0] in self._peers
            and self._now - asked[1] < ASK_PATIENCE
        ):
            return []
        authors = self._ahead(peer, circle)
        if wait and asked is None and authors and peer not in authors:
            waiting = {a for a in authors if a in self._peers and self._eager(a, circle)}
            if len(waiting) == 1 and len(set(authors)) == 1:
                self._asked[circle] = (authors[0], self._now)
                return []
        if asked is not None and asked[0] == peer and self._now - asked[1] < ASK_PATIENCE:
            return self._tell(peer, circle)  # only if it says more: else haves loop (4.11)
        self._asked[circle] = (peer, self._now)
        return self._tell(peer, circle, force=True)

    def _ask_someone(self, circle: bytes, *, wait: bool = True) -> list[Action]:
        """Ask the first linked peer that is ahead of us in `circle`, of those not tried."""
        tried = self._tried.get(circle, set())
        ahead = [p for p in self._peers if p not in tried and self._ahead(p, circle)]
        return self._ask(ahead[0], circle, wait=wait) if ahead else []

    def _settle(self, circle: bytes, progressed: bool) -> list[Action]:
        """After storing: a peer asked that we have caught up with is answered; if another
        is still ahead, ask it."""
        if progressed:
            self._tried.pop(circle, None)  # whoever claims more may have it now
        asked = self._asked.get(circle)
        if asked is None:
            return []
        if asked[0] in self._peers and self._ahead(asked[0], circle):
            self._asked[circle] = (asked[0], self._now)  # on its way, batch by batch
            return []
        del self._asked[circle]
        return self._ask_someone(circle)

    def _stored_one(
        self, circle: bytes, author: bytes, seq: int, epoch: int, source: bytes | None
    ) -> list[Action]:
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
        for peer, view in self._peers.items():
            if peer == source or not membership.may_read(peer, epoch):
                continue
            if not self._eager(peer, circle):
                continue  # not one of the circle's mesh links: it hears through them
            known = view.has.setdefault(circle, {})
            if source is None and epoch in view.epochs.get(circle, ()):
                # Everything they lack of this slot, not just the new one: a range
                # that starts right after what they hold keeps their holdings gap-free.
                out.append(
                    SendRange(peer, circle, author, known.get(slot, 0) + 1, seq, frozenset({epoch}))
                )
                view.sent(circle, slot, seq, self._now)
            elif known.get(slot, 0) < seq:
                out += self._tell(peer, circle)
        return out

    def _tell(
        self, peer: bytes, circle: bytes, *, force: bool = False, wants: tuple[Want, ...] = ()
    ) -> list[Action]:
        vector = dict(self._held.get(circle, {}))
        membership = self._circles.get(circle)
        epochs = frozenset(membership.members) if membership else frozenset()
        view = self._peers[peer]
        missed = view.missed.pop(circle, set()) if membership is not None else set()
        wants += tuple((a, e, vector.get((a, e), 0) + 1) for a, e in sorted(missed))
        if not force and not wants and view.told.get(circle) == (vector, epochs):
            return []  # nothing new to say
        view.told[circle] = (vector, epochs)
        return [Send(peer, Have(circle=circle, vector=vector, epochs=epochs, wants=wants))]
