"""One person's devices over Tor only (issue 19, spec/devices.md section 14, spec/tor.md):
Alice's desktop joins her laptop by a device link carrying only the laptop's onion, no
LAN path anywhere (mDNS off, no addresses); her friend Bob is reached only through
onion services. Moments cross both ways between Bob and each device, and a revocation
made on the laptop reaches Bob over Tor, who lets the desktop in no more. On the private
Tor network of tests/tornet.py; skipped with the reason where tor is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from p2pmoments.core.pairing import decode_device_link, encode_device_link
from p2pmoments.home import device_join_code, join_home, load_identity
from p2pmoments.node import Node
from p2pmoments.paths import resolve_paths
from tests.multinode import TOR_WAIT, befriend_over_tor, eventually, read_feed, until
from tests.test_tor_daemons import on_tor, path_to, tor_config
from tests.tornet import TorNetwork

pytestmark = [pytest.mark.tor, pytest.mark.timeout(900), pytest.mark.xdist_group("tor")]


def onion_only_device_link(link: str) -> str:
    """The device link without the laptop's LAN address: only its onion remains."""
    code = decode_device_link(link)
    assert code.onion is not None, "a daemon running Tor puts its onion in its device links"
    return encode_device_link(replace(code, host=None, port=None))


@contextlib.asynccontextmanager
async def joining(root: Path, link: str, network: TorNetwork) -> AsyncIterator[tuple[Node, str]]:
    """A home made by `devices join LINK --name desktop`, running on Tor; and the digits it
    shows."""
    paths = resolve_paths(root / "desktop")
    code = await asyncio.to_thread(join_home, paths, link, "desktop")
    identity = await asyncio.to_thread(load_identity, paths)
    digits = await asyncio.to_thread(device_join_code, paths)
    assert digits is not None
    async with Node(
        paths=paths, config=tor_config(network), identity=identity, person=bytes(code.identity)
    ) as node:
        yield node, digits


async def texts(node: Node) -> dict[str, str]:
    return {m["text"]: m["author"]["name"] for m in await read_feed(node, 100)}


async def has(node: Node, text: str) -> bool:
    return text in await texts(node)


async def test_a_persons_devices_and_a_friend_reach_each_other_only_through_tor(
    tor_network: TorNetwork, tmp_path: Path
) -> None:
    async with (
        on_tor(tmp_path, "Alice", tor_network) as laptop,
        on_tor(tmp_path, "Bob", tor_network) as bob,
    ):
        await befriend_over_tor(laptop, bob)
        await laptop.circles.create("family", ["Bob"], members_can_post=True)
        await until(bob, lambda: _true(bool(bob.circles.all())), timeout=TOR_WAIT, what="circle")

        link, _ = laptop.devices.new_device_link()  # the person confirms the digits
        async with joining(tmp_path, onion_only_device_link(link), tor_network) as (desktop, code):
            await until(
                laptop,
                lambda: _true(bool(laptop.devices.joins.requests())),
                timeout=TOR_WAIT,
                what="the desktop to ask to join, through the laptop's onion",
            )
            assert [r["code"] for r in laptop.devices.joins.requests()] == [code]
            assert await laptop.devices.confirm(code) == "desktop"
            await eventually(
                lambda: (
                    desktop.persons.person_of(desktop.me) == laptop.me
                    and desktop.circles.all()
                    and bob.persons.person_of(desktop.me) == laptop.me
                ),
                timeout=TOR_WAIT,
                what="the desktop to be Alice's, hold the circle, and Bob to know it",
            )
            assert path_to(desktop, laptop) == path_to(laptop, desktop) == "tor"
            # Bob and the desktop learn each other's onion (reach cards of a device, told
            # by the laptop) and link directly through Tor.
            await eventually(
                lambda: path_to(bob, desktop) == "tor" and path_to(desktop, bob) == "tor",
                timeout=TOR_WAIT,
                what="Bob and the desktop to link through their onion services",
            )

            await until(
                desktop,
                lambda: _true(bool(desktop.circles.keys_held())),
                timeout=TOR_WAIT,
                what="the family's key at the desktop",
            )
            await desktop.posting.post("family", "from the desktop")
            await until(laptop, lambda: has(laptop, "from the desktop"), timeout=TOR_WAIT)
            await until(bob, lambda: has(bob, "from the desktop"), timeout=TOR_WAIT)
            assert (await texts(bob))["from the desktop"] == "Alice"
            await bob.posting.post("family", "from Bob")
            await until(laptop, lambda: has(laptop, "from Bob"), timeout=TOR_WAIT)
            await until(desktop, lambda: has(desktop, "from Bob"), timeout=TOR_WAIT)

            admitted = bob.onions.status()["authorized_clients"]
            assert isinstance(admitted, int)
            await laptop.devices.revoke("desktop")
            await eventually(
                lambda: (
                    bob.persons.person_of(desktop.me) != laptop.me
                    and desktop.me not in bob.links.linked()
                ),
                timeout=TOR_WAIT,
                what="Bob to learn of the revocation over Tor and drop the desktop's link",
            )
            # The desktop's client-auth key leaves Bob's onion service: it cannot reach it.
            await eventually(
                lambda: bob.onions.status()["authorized_clients"] == admitted - 1,
                timeout=30,
                what="the desktop's key off Bob's list",
            )
            await laptop.posting.post("family", "after the revocation")
            await until(bob, lambda: has(bob, "after the revocation"), timeout=TOR_WAIT)
            assert desktop.me not in bob.links.linked()
            assert not await has(desktop, "after the revocation")


async def _true(value: bool) -> bool:
    return value
