"""Pairing, friends, peers and events through the API (every answer checked against the spec)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from p2pmoments.api import API_PREFIX, create_app
from p2pmoments.core.pairing import decode_code
from p2pmoments.node import Node
from tests.multinode import eventually
from tests.test_api import AUTH, TOKEN, spec_check

Client = TestClient[Any, Any]


@pytest.fixture
async def clients(
    pair_of_nodes: tuple[Node, Node], aiohttp_client: Callable[..., Awaitable[Client]]
) -> tuple[Client, Client]:
    out = []
    for node in pair_of_nodes:
        app = create_app(node, TOKEN)
        app.middlewares.insert(0, spec_check)
        out.append(await aiohttp_client(app))
    return out[0], out[1]


async def call(client: Client, method: str, path: str, body: Any = None, status: int = 200) -> Any:
    response = await client.request(method, API_PREFIX + path, json=body, headers=AUTH)
    assert response.status == status, await response.text()
    return await response.json()


async def test_pair_through_the_api_and_see_each_other(
    clients: tuple[Client, Client], pair_of_nodes: tuple[Node, Node]
) -> None:
    alice, bob = clients
    code = await call(alice, "GET", "/pairing/link")
    assert code["qr_version"] <= 10
    assert decode_code(code["link"]).name == "Alice"
    again = await call(alice, "GET", "/pairing/link")
    assert again["link"] != code["link"]  # each showing is a code of its own

    answer = await call(bob, "POST", "/friends", {"link": code["link"], "wait": 10})
    assert answer["pairing"]["state"] == "confirmed"
    assert answer["pairing"]["name"] == "Alice"

    await eventually(lambda: pair_of_nodes[0].friends.all(), what="Alice's side to finish")
    friends = (await call(alice, "GET", "/friends"))["friends"]
    assert [f["name"] for f in friends] == ["Bob"]
    new_code = await call(alice, "GET", "/pairing/link")
    assert new_code["link"] != code["link"]  # a used code is never offered again

    events = await call(alice, "GET", "/events?after=0")
    kinds = [e["kind"] for e in events["events"]]
    assert "friend.added" in kinds
    assert events["last_id"] == events["events"][-1]["id"]

    peers = await call(bob, "GET", "/peers")
    assert [p["name"] for p in peers["peers"]] == ["Alice"]
    assert peers["peers"][0]["bytes_in"] > 0


async def test_friend_management(clients: tuple[Client, Client]) -> None:
    alice, bob = clients
    code = await call(alice, "GET", "/pairing/link")
    await call(bob, "POST", "/friends", {"link": code["link"], "wait": 10})
    friend = await call(bob, "GET", "/friends/alice")
    renamed = await call(bob, "PATCH", f"/friends/{friend['identity'][:6]}", {"name": "Mum"})
    assert renamed["name"] == "Mum"
    assert renamed["their_name"] == "Alice"
    blocked = await call(bob, "POST", "/friends/mum/block")
    assert blocked["state"] == "blocked"
    assert (await call(bob, "POST", "/friends/mum/unblock"))["state"] == "friend"
    removed = await call(bob, "DELETE", "/friends/Mum")
    assert removed["removed"]["identity"] == friend["identity"]
    assert (await call(bob, "GET", "/friends"))["friends"] == []
    error = await call(bob, "GET", "/friends/mum", status=404)
    assert error["error"]["code"] == "not_found"


async def test_qr_images_have_the_right_type(clients: tuple[Client, Client]) -> None:
    alice, _ = clients
    svg = await alice.get(f"{API_PREFIX}/pairing/qr.svg", headers=AUTH)
    assert svg.content_type == "image/svg+xml"
    assert b"<svg" in await svg.read()
    png = await alice.get(f"{API_PREFIX}/pairing/qr.png", headers=AUTH)
    assert png.content_type == "image/png"
    assert (await png.read()).startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"link": "P2PM:1/NOPE"}, "invalid_link"),
        ({"link": "http://x"}, "invalid_link"),
        ({}, "bad_request"),
        ({"link": "x", "wait": 999}, "bad_request"),
        ({"link": "x", "extra": 1}, "bad_request"),
    ],
)
async def test_bad_pairing_requests(clients: tuple[Client, Client], body: Any, code: str) -> None:
    _, bob = clients
    error = await call(bob, "POST", "/friends", body, status=400)
    assert error["error"]["code"] == code
    assert (await call(bob, "GET", "/friends"))["pairings"] == []


async def test_scanning_your_own_code(clients: tuple[Client, Client]) -> None:
    alice, _ = clients
    code = await call(alice, "GET", "/pairing/link")
    error = await call(alice, "POST", "/friends", {"link": code["link"]}, status=400)
    assert "your own pairing code" in error["error"]["message"]


async def test_events_long_poll_returns_a_new_event(
    clients: tuple[Client, Client], pair_of_nodes: tuple[Node, Node]
) -> None:
    alice, _ = clients
    node = pair_of_nodes[0]
    start = (await call(alice, "GET", "/events"))["last_id"]
    import asyncio

    poll = asyncio.ensure_future(call(alice, "GET", f"/events?after={start}&timeout=30"))
    node.events.publish("test.poke", n=1)
    answer = await asyncio.wait_for(poll, 10)
    assert [e["kind"] for e in answer["events"]] == ["test.poke"]


async def test_events_after_a_restart_report_a_gap(clients: tuple[Client, Client]) -> None:
    alice, _ = clients
    answer = await call(alice, "GET", "/events?after=999999")
    assert answer["gap"] is True
    error = await call(alice, "GET", "/events?timeout=nope", status=400)
    assert error["error"]["code"] == "bad_request"
