"""Unread counts kept by the daemon (issue 20, item 4): a friend's new posts raise a
circle's count, our own never do, a read mark moves only forward and is the same for
every page that asks; an upgraded store starts with everything read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from p2pmoments.api import API_PREFIX, create_app
from p2pmoments.node import Node
from p2pmoments.views import circle_text, moment_text
from tests.multinode import befriend, eventually, until
from tests.test_api import AUTH, TOKEN, error_of, spec_check

Client = TestClient[Any, Any]


@pytest.fixture
async def bob_api(
    pair_of_nodes: tuple[Node, Node], aiohttp_client: Callable[..., Awaitable[Client]]
) -> Client:
    """Bob's API, checked against spec/openapi.yaml."""
    app = create_app(pair_of_nodes[1], TOKEN)
    app.middlewares.insert(0, spec_check)
    return await aiohttp_client(app)


async def unread(api: Client) -> dict[str, int]:
    response = await api.get(f"{API_PREFIX}/unread", headers=AUTH)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["total"] == sum(c["unread"] for c in body["circles"])
    return {c["id"]: c["unread"] for c in body["circles"]}


async def read(api: Client, circle: str, body: dict[str, Any]) -> Any:
    return await api.post(f"{API_PREFIX}/circles/{circle}/read", json=body, headers=AUTH)


async def test_a_friends_posts_are_unread_until_read_and_our_own_never(
    pair_of_nodes: tuple[Node, Node], bob_api: Client
) -> None:
    alice, bob = pair_of_nodes
    await befriend(alice, bob)
    family = await alice.circles.create("family", [bob.identity.public.text], True)
    circle = circle_text(family.circle_id)
    await eventually(lambda: bob.circles.current(family.circle_id), what="the circle at Bob's")
    assert await unread(bob_api) == {circle: 0}

    sent = [await alice.posting.post("family", f"n{i}") for i in range(3)]
    await alice.posting.comment(moment_text(sent[0].id), "a comment is not a post")

    async def three() -> bool:
        return (await unread(bob_api))[circle] == 3

    await until(bob, three, what="Alice's three posts to be unread at Bob's")
    await bob.posting.post("family", "mine: never unread")
    assert await unread(bob_api) == {circle: 3}

    # Read up to the second: one left; the mark never goes back.
    response = await read(bob_api, circle, {"moment": moment_text(sent[1].id)})
    assert response.status == 200, await response.text()
    assert {c["id"]: c["unread"] for c in (await response.json())["circles"]} == {circle: 1}
    last = bob.events.last_id
    assert (await read(bob_api, circle, {"moment": moment_text(sent[0].id)})).status == 200
    assert await unread(bob_api) == {circle: 1}
    # Nothing moved: no page is told (other events, a receipt from Alice, may come).
    assert [e for e in bob.events.after(last)[0] if e.kind == "circle.read"] == []
    # Up to the newest: none, and every open page is told.
    assert (await read(bob_api, "family", {})).status == 200
    assert await unread(bob_api) == {circle: 0}
    told = [e for e in bob.events.after(last)[0] if e.kind == "circle.read"]
    assert [e.data for e in told] == [{"id": circle}]


async def test_marks_refuse_what_is_not_a_post_of_that_circle(
    pair_of_nodes: tuple[Node, Node], bob_api: Client
) -> None:
    _, bob = pair_of_nodes
    await bob.circles.create("notes", [], False)
    await bob.circles.create("work", [], False)
    post = await bob.posting.post("notes", "hello")
    comment = await bob.posting.comment(moment_text(post.id), "hi")
    for circle, body, status in [
        ("work", {"moment": moment_text(post.id)}, 400),
        ("notes", {"moment": moment_text(comment.id)}, 400),
        ("nowhere", {}, 404),
        ("notes", {"moment": "a" * 56}, 404),
        ("notes", {"moment": 5}, 400),
        ("notes", {"until": "now"}, 400),
    ]:
        response = await read(bob_api, circle, body)
        assert response.status == status, (circle, body)
        await error_of(response)
