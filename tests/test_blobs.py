"""Blobs and photos: chunks verified on read, tampering caught, location removed, pixels kept."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from p2pmoments.core.blobs import (
    CHUNK_SIZE,
    BlobKind,
    chunk_address,
    decode_ref,
    decrypt_blob,
    decrypt_chunk,
    encrypt_blob,
)
from p2pmoments.core.errors import DecodeError
from p2pmoments.errors import UserInputError
from p2pmoments.media import THUMBNAIL_SIZE, prepare_photo
from tests.photos import has_location, photo_with_location, pixels


@settings(max_examples=30)
@given(data=st.binary(max_size=3 * CHUNK_SIZE + 7))
def test_round_trip_through_chunks(data: bytes) -> None:
    ref, chunks = encrypt_blob(data, kind=BlobKind.FILE, media_type="x/y", name="n")
    assert b"".join(decrypt_blob(ref, [c for _, c in chunks])) == data
    assert decode_ref(ref.as_map()) == ref
    assert all(data[:32] not in c for _, c in chunks if len(data) >= 32)  # stored encrypted


@settings(max_examples=50)
@given(data=st.data())
def test_a_tampered_or_swapped_chunk_is_caught(data: st.DataObject) -> None:
    ref, chunks = encrypt_blob(b"x" * (2 * CHUNK_SIZE + 10), kind=BlobKind.FILE, media_type="x/y")
    i = data.draw(st.integers(0, len(chunks) - 1))
    tampered = bytearray(chunks[i][1])
    pos = data.draw(st.integers(0, len(tampered) - 1))
    tampered[pos] ^= 1
    with pytest.raises(DecodeError):
        decrypt_chunk(ref, i, bytes(tampered))
    with pytest.raises(DecodeError):
        decrypt_chunk(ref, (i + 1) % len(chunks), chunks[i][1])  # right bytes, wrong place


@given(
    raw=st.dictionaries(
        st.integers(0, 12),
        st.one_of(st.integers(), st.binary(max_size=40), st.text(max_size=10)),
        max_size=8,
    )
)
def test_hostile_references_are_refused(raw: dict[int, object]) -> None:
    with contextlib.suppress(DecodeError):
        decode_ref(raw)


def test_location_is_removed_and_every_pixel_kept() -> None:
    original = photo_with_location()
    assert has_location(original)
    photo = prepare_photo(original)
    assert not has_location(photo.data)
    assert pixels(photo.data) == pixels(original)
    assert Image.open(io.BytesIO(photo.data)).getexif()[0x010F] == "TestCam"  # the rest stays
    assert (photo.width, photo.height) == (1200, 800)
    thumb = Image.open(io.BytesIO(photo.thumbnail))
    assert thumb.format == "JPEG"
    assert max(thumb.size) == THUMBNAIL_SIZE
    assert not thumb.getexif()


def test_location_can_be_kept_when_configured() -> None:
    assert has_location(prepare_photo(photo_with_location(), keep_location=True).data)


def test_png_location_is_removed_losslessly() -> None:
    original = photo_with_location(300, 200, "PNG")
    photo = prepare_photo(original)
    assert not has_location(photo.data)
    assert pixels(photo.data) == pixels(original)


@pytest.mark.parametrize("data", [b"", b"not an image", b"\xff\xd8\xff" + b"\x00" * 50])
def test_things_that_are_not_photos_are_refused(data: bytes) -> None:
    with pytest.raises(UserInputError, match="not a photo"):
        prepare_photo(data)


def test_a_received_chunk_torn_by_a_crash_is_found_deleted_and_then_missing(
    tmp_path: Path,
) -> None:
    """Chunks from peers are written without waiting for the disk; one a crash left torn
    must never be served or read as good: it is dropped, and so asked for again."""
    from p2pmoments.blobstore import BlobStore

    store = BlobStore(tmp_path)
    good = b"\x07" * 1000
    other = b"\x08" * 1000
    address, other_address = chunk_address(good), chunk_address(other)
    assert store.put_received([(address, good), (other_address, b"not what it says")]) == [address]
    assert store.get(address) == good
    assert not store.has(other_address)  # a chunk that is not its address is not kept
    path = next(p for p in tmp_path.rglob("*") if p.is_file())
    path.write_bytes(good[:500])  # what a crash can leave behind...
    after_restart = BlobStore(tmp_path)  # ...and a crash ends the daemon
    assert after_restart.get(address) is None
    assert not after_restart.has(address)  # so the next link asks for it again
