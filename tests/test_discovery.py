"""Discovery: beacons friends recognise and strangers cannot link; mDNS on loopback."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from p2pmoments.config import Address
from p2pmoments.core.beacon import BEACON_LEN, MAX_SKEW, WINDOW, BeaconTable, beacon, window_of
from p2pmoments.core.pairing import decode_code, encode_code
from tests.multinode import eventually, make_home, running

keys = st.binary(min_size=32, max_size=32)


@given(key=keys, window=st.integers(0, 2**40))
def test_a_beacon_changes_every_window_and_reveals_nothing_stable(key: bytes, window: int) -> None:
    now, later = beacon(key, window), beacon(key, window + 1)
    assert len(now) == BEACON_LEN
    assert now != later
    assert key[:8] not in now + later


@given(a=keys, b=keys, window=st.integers(0, 2**40))
def test_beacons_of_different_identities_differ(a: bytes, b: bytes, window: int) -> None:
    if a != b:
        assert beacon(a, window) != beacon(b, window)


def test_friends_recognise_each_other_with_clocks_hours_apart_and_strangers_do_not() -> None:
    """Issue 23: a friend whose clock is on the wrong time zone (hours off) is still
    recognised, up to MAX_SKEW (26 hours) either way; past it, or a stranger, not."""
    friend, stranger = b"f" * 32, b"s" * 32
    now = 1_800_000_000.0
    table = BeaconTable()
    table.update([friend], window=window_of(now))
    for skew in (-MAX_SKEW, -14 * 3600, -3 * 3600, -60, 0, 60, 5 * 3600, 14 * 3600, MAX_SKEW):
        theirs = beacon(friend, window_of(now + skew))  # what their clock makes them announce
        assert table.lookup(theirs) == friend, skew
    assert table.lookup(beacon(friend, window_of(now + MAX_SKEW + WINDOW))) is None
    assert table.lookup(beacon(stranger, window_of(now))) is None
    assert window_of(100 * WINDOW + 5) == 100
    # As our clock moves on, the window that enters is recognised, the one left is not.
    table.update([friend], window=window_of(now) + 1)
    assert table.lookup(beacon(friend, window_of(now + MAX_SKEW + WINDOW))) == friend
    assert table.lookup(beacon(friend, window_of(now - MAX_SKEW))) is None
    # A friend added later, and one gone.
    other = b"o" * 32
    table.update([other], window=window_of(now) + 1)
    assert table.lookup(beacon(other, window_of(now - 20 * 3600))) == other
    assert table.lookup(beacon(friend, window_of(now))) is None


def without_address(link: str) -> str:
    p = decode_code(link)
    return encode_code(replace(p, host=None, port=None))


async def test_pairing_finds_the_owner_by_mdns_alone(tmp_path: Path) -> None:
    alice_home, bob_home = await make_home(tmp_path, "Alice"), await make_home(tmp_path, "Bob")
    async with running(alice_home, mdns=True) as alice, running(bob_home, mdns=True) as bob:
        link, _ = await alice.pairings.new_code()
        record = await bob.pairings.pair(without_address(link))
        done = await bob.pairings.wait(record.id, timeout=30)
        assert done is not None
        assert done.state == "confirmed"
        await eventually(lambda: bob.links.peers(), what="a link")
        assert bob.links.peers()[0].found_via == "mdns"


async def test_a_code_scanned_after_its_owner_was_sighted_still_pairs(tmp_path: Path) -> None:
    """The owner's record is announced once; the scan comes later. Sightings are kept."""
    alice_home, bob_home = await make_home(tmp_path, "Alice"), await make_home(tmp_path, "Bob")
    async with running(alice_home, mdns=True) as alice, running(bob_home, mdns=True) as bob:
        await eventually(
            lambda: bob.statistics()["sightings"], timeout=20, what="Bob to sight Alice's record"
        )
        link, _ = await alice.pairings.new_code()
        record = await bob.pairings.pair(without_address(link))
        done = await bob.pairings.wait(record.id, timeout=20)
        assert done is not None
        assert done.state == "confirmed"


async def test_friends_find_each_other_again_after_a_move(tmp_path: Path) -> None:
    """Bob restarts on another port: his old address is stale, mDNS finds the new one."""
    alice_home, bob_home = await make_home(tmp_path, "Alice"), await make_home(tmp_path, "Bob")
    async with running(alice_home, mdns=True) as alice:
        async with running(bob_home, mdns=True) as bob:
            link, _ = await alice.pairings.new_code()
            await bob.pairings.wait((await bob.pairings.pair(link)).id, timeout=30)
            await eventually(lambda: alice.links.peers(), what="first link")
            old_port = bob.listen_port
        await eventually(lambda: not alice.links.peers(), what="Alice to see Bob go")
        async with running(bob_home, mdns=True, listen=Address(host="127.0.0.1", port=0)) as bob:
            assert bob.listen_port != old_port
            await eventually(
                lambda: alice.links.peers() and bob.links.peers(),
                timeout=30,
                what="reconnection through mDNS",
            )
