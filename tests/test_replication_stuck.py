"""A peer's link reader never waits for ever on its inbox (replication.py on_message)
when the worker handling that peer's messages stopped on an error, and a link we closed
hands nothing more to the daemon (net/linkset.py): before, the daemon's stop could hang
for ever while a peer flooded it (seen with ten hostile members, issue 22)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from p2pmoments.core.replication.messages import Have, encode
from p2pmoments.node import Node
from p2pmoments.replication import MAX_INBOX
from tests.multinode import befriend, eventually, make_home, running

FLOOD = 4 * MAX_INBOX  # haves sent at once: more than the inbox holds


class Held(list[Any]):
    """What the engine decided for one of the peer's messages, held back."""


def gate(node: Node) -> asyncio.Event:
    """Hold the node's replication worker at the peer's next message until the event is
    set; then it fails, as a bug in handling one message would."""
    opened = asyncio.Event()
    receive, perform = node.replication.engine.receive, node.replication._perform

    def deciding(*args: Any) -> Held:
        return Held(receive(*args))

    async def held(actions: Any, *args: Any) -> None:
        if isinstance(actions, Held):
            await opened.wait()
            raise RuntimeError("a bug in handling one message")
        await perform(actions, *args)

    node.replication.engine.receive = deciding  # type: ignore[method-assign,assignment]
    node.replication._perform = held  # type: ignore[method-assign,assignment]
    return opened


async def test_a_worker_that_failed_does_not_hold_its_peers_link(tmp_path: Path) -> None:
    """Alice floods Bob with haves; the worker handling them fails while Bob's inbox is
    full and its reader waits for room; Bob then stops, and does so at once."""
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob")]
    async with running(homes[0]) as alice, running(homes[1]) as bob:
        await befriend(alice, bob)
        await alice.circles.create("c", ["Bob"], members_can_post=False)
        circle = alice.circles.resolve("c").circle_id
        await eventually(lambda: bob.circles.all(), what="Bob to hold the circle")
        await eventually(lambda: alice.me in bob.links.linked(), what="a link")
        opened = gate(bob)
        plea = encode(Have(circle=circle, vector={}, epochs=frozenset()))
        for _ in range(FLOOD):
            assert alice.links.send(bob.me, plea)
        inbox = bob.replication._peers[alice.me]
        await eventually(lambda: len(inbox.queue) >= MAX_INBOX, what="Bob's inbox full")
        opened.set()
        async with asyncio.timeout(20):  # before, it waited for ever
            await bob.aclose()
