"""Pairing between nodes in one process over loopback: one scan, tokens, refusals."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from p2pmoments.core.pairing import decode_code, encode_code
from p2pmoments.errors import FriendLimitError, UserInputError
from p2pmoments.node import Node
from p2pmoments.store import Store
from tests.multinode import eventually, make_home, running


def friends_of(node: Node) -> set[str]:
    return {f.their_name for f in node.friends.all() if f.state == "friend"}


async def pairing_state(node: Node, pairing_id: int) -> str:
    return next(p.state for p in await node.pairings.records() if p.id == pairing_id)


async def test_one_scan_makes_both_friends(tmp_path: Path) -> None:
    alice_home, bob_home = await make_home(tmp_path, "Alice"), await make_home(tmp_path, "Bob")
    async with running(alice_home) as alice, running(bob_home) as bob:
        link, _ = await alice.pairings.new_code()
        record = await bob.pairings.pair(link)
        done = await bob.pairings.wait(record.id, timeout=10)
        assert done is not None
        assert done.state == "confirmed"
        await eventually(lambda: friends_of(alice) == {"Bob"}, what="Alice to know Bob")
        assert friends_of(bob) == {"Alice"}
        await eventually(lambda: alice.links.peers() and bob.links.peers(), what="a link")
        assert [p.name for p in bob.links.peers()] == ["Alice"]
        kinds = [e.kind for e in alice.events.after(0)[0]]
        assert "friend.added" in kinds
        assert "pairing.confirmed" in kinds
        # Published once the link is registered and the name it gave is stored: a moment
        # after peers() lists it (this assertion raced that store write 4 times in 15).
        await eventually(
            lambda: "peer.connected" in [e.kind for e in alice.events.after(0)[0]],
            what="peer.connected",
        )


async def test_a_used_code_is_refused_for_another_daemon_and_the_owner_sees_it(
    tmp_path: Path,
) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob", "Carol")]
    async with running(homes[0]) as alice, running(homes[1]) as bob, running(homes[2]) as carol:
        link, _ = await alice.pairings.new_code()
        first = await bob.pairings.pair(link)
        assert (await bob.pairings.wait(first.id, 10)).state == "confirmed"  # type: ignore[union-attr]
        second = await carol.pairings.pair(link)
        await eventually(
            lambda: any(e.kind == "pairing.refused" for e in alice.events.after(0)[0]),
            what="Alice to record the refusal",
        )
        refused = [p for p in await alice.pairings.records() if p.state == "refused"]
        assert refused[0].reason == "this code was already used by another device"
        assert "Carol" not in friends_of(alice)
        # Carol proved she saw the code, so she is told why at once, not left pending.
        answer = await carol.pairings.wait(second.id, 5)
        assert answer is not None
        assert (answer.state, answer.reason) == (
            "refused",
            "this code was already used by another device",
        )
        assert carol.links.peers() == []
        assert "Alice" not in friends_of(carol)


async def test_each_showing_is_a_code_of_its_own_for_the_friend_it_is_shown_to(
    tmp_path: Path,
) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob", "Carol")]
    async with running(homes[0]) as alice, running(homes[1]) as bob, running(homes[2]) as carol:
        for_bob, _ = await alice.pairings.new_code()
        for_carol, _ = await alice.pairings.new_code()
        assert for_bob != for_carol
        for scanner, link in ((carol, for_carol), (bob, for_bob)):  # in any order
            record = await scanner.pairings.wait((await scanner.pairings.pair(link)).id, 10)
            assert record is not None
            assert record.state == "confirmed"
        await eventually(lambda: friends_of(alice) == {"Bob", "Carol"}, what="both friends")


async def test_only_the_newest_unused_codes_stay_valid(tmp_path: Path) -> None:
    from p2pmoments.pairings import MAX_LIVE_CODES

    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob")]
    async with running(homes[0]) as alice, running(homes[1]) as bob:
        oldest, _ = await alice.pairings.new_code()
        for _ in range(MAX_LIVE_CODES):
            await alice.pairings.new_code()
        tokens = await alice.store.run(Store.tokens, int(time.time()))
        assert len(tokens) == MAX_LIVE_CODES
        assert decode_code(oldest).token not in {t.token for t in tokens}
        record = await bob.pairings.pair(oldest)
        await eventually(lambda: bob.statistics()["failed_dials"] >= 1, what="Bob to try")
        assert await pairing_state(bob, record.id) == "pending"  # Alice stays silent
        assert "Bob" not in friends_of(alice)


async def test_the_same_daemon_may_retry_its_code(tmp_path: Path) -> None:
    alice_home, bob_home = await make_home(tmp_path, "Alice"), await make_home(tmp_path, "Bob")
    async with running(alice_home) as alice, running(bob_home) as bob:
        link, _ = await alice.pairings.new_code()
        first = await bob.pairings.pair(link)
        assert (await bob.pairings.wait(first.id, 10)).state == "confirmed"  # type: ignore[union-attr]
        again = await bob.pairings.pair(link)  # re-pairing updates, never duplicates
        assert (await bob.pairings.wait(again.id, 10)).state == "confirmed"  # type: ignore[union-attr]
        assert len(bob.friends.all()) == 1
        assert len(alice.friends.all()) == 1


async def test_pending_until_the_owner_comes_online(tmp_path: Path) -> None:
    alice_home, bob_home = await make_home(tmp_path, "Alice"), await make_home(tmp_path, "Bob")
    async with running(alice_home) as alice:
        link, _ = await alice.pairings.new_code()
        port = alice.listen_port
    async with running(bob_home) as bob:
        record = await bob.pairings.pair(link)
        assert await pairing_state(bob, record.id) == "pending"
        from p2pmoments.config import Address

        async with running(alice_home, listen=Address(host="127.0.0.1", port=port or 0)) as alice:
            # Bob keeps trying with backoff; it completes once Alice is up.
            done = await bob.pairings.wait(record.id, timeout=20)
            assert done is not None
            assert done.state == "confirmed"
            await eventually(lambda: friends_of(alice) == {"Bob"})


async def test_friends_reconnect_after_a_restart(tmp_path: Path) -> None:
    alice_home, bob_home = await make_home(tmp_path, "Alice"), await make_home(tmp_path, "Bob")
    async with running(alice_home) as alice, running(bob_home) as bob:
        link, _ = await alice.pairings.new_code()
        record = await bob.pairings.pair(link)
        await bob.pairings.wait(record.id, 10)
        port = bob.listen_port
        await eventually(lambda: alice.links.peers(), what="first link")
        await bob.aclose()
        await eventually(lambda: not alice.links.peers(), what="Alice to notice Bob left")
        from p2pmoments.config import Address

        async with running(bob_home, listen=Address(host="127.0.0.1", port=port or 0)) as bob2:
            await eventually(
                lambda: alice.links.peers() and bob2.links.peers(), timeout=20, what="reconnection"
            )
            assert len(alice.links.peers()) == 1


async def test_expired_code_is_refused_at_scan(tmp_path: Path) -> None:
    alice_home, bob_home = await make_home(tmp_path, "Alice"), await make_home(tmp_path, "Bob")
    async with running(alice_home) as alice, running(bob_home) as bob:
        link, expires = await alice.pairings.new_code()

        old = decode_code(link)
        stale = replace(old, expires=int(time.time()) - 1)
        with pytest.raises(UserInputError, match="expired"):
            await bob.pairings.pair(encode_code(stale))
        assert expires > time.time()


async def test_an_expired_token_is_refused_by_the_owner(tmp_path: Path) -> None:
    alice_home, bob_home = await make_home(tmp_path, "Alice"), await make_home(tmp_path, "Bob")
    async with running(alice_home) as alice, running(bob_home) as bob:
        link, _ = await alice.pairings.new_code()
        token = decode_code(link).token
        # Alice's side: the token has run out (the scanner's clock may differ).
        await alice.store.run(
            lambda s: s._conn.execute(
                "UPDATE pair_tokens SET expires = 1 WHERE token = ?", (token,)
            )
        )
        record = await bob.pairings.pair(link)
        await eventually(lambda: any(e.kind == "pairing.refused" for e in alice.events.after(0)[0]))
        answer = await bob.pairings.wait(record.id, 5)  # Bob is told, he does not wait it out
        assert answer is not None
        assert (answer.state, answer.reason) == ("refused", "this code has expired")
        assert not alice.friends.all()


async def test_a_forged_token_gets_silence(tmp_path: Path) -> None:
    alice_home, bob_home = await make_home(tmp_path, "Alice"), await make_home(tmp_path, "Bob")
    async with running(alice_home) as alice, running(bob_home) as bob:
        link, _ = await alice.pairings.new_code()

        real = decode_code(link)
        forged = replace(real, token=b"\x00" * 16)
        record = await bob.pairings.pair(encode_code(forged))
        await eventually(lambda: bob.statistics()["failed_dials"] >= 1)
        assert await pairing_state(bob, record.id) == "pending"
        assert not alice.friends.all()


async def test_a_copied_link_served_by_someone_else_cannot_pass(tmp_path: Path) -> None:
    """Mallory puts her address in Alice's link: she cannot answer for Alice's keys."""
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob", "Mallory")]
    async with running(homes[0]) as alice, running(homes[1]) as bob, running(homes[2]) as mallory:
        link, _ = await alice.pairings.new_code()

        real = decode_code(link)
        copied = replace(real, host="127.0.0.1", port=mallory.listen_port)
        record = await bob.pairings.pair(encode_code(copied))
        await eventually(lambda: bob.statistics()["failed_dials"] >= 1)
        assert await pairing_state(bob, record.id) == "pending"
        assert not bob.friends.all()
        assert not mallory.friends.all()
        assert alice.friends.all() == []


async def test_both_scan_each_other(tmp_path: Path) -> None:
    alice_home, bob_home = await make_home(tmp_path, "Alice"), await make_home(tmp_path, "Bob")
    async with running(alice_home) as alice, running(bob_home) as bob:
        a_link, _ = await alice.pairings.new_code()
        b_link, _ = await bob.pairings.new_code()
        a_rec, b_rec = await bob.pairings.pair(a_link), await alice.pairings.pair(b_link)
        assert (await bob.pairings.wait(a_rec.id, 10)).state == "confirmed"  # type: ignore[union-attr]
        assert (await alice.pairings.wait(b_rec.id, 10)).state == "confirmed"  # type: ignore[union-attr]
        await eventually(lambda: len(alice.links.peers()) == 1 and len(bob.links.peers()) == 1)
        assert len(alice.friends.all()) == len(bob.friends.all()) == 1


async def test_pairing_with_yourself_is_refused(tmp_path: Path) -> None:
    async with running(await make_home(tmp_path, "Alice")) as alice:
        link, _ = await alice.pairings.new_code()
        with pytest.raises(UserInputError, match="your own pairing code"):
            await alice.pairings.pair(link)


async def test_the_friend_cap(tmp_path: Path) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob", "Carol")]
    async with (
        running(homes[0], max_friends=1) as alice,
        running(homes[1]) as bob,
        running(homes[2]) as carol,
    ):
        link, _ = await alice.pairings.new_code()
        rec = await bob.pairings.pair(link)
        assert (await bob.pairings.wait(rec.id, 10)).state == "confirmed"  # type: ignore[union-attr]
        # Alice at her cap refuses a new friend who scans her...
        link2, _ = await alice.pairings.new_code()
        await carol.pairings.pair(link2)
        await eventually(lambda: any(e.kind == "pairing.refused" for e in alice.events.after(0)[0]))
        refused = [p for p in await alice.pairings.records() if p.state == "refused"]
        assert refused[0].reason == "at the friend limit (1)"
        # ...and cannot scan anyone new herself.
        c_link, _ = await carol.pairings.new_code()
        with pytest.raises(FriendLimitError, match=r"friends\.max"):
            await alice.pairings.pair(c_link)
        assert (await alice.store.run(Store.counts)).friends == 1


async def test_a_pending_pairing_expires_on_the_scanners_side(tmp_path: Path) -> None:
    alice_home, bob_home = await make_home(tmp_path, "Alice"), await make_home(tmp_path, "Bob")
    async with running(alice_home) as alice:
        real = decode_code((await alice.pairings.new_code())[0])

    soon = replace(real, expires=int(time.time()) + 2)
    async with running(bob_home) as bob:  # Alice stays offline
        record = await bob.pairings.pair(encode_code(soon))
        done = await bob.pairings.wait(record.id, timeout=15)
        assert done is not None
        assert done.state == "expired"
        assert done.reason == "the code expired before we could reach them"
        assert any(e.kind == "pairing.expired" for e in bob.events.after(0)[0])


async def test_a_static_peer_is_dialled_at_its_configured_address(tmp_path: Path) -> None:
    from p2pmoments.config import Address, StaticPeer

    alice_home, bob_home = await make_home(tmp_path, "Alice"), await make_home(tmp_path, "Bob")
    async with running(alice_home) as alice, running(bob_home) as bob:
        link, _ = await alice.pairings.new_code()
        await bob.pairings.wait((await bob.pairings.pair(link)).id, timeout=10)
        await eventually(lambda: alice.friends.all(), what="Alice to know Bob")
        bob_identity = bob.identity.public.text
    # Bob moves to a port Alice has never seen; only the static entry can find him.
    async with running(bob_home) as bob:
        where = Address(host="127.0.0.1", port=bob.listen_port or 0)
        peers = (StaticPeer(identity=bob_identity, address=where),)
        async with running(alice_home, peers=peers) as alice:
            await eventually(lambda: alice.links.peers(), timeout=15, what="the static dial")
            assert alice.links.peers()[0].found_via == "static"


async def test_a_refused_daemon_stops_retrying_and_is_recorded_once(tmp_path: Path) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob", "Carol")]
    async with running(homes[0]) as alice, running(homes[1]) as bob, running(homes[2]) as carol:
        link, _ = await alice.pairings.new_code()
        await bob.pairings.wait((await bob.pairings.pair(link)).id, timeout=10)
        record = await carol.pairings.pair(link)
        answer = await carol.pairings.wait(record.id, 5)
        assert answer is not None
        assert answer.state == "refused"
        owner = bytes(alice.identity.public.verify_key)
        assert owner not in carol.links.linked()
        assert not [t for t in await carol.pairings.records() if t.state == "pending"]  # none stale
        refused = [p for p in await alice.pairings.records() if p.state == "refused"]
        assert len(refused) == 1
