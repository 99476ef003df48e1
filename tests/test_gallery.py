"""A circle's photos by date (issue 20, items 6 and 9): captions carried by the moment,
pages of photos, the zip of them all; every answer checked against the spec."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from p2pmoments.api import API_PREFIX, create_app
from p2pmoments.core.blobs import MAX_CAPTION, BlobKind, BlobRef, decode_ref
from p2pmoments.core.errors import DecodeError
from p2pmoments.node import Node
from tests.test_api import AUTH, TOKEN, spec_check
from tests.test_api_friends import call

Client = TestClient[Any, Any]


@web.middleware
async def checked(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """spec_check, but for multipart posts (openapi-core cannot read their body back)."""
    if request.content_type == "multipart/form-data":
        return await handler(request)
    return await spec_check(request, handler)


@pytest.fixture
async def api(node: Node, aiohttp_client: Callable[..., Awaitable[Client]]) -> Client:
    app = create_app(node, TOKEN)
    app.middlewares.insert(0, checked)
    client = await aiohttp_client(app)
    await call(client, "POST", "/circles", {"name": "family"}, status=201)
    return client


def png(colour: str, size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


async def post_photos(api: Client, photos: list[tuple[bytes, str]], text: str = "") -> Any:
    form = FormData()
    form.add_field("circle", "family")
    form.add_field("text", text)
    for data, caption in photos:
        form.add_field("photo", data, filename="p.png", content_type="image/png")
        if caption:
            form.add_field("caption", caption)
    response = await api.post(f"{API_PREFIX}/moments", data=form, headers=AUTH)
    assert response.status == 201, await response.text()
    return await response.json()


async def test_each_photo_keeps_its_caption_in_the_post_and_when_read_back(api: Client) -> None:
    posted = await post_photos(
        api, [(png("red"), "the beach"), (png("blue"), ""), (png("green"), "é ☀")]
    )
    assert [p["caption"] for p in posted["photos"]] == ["the beach", "", "é ☀"]
    again = await call(api, "GET", f"/moments/{posted['id']}")
    assert [p["caption"] for p in again["photos"]] == ["the beach", "", "é ☀"]


async def test_a_caption_out_of_place_or_too_long_is_refused(api: Client) -> None:
    for form_parts in (
        [("caption", "no photo before it")],
        [("photo", png("red")), ("caption", "x" * (MAX_CAPTION + 1))],
        [("photo", png("red")), ("caption", "one"), ("caption", "two")],
    ):
        form = FormData(default_to_multipart=True)
        form.add_field("circle", "family")
        for name, value in form_parts:
            if isinstance(value, bytes):
                form.add_field(name, value, filename="p.png", content_type="image/png")
            else:
                form.add_field(name, value)
        response = await api.post(f"{API_PREFIX}/moments", data=form, headers=AUTH)
        assert response.status == 400, await response.text()
        assert "caption" in (await response.json())["error"]["message"]
    assert (await call(api, "GET", "/moments"))["moments"] == []


def test_a_reference_without_a_caption_reads_as_before_and_one_with_it_round_trips() -> None:
    ref = BlobRef(
        kind=BlobKind.PHOTO, media_type="image/png", size=3, key=b"k" * 32, chunks=(b"a" * 32,)
    )
    old = ref.as_map()
    assert 13 not in old  # no caption: the bytes an older daemon wrote
    assert decode_ref(old).caption == ""
    captioned = BlobRef(**{**{f: getattr(ref, f) for f in ref.__slots__}, "caption": "hi"})
    assert decode_ref(captioned.as_map()).caption == "hi"


@given(st.one_of(st.integers(), st.binary(max_size=600), st.text(min_size=513, max_size=600)))
def test_a_hostile_caption_is_refused_as_malformed(caption: object) -> None:
    fields = BlobRef(
        kind=BlobKind.PHOTO, media_type="image/png", size=3, key=b"k" * 32, chunks=(b"a" * 32,)
    ).as_map()
    fields[13] = caption
    if isinstance(caption, str) and len(caption.encode()) <= MAX_CAPTION:
        return
    with pytest.raises(DecodeError):
        decode_ref(fields)


async def test_the_gallery_lists_photos_newest_first_in_pages_of_whole_posts(api: Client) -> None:
    first = await post_photos(api, [(png("red"), "a"), (png("blue"), "b")])
    await call(api, "POST", "/moments", {"circle": "family", "text": "words alone"}, status=201)
    second = await post_photos(api, [(png("green"), "c"), (png("white"), "d"), (png("black"), "")])
    page = await call(api, "GET", "/circles/family/photos?limit=2")
    # Whole posts: the newest post's three photos, though 2 were asked for.
    assert [(p["moment"], p["n"], p["caption"]) for p in page["photos"]] == [
        (second["id"], 1, "c"),
        (second["id"], 2, "d"),
        (second["id"], 3, ""),
    ]
    assert page["next_cursor"]
    rest = await call(api, "GET", f"/circles/family/photos?limit=2&cursor={page['next_cursor']}")
    assert [(p["moment"], p["n"]) for p in rest["photos"]] == [(first["id"], 1), (first["id"], 2)]
    assert rest["next_cursor"] is None
    assert rest["photos"][0]["author"]["name"] == "Alice"
    everything = await call(api, "GET", "/circles/family/photos")
    assert len(everything["photos"]) == 5
    assert everything["next_cursor"] is None
    await call(api, "GET", "/circles/nowhere/photos", status=404)
    await call(api, "GET", "/circles/family/photos?limit=0", status=400)


async def test_download_all_is_a_zip_of_every_photo_as_posted(api: Client) -> None:
    photos = [png("red"), png("blue", (50, 20))]
    await post_photos(api, [(photos[0], "")])
    await post_photos(api, [(photos[1], "")])
    response = await api.get(f"{API_PREFIX}/circles/family/photos.zip", headers=AUTH)
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/zip"
    assert response.headers["Content-Disposition"] == 'attachment; filename="photos.zip"'
    archive = zipfile.ZipFile(io.BytesIO(await response.read()))
    assert archive.testzip() is None
    names = archive.namelist()
    assert len(names) == 2
    assert [archive.read(n) for n in names] == photos[::-1]  # newest first, bytes as posted
    for name in names:  # when, which post, which photo: nothing a peer chose
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d{6} [0-9a-f]{8} 1\.png", name), name


async def test_the_reaction_emoji_are_served_as_pictures_with_their_licence(api: Client) -> None:
    from p2pmoments import webemoji

    for code in webemoji.EMOJI:
        got = await api.get(f"/app/any/emoji/{code}.svg")
        assert got.status == 200
        assert got.headers["Content-Type"] == "image/svg+xml"
        assert (await got.read()).startswith(b"<svg")
    assert (await api.get("/app/any/emoji/1f4a9.svg")).status == 404
    licence = Path(webemoji.__file__).parent / "emoji" / "LICENSE.md"
    assert "CC-BY 4.0" in licence.read_text()
