"""Reach cards: how friends and co-members reach each other beyond the LAN (spec/tor.md
section 6). Pure: the shell (p2pmoments/reach.py) stores cards, sends them on links and
tells tor; every decision about a card is here.

A card says "identity X is reachable at onion O, and its tor authenticates with
client-auth key K", signed by X's identity key, so any member can pass it on and
nobody can forge one:

    card = {1: body, 2: Ed25519 signature of CARD_CONTEXT || body}
    body = {1: 1 (version), 2: identity (32), 3: onion key (32), 4: client-auth key (32),
            5: issued (Unix seconds)}

Cards travel only on links (message type 22), and only to whom they concern: our own
to every friend and co-member we link with; someone else's only to a peer that is,
with us and with them, a member of one circle. A newer card (by `issued`) replaces
an older one of the same identity.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from p2pmoments.core import wire
from p2pmoments.core.crypto import BadSignatureError, VerifyKey
from p2pmoments.core.errors import DecodeError, RejectedError, RemoteProtocolError
from p2pmoments.core.identity import Identity
from p2pmoments.core.onion import ClientAuthPublicKey, OnionAddress

__all__ = [
    "CARD_CONTEXT",
    "KEY_CHANGE_INTERVAL",
    "MAX_CARDS",
    "MAX_CLIENTS",
    "T_REACH",
    "BadReach",
    "ReachBook",
    "ReachCard",
    "authorized_clients",
    "create_card",
    "decode_card",
    "decode_reach",
    "encode_reach",
]

T_REACH = 22  # the link message carrying cards (spec/transport.md section 3)
CARD_CONTEXT = b"p2pmoments/reach/1\x00"
VERSION = 1
MAX_CARD = 512  # bytes of one card (they are about 200)
MAX_CARDS = 64  # cards in one message
MAX_ISSUED = (1 << 40) - 1
# Tor refuses to publish a descriptor over 50,000 bytes: about 336 clients. 300 were
# measured to publish and connect (spec/tor.md section 4).
MAX_CLIENTS = 300
# Verified cards that came before we knew their people (a card can overtake the manifest
# that makes someone a co-member): held back, in memory, and looked at again when our
# circles change.
MAX_WAITING = 512
KEY_CHANGE_INTERVAL = 3600.0  # seconds: how often one identity's onion or client key may change

Circles = Iterable[Collection[bytes]]  # the member sets of the circles we are in


class BadReach(RemoteProtocolError):
    """A malformed reach message, or a card in it that is not what it claims: a peer
    relays only cards it verified, so either is the peer's fault."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReachCard:
    """Where one identity's onion service is, and the key its tor shows ours."""

    identity: bytes
    onion: OnionAddress
    client_auth: ClientAuthPublicKey
    issued: int
    raw: bytes

    def __repr__(self) -> str:
        # The onion's repr shows six characters: enough to tell two apart in a log.
        return f"ReachCard(onion={self.onion!r}, issued={self.issued})"


def create_card(
    identity: Identity, *, onion: OnionAddress, client_auth: ClientAuthPublicKey, issued: int
) -> ReachCard:
    """Our own card, signed."""
    body = wire.encode_map(
        {
            1: VERSION,
            2: bytes(identity.public.verify_key),
            3: bytes(onion),
            4: bytes(client_auth),
            5: issued,
        }
    )
    signature = identity.signing_key.sign(CARD_CONTEXT + body)
    return decode_card(wire.encode_map({1: body, 2: signature}))


