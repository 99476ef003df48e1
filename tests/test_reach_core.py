"""Reach cards (core/reach.py, spec/tor.md section 6): signed, hostile input refused, and
passed on only to whom they concern."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pmoments.core import wire
from p2pmoments.core.errors import RejectedError
from p2pmoments.core.identity import Identity
from p2pmoments.core.onion import ClientAuthKey, OnionKey
from p2pmoments.core.reach import (
    MAX_CARDS,
    T_REACH,
    BadReach,
    ReachBook,
    ReachCard,
    authorized_clients,
    create_card,
    decode_card,
    decode_reach,
    encode_reach,
)

ALICE, BOB, CAROL, DAVE = (Identity.generate() for _ in range(4))
A, B, C, D = (bytes(i.public.verify_key) for i in (ALICE, BOB, CAROL, DAVE))


def card_of(who: Identity, issued: int = 1000, onion: OnionKey | None = None) -> ReachCard:
    return create_card(
        who,
        onion=(onion or OnionKey.generate()).address,
        client_auth=ClientAuthKey.generate().public_key,
        issued=issued,
    )


def test_a_card_round_trips_and_keeps_the_onion_out_of_its_repr() -> None:
    onion = OnionKey.generate()
    card = card_of(ALICE, onion=onion)
    again = decode_card(card.raw)
    assert again == card
    assert again.identity == A
    assert again.onion == onion.address
    assert onion.address.service_id not in repr(card)


def test_a_card_signed_by_someone_else_is_refused() -> None:
    card = card_of(ALICE)
    outer = wire.decode_map(card.raw, max_size=512)
    body = wire.decode_map(outer[1], max_size=512)
    body[2] = B  # claims to be Bob's, signed by Alice
    forged = wire.encode_map({1: wire.encode_map(body), 2: outer[2]})
    with pytest.raises(RejectedError, match="not signed"):
        decode_card(forged)
    # Nor can a relay change the onion or the client-auth key of a real card.
    for field in (3, 4):
        body = wire.decode_map(outer[1], max_size=512)
        body[field] = OnionKey.generate().address.__bytes__()
        with pytest.raises(RejectedError, match="not signed"):
            decode_card(wire.encode_map({1: wire.encode_map(body), 2: outer[2]}))


def test_an_onion_key_that_is_not_a_valid_point_is_refused() -> None:
    body = wire.encode_map({1: 1, 2: A, 3: b"\x01" + bytes(31), 4: bytes(32), 5: 1})
    signed = wire.encode_map({1: body, 2: ALICE.signing_key.sign(b"p2pmoments/reach/1\x00" + body)})
    with pytest.raises(RejectedError, match="onion"):
        decode_card(signed)


@pytest.mark.parametrize(
    "fields",
    [
        {1: 2, 2: A, 3: bytes(32), 4: bytes(32), 5: 1},
        {1: 1, 2: A, 3: bytes(32), 4: bytes(32)},
        {1: 1, 2: A, 3: bytes(32), 4: bytes(31), 5: 1},
        {1: 1, 2: A, 3: bytes(32), 4: bytes(32), 5: -1},
        {1: 1, 2: A, 3: bytes(32), 4: bytes(32), 5: "now"},
        {1: 1, 2: A, 3: bytes(32), 4: bytes(32), 5: 1, 6: 0},
    ],
)
def test_malformed_cards_are_refused(fields: dict[int, object]) -> None:
    body = wire.encode_map(fields)
    with pytest.raises(RejectedError):
        decode_card(wire.encode_map({1: body, 2: bytes(64)}))


@given(st.binary(max_size=600))
def test_hostile_bytes_only_ever_raise_rejected(data: bytes) -> None:
    with contextlib.suppress(RejectedError):
        decode_card(data)


@pytest.mark.parametrize(
    "body",
    [
        {0: T_REACH},
        {0: T_REACH, 1: b"x"},
        {0: T_REACH, 1: [b"x"] * (MAX_CARDS + 1)},
        {0: T_REACH, 1: ["x"]},
        {0: T_REACH, 1: [bytes(600)]},
        {0: T_REACH, 1: [], 2: 0},
    ],
)
def test_malformed_reach_messages_are_the_peers_fault(body: dict[int, object]) -> None:
    with pytest.raises(BadReach):
        decode_reach(body)


def test_a_reach_message_round_trips() -> None:
    cards = [card_of(ALICE).raw, card_of(BOB).raw]
    assert decode_reach(encode_reach(cards)) == tuple(cards)
    with pytest.raises(ValueError, match="at most"):
        encode_reach([b""] * (MAX_CARDS + 1))


def test_our_card_goes_to_every_peer_and_others_only_within_a_circle() -> None:
    book = ReachBook(A)
    mine, bobs, carols = card_of(ALICE), card_of(BOB), card_of(CAROL)
    book.set_own(mine)
    circles = [{A, B, C}]  # Bob and Carol are in a circle of ours; Dave is only a friend
    for peer in (B, C, D):
        book.link_up(peer)
    assert book.offer(B, bobs, known=True, circles=circles)
    assert book.offer(C, carols, known=True, circles=circles)
    assert set(book.to_send(B, circles)) == {mine.raw, carols.raw}
    assert set(book.to_send(C, circles)) == {mine.raw, bobs.raw}
    # Dave shares no circle with Bob or Carol: he gets our card, never theirs.
    assert book.to_send(D, circles) == [mine.raw]
    # Sent once per link, again after a new link.
    assert book.to_send(B, circles) == []
    book.link_down(B)
    book.link_up(B)
    assert set(book.to_send(B, circles)) == {mine.raw, carols.raw}


def test_a_new_card_replaces_an_older_and_travels_again() -> None:
    book = ReachBook(A)
    circles = [{A, B, C}]
    book.link_up(B)
    book.link_up(C)
    assert book.offer(B, card_of(BOB, issued=10), known=True, circles=circles)
    assert len(book.to_send(C, circles)) == 1
    assert not book.offer(B, card_of(BOB, issued=9), known=True, circles=circles)
    assert not book.offer(B, card_of(BOB, issued=10), known=True, circles=circles)
    newer = card_of(BOB, issued=11)
    assert book.offer(C, newer, known=True, circles=circles)  # relayed by Carol
    assert book.get(B) == newer
    assert book.to_send(C, circles) == []  # Carol sent it: not back to her
    assert book.to_send(B, circles) == []  # nor to Bob, whose card it is


def test_cards_of_strangers_and_relays_from_outside_the_circle_are_not_kept() -> None:
    book = ReachBook(A)
    book.link_up(B)
    circles = [{A, B}, {A, C}]  # Bob and Carol share no circle through us
    assert not book.offer(B, card_of(DAVE), known=False, circles=circles)  # a stranger
    assert not book.offer(B, card_of(CAROL), known=True, circles=circles)  # not Bob's to tell
    assert not book.offer(B, card_of(ALICE), known=True, circles=circles)  # ours
    assert book.get(D) is None
    assert book.get(C) is None
    assert book.offer(B, card_of(BOB), known=True, circles=circles)


def test_authorised_clients_list_codes_then_friends_then_co_members_up_to_the_limit() -> None:
    codes = [ClientAuthKey.generate().public_key for _ in range(2)]
    friends = [card_of(Identity.generate()) for _ in range(3)]
    others = [card_of(Identity.generate()) for _ in range(3)]
    cards = {c.identity: c for c in [*friends, *others]}
    listed = authorized_clients(
        pairing=codes,
        friends=[c.identity for c in friends] + [D],  # Dave: no card yet, not listed
        co_members=[c.identity for c in others],
        cards=cards,
        limit=6,
    )
    assert listed == [*codes, *(c.client_auth for c in friends), others[0].client_auth]


def test_a_card_that_overtakes_its_manifest_is_kept_once_the_circle_is_known() -> None:
    """Alice sends Carol's card to Bob as she makes the circle; it may reach Bob before
    the manifest that makes Carol his co-member does."""
    book = ReachBook(B)
    book.link_up(A)
    carols = card_of(CAROL)
    assert not book.offer(A, carols, known=False, circles=[{A, B}])
    assert book.get(C) is None
    assert book.reconsider(lambda key: False, [{A, B}]) == []  # still nobody we know
    assert not book.offer(A, carols, known=False, circles=[{A, B}])  # held back again
    assert book.reconsider(lambda key: key == C, [{A, B, C}]) == [carols]
    assert book.get(C) == carols
    assert book.reconsider(lambda key: True, [{A, B, C}]) == []  # not kept twice


def test_a_co_member_cannot_change_its_keys_every_second() -> None:
    """Each new client-auth key republishes our onion service (its streams end): one
    identity's keys may change once an hour; the same keys re-issued are always taken."""
    from p2pmoments.core.reach import KEY_CHANGE_INTERVAL

    book = ReachBook(A)
    circles = [{A, B}]
    onion, key = OnionKey.generate().address, ClientAuthKey.generate().public_key
    first = create_card(BOB, onion=onion, client_auth=key, issued=10)
    again = create_card(BOB, onion=onion, client_auth=key, issued=11)
    assert book.offer(B, first, known=True, circles=circles, now=0.0)
    assert book.offer(B, again, known=True, circles=circles, now=1.0)
    assert book.offer(B, card_of(BOB, issued=12), known=True, circles=circles, now=2.0)
    assert book.get(B).issued == 12  # type: ignore[union-attr]
    for i in range(13, 20):  # new keys every second: refused, the held card stays
        assert not book.offer(B, card_of(BOB, issued=i), known=True, circles=circles, now=i)
    assert book.get(B).issued == 12  # type: ignore[union-attr]
    late = card_of(BOB, issued=30)
    assert book.offer(B, late, known=True, circles=circles, now=2.0 + KEY_CHANGE_INTERVAL)
    assert book.get(B) == late


