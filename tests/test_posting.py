"""Posting under concurrency and with hostile uploads (issue 10, items 3, 4 and 14): every
accepted post is stored, in order; a refused post leaves nothing on disk; chunks no moment
uses are swept; an image too large to decode is refused from its header."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import threading
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient
from PIL import Image

from p2pmoments.api import API_PREFIX, create_app
from p2pmoments.blobstore import BlobStore, PackWriter
from p2pmoments.core.blobs import BlobKind, encrypt_blob
from p2pmoments.core.identity import Identity
from p2pmoments.core.moment import Content, Kind, seal_moment
from p2pmoments.errors import UserInputError
from p2pmoments.media import MAX_PIXELS, prepare_photo
from p2pmoments.node import Node
from p2pmoments.paths import Paths
from p2pmoments.store import Store
from p2pmoments.views import moment_text
from tests.conftest import LOOPBACK
from tests.multinode import eventually, get_moment, read_feed
from tests.test_api import AUTH, TOKEN, error_of, spec_check

Client = TestClient[Any, Any]


@pytest.fixture
async def api(node: Node, aiohttp_client: Callable[..., Awaitable[Client]]) -> Client:
    for name in ("family", "work", "pub", "club"):
        await node.circles.create(name, [], members_can_post=False)
    app = create_app(node, TOKEN)
    app.middlewares.insert(0, spec_check)
    return await aiohttp_client(app)


def chunk_files(node: Node) -> list[str]:
    return sorted(p.name for p in node.paths.blob_dir.rglob("*") if p.is_file())


async def own_seqs(node: Node, circle: str) -> list[int]:
    circle_id = node.circles.resolve(circle).circle_id
    rows = await node.store.run(
        lambda s: list(
            s._conn.execute(
                "SELECT seq FROM moments WHERE circle_id = ? ORDER BY seq", (circle_id,)
            )
        )
    )
    return [r[0] for r in rows]


# --- item 14: concurrent posters ------------------------------------------------------


@pytest.mark.parametrize("circles", [["family"], ["family", "work", "pub", "club"]])
async def test_every_concurrent_post_is_stored_in_order(
    api: Client, node: Node, circles: list[str]
) -> None:
    n = 200

    async def post(i: int) -> dict[str, Any]:
        circle = circles[i % len(circles)]
        response = await api.post(
            f"{API_PREFIX}/moments", json={"circle": circle, "text": f"post {i}"}, headers=AUTH
        )
        assert response.status == 201, await response.text()
        return dict(await response.json())

    answers = await asyncio.gather(*(post(i) for i in range(n)))
    assert len({a["id"] for a in answers}) == n
    for circle in circles:
        # One author's sequence in a circle has no gap and no repeat.
        assert await own_seqs(node, circle) == list(range(1, n // len(circles) + 1))
    for answer in answers:
        shown = await api.get(f"{API_PREFIX}/moments/{answer['id']}", headers=AUTH)
        assert shown.status == 200
    assert (await node.store.run(Store.counts)).moments == n


async def test_posts_answered_one_after_another_keep_that_order(node: Node) -> None:
    await node.circles.create("family", [], members_can_post=False)
    first = await node.posting.post("family", "first")
    others = await asyncio.gather(*(node.posting.post("family", f"then {i}") for i in range(20)))
    last = await node.posting.post("family", "last")
    assert first.seq == 1
    assert sorted(m.seq for m in others) == list(range(2, 22))
    assert last.seq == 22


async def test_a_refused_post_among_concurrent_ones_costs_no_sequence_number(node: Node) -> None:
    await node.circles.create("family", [], members_can_post=False)
    results = await asyncio.gather(
        *(node.posting.post("family", "x" * (20_000 if i % 3 == 0 else 10)) for i in range(30)),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(refused) == 10
    assert all(isinstance(r, UserInputError) for r in refused)
    assert await own_seqs(node, "family") == list(range(1, 21))


# --- item 4: a refused post stores nothing; chunks nobody uses are swept ---------------


def small_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(out, format="PNG")
    return out.getvalue()


async def post_form(api: Client, fields: dict[str, str], uploads: list[tuple[str, bytes]]) -> Any:
    form = FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    for name, data in uploads:
        form.add_field(name, data, filename="x.bin", content_type="application/octet-stream")
    return await api.post(f"{API_PREFIX}/moments", data=form, headers=AUTH)


@pytest.mark.parametrize(
    ("fields", "uploads", "status"),
    [
        ({"circle": "family", "text": "x"}, [("photo", small_png())] * 1000, 400),
        ({"circle": "family", "text": "é" * 10_000}, [("file", os.urandom(3_000_000))], 400),
        (
            {"circle": "family", "text": "x"},
            [("photo", small_png()), ("photo", b"not a photo")],
            400,
        ),
        ({"circle": "nowhere", "text": "x"}, [("file", os.urandom(300_000))], 404),
        (
            {"circle": "family", "text": "x", "expires_in": "0"},
            [("file", os.urandom(300_000))],
            400,
        ),
        ({"circle": "family", "text": "x"}, [("file", os.urandom(300_000)), ("bogus", b"")], 400),
    ],
    ids=[
        "1000 photos",
        "a long text",
        "a bad second photo",
        "no such circle",
        "expiry 0",
        "bad part",
    ],
)
async def test_a_refused_post_leaves_nothing_on_disk(
    api: Client, node: Node, fields: dict[str, str], uploads: list[tuple[str, bytes]], status: int
) -> None:
    response = await post_form(api, fields, uploads)
    assert response.status == status
    await error_of(response)
    assert chunk_files(node) == []
    assert (await node.store.run(Store.counts)).moments == 0


async def test_a_photo_or_file_over_its_limit_is_a_documented_413(
    api: Client, node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("p2pmoments.api.uploads.MAX_PHOTO", 1 << 20)
    response = await post_form(api, {"circle": "family"}, [("photo", os.urandom(1_100_000))])
    assert response.status == 413  # spec_check: the spec lists it
    assert "1 MiB" in (await error_of(response))["message"]
    # A file is streamed: it is refused only past what the format allows.
    monkeypatch.setattr("p2pmoments.core.blobs.MAX_BLOB", 5 << 20)
    response = await post_form(
        api, {"circle": "family"}, [("file", os.urandom(3_000_000)), ("file", os.urandom(6 << 20))]
    )
    assert response.status == 413
    assert "at most" in (await error_of(response))["message"]
    assert chunk_files(node) == []
    assert (await node.store.run(Store.counts)).moments == 0


async def test_a_text_too_long_says_what_the_limit_is(api: Client) -> None:
    response = await api.post(
        f"{API_PREFIX}/moments", json={"circle": "family", "text": "é" * 9000}, headers=AUTH
    )
    assert response.status == 400
    message = (await error_of(response))["message"]
    assert "16 KiB" in message
    huge = await api.post(
        f"{API_PREFIX}/moments", json={"circle": "family", "text": "x" * 70_000}, headers=AUTH
    )
    assert huge.status == 413
    message = (await error_of(huge))["message"]
    assert "text is at most 16 KiB" in message
    assert "65536" not in message


def orphan_pack(blobs: BlobStore, size: int = 300_000) -> PackWriter:
    """What a crash between writing a post's pack and storing its moment leaves."""
    _, chunks = encrypt_blob(os.urandom(size), kind=BlobKind.FILE, media_type="x/y")
    pack = blobs.new_pack()
    pack.append(chunks)
    pack.finish()
    return pack


