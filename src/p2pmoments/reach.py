"""Who reaches whom through Tor (spec/tor.md sections 4 and 6): reach cards (ours, made
from our Tor keys; those of friends and co-members, stored, and exchanged on links as
message type 22), and who may reach our onion service.

Which card goes to whom, which one we keep, and whom our service admits are
core.reach's decisions. This module reads and writes the store, verifies cards off
the loop, sends them, tells the links where to dial (onion addresses) and our tor
whom to admit (friends, co-members, holders of our valid pairing codes).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from p2pmoments.circles import Circles
from p2pmoments.core.budget import TokenBucket
from p2pmoments.core.errors import RejectedError
from p2pmoments.core.identity import Identity
from p2pmoments.core.onion import ClientAuthPublicKey, OnionAddress, pairing_client_auth
from p2pmoments.core.reach import (
    MAX_CARDS,
    BadReach,
    ReachBook,
    ReachCard,
    authorized_clients,
    create_card,
    decode_card,
    decode_reach,
    encode_reach,
)
from p2pmoments.friends import Friends
from p2pmoments.net.links import Links
from p2pmoments.onions import Onions
from p2pmoments.pairings import Pairings
from p2pmoments.persons import Persons
from p2pmoments.store import AsyncStore, FriendState, PairingRecord, Store

__all__ = ["Reach"]

log = logging.getLogger(__name__)

CARD_RATE = 256  # cards a second one peer may make us verify (then its link is read later)
CARD_BURST = 1024


def _verify(raws: Sequence[bytes]) -> list[ReachCard]:
    """Cards verified (on a worker thread); RejectedError at the first that is not."""
    return [decode_card(raw) for raw in raws]


@functools.lru_cache(maxsize=64)
def _code_client(token: bytes) -> ClientAuthPublicKey:
    """The client-auth key a pairing code's token stands for (spec/tor.md section 4)."""
    return pairing_client_auth(token).public_key


