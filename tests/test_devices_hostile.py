"""What peers send about devices is hostile until verified (spec/devices.md section 11):
each new decoder refuses anything malformed with its own error and nothing else, a
forged roster ends the link that carried it, and a device of a person meets a peer that
knows no devices with a clear close code."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pmoments.core import wire
from p2pmoments.core.device_entries import (
    T_ROSTER,
    EntryKind,
    RosterError,
    consent_message,
    decode_entry,
    decode_roster_message,
    encode_roster_message,
    sign_entry,
)
from p2pmoments.core.identity import Identity
from p2pmoments.core.link import CloseCode
from p2pmoments.core.self_sync import (
    T_FRIENDS,
    T_JOIN,
    T_KEYS,
    decode_friends_message,
    decode_join_message,
    decode_keys_message,
)
from p2pmoments.net.links import Hello
from tests.multinode import LOOPBACK, befriend, eventually, make_home, running

# Any CBOR value a peer can send, a little deep.
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.text(max_size=40)
    | st.binary(max_size=80),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.integers(0, 20), inner, max_size=5)
    ),
    max_leaves=20,
)


def bodies(kind: int) -> st.SearchStrategy[dict[int, Any]]:
    return st.dictionaries(st.integers(1, 4), values, max_size=4).map(lambda d: {0: kind, **d})


@settings(max_examples=300)
@given(bodies(T_KEYS), bodies(T_FRIENDS), bodies(T_JOIN), bodies(T_ROSTER))
def test_the_device_messages_refuse_anything_malformed_with_their_own_error(
    keys: dict[int, Any], friends: dict[int, Any], join: dict[int, Any], roster: dict[int, Any]
) -> None:
    for decode, body in (
        (decode_keys_message, keys),
        (decode_friends_message, friends),
        (decode_join_message, join),
        (decode_roster_message, roster),
    ):
        with contextlib.suppress(RosterError):  # any other error fails the test
            decode(body)  # type: ignore[operator]


@settings(max_examples=300)
@given(st.binary(max_size=300), values)
def test_a_roster_entry_of_any_bytes_is_refused_with_its_own_error(
    raw: bytes, value: object
) -> None:
    for data in (raw, wire.encode_map({1: wire.encode_map({1: 1, 2: value}), 2: b"s" * 64})):
        with contextlib.suppress(RosterError):
            decode_entry(data)


def test_a_device_cannot_be_claimed_without_its_consent() -> None:
    """Mallory puts Alice's device key in her own roster: the consent does not verify."""
    mallory, device = Identity.generate(), Identity.generate()
    m, d = bytes(mallory.public.verify_key), bytes(device.public.verify_key)
    link = bytes(device.public.link_key)
    forged = mallory.signing_key.sign(consent_message(m, d, link))  # not the device's
    with pytest.raises(RosterError, match="consent"):
        sign_entry(
            mallory.signing_key,
            person=m,
            parents=[b"p" * 32],
            kind=EntryKind.ADD,
            time=1,
            device=d,
            link=link,
            name="laptop",
            consent=forged,
        )


async def test_a_forged_roster_ends_the_link_that_carried_it(tmp_path: Path) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob")]
    async with running(homes[0]) as alice, running(homes[1]) as bob:
        await befriend(alice, bob)
        await eventually(lambda: bob.me in alice.links.linked(), what="a link")
        entry = sign_entry(
            bob.identity.signing_key,
            person=bob.me,
            parents=(),
            kind=EntryKind.ADD,
            time=1,
            device=bob.me,
            link=bytes(bob.identity.public.link_key),
            name="first",
            consent=bob.identity.signing_key.sign(
                consent_message(bob.me, bob.me, bytes(bob.identity.public.link_key))
            ),
        )
        tampered = bytearray(entry.raw)
        tampered[-1] ^= 1  # its signature no longer verifies
        bob.links.send(alice.me, encode_roster_message(bob.me, [bytes(tampered)]))
        await eventually(lambda: bob.me not in alice.links.linked(), what="the link to end")
        assert alice.persons.roster(bob.me) is None


async def test_a_device_of_a_person_tells_a_peer_that_knows_no_devices_to_update(
    tmp_path: Path,
) -> None:
    """An older daemon's hello has no key 6: it could not tell this device is Alice's
    and would drop her moments as a stranger's; it is told why instead."""
    home = await make_home(tmp_path, "Alice-desktop")
    from p2pmoments.home import load_identity
    from p2pmoments.node import Node
    from p2pmoments.paths import resolve_paths

    paths = resolve_paths(home)
    identity = await asyncio.to_thread(load_identity, paths)
    person = bytes(Identity.generate().public.verify_key)
    async with Node(paths=paths, config=LOOPBACK, identity=identity, person=person) as node:
        await node.friends.set_my_name("Alice")
        old = Identity.generate()
        hello = Hello(
            key=bytes(old.public.verify_key),
            link_key=bytes(old.public.link_key),
            link_signature=old.link_signature,
            name="Bob",
            listen_port=None,
            host="127.0.0.1",
            initiator=True,
            pairing_id=None,
            pairing_token=None,
            person=bytes(old.public.verify_key),
            knows_devices=False,
        )
        refusal = await node.established(hello)
        assert refusal is not None
        assert refusal[0] is CloseCode.UPGRADE_REQUIRED
        assert "update p2pmoments" in refusal[1]
