"""HEIC photos, as iPhones take them (issue 20, item 8): posted as JPEG photos with a
thumbnail and without their location; without pillow-heif, refused saying so."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient
from PIL import Image

from p2pmoments import media
from p2pmoments.api import API_PREFIX, create_app
from p2pmoments.node import Node
from tests.photos import has_location
from tests.test_api import AUTH, TOKEN
from tests.test_api_friends import call
from tests.test_gallery import checked

Client = TestClient[Any, Any]

try:
    import pillow_heif
except ImportError:  # pragma: no cover
    pillow_heif = None

needs_heif = pytest.mark.skipif(
    pillow_heif is None, reason="pillow-heif is not installed: HEIC photos are refused, saying so"
)


def heic_with_location(width: int = 400, height: int = 300) -> bytes:
    assert pillow_heif is not None
    image = Image.new("RGB", (width, height), (200, 140, 90))  # flat: quick to encode
    exif = Image.Exif()
    exif[0x010F] = "iPhone"
    gps = exif.get_ifd(media.GPS_IFD)
    gps[1], gps[2] = "N", (48.0, 51.0, 29.0)
    heif = pillow_heif.from_pillow(image)
    out = io.BytesIO()
    heif.save(out, format="HEIF", quality=80, exif=exif.tobytes())
    return out.getvalue()


@pytest.fixture
async def api(node: Node, aiohttp_client: Callable[..., Awaitable[Client]]) -> Client:
    app = create_app(node, TOKEN)
    app.middlewares.insert(0, checked)
    client = await aiohttp_client(app)
    await call(client, "POST", "/circles", {"name": "family"}, status=201)
    return client


async def post_photo(api: Client, data: bytes) -> Any:
    form = FormData()
    form.add_field("circle", "family")
    form.add_field("photo", data, filename="IMG_0001.HEIC", content_type="image/heic")
    response = await api.post(f"{API_PREFIX}/moments", data=form, headers=AUTH)
    return response.status, await response.json()


@needs_heif
async def test_a_heic_photo_is_posted_as_a_jpeg_with_a_thumbnail_and_no_location(
    api: Client,
) -> None:
    original = heic_with_location()
    assert original[4:12] == b"ftypheic"
    assert has_location(original)
    status, moment = await post_photo(api, original)
    assert status == 201, moment
    (photo,) = moment["photos"]
    assert (photo["type"], photo["width"], photo["height"]) == ("image/jpeg", 400, 300)
    got = await api.get(f"{API_PREFIX}/moments/{moment['id']}/photos/1", headers=AUTH)
    assert got.headers["Content-Type"] == "image/jpeg"
    data = await got.read()
    assert Image.open(io.BytesIO(data)).format == "JPEG"
    assert not has_location(data)
    assert Image.open(io.BytesIO(data)).getexif()[0x010F] == "iPhone"  # the rest is kept
    thumb = await api.get(f"{API_PREFIX}/moments/{moment['id']}/photos/1/thumbnail", headers=AUTH)
    assert max(Image.open(io.BytesIO(await thumb.read())).size) == media.THUMBNAIL_SIZE


async def test_without_pillow_heif_a_heic_photo_is_refused_saying_what_is_missing(
    api: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(media, "HEIC_READER", False)
    # The start of a HEIC file as an iPhone writes it (the box that names its brand).
    start = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200)
    status, answer = await post_photo(api, start)
    assert status == 400
    assert answer["error"]["code"] == "invalid"
    assert "HEIC" in answer["error"]["message"]
    assert "pillow-heif" in answer["error"]["message"]
    assert (await call(api, "GET", "/moments"))["moments"] == []
