"""Files with versions through the API (spec/openapi.yaml /moments/{id}/versions), every
answer checked against the spec; bad input answers a clean 4xx."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import FormData, web

from p2pmoments.api import API_PREFIX, create_app
from p2pmoments.node import Node
from tests.test_api import AUTH, TOKEN, spec_check
from tests.test_api_friends import Client, call


@web.middleware
async def checked(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """spec_check, but for multipart uploads (their streamed body cannot be read back to
    validate the request; what they answer is the listing GET validates)."""
    if request.content_type == "multipart/form-data":
        return await handler(request)
    return await spec_check(request, handler)


@pytest.fixture
async def alice(node: Node, aiohttp_client: Callable[..., Awaitable[Client]]) -> Client:
    app = create_app(node, TOKEN)
    app.middlewares.insert(0, checked)
    client = await aiohttp_client(app)
    await call(client, "POST", "/circles", {"name": "work", "members": []}, status=201)
    return client


def form(data: bytes | None, **parts: str | list[str]) -> FormData:
    out = FormData(default_to_multipart=True)
    for name, value in parts.items():
        for one in value if isinstance(value, list) else [value]:
            out.add_field(name, one)
    if data is not None:
        out.add_field("file", data, filename="budget.xlsx", content_type="x/y")
    return out


async def send(client: Client, path: str, body: FormData, status: int) -> Any:
    response = await client.post(API_PREFIX + path, data=body, headers=AUTH)
    assert response.status == status, await response.text()
    return await response.json()


async def test_versions_added_listed_downloaded_and_siblings_picked(alice: Client) -> None:
    first = os.urandom(5000)
    post = form(first, circle="work", text="budget")
    moment = (await send(alice, "/moments", post, 201))["id"]
    base = f"/moments/{moment}/versions"
    second, third = first + b"Bob", first + b"Carol"
    made = await send(alice, base, form(second, note="Q3"), 201)
    assert made["version"] == 2
    # Two versions of version 2 at once: siblings.
    await send(alice, base, form(third, parent="2"), 201)
    made = await send(alice, base, form(first + b"!", parent="2", note="mine"), 201)
    assert sorted(made["siblings"]) == [3, 4]
    shown = await call(alice, "GET", f"/moments/{moment}")
    assert [v["n"] for v in shown["versions"]["siblings"]] == made["siblings"]
    # Picking the other one resolves them, with its content (siblings made in one
    # second are numbered by id: either may be 3).
    other = next(v["n"] for v in made["versions"][2:] if v["note"] != "mine")
    picked = await call(alice, "POST", f"{base}/{other}/pick", {"note": "x"}, status=201)
    assert picked["siblings"] == []
    assert picked["newest"] == picked["version"] == 5
    assert picked["versions"][4]["parents"] == sorted(made["siblings"], reverse=True)
    assert picked["versions"][4]["size"] == len(third)
    for n, data in ((1, first), (2, second), (5, third)):
        response = await alice.get(f"{API_PREFIX}{base}/{n}/file", headers=AUTH)
        assert response.status == 200
        assert response.headers["Content-Disposition"].startswith("attachment; ")
        assert await response.read() == data


@pytest.mark.parametrize(
    ("what", "parts", "status", "says"),
    [
        ("no file", {"note": "x"}, 400, "needs its file"),
        ("an unknown part", {"colour": "red"}, 400, "unknown part"),
        ("a parent that is not a number", {"parent": "two"}, 400, "numbered from 1"),
        ("a parent that does not exist", {"parent": "9"}, 404, "no 9"),
        ("a parent twice", {"parent": ["1", "1"]}, 400, "at most once"),
        ("a note over 1 KiB", {"note": "x" * 1025}, 400, "too long"),
    ],
)
async def test_bad_version_uploads_are_refused_cleanly(
    alice: Client, what: str, parts: dict[str, Any], status: int, says: str
) -> None:
    moment = (await send(alice, "/moments", form(b"1", circle="work"), 201))["id"]
    data = None if what == "no file" else b"2"
    answer = await send(alice, f"/moments/{moment}/versions", form(data, **parts), status)
    assert says in answer["error"]["message"]
    listed = await call(alice, "GET", f"/moments/{moment}/versions")
    assert len(listed["versions"]) == 1  # nothing was made


async def test_versions_of_what_has_no_file_and_bad_numbers(alice: Client) -> None:
    text = await call(alice, "POST", "/moments", {"circle": "work", "text": "hi"}, status=201)
    await call(alice, "GET", f"/moments/{text['id']}/versions", status=400)
    moment = (await send(alice, "/moments", form(b"1", circle="work"), 201))["id"]
    for path in ("0/file", "x/file", "99999/file"):
        await call(alice, "GET", f"/moments/{moment}/versions/{path}", status=400)
    await call(alice, "GET", f"/moments/{moment}/versions/2/file", status=404)
    await call(alice, "POST", f"/moments/{moment}/versions/1/pick", status=400)
    response = await alice.post(
        f"{API_PREFIX}/moments/{moment}/versions", json={"file": "x"}, headers=AUTH
    )
    assert response.status == 400
