"""Pairing from any device of a person (spec/devices.md section 8.1), in one process:
Alice's laptop is her first device, her desktop a second one. Carol scans a code the
desktop shows, and Bob shows a code the desktop scans: each ends with one friend, the
person Alice, whichever device paired; Alice's laptop has them as friends too; and a
moment from Carol reaches both of Alice's devices."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pmoments import devicepairing
from p2pmoments.core import wire
from p2pmoments.core.crypto import LinkSecretKey
from p2pmoments.core.device_entries import EntryKind, consent_message, decode_entry, sign_entry
from p2pmoments.core.identity import Identity, link_key_message
from p2pmoments.core.introduction import (
    T_INTRODUCTION,
    Introduction,
    IntroductionError,
    check_introduction,
    decode_introduction,
    encode_introduction,
)
from p2pmoments.core.link import AcceptRequest, CloseCode, Closed, Established, Link
from p2pmoments.core.pairing import decode_code
from p2pmoments.home import load_identity
from p2pmoments.node import Node
from p2pmoments.paths import resolve_paths
from tests.multinode import LOOPBACK, eventually, make_home, running, until
from tests.test_devices import second_device, sighted, texts


def _friends(node: Node) -> list[tuple[bytes, str]]:
    return [(f.verify_key, f.name) for f in node.friends.all()]


async def _pair(owner: Node, scanner: Node) -> None:
    link, _ = await owner.pairings.new_code()
    record = await scanner.pairings.wait((await scanner.pairings.pair(link)).id, timeout=15)
    assert record is not None
    assert record.state == "confirmed", f"pairing {record.state}: {record.reason}"


@pytest.mark.timeout(120)
async def test_pairing_with_a_second_device_makes_a_friend_of_its_person(tmp_path: Path) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob", "Carol")]
    async with (
        running(homes[0]) as laptop,
        running(homes[1]) as bob,
        running(homes[2]) as carol,
        second_device(tmp_path, laptop, "desktop") as desktop,
    ):
        sighted(laptop, desktop)  # the desktop meets its first device
        await eventually(
            lambda: desktop.pairings.refusal() is None, what="the desktop to meet the laptop"
        )
        alice = laptop.person
        # The desktop's code names Alice, with the desktop's own link key.
        link, _ = await desktop.pairings.new_code()
        code = decode_code(link)
        assert bytes(code.identity) == alice
        assert bytes(code.link_key) == bytes(desktop.identity.public.link_key)

        await _pair(desktop, carol)  # Carol scans the desktop's code
        await _pair(bob, desktop)  # the desktop scans Bob's code
        for friend in (carol, bob):
            # One Alice: the person, pinned at her first device's link key, and her
            # desktop known as hers.
            await eventually(  # Bob's side completes once the introduction comes
                lambda f=friend: _friends(f) == [(alice, "Alice")],  # type: ignore[misc]
                what="one friend Alice",
            )
            pinned = friend.friends.get(alice)
            assert pinned is not None
            assert pinned.link_key == bytes(laptop.identity.public.link_key)
            assert friend.persons.person_of(desktop.me) == alice
            assert friend.friends.person(desktop.me).name == "Alice"
        for device in (desktop, laptop):
            await eventually(
                lambda d=device: {k for k, _ in _friends(d)} == {bob.me, carol.me},  # type: ignore[misc]
                what="both of Alice's devices to count Bob and Carol as friends",
            )

        # A moment from Carol reaches both of Alice's devices.
        sighted(carol, laptop)
        await carol.circles.create("book club", ["Alice"], members_can_post=True)
        await carol.posting.post("book club", "from Carol")
        for device in (laptop, desktop):
            await until(
                device,
                lambda d=device: _has_text(d, "from Carol"),  # type: ignore[misc]
                what="Carol's moment on each of Alice's devices",
            )


async def _has_text(node: Node, text: str) -> bool:
    return (await texts(node)).get(text) == "Carol"


@pytest.mark.timeout(60)
async def test_a_device_cannot_pair_with_its_own_person_nor_before_it_met_its_first(
    tmp_path: Path,
) -> None:
    homes = [await make_home(tmp_path, "Alice")]
    async with running(homes[0]) as laptop, second_device(tmp_path, laptop, "desktop") as desktop:
        with pytest.raises(Exception, match="has not met your first device"):
            await desktop.pairings.new_code()
        link, _ = await laptop.pairings.new_code()
        with pytest.raises(Exception, match="your own pairing code"):
            await desktop.pairings.pair(link)


# --- the introduction's rules (core.introduction) --------------------------------------


def _with_link(identity: Identity, link: LinkSecretKey) -> Identity:
    """The same identity vouching for another link key."""
    signing = identity.signing_key
    signature = signing.sign(link_key_message(signing.verify_key, link.public_key))
    return Identity(signing_key=signing, link_secret=link, link_signature=signature)


def _roster(first: Identity, device: Identity) -> list[bytes]:
    p, p_link = bytes(first.public.verify_key), bytes(first.public.link_key)
    d, d_link = bytes(device.public.verify_key), bytes(device.public.link_key)
    genesis = sign_entry(
        first.signing_key,
        person=p,
        parents=(),
        kind=EntryKind.ADD,
        time=1,
        device=p,
        link=p_link,
        name="laptop",
        consent=first.signing_key.sign(consent_message(p, p, p_link)),
    )
    add = sign_entry(
        first.signing_key,
        person=p,
        parents=[genesis.id],
        kind=EntryKind.ADD,
        time=2,
        device=d,
        link=d_link,
        name="desktop",
        consent=device.signing_key.sign(consent_message(p, d, d_link)),
    )
    return [genesis.raw, add.raw]


def test_an_introduction_holds_only_for_a_current_device_and_the_persons_own_key() -> None:
    first, device, stranger = (Identity.generate() for _ in range(3))
    p = bytes(first.public.verify_key)
    d, d_link = bytes(device.public.verify_key), bytes(device.public.link_key)
    good = Introduction(
        link_key=bytes(first.public.link_key),
        link_signature=first.link_signature,
        entries=tuple(_roster(first, device)),
    )
    body = encode_introduction(good.link_key, good.link_signature, good.entries)
    assert body[0] == T_INTRODUCTION == 36
    assert decode_introduction(body) == good
    assert len(wire.encode_map(body)) < 1024  # what a friend receives once (spec/devices.md 8.1)
    assert len(check_introduction(good, person=p, device=d, device_link=d_link)) == 2

    def refused(intro: Introduction, **changes: bytes) -> None:
        args = {"person": p, "device": d, "device_link": d_link, **changes}
        with pytest.raises(IntroductionError):
            check_introduction(intro, **args)

    refused(good, device=bytes(stranger.public.verify_key))  # a device the roster lacks
    refused(good, device_link=bytes(stranger.public.link_key))  # another link key answered
    refused(good, device=p, device_link=bytes(first.public.link_key))  # P needs none
    refused(good, person=bytes(stranger.public.verify_key))  # another person's roster
    # A link key the person did not sign, or one their roster does not name.
    refused(
        Introduction(link_key=d_link, link_signature=first.link_signature, entries=good.entries)
    )
    other = _with_link(first, LinkSecretKey.generate())
    refused(
        Introduction(
            link_key=bytes(other.public.link_key),
            link_signature=other.link_signature,
            entries=good.entries,
        )
    )
    # A roster entry that does not verify.
    broken = good.entries[1][:-1] + bytes([good.entries[1][-1] ^ 1])
    refused(
        Introduction(
            link_key=good.link_key,
            link_signature=good.link_signature,
            entries=(good.entries[0], broken),
        )
    )


@given(
    st.dictionaries(
        st.integers(-1, 4),
        st.one_of(
            st.integers(-1, 40),
            st.binary(max_size=70),
            st.text(max_size=3),
            st.lists(st.one_of(st.binary(max_size=40), st.integers()), max_size=3),
        ),
        max_size=5,
    )
)
def test_any_introduction_decodes_or_raises_its_decode_error(body: dict[int, object]) -> None:
    with contextlib.suppress(IntroductionError):
        decode_introduction(body)


@contextlib.asynccontextmanager
async def _impostor(root: Path, alice: Node) -> AsyncIterator[Node]:
    """A daemon that says it is a device of Alice's, holds her roster and her first
    device's link-key signature, but is not in her roster."""
    home = await make_home(root, "impostor")
    paths = resolve_paths(home)
    identity = await asyncio.to_thread(load_identity, paths)
    async with Node(paths=paths, config=LOOPBACK, identity=identity, person=alice.person) as node:
        entries = [decode_entry(raw) for raw in alice.persons.entries_of(alice.person)]
        await node.persons.keep(alice.person, entries)
        public = alice.identity.public
        node.device_pairing._person_link = (bytes(public.link_key), public.link_signature)
        node.pairings.refusal = lambda: None  # it does not hold itself back
        yield node


