"""One person, several devices, in one process (spec/devices.md sections 7-9): Alice's
laptop (her first device, whose key is her identity) certifies her desktop; Bob, a
friend who does nothing, accepts the desktop's links and shows its posts as Alice's;
the desktop reads the family circle with the keys the laptop gives it; what the desktop
posts reaches the laptop as Alice's own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from p2pmoments.core.device_entries import consent_message
from p2pmoments.home import load_identity
from p2pmoments.node import Node
from p2pmoments.paths import resolve_paths
from tests.multinode import LOOPBACK, befriend, eventually, make_home, read_feed, running, until


@contextlib.asynccontextmanager
async def second_device(root: Path, first: Node, name: str) -> AsyncIterator[Node]:
    """A new device of `first`'s person: its own keys, certified by `first` in the
    person's roster (what linking a device does, spec/devices.md section 10)."""
    home = await make_home(root, f"{name}-home")
    paths = resolve_paths(home)
    identity = await asyncio.to_thread(load_identity, paths)
    device, link = bytes(identity.public.verify_key), bytes(identity.public.link_key)
    entries = await first.persons.add_device(
        first.identity,
        device=device,
        link=link,
        name=name,
        consent=identity.signing_key.sign(consent_message(first.person, device, link)),
        now=1_800_000_000,
    )
    async with Node(
        paths=paths, config=replace(LOOPBACK), identity=identity, person=first.person
    ) as node:
        await node.persons.keep(first.person, entries)
        await node.friends.set_my_name(first.name)
        yield node


def sighted(node: Node, other: Node) -> None:
    """What mDNS would tell `node`: where `other` (a device it dials) listens."""
    assert other.listen_port is not None
    node.links.seen(other.me, "127.0.0.1", other.listen_port, "mdns")


async def texts(node: Node) -> dict[str, str]:
    return {m["text"]: m["author"]["name"] for m in await read_feed(node, 100)}


@pytest.mark.timeout(120)
async def test_a_second_device_posts_as_its_person_and_friends_do_nothing(
    tmp_path: Path,
) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob")]
    async with running(homes[0]) as laptop, running(homes[1]) as bob:
        await befriend(laptop, bob)
        await laptop.circles.create("family", ["Bob"], members_can_post=True)
        await eventually(lambda: bob.circles.all(), what="Bob to get the manifest")
        await laptop.posting.post("family", "from the laptop")
        await bob.posting.post("family", "from Bob")
        async with second_device(tmp_path, laptop, "desktop") as desktop:
            assert desktop.person == laptop.me != desktop.me
            # The laptop dials the desktop (a current device of its own person).
            sighted(laptop, desktop)
            await eventually(
                lambda: desktop.me in laptop.links.linked(), what="the laptop and desktop to link"
            )
            await until(
                desktop,
                lambda: _has(desktop, {"from the laptop", "from Bob"}),
                what="the desktop to read the family circle",
            )
            # Bob learns the desktop from Alice's roster (over his link with the laptop).
            await eventually(
                lambda: bob.persons.person_of(desktop.me) == laptop.me,
                what="Bob to hold Alice's roster",
            )
            shown = await texts(desktop)
            assert shown["from Bob"] == "Bob"
            assert shown["from the laptop"] == "Alice"  # the person, on every device

            await desktop.posting.post("family", "from the desktop")
            await until(laptop, lambda: _has(laptop, {"from the desktop"}), what="to the laptop")
            sighted(bob, desktop)
            await until(bob, lambda: _has(bob, {"from the desktop"}), what="to Bob")
            assert (await texts(bob))["from the desktop"] == "Alice"  # one Alice
            assert (await texts(laptop))["from the desktop"] == "Alice"
            feed = await read_feed(bob, 100)
            by_desktop = next(m for m in feed if m["text"] == "from the desktop")
            assert by_desktop["author"]["friend"] is True