def age(node_or_paths: Node | Paths, seconds: float = 2 * 3600) -> None:
    paths = node_or_paths.paths if isinstance(node_or_paths, Node) else node_or_paths
    old = time.time() - seconds
    for path in paths.blob_dir.rglob("*"):
        if path.is_file():
            os.utime(path, (old, old))


async def test_chunks_no_moment_uses_are_swept_and_others_kept(node: Node) -> None:
    await node.circles.create("family", [], members_can_post=False)
    kept = await node.posting.post("family", "kept", files=[("a.bin", os.urandom(600_000), "x/y")])
    used = set(chunk_files(node))
    assert len(used) == 1  # one pack for the post's chunks
    blobs = node.moments.blobs
    # Chunks from a peer whose moment went while they were arriving...
    _, orphans = encrypt_blob(os.urandom(300_000), kind=BlobKind.FILE, media_type="x/y")
    await asyncio.to_thread(blobs.put_received, orphans)
    # ...and the pack of a post a crash interrupted.
    stray = await asyncio.to_thread(orphan_pack, blobs)
    # A post in progress: its pack is on disk, its moment not stored yet.
    in_flight = await asyncio.to_thread(orphan_pack, blobs)
    node.moments.writing[in_flight.pack] += 1
    age(node)
    # A chunk that has just arrived is given time: its moment may be on its way.
    _, fresh = encrypt_blob(b"fresh", kind=BlobKind.FILE, media_type="x/y")
    await asyncio.to_thread(blobs.put_received, fresh)

    swept = await node.moments.sweep_chunks()
    assert swept == len(orphans) + 1
    left = set(chunk_files(node))
    assert used <= left
    assert in_flight.path.name in left
    assert stray.path.name not in left
    assert {a.hex() for a, _ in fresh} <= left
    assert not {a.hex() for a, _ in orphans} & left
    item = await get_moment(node, moment_text(kept.id))
    assert item["files"][0]["chunks_held"] == item["files"][0]["chunks"] == 3


