"""Whom we dial among co-members: the partial mesh (core.mesh, spec/sync.md section 7).

Friends are dialled as ever; of the other members of our circles we dial only our
neighbours on the circle's rings (at most six a circle), leaving off the rings those
whose dials keep failing, so that our links route around them; a member back on line
links with us again (its own rings name us) and is on our rings again. A co-member link
we dialled and no longer want is let go; one a co-member dialled is theirs to end.
New moments are pushed and announced over a circle's mesh links only (`eager`: our ring
neighbours and our own devices), not over every friend's link: an owner friends with
all 149 members would otherwise send each moment 149 times. With `network.mesh =
"full"` every co-member is dialled and every link is a mesh link, as before (a
benchmark's baseline, and a way back if the mesh ever misbehaves).

The same loop also tells replication the time, so that what it asked of a peer that
does not answer is asked of another (core.replication.vectors, ASK_PATIENCE).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from p2pmoments.circles import Circles
from p2pmoments.config import Config
from p2pmoments.core.mesh import neighbours
from p2pmoments.friends import Friends
from p2pmoments.net.links import Links
from p2pmoments.ourdevices import OurDevices
from p2pmoments.persons import Persons
from p2pmoments.reach import Reach
from p2pmoments.replication import Replication
from p2pmoments.store import FriendState

__all__ = ["DOWN_AFTER", "DOWN_FOR", "TICK", "UNFOUND_AFTER", "Mesh"]

log = logging.getLogger(__name__)

TICK = 1.0  # seconds between looks at who is down and at replication's unanswered asks
DOWN_AFTER = 2  # dials in a row that failed: the member is down, and left off our rings
DOWN_FOR = 300.0  # seconds a member stays off our rings unless it links with us first
UNFOUND_AFTER = 5.0  # seconds a member may stay where we know no way to dial it (no mDNS
# record, no onion address): then it is down too


class Parts(Protocol):
    """What of the node this needs (the node itself, without importing it)."""

    person: bytes
    config: Config
    circles: Circles
    friends: Friends
    persons: Persons
    links: Links
    devices: OurDevices
    reach: Reach
    replication: Replication


class Mesh:
    """Chooses the co-members we dial, and keeps the choice up to date."""

    def __init__(self, node: Parts) -> None:
        self._node = node
        self._down: dict[bytes, float] = {}  # co-member -> when we found it down
        self._rings: dict[bytes, frozenset[bytes]] = {}  # circle -> our ring neighbours
        self._unfound: dict[bytes, float] = {}  # chosen member -> since when we cannot dial it
        self._chosen: dict[bytes, bytes] | None = None  # until circles or liveness change
        self.full = node.config.mesh == "full"

    def eager(self, peer: bytes, circle: bytes) -> bool:
        """Whether a linked peer is one of `circle`'s mesh links for us (a ring neighbour,
        or a device of one): new moments go over those (spec/sync.md section 7)."""
        if self.full:
            return True
        person = self._node.persons.person_of(peer)
        # Our own devices get everything at once.
        return person == self._node.person or person in self._neighbours(circle)

    def chosen(self) -> dict[bytes, bytes]:
        """The co-members to dial (identity -> link key): our neighbours on the rings of
        every circle we are in (every co-member with the full mesh)."""
        if self._chosen is not None:
            return self._chosen
        node = self._node
        co_members = node.circles.co_members()
        if self.full:
            return co_members
        wanted: set[bytes] = set()
        for manifest in node.circles.all():
            if node.circles.member_of(manifest.circle_id):
                wanted |= self._neighbours(manifest.circle_id)
        self._chosen = {key: co_members[key] for key in wanted if key in co_members}
        return self._chosen

    def _neighbours(self, circle: bytes) -> frozenset[bytes]:
        rings = self._rings.get(circle)
        if rings is None:
            manifest = self._node.circles.current(circle)
            members = [] if manifest is None else [bytes(m.verify_key) for m in manifest.members]
            rings = neighbours(members, self._node.person, set(self._down))
            self._rings[circle] = rings
        return rings

    def update(self) -> None:
        """Dial the co-members chosen; stop dialling (and let go of the links we dialled
        to) those no longer chosen and not friends. Former co-members stop being
        dialled."""
        node = self._node
        self._rings.clear()
        self._chosen = None
        links = node.links
        co_members = node.circles.co_members()
        chosen = self.chosen()
        for key in links.targets() - set(chosen) - node.devices.targets:
            if node.friends.get(key) is None and not links.pairing_target(key):
                if key in co_members:
                    links.forget(key)
                    links.let_go(key, "not one of our links in the circle's mesh")
                else:
                    links.forget(key, "no longer in a circle together")
        for key, link_key in chosen.items():
            friend = node.friends.get(key)
            if key not in links.targets() and not (
                friend is not None and friend.state is FriendState.BLOCKED
            ):
                links.want(key, link_key, onion=node.reach.onion_of(key))
        node.devices.want()
        node.reach.refresh_clients()

    def linked(self, key: bytes) -> None:
        """A link is up: if it is a member we thought down, it is on our rings again."""
        if self._down.pop(key, None) is not None:
            self.update()

    def statistics(self) -> dict[str, int]:
        """Co-members we found down and route around."""
        return {"mesh_down": len(self._down)}

    async def run(self) -> None:
        """Until cancelled: find chosen members down (their dials keep failing) and route
        around them; give them another chance after DOWN_FOR; tell replication the time."""
        node = self._node
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            await node.replication.tick(now)
            if self.full:
                continue
            linked = set(node.links.linked())
            changed = False
            chosen = self.chosen()
            for key in chosen:
                if key in linked or node.links.dialable(key):
                    self._unfound.pop(key, None)
                else:
                    self._unfound.setdefault(key, now)
                unfound = now - self._unfound.get(key, now) >= UNFOUND_AFTER
                if key not in linked and (node.links.failures(key) >= DOWN_AFTER or unfound):
                    log.info("a co-member is unreachable: linking past it")
                    self._down[key] = now
                    self._unfound.pop(key, None)
                    changed = True
            for key in set(self._unfound) - set(chosen):
                del self._unfound[key]
            for key, since in list(self._down.items()):
                if now - since >= DOWN_FOR:
                    del self._down[key]
                    changed = True
            if changed:
                self.update()
