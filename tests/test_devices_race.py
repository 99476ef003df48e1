"""Two devices revoking each other at once, in running daemons (spec/devices.md section
3.3): Alice's desktop (linked before her box, so more senior) revokes the box while the
box revokes the desktop, neither having seen the other's entry. Every daemon ends in the
state the spec defines: the senior's revocation stands, the junior's is void; the box is
gone everywhere, the desktop stays Alice's and keeps posting as her."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from p2pmoments.core.devices import EntryKind, decode_entry
from p2pmoments.node import Node
from tests.multinode import befriend, eventually, make_home, running, until
from tests.test_devices import _has, _keys_for, second_device, sighted


def _current(node: Node, person: bytes) -> set[str]:
    roster = node.persons.roster(person)
    return set() if roster is None else {name for _, _, name in roster.snapshot().current}


@pytest.mark.timeout(120)
async def test_racing_revocations_end_with_the_senior_device_standing(tmp_path: Path) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob")]
    async with running(homes[0]) as laptop, running(homes[1]) as bob:
        await befriend(laptop, bob)
        await laptop.circles.create("family", ["Bob"], members_can_post=True)
        await eventually(lambda: bob.circles.all(), what="Bob to get the manifest")
        async with (
            second_device(tmp_path, laptop, "desktop") as desktop,
            second_device(tmp_path, laptop, "box") as box,
        ):
            whole = [decode_entry(raw) for raw in laptop.persons.entries_of(laptop.me)]
            for device in (desktop, box):  # what linking hands a new device
                await device.persons.keep(laptop.me, whole)
            everyone = {"first device", "desktop", "box"}
            assert _current(desktop, laptop.me) == _current(box, laptop.me) == everyone
            # Apart (neither linked to anyone), each revokes the other.
            await asyncio.gather(desktop.devices.revoke("box"), box.devices.revoke("desktop"))
            # The box reaches the laptop first: the desktop is revoked there, for now.
            sighted(box, laptop)
            await eventually(
                lambda: _current(laptop, laptop.me) == {"first device", "box"},
                what="the box's revocation of the desktop at the laptop",
            )
            # Then the desktop: revoked, but senior to its revoker, its link is heard.
            sighted(desktop, laptop)
            for node, where in ((laptop, "the laptop"), (desktop, "the desktop"), (bob, "Bob's")):
                await eventually(
                    lambda node=node: _current(node, laptop.me) == {"first device", "desktop"},  # type: ignore[misc]
                    timeout=30,
                    what=f"the senior desktop's revocation to stand at {where}",
                )
            held = laptop.persons.roster(laptop.me)
            assert held is not None
            kinds = [decode_entry(raw).kind for raw in held.missing_for(())]
            assert kinds.count(EntryKind.REVOKE) == 2  # both are held, one is void
            await eventually(lambda: box.me not in laptop.links.linked(), what="the box let go")
            assert laptop.persons.person_of(box.me) != laptop.me
            assert laptop.persons.person_of(desktop.me) == laptop.me
            await until(
                desktop, lambda: _keys_for(desktop, laptop), what="the desktop to read the family"
            )
            sighted(bob, desktop)
            await desktop.posting.post("family", "the desktop is still Alice")
            await until(bob, lambda: _has(bob, {"the desktop is still Alice"}), what="at Bob's")
