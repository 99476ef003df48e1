"""Two daemons in one process, over loopback: moments that never reached a member while
its link stayed up are sent again, and it never holds one past a hole (issue 23; spec/sync.md
section 4, point 11). tests/test_lost_pushes.py checks the decisions alone."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from p2pmoments.core.replication import vectors
from p2pmoments.core.replication.messages import T_MOMENTS
from p2pmoments.node import Node
from tests.multinode import eventually
from tests.test_replication import family_of_two, wait_texts

Handler = Callable[[bytes, dict[int, Any]], Awaitable[None]]


def lose_moments(node: Node) -> list[int]:
    """Make `node` drop moments messages while its links stay up, as many as are put in
    the returned list (each is taken out as one is dropped)."""
    original: Handler = node.replication.on_message
    to_lose: list[int] = []

    async def losing(key: bytes, body: dict[int, Any]) -> None:
        if body.get(0) == T_MOMENTS and to_lose:
            to_lose.pop()
            return  # never reached it
        await original(key, body)

    node.replication.on_message = losing  # type: ignore[method-assign, assignment]
    return to_lose


async def test_moments_lost_on_a_link_that_stays_up_arrive_all_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with family_of_two(tmp_path) as (alice, bob):
        to_lose = lose_moments(bob)
        await alice.posting.post("family", "one")
        await wait_texts(bob, ["one"])
        to_lose.append(1)
        await alice.posting.post("family", "two")
        await eventually(lambda: not to_lose, what="the push of 'two' to be lost")
        await alice.posting.post("family", "three")
        # Before: Bob held one and three, and never two (his vector said 3).
        await wait_texts(bob, ["one", "two", "three"])
        assert bob.replication.statistics()["ranges_refused"] == 1  # three, at first
        assert alice.replication.statistics()["ranges_sent_again"] == 1  # two and three
        # The last push lost, and nothing after it: Alice's ticks find it unconfirmed.
        monkeypatch.setattr(vectors, "ACK_WAIT", 1.0)  # instead of 30 s
        to_lose.append(1)
        await alice.posting.post("family", "four")
        await eventually(lambda: not to_lose, what="the push of 'four' to be lost")
        await wait_texts(bob, ["one", "two", "three", "four"])
        assert alice.replication.statistics()["ranges_sent_again"] >= 2
