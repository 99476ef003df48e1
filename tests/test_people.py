"""Co-members who are not our friends are shown by name, marked as not friends, everywhere
and after a restart (issue 10, items 17 and 22): every person is {identity, name, friend}."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from p2pmoments.api import create_app
from p2pmoments.cli import _print_circle, _print_moment
from p2pmoments.node import Node
from tests.multinode import befriend, eventually, make_home, read_feed, running, until
from tests.test_api import TOKEN, spec_check
from tests.test_api_friends import call

Client = TestClient[Any, Any]


def key(node: Node) -> bytes:
    return bytes(node.identity.public.verify_key)


async def test_a_co_member_is_named_and_marked_not_a_friend_after_a_restart_too(
    tmp_path: Path, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Alice", "Bob", "Carol")]
    async with contextlib.AsyncExitStack() as stack:
        alice, bob, carol = [await stack.enter_async_context(running(h)) for h in homes]
        await befriend(alice, bob)
        await befriend(alice, carol)
        await alice.circles.create("family", ["Bob", "Carol"], members_can_post=True)
        await eventually(lambda: bob.circles.all() and carol.circles.all())
        # Bob and Carol are not friends; discovery finds Carol for Bob (a co-member).
        assert carol.listen_port is not None
        bob.links.seen(key(carol), "127.0.0.1", carol.listen_port, "mdns")
        await eventually(lambda: key(carol) in bob.links.linked(), what="Bob to link Carol")
        post = await alice.posting.post("family", "ice cream!")
        await until(carol, lambda: _has(carol, post.id), what="the post to reach Carol")
        await carol.posting.comment(_text(post.id), "yum")
        await carol.posting.react(_text(post.id), "🎉")
        await until(bob, lambda: _answered(bob, post.id), what="Carol's answers to reach Bob")

    # Bob alone, restarted: he still knows what Carol calls herself.
    async with running(homes[1]) as bob:
        app = create_app(bob, TOKEN)
        app.middlewares.insert(0, spec_check)
        client = await aiohttp_client(app)
        shown = await call(client, "GET", f"/moments/{_text(post.id)}")
        carol_text = carol.identity.public.text
        alice_text = alice.identity.public.text
        assert shown["author"] == {"identity": alice_text, "name": "Alice", "friend": True}
        assert shown["comments"][0]["author"] == {
            "identity": carol_text,
            "name": "Carol",
            "friend": False,
        }
        assert shown["reactions"] == {"🎉": ["Carol"]}
        assert shown["reactions_by"] == {
            "🎉": [{"identity": carol_text, "name": "Carol", "friend": False}]
        }
        circle = (await call(client, "GET", "/circles"))["circles"][0]
        members = {m["name"]: m["friend"] for m in circle["members"]}
        assert members == {"Alice": True, "Bob": True, "Carol": False}
        assert circle["owner"]["friend"] is True


def _text(raw: bytes) -> str:
    from p2pmoments.views import moment_text

    return moment_text(raw)


async def _has(node: Node, moment_id: bytes) -> bool:
    feed = await read_feed(node, 10)
    return any(m["id"] == _text(moment_id) for m in feed)


async def _answered(node: Node, moment_id: bytes) -> bool:
    feed = await read_feed(node, 10)
    item = next((m for m in feed if m["id"] == _text(moment_id)), None)
    return bool(item and item["comments"] and item["reactions"])


def person(name: str, friend: bool) -> dict[str, Any]:
    return {"identity": "a" * 56, "name": name, "friend": friend}


def test_the_cli_marks_who_is_not_a_friend(capsys: pytest.CaptureFixture[str]) -> None:
    _print_circle(
        {
            "name": "family",
            "mine": False,
            "owner": person("Alice", True),
            "members_can_post": True,
            "members": [person("Alice", True), person("Carol", False)],
        }
    )
    _print_moment(
        {
            "id": "b" * 56,
            "circle": {"id": "c" * 56, "name": "family"},
            "author": person("Carol", False),
            "time": 1_800_000_000,
            "expires": None,
            "retracted": False,
            "text": "hello",
            "comments": [
                {"id": "d" * 56, "author": person("Carol", False), "time": 1, "text": "x"}
            ],
            "reactions": {},
            "reactions_by": {},
            "photos": [],
            "files": [],
        }
    )
    out = capsys.readouterr().out
    assert "Alice, Carol (not a friend)" in out
    assert out.count("Carol (not a friend)") == 3
    assert "↳ Carol (not a friend): x" in out