async def _has(node: Node, wanted: set[str]) -> bool:
    return wanted <= set(await texts(node))


async def test_a_device_no_roster_names_is_refused_and_its_moments_count_for_no_one(
    tmp_path: Path,
) -> None:
    """A device that claims to be Alice's without her roster saying so gets no link,
    and a moment it signs is not Alice's."""
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob", "Mallory")]
    async with running(homes[0]) as alice, running(homes[1]) as bob:
        await befriend(alice, bob)
        await alice.circles.create("family", ["Bob"], members_can_post=True)
        await eventually(lambda: bob.circles.all(), what="Bob to get the manifest")
        paths = resolve_paths(homes[2])
        identity = await asyncio.to_thread(load_identity, paths)
        async with Node(paths=paths, config=LOOPBACK, identity=identity, person=alice.me) as fake:
            fake.links.want(bob.me, bytes(bob.identity.public.link_key))
            sighted(fake, bob)
            await eventually(
                lambda: fake.statistics()["failed_dials"] >= 1,
                timeout=20,
                what="the fake device's dial to fail",
            )
            assert fake.me not in bob.links.linked()
            # Its hello's claim made it no one's: not Alice's, for links or moments.
            assert bob.persons.person_of(fake.me) == fake.me
            assert bob.moments.person_of(fake.me, b"c" * 32, 1) == fake.me


@pytest.mark.timeout(120)
async def test_a_revoked_device_gets_nothing_new_and_what_it_signs_after_is_no_ones(
    tmp_path: Path,
) -> None:
    """Alice revokes her desktop from her laptop: Bob refuses its links, the family
    circle gets a new epoch whose key it never gets, what it posted before stays Alice's,
    and a moment it signs after the revocation is refused at Bob's."""
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob")]
    async with running(homes[0]) as laptop, running(homes[1]) as bob:
        await befriend(laptop, bob)
        await laptop.circles.create("family", ["Bob"], members_can_post=True)
        await eventually(lambda: bob.circles.all(), what="Bob to get the manifest")
        async with second_device(tmp_path, laptop, "desktop") as desktop:
            sighted(laptop, desktop)
            await eventually(
                lambda: desktop.circles.all() and desktop.me in laptop.links.linked(),
                what="the desktop to be linked and hold the circle",
            )
            await eventually(
                lambda: bob.persons.person_of(desktop.me) == laptop.me, what="Bob to know it"
            )
            await until(
                desktop,
                lambda: _keys_for(desktop, laptop),
                what="the desktop to hold the family's key",
            )
            await desktop.posting.post("family", "before")
            sighted(bob, desktop)
            await until(bob, lambda: _has(bob, {"before"}), what="Bob to get it")
            epoch = laptop.circles.resolve("family").epoch

            name = await laptop.devices.revoke("desktop")
            assert name == "desktop"
            assert [d["name"] for d in laptop.devices.devices()] == ["first device"]
            await eventually(
                lambda: bob.persons.person_of(desktop.me) != laptop.me,
                what="Bob to learn of the revocation",
            )
            await eventually(
                lambda: desktop.me not in bob.links.linked(), what="Bob to drop its link"
            )
            await eventually(
                lambda: bob.circles.resolve("family").epoch > epoch, what="a new epoch at Bob's"
            )
            new = laptop.circles.resolve("family")
            assert (new.circle_id, new.epoch) not in {
                (c, e) for c, e, _ in desktop.circles.keys_held()
            }
            assert (await texts(bob))["before"] == "Alice"  # within its cut-off: Alice's

            late = await desktop.posting.post("family", "after the revocation")
            opened = await bob.moments.open_many([late.envelope])
            assert opened.moments == []
            assert "does not count" in opened.rejected[0][0]
            sighted(bob, desktop)  # it tries again: no link
            await laptop.posting.post("family", "after, from the laptop")
            await until(bob, lambda: _has(bob, {"after, from the laptop"}), what="the laptop")
            assert desktop.me not in bob.links.linked()
            assert "after, from the laptop" not in await texts(desktop)


