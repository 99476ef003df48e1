"""The daemon's Tor without a Tor network: off, missing (a clear message, the LAN still
works), and reach cards on links (spec/tor.md section 6) between nodes on loopback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from p2pmoments.core.identity import Identity
from p2pmoments.core.onion import ClientAuthKey, OnionKey
from p2pmoments.core.pairing import decode_code
from p2pmoments.core.reach import create_card, encode_reach
from tests.multinode import befriend, eventually, make_home, running


async def test_with_tor_off_there_is_no_tor_no_key_and_no_onion(tmp_path: Path) -> None:
    async with running(await make_home(tmp_path, "Alice")) as alice:
        status = (await alice.status())["tor"]
        assert (status["state"], status["onion"], status["bootstrapped"]) == ("off", None, False)
        assert decode_code((await alice.pairings.new_code())[0]).onion is None
    assert not (tmp_path / "Alice" / "data" / "tor.key").exists()


@pytest.mark.parametrize("mode", ["on", "auto"])
async def test_without_tor_installed_the_daemon_says_how_to_get_it_and_works_on_the_lan(
    tmp_path: Path, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    missing = str(tmp_path / "no" / "tor")
    async with (
        running(await make_home(tmp_path, "Alice"), tor=mode, tor_path=missing) as alice,
        running(await make_home(tmp_path, "Bob")) as bob,
    ):
        status = (await alice.status())["tor"]
        assert status["state"] == "missing"
        assert "apt install tor" in status["error"]
        assert status["onion"] is None
        assert "apt install tor" in caplog.text
        assert (logging.WARNING if mode == "on" else logging.INFO) in [
            r.levelno for r in caplog.records if "apt install tor" in r.getMessage()
        ]
        # No onion in its codes, and friends are made and linked on the LAN as before.
        assert decode_code((await alice.pairings.new_code())[0]).onion is None
        await befriend(alice, bob)
        await eventually(lambda: bob.links.path(alice.me) == "lan", what="a LAN link")


def card_for(identity: Identity, issued: int = 1) -> bytes:
    return create_card(
        identity,
        onion=OnionKey.generate().address,
        client_auth=ClientAuthKey.generate().public_key,
        issued=issued,
    ).raw


async def test_a_friends_card_is_kept_a_strangers_is_not_and_a_forged_one_ends_the_link(
    tmp_path: Path,
) -> None:
    async with (
        running(await make_home(tmp_path, "Alice")) as alice,
        running(await make_home(tmp_path, "Bob")) as bob,
    ):
        await befriend(alice, bob)
        await eventually(lambda: alice.links.path(bob.me), what="a link")
        stranger = Identity.generate()
        assert bob.links.send(alice.me, encode_reach([card_for(bob.identity), card_for(stranger)]))
        await eventually(lambda: alice.reach.card(bob.me), what="Bob's card kept")
        assert alice.links.onion_of(bob.me) == alice.reach.card(bob.me).onion  # dialled there
        assert alice.reach.card(bytes(stranger.public.verify_key)) is None
        # A newer card replaces it; an older one does not.
        newer = card_for(bob.identity, issued=2)
        bob.links.send(alice.me, encode_reach([newer, card_for(bob.identity, issued=1)]))
        await eventually(lambda: alice.reach.card(bob.me).raw == newer, what="the newer card")

        # A card that does not verify: Bob's daemon would never pass one on.
        forged = bytearray(card_for(bob.identity, issued=3))
        forged[-1] ^= 1
        bob.links.send(alice.me, encode_reach([bytes(forged)]))
        await eventually(lambda: not alice.links.path(bob.me), what="the link to end")
        assert alice.reach.card(bob.me).raw == newer
        assert alice.links.cooling(bytes(bob.identity.public.link_key))
        await eventually(
            lambda: any(
                e.kind == "peer.disconnected" and "bad reach card" in e.data["reason"]
                for e in bob.events.after(0)[0]
            ),
            what="Bob to be told why",
        )