async def test_a_daemon_sweeps_at_start_what_a_crash_left(home: Paths, identity: Identity) -> None:
    blobs = BlobStore(home.blob_dir)
    _, orphans = encrypt_blob(os.urandom(300_000), kind=BlobKind.FILE, media_type="x/y")
    await asyncio.to_thread(blobs.put_received, orphans)
    await asyncio.to_thread(orphan_pack, blobs)
    age(home)
    async with Node(paths=home, config=LOOPBACK, identity=identity) as node:
        await eventually(lambda: chunk_files(node) == [], what="the sweep at start")


async def test_chunks_of_a_moment_still_arriving_are_kept(node: Node) -> None:
    """A received moment's chunks are referenced by its row before they all arrive."""
    manifest = await node.circles.create("family", [], members_can_post=False)
    ref, chunks = encrypt_blob(os.urandom(600_000), kind=BlobKind.FILE, media_type="x/y")
    sealed = seal_moment(
        node.identity,
        manifest,
        node.circles.key_for(manifest),
        seq=1,
        time=int(time.time()),
        content=Content(kind=Kind.POST, blobs=(ref,)),
    )
    assert await node.replication.receive([sealed.envelope])  # as if from another member
    await asyncio.to_thread(node.moments.blobs.put_received, chunks[1:])  # one not here yet
    age(node)
    assert await node.moments.sweep_chunks() == 0
    assert sorted(chunk_files(node)) == sorted(a.hex() for a, _ in chunks[1:])
    assert (await get_moment(node, moment_text(sealed.id)))["files"][0]["chunks_held"] == 2


