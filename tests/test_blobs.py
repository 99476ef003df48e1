"""Blobs and photos: chunks verified on read, tampering caught, location removed, pixels kept."""

from __future__ import annotations

import contextlib
import io
import itertools
import os
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from p2pmoments.core.blobs import (
    BIG_CHUNK_SIZE,
    CHUNK_SIZE,
    INLINE_BYTES,
    MAX_BLOB,
    BlobKind,
    chunk_address,
    chunk_matches,
    decode_ref,
    decrypt_blob,
    decrypt_chunk,
    encrypt_blob,
    open_index_piece,
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
    with pytest.raises(UserInputError, match="not a picture"):
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


# --- issue 13: blobs of any size --------------------------------------------------------


def test_a_blob_fed_in_any_pieces_is_the_same_blob() -> None:
    """The encoder cuts chunks where the plaintext says, not where the pieces end."""
    from p2pmoments.core.blobs import BlobEncoder

    data = os.urandom(BIG_CHUNK_SIZE * 3 + INLINE_BYTES // 3)
    whole = BlobEncoder(bytes(32))
    expected = whole.feed(data)
    ref, last = whole.finish(kind=BlobKind.FILE, media_type="x/y")
    pieces = BlobEncoder(bytes(32))
    got = []
    for start, size in zip(range(0, len(data), 77_777), itertools.repeat(77_777), strict=False):
        got += pieces.feed(data[start : start + size])
    again, tail = pieces.finish(kind=BlobKind.FILE, media_type="x/y")
    assert got + tail == expected + last
    assert again == ref


@pytest.mark.parametrize(
    ("size", "version", "chunks"),
    [
        (0, 1, 1),
        (INLINE_BYTES, 1, 16),  # the first form up to 4 MiB: every daemon reads it
        (INLINE_BYTES + 1, 2, 9),  # then chunks of 512 KiB named by an index
        (9 * BIG_CHUNK_SIZE, 2, 9),
    ],
)
def test_the_form_of_a_blob_follows_its_size(size: int, version: int, chunks: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    ref, out = encrypt_blob(data, kind=BlobKind.FILE, media_type="x/y", name="n")
    assert ref.version == version
    assert ref.chunk_count == chunks
    assert decode_ref(ref.as_map()) == ref
    assert len(out) == ref.total() == chunks + len(ref.index)
    if version == 1:
        assert b"".join(decrypt_blob(ref, [c for _, c in out])) == data
        return
    # The index pieces come last; they name the chunks, in order.
    named = [a for p, (_, c) in enumerate(out[chunks:]) for a in open_index_piece(ref, p, c)]
    assert named == [a for a, _ in out[:chunks]]
    assert b"".join(decrypt_blob(ref, [c for _, c in out[:chunks]], named)) == data


def test_an_index_of_several_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("p2pmoments.core.blobs.INDEX_PIECE", 4)
    data = os.urandom(9 * BIG_CHUNK_SIZE + 5)
    ref, out = encrypt_blob(data, kind=BlobKind.FILE, media_type="x/y")
    assert ref.chunk_count == 10
    assert len(ref.index) == 3  # 4 + 4 + 2 addresses
    named = [a for p, (_, c) in enumerate(out[10:]) for a in open_index_piece(ref, p, c)]
    assert named == [a for a, _ in out[:10]]
    with pytest.raises(DecodeError):
        open_index_piece(ref, 1, out[10][1])  # a piece in another's place
    assert decode_ref(ref.as_map()) == ref


def test_a_chunk_matches_its_address_by_either_hash_and_nothing_else() -> None:
    small, small_chunks = encrypt_blob(b"x" * 1000, kind=BlobKind.FILE, media_type="x/y")
    big, big_chunks = encrypt_blob(
        os.urandom(INLINE_BYTES + 1), kind=BlobKind.FILE, media_type="x/y"
    )
    for address, chunk in small_chunks + big_chunks:
        assert chunk_matches(address, chunk)
        assert not chunk_matches(address, chunk[:-1])
    assert chunk_address(small_chunks[0][1], 1) == small.chunks[0]  # BLAKE2b: the first form
    assert chunk_address(big_chunks[-1][1], 2) == big.index[0]  # SHA-256: the second
    with pytest.raises(DecodeError):  # the right bytes in the wrong place
        decrypt_chunk(big, 1, big_chunks[0][1], big_chunks[0][0])
    # A writer that named its chunk by the other form's hash: what arrives by that
    # address (either hash matches) is read too, not stored and then never readable.
    other = replace(small, chunks=(chunk_address(small_chunks[0][1], 2),))
    assert decrypt_chunk(other, 0, small_chunks[0][1]) == b"x" * 1000


@pytest.mark.parametrize(
    "change",
    [
        {10: 1000},  # a chunk size that is not a power of two
        {10: 1 << 20},  # over what a chunk message carries
        {11: []},  # no index
        {5: []},  # both a list and an index
        {3: MAX_BLOB + 1},
    ],
)
def test_a_malformed_reference_of_the_second_form_is_refused(change: dict[int, object]) -> None:
    ref, _ = encrypt_blob(os.urandom(INLINE_BYTES + 1), kind=BlobKind.FILE, media_type="x/y")
    fields = ref.as_map() | change
    with pytest.raises(DecodeError):
        decode_ref(fields)


def test_packs_keep_chunks_on_block_boundaries_with_and_without_direct_io(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from p2pmoments import blobstore
    from p2pmoments.blobstore import ALIGN, BlobStore

    for direct in (True, False):
        if not direct:  # a file system that refuses O_DIRECT (tmpfs), or another system
            monkeypatch.setattr(blobstore, "_DIRECT", 0)
        store = BlobStore(tmp_path / f"direct-{direct}")
        _, chunks = encrypt_blob(os.urandom(3 * INLINE_BYTES), kind=BlobKind.FILE, media_type="x")
        _, small = encrypt_blob(b"tiny", kind=BlobKind.FILE, media_type="x")
        pack = store.new_pack()
        pack.append(small)
        pack.append(chunks)
        placed = dict(pack.finish())
        assert all(where.offset % ALIGN == 0 for where in placed.values())
        wanted = list(reversed(list(placed.items())))
        got = store.read_many_packed(wanted)
        assert got == [(a, c) for a, c in reversed(small + chunks)]
        assert store.read_packed(placed[small[0][0]]) == small[0][1]
        # A received chunk is a file of its own, written whole either way.
        address, chunk = chunks[3]
        store.put(address, chunk)
        assert store.get(address) == chunk
        assert (tmp_path / f"direct-{direct}").joinpath(
            address.hex()[:2], address.hex()
        ).stat().st_size == len(chunk)
        gone = store.new_pack()
        gone.append(chunks[:2])
        gone.abort()
        assert not gone.path.exists()


def test_blob_folders_are_private_and_their_entries_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another user on the machine cannot list the chunks; a folder made for a pack has
    its entry synced, so a crash cannot forget the folder holding a synced pack."""
    from p2pmoments import blobstore
    from p2pmoments.blobstore import BlobStore

    synced: list[Path] = []
    real = blobstore.fsync_dir
    monkeypatch.setattr(blobstore, "fsync_dir", lambda p: (synced.append(Path(p)), real(p)))
    root = tmp_path / "data" / "blobs"
    (tmp_path / "data").mkdir()
    store = BlobStore(root)
    _, chunks = encrypt_blob(b"tiny", kind=BlobKind.FILE, media_type="x")
    address, chunk = chunks[0]
    umask = os.umask(0o022)
    try:
        pack = store.new_pack()
        pack.append(chunks)
        pack.finish()
        store.put(address, chunk)
    finally:
        os.umask(umask)
    made = [root, root / "packs", pack.path.parent, root / address.hex()[:2]]
    for folder in made:
        assert folder.stat().st_mode & 0o777 == 0o700, folder
    for folder in made[:3]:
        assert folder.parent in synced, f"{folder}'s entry in {folder.parent} was not synced"


def test_a_pack_is_read_the_ordinary_way_where_direct_reads_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some file systems take O_DIRECT when a file is opened and refuse it when it is
    read (EINVAL): our chunks are still served, read without it."""
    import errno

    from p2pmoments import blobstore
    from p2pmoments.blobstore import BlobStore

    store = BlobStore(tmp_path / "blobs")
    _, chunks = encrypt_blob(os.urandom(3 * INLINE_BYTES), kind=BlobKind.FILE, media_type="x")
    pack = store.new_pack()
    pack.append(chunks)
    placed = pack.finish()
    if not blobstore._DIRECT:
        pytest.skip("this system has no O_DIRECT")

    def refuse(*args: object) -> int:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(blobstore.os, "preadv", refuse)
    assert store.read_many_packed(placed) == chunks


def _shared_anonymous_kib() -> int:
    """Resident KiB of this process's shared anonymous mappings (the aligned buffers)."""
    total, shared = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        parts = line.split()
        if "-" in parts[0] and ":" not in parts[0]:
            shared = len(parts) > 5 and parts[5] == "/dev/zero" and parts[1].endswith("s")
        elif parts[0] == "Rss:" and shared:
            total += int(parts[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs /proc (Linux)")
def test_threads_that_read_big_runs_of_packed_chunks_keep_little_memory(tmp_path: Path) -> None:
    """Four threads each read a 16 MiB file's chunks from their pack (runs of 4 MiB):
    each keeps at most a 1 MiB buffer afterwards, not the biggest it needed."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from p2pmoments import blobstore
    from p2pmoments.blobstore import BlobStore

    store = BlobStore(tmp_path / "blobs")
    _, chunks = encrypt_blob(os.urandom(16 << 20), kind=BlobKind.FILE, media_type="x")
    pack = store.new_pack()
    pack.append(chunks)
    placed = pack.finish()
    if not blobstore._DIRECT:
        pytest.skip("this system has no O_DIRECT")
    threads = 4
    together = threading.Barrier(threads, timeout=30)  # four threads, not one four times

    def read() -> bool:
        together.wait()
        return store.read_many_packed(placed) == chunks

    before = _shared_anonymous_kib()
    with ThreadPoolExecutor(threads) as pool:
        assert all(pool.map(lambda _: read(), range(threads)))
        kept = _shared_anonymous_kib() - before  # the threads are still alive here
    assert kept <= threads * 1024 + 512  # before: 4 MiB a thread