def test_cards_of_devices_travel_and_are_kept_as_their_persons() -> None:
    """Circles name persons, cards name devices (spec/tor.md section 6b): Alice's laptop
    (her first key A) tells Bob her desktop's card and her desktop Bob's; a card of
    Carol's phone comes from Carol's other device and reaches Bob, who shares a circle
    with her, and not Dave, a friend outside it."""
    desktop, phone = Identity.generate(), Identity.generate()
    owner = {bytes(desktop.public.verify_key): A, bytes(phone.public.verify_key): C}
    circles = [{A, B, C}]
    laptop = ReachBook(A, lambda key: owner.get(key, key))
    for peer in (B, bytes(desktop.public.verify_key), D, C):
        laptop.link_up(peer)
    desktops, bobs, phones = card_of(desktop), card_of(BOB), card_of(phone)
    assert laptop.offer(bytes(desktop.public.verify_key), desktops, known=True, circles=circles)
    assert laptop.offer(B, bobs, known=True, circles=circles)
    assert laptop.offer(C, phones, known=True, circles=circles)  # her own device's
    assert set(laptop.to_send(B, circles)) == {desktops.raw, phones.raw}
    assert set(laptop.to_send(D, circles)) == {desktops.raw}  # ours, not Carol's
    assert set(laptop.to_send(bytes(desktop.public.verify_key), [])) == {bobs.raw, phones.raw}
    # At Bob's: the desktop's card from the laptop (its person's first device) is kept.
    at_bob = ReachBook(B, lambda key: owner.get(key, key))
    at_bob.link_up(A)
    assert at_bob.offer(A, desktops, known=True, circles=[{A, B}])
    # Without the mapping, the desktop is nobody's: Bob would keep no card of it.
    assert not ReachBook(B).offer(A, desktops, known=True, circles=[{A, B}])