def decode_card(raw: bytes) -> ReachCard:
    """A verified card; RejectedError if malformed or not signed by the identity it names."""
    if type(raw) is not bytes or len(raw) > MAX_CARD:
        raise RejectedError("a reach card is at most 512 bytes")
    try:
        outer = wire.decode_map(raw, max_size=MAX_CARD)
        body, signature = outer.get(1), outer.get(2)
        if set(outer) != {1, 2} or type(body) is not bytes or type(signature) is not bytes:
            raise RejectedError("malformed reach card")
        fields = wire.decode_map(body, max_size=MAX_CARD)
    except DecodeError as exc:
        raise RejectedError(f"malformed reach card: {exc}") from None
    if fields.get(1) != VERSION or set(fields) != {1, 2, 3, 4, 5}:
        raise RejectedError("unknown reach card version or fields")
    ident, onion, auth, issued = fields[2], fields[3], fields[4], fields[5]
    if not all(type(v) is bytes and len(v) == 32 for v in (ident, onion, auth)):
        raise RejectedError("malformed reach card keys")
    if type(issued) is not int or not 0 <= issued <= MAX_ISSUED:
        raise RejectedError("malformed reach card time")
    try:
        VerifyKey(ident).verify(CARD_CONTEXT + body, signature)
    except (BadSignatureError, ValueError):
        raise RejectedError("the reach card is not signed by its identity") from None
    try:
        address = OnionAddress(onion)
        client_auth = ClientAuthPublicKey(auth)
    except DecodeError as exc:
        raise RejectedError(f"reach card: {exc}") from None
    return ReachCard(identity=ident, onion=address, client_auth=client_auth, issued=issued, raw=raw)


def encode_reach(cards: Sequence[bytes]) -> dict[int, Any]:
    """The link message carrying `cards` (at most MAX_CARDS)."""
    if len(cards) > MAX_CARDS:
        raise ValueError(f"at most {MAX_CARDS} cards a message")
    return {0: T_REACH, 1: list(cards)}


def decode_reach(body: Mapping[int, Any]) -> tuple[bytes, ...]:
    """The cards in a reach message, unverified; BadReach if it is malformed."""
    cards = body.get(1)
    if body.get(0) != T_REACH or set(body) != {0, 1}:
        raise BadReach("malformed reach message")
    if type(cards) is not list or len(cards) > MAX_CARDS:
        raise BadReach("malformed reach message")
    if not all(type(c) is bytes and len(c) <= MAX_CARD for c in cards):
        raise BadReach("malformed reach card")
    return tuple(cards)


def _share_a_circle(circles: Circles, *people: bytes) -> bool:
    return any(all(p in members for p in people) for members in circles)


