"""Daemons that share no network path but Tor (issue 14, spec/tor.md): they pair by a code
carrying only an onion address, exchange circles, moments and photos through onion
services, relay for co-members who are not friends, give strangers nothing, and move
to the LAN when there is one. On the private Tor network of tests/tornet.py; skipped
with the reason where tor is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from p2pmoments.config import Config
from p2pmoments.core.beacon import beacon
from p2pmoments.core.onion import ClientAuthKey, OnionAddress, SocksError, SocksReply
from p2pmoments.core.pairing import decode_code
from p2pmoments.net.discovery import Discovery
from p2pmoments.net.tor import Tor
from p2pmoments.node import Node
from tests.daemons import Daemon, cli, wait_for
from tests.multinode import (
    LOOPBACK,
    TOR_WAIT,
    befriend_over_tor,
    eventually,
    make_home,
    onion_only,
    random_png,
    read_feed,
    running,
    until,
)
from tests.photos import photo_with_location
from tests.tornet import TorNetwork

pytestmark = [pytest.mark.tor, pytest.mark.timeout(900), pytest.mark.xdist_group("tor")]


def tor_config(network: TorNetwork) -> Config:
    """A daemon on loopback, no mDNS, with its own tor joined to the private network."""
    return replace(LOOPBACK, tor="on", tor_torrc=tuple(network.torrc_lines()))


def path_to(node: Node, other: Node) -> str | None:
    return node.links.path(other.me)


@contextlib.asynccontextmanager
async def on_tor(
    root: Path, name: str, network: TorNetwork, **changes: object
) -> AsyncIterator[Node]:
    home = root / name
    if not home.exists():
        home = await make_home(root, name)
    async with running(home, tor_config(network), **changes) as node:
        yield node


async def test_two_nodes_pair_by_an_onion_code_and_a_photo_crosses_tor(
    tor_network: TorNetwork, tmp_path: Path
) -> None:
    async with (
        on_tor(tmp_path, "Alice", tor_network) as alice,
        on_tor(tmp_path, "Bob", tor_network) as bob,
    ):
        await befriend_over_tor(alice, bob)
        await eventually(
            lambda: path_to(bob, alice) == path_to(alice, bob) == "tor",
            timeout=TOR_WAIT,
            what="a link through Tor",
        )
        photo = photo_with_location(800, 600)
        circle = await alice.circles.create("family", ["Bob"], False)
        await alice.posting.post(circle.name, "over tor", photos=[photo])

        async def arrived() -> bool:
            feed = await read_feed(bob)
            return bool(feed) and all(p["chunks_held"] == p["chunks"] for p in feed[0]["photos"])

        await until(bob, arrived, timeout=TOR_WAIT, what="the photo at Bob's")
        assert (await read_feed(bob))[0]["text"] == "over tor"

        # Alice's service admits Bob's key and her code's (valid a few minutes more);
        # taking Bob out of the circle and unfriending him takes his key off the list,
        # and ends his link.
        assert alice.onions.status()["authorized_clients"] == 2
        await alice.circles.change("family", remove=["Bob"])
        assert alice.onions.status()["authorized_clients"] == 2  # still a friend
        await alice.friends.remove("Bob")
        assert alice.onions.status()["authorized_clients"] == 1
        await eventually(lambda: path_to(bob, alice) is None, timeout=60, what="no link")


async def published(node: Node) -> OnionAddress:
    """The node's onion address, once its service is published."""
    await until(
        node,
        async_true(lambda: node.onions.status()["published"]),
        timeout=TOR_WAIT,
        what="the onion service to be published",
    )
    assert node.onions.address is not None
    return node.onions.address


