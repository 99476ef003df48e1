"""Hostile input to the control API (issue 10, items 2, 6 and 7): each request gets a clean
4xx with the JSON error body, and the daemon is left as it was."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from p2pmoments.api import API_PREFIX, ApiRunner, create_app
from p2pmoments.node import Node
from tests.test_api import AUTH, TOKEN, error_of, get, spec_check

JSON = {**AUTH, "Content-Type": "application/json"}


def form(boundary: str, *parts: bytes) -> bytes:
    """A multipart body from raw parts (each its headers, a blank line, its content)."""
    out = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    return out + b"--" + boundary.encode() + b"--\r\n"


def field(name: bytes, value: bytes) -> bytes:
    return b'Content-Disposition: form-data; name="' + name + b'"\r\n\r\n' + value


MULTIPART = {**AUTH, "Content-Type": "multipart/form-data; boundary=xyz"}


@pytest.fixture
async def client(
    node: Node, aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]
) -> TestClient[Any, Any]:
    app = create_app(node, TOKEN)
    app.middlewares.insert(0, spec_check)
    return await aiohttp_client(app)


@pytest.fixture
async def family(node: Node) -> Node:
    await node.circles.create("family", [], members_can_post=False)
    return node


async def state_of(client: TestClient[Any, Any]) -> tuple[Any, Any, Any]:
    """What a hostile request must leave unchanged."""
    status = await (await get(client, "/status", headers=AUTH)).json()
    profile = await (await get(client, "/profile", headers=AUTH)).json()
    feed = await (await get(client, "/moments", headers=AUTH)).json()
    return (status["moments"], status["friends"]), profile, feed["moments"]


HOSTILE: list[tuple[str, str, str, dict[str, str], bytes]] = [
    ("deep JSON to the profile", "PATCH", "/profile", JSON, b"[" * 30_000 + b"]" * 30_000),
    ("deep JSON in an object", "PATCH", "/profile", JSON, b'{"name":' + b"[" * 30_000 + b"}"),
    ("deep JSON to a post", "POST", "/moments", JSON, b"[" * 30_000 + b"]" * 30_000),
    ("a 5,000-digit name", "PATCH", "/profile", JSON, b'{"name": ' + b"9" * 5000 + b"}"),
    (
        "a 5,000-digit expiry",
        "POST",
        "/moments",
        JSON,
        b'{"circle": "family", "text": "x", "expires_in": ' + b"9" * 5000 + b"}",
    ),
    (
        "a 5,000-digit multipart expiry",
        "POST",
        "/moments",
        MULTIPART,
        form(
            "xyz",
            field(b"circle", b"family"),
            field(b"text", b"x"),
            field(b"expires_in", b"9" * 5000),
        ),
    ),
    (
        "invalid UTF-8 in a text part",
        "POST",
        "/moments",
        MULTIPART,
        form("xyz", field(b"circle", b"family"), field(b"text", b"\xff\xfe caf\xe9")),
    ),
    (
        "invalid UTF-8 in the circle part",
        "POST",
        "/moments",
        MULTIPART,
        form("xyz", field(b"circle", b"\xc3"), field(b"text", b"x")),
    ),
    (
        "multipart without a boundary",
        "POST",
        "/moments",
        {**AUTH, "Content-Type": "multipart/form-data"},
        form("xyz", field(b"circle", b"family"), field(b"text", b"x")),
    ),
    (
        "a part header without a colon",
        "POST",
        "/moments",
        MULTIPART,
        form("xyz", b"Content-Disposition form-data\r\n\r\nfamily"),
    ),
    (
        "a control character in a part name",
        "POST",
        "/moments",
        MULTIPART,
        form("xyz", field(b"circle", b"family"), field(b"te\x01xt", b"x")),
    ),
    (
        "a part with no name",
        "POST",
        "/moments",
        MULTIPART,
        form("xyz", b"Content-Type: text/plain\r\n\r\nx"),
    ),
    (
        "a truncated multipart body",
        "POST",
        "/moments",
        MULTIPART,
        b"--xyz\r\n" + field(b"circle", b"family"),
    ),
    (
        "an expiry in words in a form",
        "POST",
        "/moments",
        MULTIPART,
        form(
            "xyz",
            field(b"circle", b"family"),
            field(b"text", b"x"),
            field(b"expires_in", "٣".encode()),
        ),
    ),
    ("a before past 64 bits", "GET", "/moments?before=99999999999999999999", AUTH, b""),
    ("a before in exponent form", "GET", "/moments?before=1e9", AUTH, b""),
    ("a limit with a fraction", "GET", "/moments?limit=1.5", AUTH, b""),
    ("a limit with an underscore", "GET", "/moments?limit=1_0", AUTH, b""),
    ("an after with spaces", "GET", "/events?after=%201", AUTH, b""),
    (
        "a photo number past 64 bits",
        "GET",
        "/moments/abcdef/photos/99999999999999999999",
        AUTH,
        b"",
    ),
    (
        "a link with a non-ASCII character",
        "POST",
        "/friends",
        JSON,
        '{"link": "P2PM:1/É/A/A/A/A/A/A"}'.encode(),
    ),
    ("a link of bytes", "POST", "/friends", JSON, b'{"link": "P2PM:1/\\u0000/A/A/A/A/A/A"}'),
    # Item 6: types are exact (a bool is not a number here, a number is not a bool).
    (
        "an expiry of true",
        "POST",
        "/moments",
        JSON,
        b'{"circle": "family", "text": "x", "expires_in": true}',
    ),
    ("a wait of true", "POST", "/friends", JSON, b'{"link": "P2PM:1/A", "wait": true}'),
    ("members_can_post of 1", "POST", "/circles", JSON, b'{"name": "x", "members_can_post": 1}'),
    ("a name that is a list", "PATCH", "/profile", JSON, b'{"name": ["Alice"]}'),
    ("members that are not names", "POST", "/circles", JSON, b'{"name": "x", "members": [1]}'),
    (
        "a float expiry",
        "POST",
        "/moments",
        JSON,
        b'{"circle": "family", "text": "x", "expires_in": 1.0}',
    ),
    ("a NaN", "PATCH", "/profile", JSON, b'{"name": NaN}'),
    ("a duplicate key", "PATCH", "/profile", JSON, b'{"name": "Bob", "name": "Carol"}'),
    # Issue 18, item 4: a lone UTF-16 surrogate is valid JSON but no text (a 500 before).
    (
        "a lone surrogate in a post's text",
        "POST",
        "/moments",
        JSON,
        b'{"circle": "family", "text": "ice \\ud800 cream"}',
    ),
    ("a lone surrogate in a name", "PATCH", "/profile", JSON, b'{"name": "\\udfff"}'),
    ("a lone surrogate in a key", "PATCH", "/profile", JSON, b'{"\\ud800": "Bob"}'),
    (
        "a lone surrogate in a comment",
        "POST",
        "/moments/abcdef/comments",
        JSON,
        b'{"text": "\\ud800"}',
    ),
    ("a lone surrogate in a friend's name", "PATCH", "/friends/Bob", JSON, b'{"name": "\\ud800"}'),
    ("a lone surrogate in a circle", "POST", "/circles", JSON, b'{"name": "\\udbff\\udbff"}'),
]


@pytest.mark.parametrize(
    ("method", "path", "headers", "body"),
    [case[1:] for case in HOSTILE],
    ids=[case[0] for case in HOSTILE],
)
async def test_hostile_requests_get_a_clean_4xx_and_change_nothing(
    client: TestClient[Any, Any],
    family: Node,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    before = await state_of(client)
    response = await client.request(method, API_PREFIX + path, data=body, headers=headers)
    assert 400 <= response.status < 500, await response.text()
    await error_of(response)
    assert await state_of(client) == before
    leftovers = [p for p in family.paths.blob_dir.rglob("*") if p.is_file()]
    assert leftovers == []


async def test_a_negative_before_is_an_empty_page(client: TestClient[Any, Any]) -> None:
    # The schema allows any integer; a time before 1970 holds no moments.
    response = await get(client, "/moments?before=-5", headers=AUTH)
    assert response.status == 200
    assert (await response.json())["moments"] == []


# --- Host and Origin, parsed strictly (item 7) -----------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "[::1]evil.com:47471",
        "[::1].evil.com",
        "127.0.0.1:47471@evil.com",
        "127.0.0.1:47471 evil.com",
        "localhost:47471@evil.com",
        "localhost evil.com",
        "127.0.0.1:",
        "127.0.0.1:99999",
        "127.0.0.1:-1",
        "127.0.0.1:+80",
        "127.0.0.1:٨٠",
        "::1",
        "[::1",
        "[127.0.0.1]",
        "[::ffff:127.0.0.1]:80",
        "127.000.000.001",
        "2130706433",
        "0x7f.0.0.1",
        "localhost.",
        "loca\u200blhost",
    ],
)
async def test_hosts_that_only_start_like_loopback_are_refused(
    client: TestClient[Any, Any], host: str
) -> None:
    response = await get(client, "/status", headers={**AUTH, "Host": host})
    assert response.status == 403
    assert (await error_of(response))["code"] == "forbidden_host"


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("127.0.0.1:8080", "http://127.0.0.1:8080@evil.com"),
        ("127.0.0.1:8080", "http://127.0.0.1:8080.evil.com"),
        ("127.0.0.1:8080", "https://127.0.0.1:8080"),
        ("127.0.0.1:8080", "http://127.0.0.1:8080/"),
        ("127.0.0.1:8080", "http://127.0.0.1:8081"),
        ("127.0.0.1:8080", "http://localhost:8080"),
        ("127.0.0.1", "http://127.0.0.1:8080"),
    ],
)
async def test_an_origin_must_be_exactly_ours(
    client: TestClient[Any, Any], host: str, origin: str
) -> None:
    response = await get(client, "/status", headers={**AUTH, "Host": host, "Origin": origin})
    assert response.status == 403
    assert (await error_of(response))["code"] == "forbidden_origin"


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("LOCALHOST:8080", "http://localhost:8080"),
        ("127.0.0.1", "http://127.0.0.1:80"),
        ("[::1]:8080", "http://[0:0::1]:8080"),
    ],
)
async def test_our_own_origin_is_accepted(
    client: TestClient[Any, Any], host: str, origin: str
) -> None:
    response = await get(client, "/status", headers={**AUTH, "Host": host, "Origin": origin})
    assert response.status == 200


# --- errors aiohttp's HTTP parser answers itself (item 2) --------------------------


@pytest.fixture
async def served(node: Node) -> AsyncIterator[int]:
    """The API served as the daemon serves it, on a loopback port."""
    runner = ApiRunner(create_app(node, TOKEN), access_log=None, shutdown_timeout=1)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def raw_request(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; the status, headers and body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(10):
            answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(
    "data",
    [
        b"GET /api/v1/status HTTP/1.1\r\n\r\n",  # no Host
        b"GET /api/v1/status HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
        b"GET /api/v1/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"GET /api/v1/status HTTP/1.1\r\nHost: localhost\r\nHost: evil.com\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /api/v1/status HTTP/1.1\r\nHost: localhost\r\nContent-Length: -1\r\n\r\n",
    ],
    ids=["no Host", "a long header", "a long URL", "two Hosts", "garbage", "a bad length"],
)
async def test_errors_of_the_http_parser_are_json_too(served: int, data: bytes) -> None:
    status, headers, body = await raw_request(served, data)
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert error["code"] == "bad_request"
    # The daemon still answers.
    status, _, _ = await raw_request(
        served, b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    assert status == 200