async def _keys_for(device: Node, first: Node) -> bool:
    manifest = first.circles.resolve("family")
    return (manifest.circle_id, manifest.epoch) in {
        (c, e) for c, e, _ in device.circles.keys_held()
    }


@pytest.mark.timeout(120)
async def test_the_always_on_box_holds_what_came_while_the_laptop_slept(tmp_path: Path) -> None:
    """Alice's box (a device with no browser that never sleeps) gets Bob's moment while
    her laptop is off; Bob goes offline too; the laptop wakes and gets it from the box."""
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob")]
    async with contextlib.AsyncExitStack() as stack:
        bob = await stack.enter_async_context(running(homes[1]))
        async with running(homes[0]) as laptop:
            await befriend(laptop, bob)
            await laptop.circles.create("family", ["Bob"], members_can_post=True)
            await eventually(lambda: bob.circles.all(), what="Bob to get the manifest")
            box = await stack.enter_async_context(second_device(tmp_path, laptop, "box"))
            sighted(laptop, box)
            await until(box, lambda: _keys_for(box, laptop), what="the box to hold the keys")
            await eventually(
                lambda: bob.persons.person_of(box.me) == laptop.me, what="Bob to know the box"
            )
        # The laptop sleeps. Bob posts; the box (found on the LAN) takes it.
        sighted(bob, box)
        await bob.posting.post("family", "while you slept")
        await until(box, lambda: _has(box, {"while you slept"}), what="the box to hold it")
        await bob.aclose()  # Bob goes offline
        async with running(homes[0]) as laptop:  # the laptop wakes
            sighted(laptop, box)
            await until(
                laptop, lambda: _has(laptop, {"while you slept"}), what="the laptop to get it"
            )
            assert (await texts(laptop))["while you slept"] == "Bob"


def _members(node: Node, circle: str = "family") -> set[bytes]:
    return {bytes(m.verify_key) for m in node.circles.resolve(circle).members}


@pytest.mark.timeout(120)
async def test_edits_on_two_devices_apart_converge_at_every_member(tmp_path: Path) -> None:
    """Offline from each other, Alice adds Bob to family on her laptop and Carol on her
    desktop: once they meet, both are members, at every member's daemon."""
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob", "Carol")]
    async with contextlib.AsyncExitStack() as stack:
        laptop, bob, carol = [await stack.enter_async_context(running(h)) for h in homes]
        await befriend(laptop, bob)
        await befriend(laptop, carol)
        await laptop.circles.create("family", [], members_can_post=True)
        desktop = await stack.enter_async_context(second_device(tmp_path, laptop, "desktop"))
        sighted(laptop, desktop)
        await eventually(
            lambda: desktop.circles.all() and desktop.friends.get(carol.me) is not None,
            what="the desktop to hold family and Alice's friends",
        )
        await eventually(
            lambda: desktop.circle_edits.has_log(laptop.circles.resolve("family").circle_id),
            what="the family's edit log at the desktop",
        )
        # Apart: neither dials the other.
        laptop.links.forget(desktop.me, "apart")
        desktop.links.forget(laptop.me, "apart")
        await eventually(lambda: desktop.me not in laptop.links.linked(), what="apart")
        await laptop.circles.change("family", add=["Bob"])
        await desktop.circles.change("family", add=["Carol"])
        everyone = {laptop.me, bob.me, carol.me}
        assert _members(laptop) == {laptop.me, bob.me}
        # They meet again.
        desktop.devices.want()
        laptop.devices.want()
        sighted(laptop, desktop)
        await eventually(
            lambda: _members(laptop) == everyone,
            what="the laptop to merge both edits",
        )
        for member in (bob, carol, desktop):
            await eventually(
                lambda member=member: member.circles.all() and _members(member) == everyone,
                what="every member to agree",
            )