class Reach:
    """Where friends and co-members are reachable through Tor, and telling them ours."""

    def __init__(
        self,
        store: AsyncStore,
        identity: Identity,
        *,
        links: Links,
        onions: Onions,
        friends: Friends,
        circles: Circles,
        pairings: Pairings,
        persons: Persons,
        device_links: Callable[[float], list[tuple[bytes, int]]] = lambda now: [],
    ) -> None:
        self._store = store
        self._identity = identity
        self._me = bytes(identity.public.verify_key)
        self._links = links
        self._onions = onions
        self._friends = friends
        self._circles = circles
        self._pairings = pairings
        self._persons = persons
        self._device_links = device_links  # the tokens of our valid device links
        self._book = ReachBook(self._me, persons.person_of)
        self._buckets: dict[bytes, TokenBucket] = {}

    async def load(self) -> None:
        """Read the cards held; make our own if our Tor keys are new (with Tor off or
        missing we hand no card out). After the onions have loaded their keys."""
        keys = self._onions.keys
        own = None if keys is None else (keys.onion.address, keys.client_auth.public_key)
        cards: list[ReachCard] = []
        for raw in await self._store.run(Store.reach_cards):
            try:
                cards.append(await asyncio.to_thread(decode_card, raw))
            except RejectedError as exc:  # verified before it was stored: disk damage
                log.warning("a stored reach card is unreadable: %s", exc)
        self._book.load(cards)
        held = self._book.get(self._me)
        if own is None:
            self._book.drop(self._me)
            return
        onion, client_auth = own
        if held is None or held.onion != onion or held.client_auth != client_auth:
            issued = max(int(time.time()), 0 if held is None else held.issued + 1)
            card = create_card(self._identity, onion=onion, client_auth=client_auth, issued=issued)
            await self._store.run(Store.save_reach_card, self._me, card.issued, card.raw)
            self._book.set_own(card)

    def card(self, key: bytes) -> ReachCard | None:
        """The card we hold of `key` (ours too)."""
        return self._book.get(key)

    def onion_of(self, key: bytes) -> OnionAddress | None:
        """Where `key` is reachable through Tor, if we know."""
        card = self._book.get(key)
        return None if card is None else card.onion

    def _known(self, key: bytes) -> bool:
        """A friend (not blocked) or a co-member, or a current device of one of them or of
        ours: someone whose card we keep."""
        person = self._persons.person_of(key)
        if key != self._me and person == self._persons.person_of(self._me):
            return True  # another device of ours
        return self._friends.is_friend(person) or person in self._circles.co_members()

    def _with_devices(self, people: Sequence[bytes]) -> list[bytes]:
        """`people` and their current devices (spec/devices.md section 14)."""
        return [key for p in people for key in (p, *self._persons.devices_of(p))]

    def _member_sets(self) -> list[frozenset[bytes]]:
        """The member sets of the circles we are in now."""
        return [
            frozenset(bytes(m.verify_key) for m in manifest.members)
            for manifest in self._circles.all()
            if self._circles.member_of(manifest.circle_id)
        ]

    # --- who may reach our onion service -----------------------------------------------

    def refresh_clients(self) -> None:
        """Tell our tor whom to admit: the keys of our valid codes, friends, co-members
        (core.reach.authorized_clients decides; spec/tor.md section 4)."""
        if self._onions.keys is None:
            return
        friends = [f.verify_key for f in self._friends.all() if f.state is FriendState.FRIEND]
        co_members = sorted(set(self._circles.co_members()) - set(friends))
        now = time.time()
        tokens = self._pairings.live_tokens(now) + self._device_links(now)
        ours = self._persons.person_of(self._me)
        self._onions.set_clients(
            authorized_clients(
                pairing=[_code_client(token) for token, _ in tokens],
                friends=[k for k in self._with_devices([ours, *friends]) if k != self._me],
                co_members=self._with_devices(co_members),
                cards=self._book.cards(),
            )
        )

    async def expire_codes(self) -> None:
        """Until cancelled: a code's key leaves the list when the code expires."""
        while True:
            now = time.time()
            expiries = [e for _, e in self._pairings.live_tokens(now) + self._device_links(now)]
            wait = min([60.0, *(e - time.time() for e in expiries)])
            await asyncio.sleep(max(wait, 0.5))
            self.refresh_clients()

    def pairing_onion(self, record: PairingRecord) -> OnionAddress | None:
        """The onion address of a code we scanned, if it has one; until we are friends,
        we reach it with the key both sides derive from the code's token (spec/tor.md
        section 4), which the owner's service admits while the code is valid."""
        if record.onion is None:
            return None
        onion = OnionAddress(record.onion)
        self._onions.visit(onion, pairing_client_auth(record.token))
        return onion

    def link_onion(self, onion: OnionAddress | None, token: bytes) -> OnionAddress | None:
        """The onion of a device link we join by (spec/devices.md section 10): reached,
        until we are linked, with the key its token stands for, as a pairing code's."""
        if onion is not None:
            self._onions.visit(onion, pairing_client_auth(token))
        return onion

    def paired(self, onion: OnionAddress | None) -> None:
        """The pairing we dialled `onion` for is done: from now on we reach it with our own
        key, which the owner lists once our card reaches it."""
        if onion is not None:
            self._onions.visit(onion, None)

    def _learned(self, card: ReachCard) -> None:
        """A friend's or co-member's card: dial them there, let them reach us."""
        self._links.set_onion(card.identity, card.onion)
        self._onions.visit(card.onion, None)  # our own key from now on
        self.refresh_clients()

    # --- links ----------------------------------------------------------------------

    def link_up(self, peer: bytes) -> None:
        """A peer linked: it gets the cards it should have (ours first of all)."""
        self._book.link_up(peer)
        self._buckets[peer] = TokenBucket(CARD_RATE, CARD_BURST)
        self._send(peer)

    def link_down(self, peer: bytes) -> None:
        """A peer's link went."""
        self._book.link_down(peer)
        self._buckets.pop(peer, None)

    async def rosters_changed(self) -> None:
        """A roster changed: cards of devices now current are kept, and whom our service
        admits follows (a revoked device's key leaves the list)."""
        await self.circles_changed()
        self.refresh_clients()

    async def circles_changed(self) -> None:
        """Who is in which circle changed: cards that came before the manifest naming
        their people are kept now, and each linked peer gets the cards it should have."""
        for card in self._book.reconsider(self._known, self._member_sets(), time.monotonic()):
            await self._keep(card)
        self.share()

    def share(self) -> None:
        """Each linked peer gets the cards it should have and has not been sent."""
        for peer in self._book.linked():
            self._send(peer)

    def _send(self, peer: bytes) -> None:
        cards = self._book.to_send(peer, self._member_sets())
        for start in range(0, len(cards), MAX_CARDS):
            self._links.send(peer, encode_reach(cards[start : start + MAX_CARDS]))

    async def on_message(self, peer: bytes, body: dict[int, Any]) -> None:
        """A reach message from a linked peer. Its cards are verified; one that is not
        what it claims ends the link (a peer passes on only cards it verified)."""
        bucket = self._buckets.get(peer)
        if bucket is None:
            return
        try:
            raws = decode_reach(body)
            delay = bucket.take(len(raws), time.monotonic())
            if delay > 0:
                await asyncio.sleep(delay)  # its link is read later
            cards = await asyncio.to_thread(_verify, raws)
        except (BadReach, RejectedError) as exc:
            self._links.drop_misbehaving(peer, f"bad reach card: {exc}")
            return
        learned = False
        circles = self._member_sets()
        for card in cards:
            known = self._known(card.identity)
            if self._book.offer(peer, card, known=known, circles=circles, now=time.monotonic()):
                await self._keep(card)
                learned = True
        if learned:
            self.share()

    async def _keep(self, card: ReachCard) -> None:
        """A card the book took: stored, and acted on."""
        await self._store.run(Store.save_reach_card, card.identity, card.issued, card.raw)
        log.debug("learned where a peer is reachable through Tor: %r", card)
        self._learned(card)