@pytest.mark.timeout(60)
async def test_a_device_its_persons_roster_lacks_does_not_pair_as_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Carol")]
    async with (
        running(homes[0]) as laptop,
        running(homes[1]) as carol,
        second_device(tmp_path, laptop, "desktop"),  # Alice has a roster
        _impostor(tmp_path, laptop) as impostor,
    ):
        link, _ = await carol.pairings.new_code()
        await impostor.pairings.pair(link)
        # Its introduction does not make it Alice's: the link ends, Alice is no friend.
        await eventually(lambda: impostor.friends.get(carol.me), what="the impostor's side")
        await eventually(
            lambda: impostor.me not in carol.links.linked(), what="Carol to drop the link"
        )
        assert carol.friends.all() == []
        # Carol scans a code it shows: her pairing is refused, with the reason.
        link, _ = await impostor.pairings.new_code()
        record = await carol.pairings.wait((await carol.pairings.pair(link)).id, timeout=15)
        assert record is not None
        assert (record.state, record.reason) == (
            "refused",
            "the device is not a current device of that person",
        )
        assert carol.friends.all() == []
        # One that never introduces itself is let go when the wait runs out.
        monkeypatch.setattr(devicepairing, "INTRODUCTION_TIMEOUT", 0.2)
        monkeypatch.setattr(impostor.device_pairing, "linked", lambda key: None)
        link, _ = await carol.pairings.new_code()
        await impostor.pairings.pair(link)
        await eventually(lambda: impostor.me in carol.links.linked(), what="a second link")
        await eventually(lambda: impostor.me not in carol.links.linked(), what="Carol to let it go")
        assert carol.friends.all() == []