def async_true(condition: Callable[[], object]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(condition())

    return check


async def test_a_circle_relays_through_a_member_when_onions_are_the_only_paths(
    tor_network: TorNetwork, tmp_path: Path
) -> None:
    """Bob and Carol are not friends; Alice's circle holds both. They learn each other's
    onion from Alice (signed reach cards), link through Tor, and when Alice posts while
    Carol is away and then leaves, Carol receives the moment through Bob."""
    async with contextlib.AsyncExitStack() as everyone:
        alice_up, carol_up = contextlib.AsyncExitStack(), contextlib.AsyncExitStack()
        everyone.push_async_callback(alice_up.aclose)
        everyone.push_async_callback(carol_up.aclose)
        alice = await alice_up.enter_async_context(on_tor(tmp_path, "Alice", tor_network))
        bob = await everyone.enter_async_context(on_tor(tmp_path, "Bob", tor_network))
        carol = await carol_up.enter_async_context(on_tor(tmp_path, "Carol", tor_network))
        await befriend_over_tor(alice, bob)
        await befriend_over_tor(alice, carol)
        await alice.circles.create("family", ["Bob", "Carol"], True)
        await eventually(
            lambda: path_to(bob, carol) == "tor" and path_to(carol, bob) == "tor",
            timeout=TOR_WAIT,
            what="Bob and Carol to link through their onion services",
        )
        assert bob.friends.get(carol.me) is None  # co-members, not friends
        assert carol.friends.get(bob.me) is None

        await carol_up.aclose()  # Carol is away when Alice posts
        await alice.posting.post("family", "while Carol was away")
        await until(
            bob,
            lambda: has_text(bob, "while Carol was away"),
            timeout=TOR_WAIT,
            what="the moment at Bob's",
        )
        await alice_up.aclose()  # then Alice leaves too
        carol = await carol_up.enter_async_context(on_tor(tmp_path, "Carol", tor_network))
        await until(
            carol,
            lambda: has_text(carol, "while Carol was away"),
            timeout=TOR_WAIT,
            what="the moment at Carol's, through Bob",
        )
        assert path_to(carol, bob) == "tor"
        assert path_to(carol, alice) is None


async def has_text(node: Node, text: str) -> bool:
    return any(m["text"] == text for m in await read_feed(node))


async def test_a_stranger_who_learns_the_onion_address_cannot_connect_at_all(
    tor_network: TorNetwork, tmp_path: Path
) -> None:
    """Client authorisation: without a listed key, tor cannot even find the service."""
    async with on_tor(tmp_path, "Alice", tor_network) as alice:
        address = await published(alice)
        stranger_tor = tor_network.start_client(f"stranger{len(tor_network.clients)}")
        await asyncio.to_thread(tor_network.wait_bootstrapped, stranger_tor)
        async with await Tor.attach(f"127.0.0.1:{stranger_tor.control_port}") as stranger:
            with pytest.raises(SocksError) as no_key:
                await stranger.dial(address, timeout=60)
            assert no_key.value.reply is SocksReply.ONION_MISSING_CLIENT_AUTH
            await stranger.add_client_auth(address, ClientAuthKey.generate())
            with pytest.raises(SocksError) as wrong_key:
                await stranger.dial(address, timeout=60)
            assert wrong_key.value.reply is SocksReply.ONION_BAD_CLIENT_AUTH
        # Nothing reached the daemon: no connection, so no handshake to refuse.
        assert alice.statistics()["handshaking"] == 0
        assert alice.links.peers() == []


async def test_a_lan_link_takes_over_from_tor_and_outlives_it(
    tor_network: TorNetwork, tmp_path: Path
) -> None:
    """Alice and Bob are linked through Tor; then Bob comes home (mDNS finds Alice on the
    LAN): the LAN link takes over. Then Alice's tor dies: the LAN link carries on."""
    async with (
        on_tor(tmp_path, "Alice", tor_network, mdns=True) as alice,
        on_tor(tmp_path, "Bob", tor_network) as bob,
    ):
        await befriend_over_tor(alice, bob)
        await eventually(lambda: path_to(bob, alice) == "tor", timeout=TOR_WAIT, what="tor")
        await alice.circles.create("family", ["Bob"], False)
        await until(bob, async_true(lambda: bob.circles.all()), what="the circle at Bob's")

        # A photo sets off through Tor; while it travels, Bob's mDNS starts (as the daemon
        # runs it) and he sees Alice's record on loopback.
        last = bob.events.last_id
        await alice.posting.post("family", "", photos=[random_png(1200)])
        await until(
            bob,
            async_true(lambda: any(e.kind == "transfer.chunk" for e in bob.events.after(last)[0])),
            timeout=TOR_WAIT,
            what="the photo to start arriving",
        )
        assert bob.listen_port is not None
        discovery = Discovery(
            listen_host="127.0.0.1",
            port=bob.listen_port,
            own_beacon=lambda window: beacon(bob.me, window),
            on_sighting=bob.links.sighted,
        )
        async with asyncio.TaskGroup() as tg:
            mdns = tg.create_task(discovery.run())
            await eventually(
                lambda: path_to(bob, alice) == "lan" and path_to(alice, bob) == "lan",
                timeout=60,
                what="the LAN link to take over",
            )
            mdns.cancel()
        assert len(bob.links.peers()) == len(alice.links.peers()) == 1
        assert bob.statistics()["links_over_tor"] == alice.statistics()["links_over_tor"] == 0
        # What was asked on the Tor link is asked again on the LAN one: the photo completes.
        await until(
            bob,
            async_true(lambda: any(e.kind == "transfer.done" for e in bob.events.after(last)[0])),
            timeout=60,
            what="the photo to complete over the LAN",
        )
        since = alice.links.peers()[0].since

        pid = alice.onions.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # Alice's own tor, by its pid
        await until(
            alice,
            async_true(lambda: not alice.onions.ready()),
            what="Alice's daemon to notice its tor is gone",
        )
        await alice.posting.post("family", "still here, on the LAN")
        await until(
            bob, lambda: has_text(bob, "still here, on the LAN"), what="the moment at Bob's"
        )
        assert alice.links.peers()[0].since == since  # the same link throughout
        assert path_to(alice, bob) == "lan"


def status_of(home: Path) -> dict[str, object]:
    result = cli(home, "status", "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def peers_of(home: Path) -> list[dict[str, object]]:
    result = cli(home, "peers", "--json")
    return list(json.loads(result.stdout)) if result.returncode == 0 else []


def mdns_records() -> list[dict[str, object]]:
    """Every p2pmoments mDNS record seen on loopback (a browsing window of a few seconds)."""
    out = subprocess.run(
        [sys.executable, "-m", "tests.netns_browse", "127.0.0.1", "4"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).parent.parent,
    )
    return list(json.loads(out.stdout))


@pytest.mark.process
def test_daemons_over_tor_show_their_path_and_keep_the_onion_out_of_logs_and_mdns(
    tor_network: TorNetwork, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Real daemons (`run --tor`, logging everything): Bob pairs by Alice's code without
    her LAN address; `status` shows each one's onion, `peers` the path; a moment arrives;
    and neither the logs (debug level) nor Alice's mDNS record name either onion."""
    config = "[network]\ntor_torrc = " + json.dumps(tor_network.torrc_lines()) + "\n"
    homes = {name: tmp_path / name for name in ("alice", "bob")}
    for name, home in homes.items():
        assert cli(home, "init", "--name", name.title()).returncode == 0
        (home / "config.toml").write_text(config)
    alice = Daemon(homes["alice"], "--tor", "--log-level", "debug", mdns=True, tor=True)
    daemons.append(alice)
    bob = Daemon(homes["bob"], "--tor", "--log-level", "debug", tor=True)
    daemons.append(bob)
    alice.wait_ready()
    bob.wait_ready()

    def tor_of(home: Path) -> dict[str, object]:
        tor = status_of(home)["tor"]
        assert isinstance(tor, dict)
        return tor

    wait_for(lambda: tor_of(homes["alice"])["published"], timeout=TOR_WAIT, what="published")
    onions = {name: str(tor_of(home)["onion"]) for name, home in homes.items()}
    assert all(o.endswith(".onion") and len(o) == 62 for o in onions.values())
    assert (
        "Tor:       bootstrapped, onion " + onions["alice"] in cli(homes["alice"], "status").stdout
    )

    link = cli(homes["alice"], "qr", "--link").stdout.strip()
    assert decode_code(link).onion == OnionAddress.parse(onions["alice"])
    paired = cli(homes["bob"], "pair", onion_only(link), "--json", timeout=300)
    assert paired.returncode == 0, paired.stdout + paired.stderr
    for home in homes.values():
        wait_for(lambda h=home: peers_of(h), timeout=TOR_WAIT, what="a link")
        [peer] = peers_of(home)
        assert (peer["path"], peer["address"]) == ("tor", None)
    assert " tor  -  via " in cli(homes["bob"], "peers").stdout

    assert cli(homes["alice"], "circle", "create", "family", "--member", "Bob").returncode == 0
    assert cli(homes["alice"], "post", "--circle", "family", "hello via onions").returncode == 0
    wait_for(
        lambda: "hello via onions" in cli(homes["bob"], "feed").stdout,
        timeout=TOR_WAIT,
        what="the moment at Bob's",
    )

    records = mdns_records()
    assert records, "Alice's daemon advertises on loopback"
    service_ids = [o.removesuffix(".onion") for o in onions.values()]
    keys = [bytes(OnionAddress.parse(o)).hex() for o in onions.values()]
    for secret in [*service_ids, *keys]:
        assert secret not in json.dumps(records)
        for daemon in (alice, bob):
            assert secret not in daemon.output.lower()
    assert "learned where a peer is reachable through tor" in bob.output.lower()  # it logged
