"""What a co-member declares about a photo or file is data, never a header (issue 18, 1).

A hostile member of a circle can declare any media type for what it posts. Photos are
served only as the image types we post (a reference declaring another is refused when
it arrives, and one an older daemon stored is no longer shown); files always as
attachments of no type, under a safe name, with nosniff and the sandboxing policy.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from PIL import Image

from p2pmoments import posting as posting_module
from p2pmoments.api import API_PREFIX, create_app
from p2pmoments.core.blobs import BlobKind, BlobRef, decode_ref
from p2pmoments.core.errors import DecodeError
from p2pmoments.media import Photo
from p2pmoments.node import Node
from p2pmoments.views import download_name
from tests.multinode import befriend, eventually, make_home, read_feed, running, until

TOKEN = "t" * 43
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Host": "127.0.0.1"}
SANDBOX = "default-src 'none'; frame-ancestors 'none'; sandbox"
SCRIPT = b"localStorage.setItem('canary', '1'); window.canary = 1;"


def a_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 100, 50)).save(out, format="JPEG")
    return out.getvalue()


def hostile_photo(declared: str) -> Callable[..., Photo]:
    """prepare_photo as a hostile daemon would have it: the bytes as given, the type
    declared as it likes."""

    def prepare(data: bytes, **_: Any) -> Photo:
        thumb = a_jpeg()
        return Photo(
            data=data,
            media_type=declared,
            width=8,
            height=8,
            thumbnail=thumb,
            thumb_width=8,
            thumb_height=8,
        )

    return prepare


async def test_a_members_pages_and_scripts_are_served_as_inert_downloads(
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    homes = [await make_home(tmp_path, n) for n in ("Mallory", "Bob")]
    async with running(homes[0]) as mallory, running(homes[1]) as bob:
        await befriend(mallory, bob)
        await mallory.circles.create("family", ["Bob"], members_can_post=True)
        await eventually(lambda: bob.circles.all(), what="Bob to get the manifest")

        script = await mallory.posting.post(
            "family", "a script", files=[("x.js", SCRIPT, "text/javascript")]
        )
        page = b'<script src="/api/v1/moments/' + script.id.hex().encode() + b'/files/1"></script>'
        await mallory.posting.post(
            "family",
            "a page",
            files=[("\u202egpj.html", page, "text/html"), ("../../.bashrc", SCRIPT, "text/x-sh")],
        )
        for declared in ("text/html", "image/svg+xml"):
            monkeypatch.setattr(posting_module, "prepare_photo", hostile_photo(declared))
            await mallory.posting.post("family", f"photo as {declared}", photos=[page])
        monkeypatch.undo()
        await mallory.posting.post("family", "after")

        async def all_arrived() -> bool:
            feed = await read_feed(bob, 50)
            return {m["text"] for m in feed} >= {"a script", "a page", "after"} and all(
                f["chunks_held"] == f["chunks"] for m in feed for f in m["files"]
            )

        await until(bob, all_arrived, timeout=30, what="Bob to hold every file")
        client = await aiohttp_client(create_app(bob, TOKEN))
        feed = {m["text"]: m for m in await read_feed(bob, 50)}
        served = []
        for text in ("a script", "a page"):
            for f in feed[text]["files"]:
                answer = await client.get(
                    f"{API_PREFIX}/moments/{feed[text]['id']}/files/{f['n']}", headers=HEADERS
                )
                assert answer.status == 200
                served.append(answer.headers["Content-Disposition"])
                assert answer.headers["Content-Type"] == "application/octet-stream"
                assert answer.headers["X-Content-Type-Options"] == "nosniff"
                assert answer.headers["Content-Security-Policy"] == SANDBOX
                # The declared type is still there as data, for the app to show.
                assert f["type"] in ("text/javascript", "text/html", "text/x-sh")
        assert served == [
            "attachment; filename=\"x.js\"; filename*=UTF-8''x.js",
            "attachment; filename=\"_gpj.html\"; filename*=UTF-8''_gpj.html",
            "attachment; filename=\"_.._.bashrc\"; filename*=UTF-8''_.._.bashrc",
        ]
        # A photo is served as the image it is declared to be, inline.
        assert not any(m["photos"] for m in feed.values())


async def test_a_photo_declared_as_a_page_is_refused_on_arrival_and_hidden_if_stored(
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hostile author's photo declared text/html or image/svg+xml never reaches a
    member's feed; one an older daemon stored is no longer shown or served, and the
    feed around it still reads."""
    homes = [await make_home(tmp_path, n) for n in ("Mallory", "Bob")]
    async with running(homes[0]) as mallory, running(homes[1]) as bob:
        await befriend(mallory, bob)
        await mallory.circles.create("family", ["Bob"], members_can_post=True)
        await eventually(lambda: bob.circles.all(), what="Bob to get the manifest")
        hostile = [await sealed_hostile(mallory, declared) for declared in ("text/html",)]
        # An older daemon would have stored it: store it as that one did, unchecked.
        await bob.moments.store_many(hostile)
        await bob.posting.post("family", "still here")
        client = await aiohttp_client(create_app(bob, TOKEN))
        feed = await client.get(f"{API_PREFIX}/moments", headers=HEADERS)
        assert feed.status == 200
        assert [m["text"] for m in (await feed.json())["moments"]] == ["still here"]
        for moment in hostile:
            for path in ("", "/photos/1", "/photos/1/thumbnail"):
                answer = await client.get(
                    f"{API_PREFIX}/moments/{moment.id.hex()}{path}", headers=HEADERS
                )
                assert answer.status == 404, path
                assert answer.content_type == "application/json"


