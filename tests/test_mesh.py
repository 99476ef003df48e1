"""A circle of 20 as a partial mesh (spec/sync.md section 7), daemons in one process: each
member links with a few others, a moment reaches all about once each, and members whose
links all go are routed around."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from p2pmoments.core.beacon import beacon, window_of
from p2pmoments.core.mesh import RINGS, neighbours
from p2pmoments.core.replication.messages import T_MOMENTS
from p2pmoments.net.discovery import Sighting
from p2pmoments.node import Node
from tests.multinode import (
    befriend,
    eventually,
    make_home,
    random_png,
    read_feed,
    running,
    until,
)

MEMBERS = 20


async def holds(node: Node, text: str) -> bool:
    """The moment is here, and its photos whole."""
    return any(
        m["text"] == text and all(p["chunks_held"] == p["chunks"] for p in m["photos"])
        for m in await read_feed(node, 10)
    )


async def all_hold(nodes: list[Node], text: str, timeout: float = 30) -> None:
    """Every node holds the moment and its photos, within `timeout` seconds in all."""
    deadline = time.monotonic() + timeout
    for node in nodes:
        left = max(0.1, deadline - time.monotonic())
        await until(
            node, lambda n=node: holds(n, text), timeout=left, what=f"{text!r} at {node.name}"
        )


def on_one_lan(nodes: list[Node]) -> None:
    """Each daemon sees every other's beacon, as mDNS would show it (the tests run
    without mDNS): co-members who are not friends can find each other."""
    window = window_of(time.time())
    for node in nodes:
        for other in nodes:
            if other is not node and other.listen_port is not None:
                node.links.sighted(
                    Sighting(
                        beacon=beacon(other.me, window), host="127.0.0.1", port=other.listen_port
                    )
                )


def settled(nodes: list[Node]) -> bool:
    """Every member linked with each co-member its rings name (and they with it)."""
    return all(set(n.mesh.chosen()) <= set(n.links.linked()) for n in nodes)


async def test_a_circle_of_20_links_each_member_with_a_few_and_routes_around_those_gone(
    tmp_path: Path,
) -> None:
    homes = [await make_home(tmp_path, f"M{i:02}") for i in range(MEMBERS)]
    async with contextlib.AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(running(h)) for h in homes]
        owner, members = nodes[0], nodes[1:]
        on_one_lan(nodes)
        for member in members:
            await befriend(owner, member)
        await owner.circles.create("club", [m.name for m in members], members_can_post=True)
        await eventually(
            lambda: all(m.circles.all() for m in members), timeout=30, what="the manifest"
        )
        await eventually(lambda: settled(nodes), timeout=30, what="the mesh links")
        # Each member holds its friend (the owner) and at most two ring neighbours a ring,
        # not the 19 links of a full mesh.
        for member in members:
            assert len(member.links.linked()) <= 1 + 2 * RINGS, member.name

        received: list[tuple[bytes, bytes]] = []  # (receiver, sender) of each moments message

        def count(node: Node) -> None:
            def seen(key: bytes, body: dict[int, object]) -> None:
                if body.get(0) == T_MOMENTS:
                    received.append((node.me, key))

            node.on_message = seen

        for node in nodes:
            count(node)
        for poster, text in ((members[0], "one copy each"), (owner, "from the owner")):
            received.clear()
            # A photo: its chunks travel from neighbour to neighbour behind the moment.
            await poster.posting.post("club", text, photos=[random_png(300)])
            await all_hold(nodes, text)
            others = [n for n in nodes if n is not poster]
            copies = {n.name: sum(1 for r, _ in received if r == n.me) for n in others}
            assert sum(copies.values()) <= 1.2 * len(others), copies
            # Its author sends it to its ring neighbours only, even the owner, whose
            # friends are all the members: the others have it from their neighbours.
            sent_to = {r for r, s in received if s == poster.me}
            assert len(sent_to) <= 2 * RINGS, (poster.name, len(sent_to))

        # The owner (everyone's friend) and every ring neighbour of one member go: it
        # links past them, and a post still reaches everyone left.
        lonely = members[5]
        keys = [n.me for n in nodes]
        gone = {owner.me, *neighbours(keys, lonely.me)}
        for node in nodes:
            if node.me in gone:
                await node.aclose()
        left = [n for n in nodes if n.me not in gone]
        writer = next(n for n in left if n is not lonely)
        await writer.posting.post("club", "still here")
        await all_hold(left, "still here", timeout=60)
        assert set(lonely.links.linked()) - gone  # it found new links
