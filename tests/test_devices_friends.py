"""Friends removed or blocked on one of a person's devices are removed or blocked on all
of them (spec/devices.md section 9); pairing again after a removal brings the friend
back everywhere. In one process: Alice's laptop (her first device) and desktop."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pmoments.core.errors import DecodeError
from p2pmoments.core.self_sync import (
    SharedFriend,
    decode_friends_message,
    decode_removals,
    encode_friends_message,
)
from p2pmoments.node import Node
from p2pmoments.store import FriendState
from tests.multinode import befriend, eventually, make_home, running
from tests.test_devices import second_device, sighted


def _state(node: Node, other: Node) -> FriendState | None:
    friend = node.friends.get(other.me)
    return None if friend is None else friend.state


@pytest.mark.timeout(120)
async def test_removing_and_blocking_a_friend_reaches_every_device(tmp_path: Path) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob", "Carol")]
    async with running(homes[0]) as laptop, running(homes[1]) as bob, running(homes[2]) as carol:
        await befriend(laptop, bob)
        await befriend(laptop, carol)
        async with second_device(tmp_path, laptop, "desktop") as desktop:
            sighted(laptop, desktop)
            for other in (bob, carol):
                await eventually(
                    lambda other=other: _state(desktop, other) is FriendState.FRIEND,  # type: ignore[misc]
                    what="the desktop to have Alice's friends",
                )
            stale = laptop.friends.shared()  # what the laptop tells before it hears
            await desktop.friends.remove("Carol")
            await desktop.friends.set_blocked("Bob", True)
            await eventually(lambda: _state(laptop, carol) is None, what="Carol removed there")
            await eventually(
                lambda: _state(laptop, bob) is FriendState.BLOCKED, what="Bob blocked there"
            )
            assert _state(desktop, carol) is None  # the laptop's friends did not bring her back
            # The laptop's list from before it heard, arriving late, does not either.
            await desktop.friends.from_our_device("Alice", stale, {})
            assert _state(desktop, carol) is None
            # Paired again on the laptop, after the removal: a friend again everywhere.
            await befriend(laptop, carol)
            await eventually(
                lambda: _state(desktop, carol) is FriendState.FRIEND, what="Carol back there"
            )
            assert _state(laptop, carol) is FriendState.FRIEND


def test_friends_message_carries_removals_and_old_messages_have_none() -> None:
    friend = SharedFriend(
        identity=b"i" * 32,
        link_key=b"l" * 32,
        link_signature=b"s" * 64,
        name="Bob",
        their_name="Bob",
        blocked=False,
        since=5,
    )
    body = encode_friends_message("Alice", [friend], {b"c" * 32: 7})
    assert decode_friends_message(body) == ("Alice", [friend])
    assert decode_removals(body) == {b"c" * 32: 7}
    old = encode_friends_message("Alice", [friend])
    assert 3 not in old
    assert decode_removals(old) == {}


@given(
    st.one_of(
        st.lists(st.lists(st.one_of(st.binary(max_size=33), st.integers(-1, 3)), max_size=3)),
        st.integers(),
        st.text(max_size=3),
    )
)
def test_any_removals_field_decodes_or_raises_a_decode_error(value: object) -> None:
    body = {0: 28, 1: "Alice", 2: [], 3: value}
    try:
        decode_friends_message(body)
        decode_removals(body)
    except DecodeError:
        pass