@pytest.mark.parametrize("pairing", [True, False])
def test_only_a_pairing_dial_may_be_answered_by_another_device_of_the_person(
    pairing: bool,
) -> None:
    """core.link: a dial for a pairing code naming P may be answered by a device of P
    (the shell then waits for its introduction); any other dial for P must be answered
    by P itself (spec/transport.md section 4)."""
    person, desktop, carol = Identity.generate(), Identity.generate(), Identity.generate()
    token = bytes(range(32))
    dialler = Link(
        identity=carol,
        name="Carol",
        initiator=True,
        now=0.0,
        remote_link_key=bytes(desktop.public.link_key),
        expected_peer=person.public.verify_key,
        pairing_token=token if pairing else None,
    )
    answerer = Link(
        identity=desktop,
        name="Alice",
        initiator=False,
        now=0.0,
        pairing_tokens=(token,),
        person=bytes(person.public.verify_key),
    )
    events: list[object] = []
    for _ in range(6):
        for src, dst in ((dialler, answerer), (answerer, dialler)):
            data = src.data_to_send()
            if data:
                for event in dst.receive_data(data, 0.0):
                    if isinstance(event, AcceptRequest):
                        dst.accept()
                    if dst is dialler:
                        events.append(event)
    if pairing:
        (done,) = [e for e in events if isinstance(e, Established)]
        assert done.person == bytes(person.public.verify_key)
        assert done.peer.verify_key == desktop.public.verify_key  # the device, checked later
    else:
        assert not [e for e in events if isinstance(e, Established)]
        assert [e.code for e in events if isinstance(e, Closed)] == [CloseCode.WRONG_IDENTITY]