class ReachBook:
    """Every card we hold, and which ones each linked peer has been sent."""

    def __init__(self, me: bytes, person_of: Callable[[bytes], bytes] = lambda key: key) -> None:
        self._me = me
        # Whose current device a key is (itself for a person's only device, or a key no
        # roster names): circles name persons, links and cards are by device
        # (spec/tor.md section 6, spec/devices.md section 14).
        self._person_of = person_of
        self._cards: dict[bytes, ReachCard] = {}
        self._sent: dict[bytes, dict[bytes, int]] = {}  # peer -> identity -> issued sent
        self._waiting: dict[bytes, tuple[bytes, ReachCard]] = {}  # identity -> (sender, card)
        self._moved: dict[bytes, float] = {}  # identity -> when its keys last changed

    # --- what we hold -----------------------------------------------------------------

    def load(self, cards: Iterable[ReachCard]) -> None:
        """Cards from the store (ours among them, if we have one)."""
        for card in cards:
            self._keep(card)

    def get(self, identity: bytes) -> ReachCard | None:
        """The newest card of `identity` we hold."""
        return self._cards.get(identity)

    def cards(self) -> dict[bytes, ReachCard]:
        """Every card we hold, by identity."""
        return dict(self._cards)

    def drop(self, identity: bytes) -> None:
        """Hold no card of `identity` (ours, once Tor is off: we hand none out)."""
        self._cards.pop(identity, None)
        self._moved.pop(identity, None)

    def set_own(self, card: ReachCard) -> bool:
        """Our own card (a new one when our keys change); True if it is new."""
        if card.identity != self._me:
            raise ValueError("not our card")
        return self._keep(card)

    def _keep(self, card: ReachCard, now: float | None = None) -> bool:
        """Hold `card` if it is newer than the one held. A card from a peer (`now`: the
        shell's monotonic clock) whose onion or client-auth key differs from the held one
        is taken at most once per KEY_CHANGE_INTERVAL for its identity: a daemon's keys
        never change (tor.key is written once), and each change republishes our onion
        service, which ends its open streams: a co-member sending new keys every second
        would otherwise cut every Tor link of the circle."""
        held = self._cards.get(card.identity)
        if held is not None and held.issued >= card.issued:
            return False
        if (
            held is not None
            and now is not None
            and (held.onion, held.client_auth) != (card.onion, card.client_auth)
        ):
            last = self._moved.get(card.identity)
            if last is not None and now - last < KEY_CHANGE_INTERVAL:
                return False
            self._moved[card.identity] = now
        self._cards[card.identity] = card
        return True

    # --- links ------------------------------------------------------------------------

    def link_up(self, peer: bytes) -> None:
        """A peer linked: it has been sent nothing on this link yet."""
        self._sent[peer] = {}

    def link_down(self, peer: bytes) -> None:
        """A peer's link went."""
        self._sent.pop(peer, None)

    def linked(self) -> list[bytes]:
        """Peers with a link, as the book knows them."""
        return list(self._sent)

    # --- deciding ----------------------------------------------------------------------

    def may_tell(self, peer: bytes, subject: bytes, circles: Circles) -> bool:
        """Whether `subject`'s card may go to `peer`: our own to anyone linked (a friend
        or co-member), and so our other devices'; any card to another device of ours, and a
        device's to its person's other devices; anyone else's only if we, the peer and the
        subject (their persons) share a circle."""
        if subject == peer:
            return False
        whose, mine, theirs = (self._person_of(k) for k in (subject, self._me, peer))
        if subject == self._me or mine in (whose, theirs) or whose == theirs:
            return True  # ours, or to our own device, or to the subject's own device
        return _share_a_circle(circles, mine, theirs, whose)

    def offer(
        self,
        sender: bytes,
        card: ReachCard,
        *,
        known: bool,
        circles: Circles,
        now: float | None = None,
    ) -> bool:
        """A verified card from a linked peer. Kept if the peer may tell us of it and it is
        newer than the one we hold (a device of ours, or one of the card's person, may
        tell us any card); returns True if kept. `known`: the card's identity is
        a friend or co-member of ours (we hold no card of strangers). A card we cannot
        place yet waits (see `reconsider`)."""
        if card.identity == self._me:
            return False
        whose, by, mine = (self._person_of(k) for k in (card.identity, sender, self._me))
        if not known or (by not in (whose, mine) and not _share_a_circle(circles, mine, by, whose)):
            # Not ours to keep now: a stranger's, or a relay from outside the circle, or a
            # card that came before the manifest naming its person. Held back a while.
            held = self._waiting.get(card.identity)
            if held is None or held[1].issued < card.issued:
                self._waiting.pop(card.identity, None)
                self._waiting[card.identity] = (sender, card)
                while len(self._waiting) > MAX_WAITING:
                    del self._waiting[next(iter(self._waiting))]
            return False
        if not self._keep(card, now):
            return False
        sent = self._sent.get(sender)
        if sent is not None:
            sent[card.identity] = card.issued  # it has it: no need to send it back
        return True

    def reconsider(
        self, known: Callable[[bytes], bool], circles: Circles, now: float | None = None
    ) -> list[ReachCard]:
        """Our circles changed: the waiting cards that we can now place, kept."""
        circles = list(circles)
        kept = []
        for identity, (sender, card) in list(self._waiting.items()):
            del self._waiting[identity]
            if self.offer(sender, card, known=known(identity), circles=circles, now=now):
                kept.append(card)
        return kept

    def to_send(self, peer: bytes, circles: Circles) -> list[bytes]:
        """The cards `peer` should have and was not yet sent on this link (marked sent)."""
        sent = self._sent.get(peer)
        if sent is None:
            return []
        circles = list(circles)
        out = []
        for subject, card in sorted(self._cards.items()):
            if sent.get(subject, -1) >= card.issued:
                continue
            if self.may_tell(peer, subject, circles):
                out.append(card.raw)
                sent[subject] = card.issued
        return out


def authorized_clients(
    *,
    pairing: Sequence[ClientAuthPublicKey],
    friends: Sequence[bytes],
    co_members: Sequence[bytes],
    cards: Mapping[bytes, ReachCard],
    limit: int = MAX_CLIENTS,
) -> list[ClientAuthPublicKey]:
    """Whom our onion service admits (spec/tor.md section 4): the keys derived from our
    valid pairing codes, then our friends', then our co-members' (those whose cards we
    hold), at most `limit` in all; the others reach us through members who relay."""
    out: dict[ClientAuthPublicKey, None] = dict.fromkeys(pairing)
    for person in [*friends, *co_members]:
        card = cards.get(person)
        if card is not None:
            out[card.client_auth] = None
    return list(out)[:limit]
