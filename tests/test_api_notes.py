"""Notes through the API (spec/openapi.yaml, spec/notes.md), every answer checked
against the spec."""

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
    client = await aiohttp_client(app)
    await call(
        client,
        "POST",
        "/circles",
        {"name": "work", "members": ["Bob"], "members_can_post": True},
        status=201,
    )
    return client


async def test_write_a_note_from_an_old_version_history_and_restore(
    alice: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("p2pmoments.core.notes.HISTORY_GAP", -1)  # each edit a version
    note = await call(
        alice, "POST", "/circles/work/notes", {"title": "Plan", "text": "a\nb\n"}, status=201
    )
    assert (note["title"], note["text"]) == ("Plan", "a\nb\n")
    listed = await call(alice, "GET", "/circles/work/notes")
    assert [n["id"] for n in listed["notes"]] == [note["id"]]
    assert "text" not in listed["notes"][0]
    old = note["version"]
    # An edit now, then one written from the version before it: both stay.
    now = await call(
        alice, "POST", f"/notes/{note['id']}/edits", {"base": old, "text": "a\nb\nc\n"}
    )
    splice = {"at": 0, "delete": 1, "insert": "A😀"}
    both = await call(
        alice, "POST", f"/notes/{note['id'][:10]}/edits", {"base": old, "splice": splice}
    )
    assert both["text"] == "A😀\nb\nc\n"
    assert both["version"] != now["version"]
    assert [p["name"] for p in both["editing"]] == ["Alice"]
    stale = await call(
        alice, "POST", f"/notes/{note['id']}/edits", {"base": "nope", "text": "x"}, status=409
    )
    assert stale["error"]["code"] == "stale"
    history = (await call(alice, "GET", f"/notes/{note['id']}/history"))["versions"]
    assert {v["author"]["name"] for v in history} == {"Alice"}
    assert history[-1]["chars"] == len("A😀\nb\nc\n")
    await call(alice, "POST", f"/notes/{note['id']}/edits", {"text": "gone"})
    restored = await call(
        alice, "POST", f"/notes/{note['id']}/restore", {"version": history[-1]["version"]}
    )
    assert restored["text"] == "A😀\nb\nc\n"


async def test_a_note_past_its_bounds_is_refused_clearly(alice: TestClient[Any, Any]) -> None:
    long_title = await call(alice, "POST", "/circles/work/notes", {"title": "x" * 201}, status=400)
    assert "200 bytes" in long_title["error"]["message"]
    big = await call(
        alice,
        "POST",
        "/circles/work/notes",
        {"title": "t", "text": "x" * (1 << 20 | 1)},
        status=400,
    )
    assert "1048576 bytes" in big["error"]["message"]
    note = await call(alice, "POST", "/circles/work/notes", {"title": "t"}, status=201)
    outside = {"base": note["version"], "splice": {"at": 5, "delete": 0, "insert": "x"}}
    await call(alice, "POST", f"/notes/{note['id']}/edits", outside, status=400)
    await call(alice, "GET", "/notes/zzzzzzzzzz", status=404)


async def test_hostile_edit_bodies_get_clean_errors(alice: TestClient[Any, Any]) -> None:
    note = await call(alice, "POST", "/circles/work/notes", {"title": "t"}, status=201)
    for body in (
        {"base": "", "splice": [None, None], "text": "", "title": ""},
        {"base": "", "splice": {"at": -1}},
        {"base": note["version"], "splice": {"at": 0, "delete": -1}},
        {"title": ""},
        {"title": "a\nb"},
    ):
        for ref in ("0", note["id"]):
            answer = await alice.post(
                f"/api/v1/notes/{ref}/edits",
                json=body,
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert 400 <= answer.status < 500, (body, ref, await answer.text())


async def test_a_circle_holds_a_bounded_number_of_notes(
    alice: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("p2pmoments.core.notes.MAX_NOTES", 2)
    for title in ("one", "two"):
        await call(alice, "POST", "/circles/work/notes", {"title": title}, status=201)
    full = await call(alice, "POST", "/circles/work/notes", {"title": "three"}, status=400)
    assert "at most 2 notes" in full["error"]["message"]
