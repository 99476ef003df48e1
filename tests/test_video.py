"""Videos played in the page (issue 20, item 8): a file of type video/mp4 or video/webm
is served as that type, sandboxed, and in byte ranges (206, If-Range), so a <video>
can seek; the range parser is fuzzed."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from p2pmoments.api import API_PREFIX, create_app
from p2pmoments.api.ranges import RangeNotSatisfiable, parse_range
from p2pmoments.node import Node
from tests.test_api import AUTH, TOKEN
from tests.test_api_friends import call
from tests.test_gallery import checked, png

Client = TestClient[Any, Any]
VIDEO = os.urandom(700_000)  # three chunks of the first form


@pytest.fixture
async def api(node: Node, aiohttp_client: Callable[..., Awaitable[Client]]) -> Client:
    app = create_app(node, TOKEN)
    app.middlewares.insert(0, checked)
    client = await aiohttp_client(app)
    await call(client, "POST", "/circles", {"name": "family"}, status=201)
    return client


async def post_file(api: Client, data: bytes, name: str, media_type: str) -> str:
    form = FormData()
    form.add_field("circle", "family")
    form.add_field("file", data, filename=name, content_type=media_type)
    response = await api.post(f"{API_PREFIX}/moments", data=form, headers=AUTH)
    assert response.status == 201, await response.text()
    return str((await response.json())["id"])


async def test_a_video_is_served_as_itself_sandboxed_and_seekable(api: Client) -> None:
    moment = await post_file(api, VIDEO, "holiday.mp4", "video/mp4")
    url = f"{API_PREFIX}/moments/{moment}/files/1"
    whole = await api.get(url, headers=AUTH)
    assert whole.status == 200
    assert whole.headers["Content-Type"] == "video/mp4"
    assert whole.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in whole.headers["Content-Security-Policy"]
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert await whole.read() == VIDEO
    etag = whole.headers["ETag"]
    # A seek: bytes across a chunk boundary, then the end, then the last 1000 bytes.
    for asked, first, last in (
        ("bytes=262000-262999", 262000, 262999),
        ("bytes=600000-", 600000, len(VIDEO) - 1),
        ("bytes=-1000", len(VIDEO) - 1000, len(VIDEO) - 1),
        ("bytes=0-0", 0, 0),
    ):
        part = await api.get(url, headers=AUTH | {"Range": asked, "If-Range": etag})
        assert part.status == 206, asked
        assert part.headers["Content-Range"] == f"bytes {first}-{last}/{len(VIDEO)}"
        assert part.headers["Content-Type"] == "video/mp4"
        assert await part.read() == VIDEO[first : last + 1]
    # If-Range of another version: the whole, as RFC 9110 says.
    stale = await api.get(url, headers=AUTH | {"Range": "bytes=10-20", "If-Range": '"other"'})
    assert stale.status == 200
    assert len(await stale.read()) == len(VIDEO)
    past = await api.get(url, headers=AUTH | {"Range": f"bytes={len(VIDEO)}-"})
    assert past.status == 416, await past.text()
    assert past.headers["Content-Range"] == f"bytes */{len(VIDEO)}"


async def test_only_mp4_and_webm_keep_their_type_any_other_file_is_an_attachment(
    api: Client,
) -> None:
    webm = await post_file(api, b"\x1a\x45\xdf\xa3" + VIDEO[:1000], "a.webm", "video/webm")
    page = await post_file(api, b"<script>alert(1)</script>", "x.html", "text/html")
    other = await post_file(api, VIDEO[:1000], "a.mov", "video/quicktime")
    got = await api.get(f"{API_PREFIX}/moments/{webm}/files/1", headers=AUTH)
    assert got.headers["Content-Type"] == "video/webm"
    for moment in (page, other):
        got = await api.get(f"{API_PREFIX}/moments/{moment}/files/1", headers=AUTH)
        assert got.headers["Content-Type"] == "application/octet-stream"
        assert got.headers["Content-Disposition"].startswith("attachment;")


async def test_a_photo_is_served_in_ranges_too(api: Client) -> None:
    form = FormData()
    form.add_field("circle", "family")
    photo = png("red")
    form.add_field("photo", photo, filename="p.png", content_type="image/png")
    moment = (await (await api.post(f"{API_PREFIX}/moments", data=form, headers=AUTH)).json())["id"]
    part = await api.get(
        f"{API_PREFIX}/moments/{moment}/photos/1", headers=AUTH | {"Range": "bytes=1-3"}
    )
    assert part.status == 206
    assert await part.read() == photo[1:4]


def check_range(header: str, size: int) -> None:
    """What any header gives: a range inside the size, None (sent whole) or a 416."""
    try:
        got = parse_range(header, size)
    except RangeNotSatisfiable:
        return
    if got is not None:
        assert 0 <= got.first <= got.last < size
        assert got.length == got.last - got.first + 1


@given(st.text(max_size=300), st.integers(min_value=0, max_value=2**40))
def test_any_range_header_is_a_range_inside_the_size_none_or_not_satisfiable(
    header: str, size: int
) -> None:
    check_range(header, size)


@given(st.from_regex(r"bytes=[0-9]{0,6}-[0-9]{0,6}", fullmatch=True), st.integers(0, 10**6))
def test_well_formed_ranges_cover_what_they_ask(header: str, size: int) -> None:
    check_range(header, size)
