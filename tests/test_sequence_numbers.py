"""A sequence number is never used twice (found by the chaos soak, tests/chaos.py).

Retracting a post deletes its comments and reactions everywhere, a member's own with
them. When that comment was the member's newest moment in the circle, its next one took
the same sequence number again: a second moment at (circle, author, seq), which every
daemon that still held the first refuses as a duplicate, so it never reached them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from p2pmoments.node import Node
from p2pmoments.views import moment_text
from tests.multinode import befriend, get_moment, make_home, running, until


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Node, Node]]:
    a_home, b_home = await make_home(tmp_path, "Alice"), await make_home(tmp_path, "Bob")
    async with running(a_home) as alice, running(b_home) as bob:
        await befriend(alice, bob)
        yield alice, bob


async def test_a_comment_deleted_with_its_retracted_post_keeps_its_sequence_number(
    pair: tuple[Node, Node],
) -> None:
    alice, bob = pair
    await alice.circles.create("family", ["Bob"], members_can_post=False)
    post = moment_text((await alice.posting.post("family", "first")).id)

    async def bob_has(ref: str, retracted: bool = False) -> bool:
        try:
            return bool((await get_moment(bob, ref))["retracted"] == retracted)
        except Exception:
            return False

    await until(bob, lambda: bob_has(post), what="the post at Bob's")
    first = await bob.posting.comment(post, "lovely")  # Bob's newest moment in the circle
    await alice.posting.retract(post)
    await until(bob, lambda: bob_has(post, retracted=True), what="the retraction at Bob's")

    later = moment_text((await alice.posting.post("family", "second")).id)
    await until(bob, lambda: bob_has(later), what="the second post at Bob's")
    second = await bob.posting.comment(later, "again")
    assert second.seq > first.seq