async def sealed_hostile(author: Node, declared: str) -> Any:
    """A moment whose photo declares `declared`, sealed as a hostile daemon would."""
    from p2pmoments.core.moment import Content, Kind, seal_moment

    circle = author.circles.resolve("family")
    ref = BlobRef(
        kind=BlobKind.PHOTO,
        media_type="image/jpeg",
        size=4,
        key=b"k" * 32,
        chunks=(b"a" * 32,),
    )
    ref = dataclasses.replace(ref, media_type=declared)
    return seal_moment(
        author.identity,
        circle,
        author.circles.key_for(circle),
        seq=10_000,
        time=1_800_000_000,
        content=Content(kind=Kind.POST, text="hostile", blobs=(ref,)),
    )


@pytest.mark.parametrize(
    "declared",
    ["text/html", "image/svg+xml", "application/xhtml+xml", "text/javascript", "", "image/JPEG"],
)
def test_a_photo_is_one_of_the_image_types_we_post(declared: str) -> None:
    ref = BlobRef(
        kind=BlobKind.PHOTO, media_type=declared, size=4, key=b"k" * 32, chunks=(b"a" * 32,)
    )
    with pytest.raises(DecodeError):
        decode_ref(ref.as_map())


@pytest.mark.parametrize("declared", ["text/html\r\nX-A: b", "text/plain\n", "a/b c", "a\x00/b"])
def test_a_media_type_with_a_line_break_or_space_is_refused(declared: str) -> None:
    ref = BlobRef(
        kind=BlobKind.FILE, media_type=declared, size=4, key=b"k" * 32, chunks=(b"a" * 32,)
    )
    with pytest.raises(DecodeError):
        decode_ref(ref.as_map())


def test_a_file_declared_as_a_page_or_script_still_decodes_as_data() -> None:
    for declared in ("text/html", "text/javascript", "", "application/octet-stream"):
        ref = BlobRef(
            kind=BlobKind.FILE, media_type=declared, size=4, key=b"k" * 32, chunks=(b"a" * 32,)
        )
        assert decode_ref(ref.as_map()).media_type == declared


@pytest.mark.parametrize(
    ("given", "safe"),
    [
        ("../../etc/passwd", "_.._etc_passwd"),
        ("a\u202egpj.exe", "a_gpj.exe"),
        (".bashrc", "bashrc"),
        ("CON.txt", "_CON.txt"),
        ("x\r\nSet-Cookie: a=b", "x__Set-Cookie_ a=b"),
        ('"quoted".txt', "_quoted_.txt"),
        ("C:\\Windows\\x.bat", "C__Windows_x.bat"),
        ("name. . ", "name"),
        ("   ", "file"),
        ("...", "file"),
        ("photo.jpg", "photo.jpg"),
        ("é" * 300, "é" * 100),
    ],
)
def test_a_peers_file_name_is_made_safe_to_save(given: str, safe: str) -> None:
    assert download_name(given) == safe