# --- item 3: images too large to decode ----------------------------------------------------


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG of one colour, `width` x `height`: tiny on disk, huge decoded."""
    row = b"\x00" + b"\x00" * width  # filter byte, then one grey byte a pixel
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
        )

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def test_a_photo_over_the_pixel_limit_is_refused_before_decoding() -> None:
    side = int(MAX_PIXELS**0.5) + 100  # above the limit, below Pillow's own (twice it)
    data = png_header_only(side, side)
    assert len(data) < 2_000_000
    began = time.perf_counter()
    with pytest.raises(UserInputError, match="megapixels"):
        prepare_photo(data)
    assert time.perf_counter() - began < 0.5  # refused from its header, never decoded


def test_a_photo_at_the_limit_makes_a_small_thumbnail() -> None:
    photo = prepare_photo(png_header_only(4000, 3000))
    assert (photo.width, photo.height) == (4000, 3000)
    assert max(photo.thumb_width, photo.thumb_height) == 320


@pytest.mark.parametrize(("fmt", "mode"), [("JPEG", "RGB"), ("PNG", "RGB"), ("PNG", "RGBA")])
def test_a_turned_photo_is_shown_upright(fmt: str, mode: str) -> None:
    """EXIF orientation 6: stored sideways, shown turned a quarter clockwise."""
    image = Image.new(mode, (1600, 900), "blue")
    image.paste("red", (0, 0, 800, 900))  # the left half red: after turning, the top half
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    image.save(out, format=fmt, exif=exif.tobytes())
    photo = prepare_photo(out.getvalue())
    assert (photo.width, photo.height) == (900, 1600)
    thumb = Image.open(io.BytesIO(photo.thumbnail))
    assert (thumb.width, thumb.height) == (photo.thumb_width, photo.thumb_height) == (180, 320)
    top, bottom = thumb.getpixel((90, 40)), thumb.getpixel((90, 280))
    assert isinstance(top, tuple)
    assert isinstance(bottom, tuple)
    assert (top[0] > 200, top[2] < 60) == (True, True)  # red above
    assert (bottom[0] < 60, bottom[2] > 200) == (True, True)  # blue below


def test_what_pillow_cannot_read_is_named_for_a_person() -> None:
    with pytest.raises(UserInputError) as caught:
        prepare_photo(b"GIF89a but not really")
    assert "BytesIO" not in str(caught.value)
    assert "JPEG" in str(caught.value)


async def test_photos_are_decoded_one_at_a_time(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    await node.circles.create("family", [], members_can_post=False)
    busy = peak = 0
    real = prepare_photo

    def counting(data: bytes, **kwargs: Any) -> Any:
        nonlocal busy, peak
        busy += 1
        peak = max(peak, busy)
        try:
            time.sleep(0.02)  # on a worker thread: let others try to overlap
            return real(data, **kwargs)
        finally:
            busy -= 1

    monkeypatch.setattr("p2pmoments.posting.prepare_photo", counting)
    await asyncio.gather(
        *(node.posting.post("family", f"{i}", photos=[small_png()] * 2) for i in range(4))
    )
    assert peak == 1


async def test_an_unreadable_photo_is_named_by_its_place(api: Client) -> None:
    response = await post_form(
        api, {"circle": "family"}, [("photo", small_png()), ("photo", b"GIF89a, or not")]
    )
    assert response.status == 400
    message = (await error_of(response))["message"]
    assert message.startswith("photo 2 is not a picture")
    assert "Pillow" not in message
    assert "BytesIO" not in message


# --- issue 13: a file of any size is streamed, never held whole ---------------------------


def piece_of(n: int, size: int = 1 << 20) -> bytes:
    """Piece `n` of a generated file: different bytes each, cheap to make again."""
    return hashlib.sha256(n.to_bytes(8, "big")).digest() * (size // 32)


async def test_a_big_file_is_streamed_through_the_api_in_bounded_memory(
    node: Node, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    """A 64 MiB file posted as a stream: the daemon never holds more than a few pieces
    of it (its peak Python allocation while posting stays far below the file), and it
    reads back byte for byte. (Without the spec check of the other tests: it would read
    the whole body to validate it.)"""
    await node.circles.create("family", [], members_can_post=False)
    api = await aiohttp_client(create_app(node, TOKEN))
    pieces = 64
    boundary = "streamed-boundary"

    async def body() -> AsyncIterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="circle"\r\n\r\nfamily\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        for n in range(pieces):
            yield piece_of(n)
        yield f"\r\n--{boundary}--\r\n".encode()

    tracemalloc.start()
    try:
        response = await api.post(
            f"{API_PREFIX}/moments",
            data=body(),
            headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status == 201, await response.text()
    answer = await response.json()
    (shown,) = answer["files"]
    assert shown["size"] == pieces << 20
    assert shown["chunks"] == shown["chunks_held"] == 128 + 1  # 512 KiB chunks, an index
    assert peak < 24 << 20, f"{peak >> 20} MiB held at once for a 64 MiB file"
    download = await api.get(f"{API_PREFIX}/moments/{answer['id']}/files/1", headers=AUTH)
    assert download.status == 200
    got = hashlib.sha256()
    n = 0
    async for data in download.content.iter_chunked(1 << 20):
        got.update(data)
        n += len(data)
    assert n == pieces << 20
    assert got.digest() == hashlib.sha256(b"".join(piece_of(i) for i in range(pieces))).digest()


async def test_a_post_cancelled_while_it_is_stored_keeps_its_file(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon stopping cancels the requests still running. One cancelled while its
    moment is being committed must not delete the pack the committed moment names."""
    await node.circles.create("family", [], members_can_post=False)
    committing, go_on = threading.Event(), threading.Event()
    real = Store.add_moments_and_find_retracted

    def slow(self: Store, *args: Any, **kwargs: Any) -> Any:
        committing.set()
        go_on.wait(10)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Store, "add_moments_and_find_retracted", slow)
    data = os.urandom(600_000)
    post = asyncio.ensure_future(node.posting.post("family", "", files=[("a.bin", data, "x/y")]))
    await eventually(committing.is_set, what="the commit to start")
    post.cancel()  # delivered at once: the commit goes on in its thread
    go_on.set()
    with contextlib.suppress(asyncio.CancelledError):
        await post
    (shown,) = await read_feed(node, 10)
    ref = await node.moments.blob(shown["id"], BlobKind.FILE, 1, False)
    reader = await node.moments.open_blob(ref)
    whole = await asyncio.to_thread(reader.read_many, 0, len(reader.addresses))
    assert b"".join(whole) == data  # not "a chunk of this photo or file went missing"
