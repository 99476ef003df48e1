"""Circles and moments through the API, every answer checked against the spec."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from p2pmoments.api import create_app
from p2pmoments.node import Node
from tests.multinode import eventually
from tests.test_api import TOKEN, spec_check
from tests.test_api_friends import Client, call


@pytest.fixture
async def alice(
    pair_of_nodes: tuple[Node, Node], aiohttp_client: Callable[..., Awaitable[Client]]
) -> Client:
    node, bob = pair_of_nodes
    link, _ = await node.pairings.new_code()
    await bob.pairings.wait((await bob.pairings.pair(link)).id, timeout=10)
    await eventually(lambda: node.friends.all(), what="Alice to know Bob")
    app = create_app(node, TOKEN)
    app.middlewares.insert(0, spec_check)
    return await aiohttp_client(app)


async def test_circle_post_comment_react_feed_retract(alice: TestClient[Any, Any]) -> None:
    circle = await call(
        alice,
        "POST",
        "/circles",
        {"name": "family", "members": ["Bob"], "members_can_post": True},
        status=201,
    )
    assert sorted(m["name"] for m in circle["members"]) == ["Alice", "Bob"]
    assert circle["mine"] is True
    moment = await call(
        alice,
        "POST",
        "/moments",
        {"circle": "family", "text": "ice cream!", "expires_in": 3600},
        status=201,
    )
    assert moment["text"] == "ice cream!"
    assert moment["expires"] is not None
    short = moment["id"][:10]
    with_comment = await call(
        alice, "POST", f"/moments/{short}/comments", {"text": "yum"}, status=201
    )
    assert [c["text"] for c in with_comment["comments"]] == ["yum"]
    with_reaction = await call(
        alice, "POST", f"/moments/{short}/reactions", {"emoji": "🎉"}, status=201
    )
    assert with_reaction["reactions"] == {"🎉": ["Alice"]}
    feed = await call(alice, "GET", "/moments?circle=family&limit=10")
    assert [m["id"] for m in feed["moments"]] == [moment["id"]]
    assert feed["next_before"] is None
    assert (await call(alice, "GET", "/status"))["moments"] == 1
    retracted = await call(alice, "DELETE", f"/moments/{short}")
    assert retracted["retracted"] == moment["id"]
    after = await call(alice, "GET", f"/moments/{moment['id']}")
    assert after["retracted"] is True
    assert after["text"] == ""


async def test_circle_changes_and_deletion(alice: TestClient[Any, Any]) -> None:
    await call(alice, "POST", "/circles", {"name": "work", "members": ["Bob"]}, status=201)
    changed = await call(
        alice,
        "PATCH",
        "/circles/work",
        {"remove": ["Bob"], "name": "clients", "members_can_post": True},
    )
    assert changed["epoch"] == 1
    assert changed["name"] == "clients"
    assert len(changed["members"]) == 1
    listed = await call(alice, "GET", "/circles")
    assert [c["name"] for c in listed["circles"]] == ["clients"]
    deleted = await call(alice, "DELETE", "/circles/clients")
    assert deleted["deleted"]["name"] == "clients"
    assert (await call(alice, "GET", "/circles"))["circles"] == []


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/circles", {"members": []}, 400, "bad_request"),
        ("POST", "/circles", {"name": "x", "members": ["Nobody"]}, 404, "not_found"),
        ("POST", "/circles", {"name": ""}, 400, "invalid"),
        ("POST", "/moments", {"circle": "none", "text": "x"}, 404, "not_found"),
        ("POST", "/moments", {"circle": "none"}, 400, "bad_request"),
        ("GET", "/moments/zzzzzzzz", None, 404, "not_found"),
        ("GET", "/moments/abc", None, 404, "not_found"),
        ("PATCH", "/circles/none", {"name": "y"}, 404, "not_found"),
        ("GET", "/moments?before=yesterday", None, 400, "bad_request"),
    ],
)
async def test_bad_requests_say_what_is_wrong(
    alice: TestClient[Any, Any], method: str, path: str, body: Any, status: int, code: str
) -> None:
    error = await call(alice, method, path, body, status=status)
    assert error["error"]["code"] == code
