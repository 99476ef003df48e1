"""Blobs: photos and files, encrypted with their own key, in verifiable chunks (spec/moments.md §4).

A blob's plaintext is split into chunks. Chunk i is encrypted with ChaCha20-Poly1305
under the blob's own random key, nonce i (the key is never reused, so neither is a
nonce). A chunk is addressed by the BLAKE2b-256 hash of its ciphertext: anyone can
check a chunk against its address on arrival, only holders of the blob key (carried in
the encrypted moment) can read it.

A reference takes one of two forms. The first (version 1) lists every chunk address
inline, chunks of 256 KiB, the blob's size as associated data, addresses by BLAKE2b: it
suits small blobs, and is what every daemon reads. The second (version 2) is for blobs
of any size: chunks of 512 KiB, addresses by SHA-256 (which this kind of machine hashes
more than twice as fast, with its SHA extensions), and instead of the list, the
addresses of a *chunk index*: the list of chunk addresses, encrypted in pieces under the
blob key and stored and fetched like any chunk, so a reference stays small however big
the blob (an envelope is at most 64 KiB). A chunk matches an address if either hash of
it is that address.

A reference of the second form may also *borrow* runs of chunks from earlier blobs (a
file's new version, spec/moments.md section 9): chunk i of such a run is the earlier
blob's chunk i, encrypted under that blob's key (named in the reference) with the same
nonce i; the blob's own key encrypts only its other chunks, so no key meets a nonce twice.

`BlobEncoder` encrypts a blob as it arrives, piece by piece, without knowing its size
in advance: it holds the first INLINE_BYTES back, and a blob that ends within them takes
the first form. Pure: the shell writes the chunks it returns.
"""

from __future__ import annotations

import bisect
import enum
import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from p2pmoments.core.crypto import Aead, CryptoError, random_bytes
from p2pmoments.core.errors import DecodeError

__all__ = [
    "BIG_CHUNK_SIZE",
    "CHUNK_SIZE",
    "INDEX_PIECE",
    "INLINE_BYTES",
    "MAX_BLOB",
    "MAX_BORROWED_KEYS",
    "MAX_BORROWED_RUNS",
    "MAX_CAPTION",
    "MAX_CHUNK",
    "MAX_INDEX_PIECES",
    "MAX_MEDIA_TYPE",
    "MEDIA_TYPE",
    "PHOTO_TYPES",
    "VIDEO_TYPES",
    "BlobEncoder",
    "BlobKind",
    "BlobRef",
    "chunk_address",
    "chunk_matches",
    "decode_ref",
    "decrypt_chunk",
    "encrypt_blob",
    "open_index_piece",
]

CHUNK_SIZE = 256 * 1024  # version 1: every blob; ours now only those up to INLINE_BYTES
BIG_CHUNK_SIZE = 512 * 1024  # version 2: what we post (a chunk message must stay under 1 MiB)
MIN_CHUNK_SIZE = 64 * 1024
MAX_CHUNK = BIG_CHUNK_SIZE + 16  # the largest encrypted chunk or index piece
INLINE_CHUNKS = 16  # at most this many addresses inline (version 1)
INLINE_BYTES = INLINE_CHUNKS * CHUNK_SIZE  # a blob up to 4 MiB takes the first form
MAX_BLOB_V1 = 512 * 1024 * 1024
MAX_BORROWED_KEYS = 16  # earlier blobs' keys one reference names (section 9)
MAX_BORROWED_RUNS = 4096  # runs of chunks it borrows from them
INDEX_PIECE = 16384  # addresses in one piece of a chunk index (512 KiB: one chunk message)
MAX_INDEX_PIECES = 128
MAX_BLOB = MAX_INDEX_PIECES * INDEX_PIECE * BIG_CHUNK_SIZE  # 1 TiB
ADDRESS = 32
# What a reference may declare (spec/moments.md section 4). A declared type is data the
# author chose: it is shown, never sent as a header (api/routes.py serves photos only as
# one of PHOTO_TYPES and files as application/octet-stream).
MAX_MEDIA_TYPE = 100
MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*", re.ASCII)
PHOTO_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif"})
# Files a member's daemon serves as their own type, for a page to play (moments.md 4.8).
VIDEO_TYPES = frozenset({"video/mp4", "video/webm"})
MAX_CAPTION = 512  # bytes of UTF-8 in a photo's caption (spec/moments.md section 4, key 13)
_PERSON = b"p2pm-chunk"
_SHA256 = hashlib.sha256(b"p2pm-chunk-2\x00")  # version 2's addresses: SHA-256 of this || chunk
_INDEX_DOMAIN = b"\x01\x00\x00\x00"  # an index piece's nonce starts so; a chunk's with zeros


class BlobKind(enum.IntEnum):
    """What a blob holds."""

    PHOTO = 1
    FILE = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobRef:
    """What a moment says about one of its blobs (inside its encrypted content).

    Version 1 lists its `chunks`; version 2 names its chunk `index` instead (the chunk
    addresses are then read from the index: `chunks` is empty)."""

    kind: BlobKind
    media_type: str
    size: int
    key: bytes = field(repr=False)
    chunks: tuple[bytes, ...] = ()
    chunk_size: int = CHUNK_SIZE
    index: tuple[bytes, ...] = ()  # version 2: the chunk index's pieces, in order
    name: str = ""  # a file's name
    width: int = 0  # photos
    height: int = 0
    thumbnail: BlobRef | None = None  # photos: a small JPEG
    # Version 2 only: (first, count, key) runs of chunks borrowed from earlier blobs,
    # sorted by first, never overlapping (spec/moments.md section 9).
    borrowed: tuple[tuple[int, int, bytes], ...] = field(default=(), repr=False)
    caption: str = ""  # photos: a few words under it (since version 4 of spec/moments.md)

    @property
    def version(self) -> int:
        """1: the chunks are listed; 2: they are in a chunk index."""
        return 2 if self.index else 1

    @property
    def chunk_count(self) -> int:
        """How many chunks its plaintext is cut into (at least 1)."""
        return max(1, -(-self.size // self.chunk_size))

    def as_map(self) -> dict[int, Any]:
        """The CBOR form (spec/moments.md §4)."""
        out: dict[int, Any] = {1: int(self.kind), 2: self.media_type, 3: self.size, 4: self.key}
        if self.index:
            out[10] = self.chunk_size
            out[11] = list(self.index)
        else:
            out[5] = list(self.chunks)
        if self.borrowed:
            keys = list(dict.fromkeys(key for _, _, key in self.borrowed))
            out[12] = [
                [key, [n for first, count, k in self.borrowed if k == key for n in (first, count)]]
                for key in keys
            ]
        if self.name:
            out[6] = self.name
        if self.width or self.height:
            out[7], out[8] = self.width, self.height
        if self.thumbnail is not None:
            out[9] = self.thumbnail.as_map()
        if self.caption:
            out[13] = self.caption
        return out

    def addresses(self) -> list[bytes]:
        """Every address the reference itself names, its thumbnail's included: the chunks
        of version 1, the index pieces of version 2 (its chunks are in the index)."""
        own = self.index or self.chunks
        return [*own, *(self.thumbnail.addresses() if self.thumbnail else [])]

    def total(self) -> int:
        """How many chunks travel for it, index pieces and thumbnail included."""
        own = len(self.index) + self.chunk_count if self.index else len(self.chunks)
        return own + (self.thumbnail.total() if self.thumbnail else 0)

    def key_at(self, index: int) -> bytes:
        """The key chunk `index` is encrypted under: its own, or a borrowed run's."""
        if self.borrowed:
            run = bisect.bisect_right(self.borrowed, index, key=lambda r: r[0]) - 1
            if run >= 0:
                first, count, key = self.borrowed[run]
                if index < first + count:
                    return key
        return self.key

    def index_piece_length(self, piece: int) -> int:
        """How many chunk addresses piece `piece` of the index lists."""
        return min(INDEX_PIECE, self.chunk_count - piece * INDEX_PIECE)

    def __repr__(self) -> str:
        return f"BlobRef({self.kind.name}, {self.media_type}, {self.size} bytes, v{self.version})"


def chunk_address(ciphertext: bytes | memoryview, version: int = 1) -> bytes:
    """The address of an encrypted chunk of a blob of the first or second form."""
    if version == 1:
        return hashlib.blake2b(ciphertext, digest_size=32, person=_PERSON).digest()
    h = _SHA256.copy()
    h.update(ciphertext)
    return h.digest()


def chunk_matches(address: bytes, ciphertext: bytes | memoryview) -> bool:
    """True if the chunk is the one `address` names, whichever form its blob takes (the
    second form's hash first: it carries most bytes)."""
    return chunk_address(ciphertext, 2) == address or chunk_address(ciphertext, 1) == address


def _size_ad(size: int) -> bytes:
    return size.to_bytes(8, "big")


def _index_nonce(piece: int) -> bytes:
    return _INDEX_DOMAIN + piece.to_bytes(8, "little")


class BlobEncoder:
    """Encrypts one blob as its plaintext arrives: `feed` pieces of any size, then
    `finish`; each returns the (address, ciphertext) chunks that are ready, in order.

    Holds at most INLINE_BYTES plus one chunk of plaintext: the first INLINE_BYTES are
    kept back until it is known whether the blob ends within them (then it is encrypted
    in the first form, which needs its size up front)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = random_bytes(32) if key is None else key
        self._aead = Aead(self._key)
        self._held = bytearray()
        self._big = False  # the second form: past INLINE_BYTES
        self._addresses: list[bytes] = []
        self._size = 0
        self._done = False

    @property
    def size(self) -> int:
        """Bytes fed so far."""
        return self._size

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """Take more plaintext; returns the chunks now ready."""
        if self._done:
            raise ValueError("this blob is finished")
        self._size += len(data)
        if self._size > MAX_BLOB:
            raise DecodeError(f"a photo or file is at most {MAX_BLOB >> 40} TiB")
        self._held += data
        if not self._big and len(self._held) <= INLINE_BYTES:
            return []
        self._big = True
        out = []
        whole = len(self._held) // BIG_CHUNK_SIZE * BIG_CHUNK_SIZE
        view = memoryview(self._held)
        for start in range(0, whole, BIG_CHUNK_SIZE):
            out.append(self._chunk(view[start : start + BIG_CHUNK_SIZE], b"", 2))
        view.release()
        del self._held[:whole]
        return out

    def _chunk(self, plain: bytes | memoryview, ad: bytes, version: int) -> tuple[bytes, bytes]:
        ciphertext = self._aead.encrypt_counter(len(self._addresses), ad, plain)
        address = chunk_address(ciphertext, version)
        self._addresses.append(address)
        return address, ciphertext

    def finish(self, **meta: Any) -> tuple[BlobRef, list[tuple[bytes, bytes]]]:
        """The reference (with `meta`: kind, media_type, name, ...) and the last chunks:
        those of the plaintext still held, and, in the second form, the index pieces."""
        if self._done:
            raise ValueError("this blob is finished")
        self._done = True
        held, self._held = bytes(self._held), bytearray()
        if not self._big:
            ad = _size_ad(self._size)
            out = [
                self._chunk(held[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE], ad, 1)
                for i in range(max(1, -(-len(held) // CHUNK_SIZE)))
            ]
            ref = BlobRef(size=self._size, key=self._key, chunks=tuple(self._addresses), **meta)
            return ref, out
        out = [self._chunk(held, b"", 2)] if held else []
        index = []
        ad = _size_ad(self._size)
        for piece, start in enumerate(range(0, len(self._addresses), INDEX_PIECE)):
            plain = b"".join(self._addresses[start : start + INDEX_PIECE])
            ciphertext = self._aead.encrypt(_index_nonce(piece), ad, plain)
            address = chunk_address(ciphertext, 2)
            index.append(address)
            out.append((address, ciphertext))
        ref = BlobRef(
            size=self._size,
            key=self._key,
            chunk_size=BIG_CHUNK_SIZE,
            index=tuple(index),
            **meta,
        )
        return ref, out

    def chunk_addresses(self) -> list[bytes]:
        """The addresses of the blob's chunks so far, in order (not its index pieces)."""
        return list(self._addresses)


def encrypt_blob(
    data: bytes, key: bytes | None = None, **meta: Any
) -> tuple[BlobRef, list[tuple[bytes, bytes]]]:
    """A new blob of `data`: its reference and every (address, ciphertext) chunk, index
    pieces last. `key` is for the worked examples of spec/moments.md only; leave it out."""
    encoder = BlobEncoder(key)
    chunks = encoder.feed(data)
    ref, last = encoder.finish(**meta)
    return ref, chunks + last


def decrypt_chunk(
    ref: BlobRef, index: int, ciphertext: bytes, address: bytes | None = None
) -> bytes:
    """Check a chunk against its address and decrypt it; DecodeError if it is not the one.

    Version 1 names the address itself; for version 2 the caller gives the one the
    chunk index lists (open_index_piece)."""
    if address is None:
        if not 0 <= index < len(ref.chunks):
            raise DecodeError("this chunk is not the one its address names")
        address = ref.chunks[index]
    if not 0 <= index < ref.chunk_count or (
        chunk_address(ciphertext, ref.version) != address
        and not chunk_matches(address, ciphertext)  # either hash, as when it arrived
    ):
        raise DecodeError("this chunk is not the one its address names")
    ad = b"" if ref.index else _size_ad(ref.size)
    try:
        plain = Aead(ref.key_at(index)).decrypt_counter(index, ad, ciphertext)
    except CryptoError:
        raise DecodeError("this chunk does not decrypt under its blob key") from None
    last = index == ref.chunk_count - 1
    expected = ref.size - index * ref.chunk_size if last else ref.chunk_size
    if len(plain) != expected:
        raise DecodeError("this chunk has the wrong length")
    return plain


def open_index_piece(ref: BlobRef, piece: int, ciphertext: bytes) -> list[bytes]:
    """The chunk addresses listed by piece `piece` of a version 2 blob's index, checked
    against its address and decrypted; DecodeError if it is not the one."""
    if not 0 <= piece < len(ref.index) or not chunk_matches(ref.index[piece], ciphertext):
        raise DecodeError("this index piece is not the one its address names")
    try:
        plain = Aead(ref.key).decrypt(_index_nonce(piece), _size_ad(ref.size), ciphertext)
    except CryptoError:
        raise DecodeError("this index piece does not decrypt under its blob key") from None
    if len(plain) != ADDRESS * ref.index_piece_length(piece):
        raise DecodeError("this index piece has the wrong length")
    return [plain[i : i + ADDRESS] for i in range(0, len(plain), ADDRESS)]


def decrypt_blob(
    ref: BlobRef, chunks: Sequence[bytes], addresses: Sequence[bytes] = ()
) -> Iterator[bytes]:
    """The plaintext of a blob, chunk by chunk (`addresses`: a version 2 blob's, from its
    index)."""
    for i, ciphertext in enumerate(chunks):
        yield decrypt_chunk(ref, i, ciphertext, addresses[i] if addresses else None)


def _text(fields: dict[int, Any], key: int, limit: int) -> str:
    value = fields.get(key, "")
    if type(value) is not str or len(value.encode()) > limit:
        raise DecodeError(f"malformed blob reference field {key}")
    return value


def _addresses(value: object, count: int) -> tuple[bytes, ...]:
    if (
        type(value) is not list
        or len(value) != count
        or not all(type(c) is bytes and len(c) == ADDRESS for c in value)
    ):
        raise DecodeError("bad chunk list")
    return tuple(value)


def decode_ref(fields: object, *, depth: int = 0) -> BlobRef:
    """A BlobRef from its CBOR map, either form; DecodeError if anything is off."""
    if type(fields) is not dict or depth > 1:
        raise DecodeError("malformed blob reference")
    raw_kind = fields.get(1)
    try:
        kind = BlobKind(raw_kind if type(raw_kind) is int else -1)
    except ValueError:
        raise DecodeError("unknown kind of blob") from None
    size, key = fields.get(3), fields.get(4)
    if type(key) is not bytes or len(key) != 32:
        raise DecodeError("bad blob key")
    if (5 in fields) == (11 in fields):
        raise DecodeError("a blob reference lists its chunks or names its index, not both")
    chunks: tuple[bytes, ...] = ()
    index: tuple[bytes, ...] = ()
    if 5 in fields:  # the first form
        if 10 in fields or type(size) is not int or not 0 <= size <= MAX_BLOB_V1:
            raise DecodeError("bad blob size")
        chunk_size = CHUNK_SIZE
        chunks = _addresses(fields[5], max(1, -(-size // CHUNK_SIZE)))
    else:
        raw_chunk_size = fields.get(10)
        if (
            type(raw_chunk_size) is not int
            or not MIN_CHUNK_SIZE <= raw_chunk_size <= BIG_CHUNK_SIZE
            or raw_chunk_size & (raw_chunk_size - 1)
        ):
            raise DecodeError("bad chunk size")
        chunk_size = raw_chunk_size
        if type(size) is not int or not 0 <= size <= MAX_BLOB:
            raise DecodeError("bad blob size")
        count = max(1, -(-size // chunk_size))
        pieces = -(-count // INDEX_PIECE)
        if pieces > MAX_INDEX_PIECES:
            raise DecodeError("bad blob size")
        index = _addresses(fields[11], pieces)
    borrowed = _borrowed(fields.get(12), index, key, max(1, -(-size // chunk_size)))
    width, height = fields.get(7, 0), fields.get(8, 0)
    if type(width) is not int or type(height) is not int or width < 0 or height < 0:
        raise DecodeError("bad photo size")
    thumb = fields.get(9)
    media_type = _text(fields, 2, MAX_MEDIA_TYPE)
    if kind is BlobKind.PHOTO and media_type not in PHOTO_TYPES:
        raise DecodeError("a photo is a JPEG, PNG, WebP or GIF image")
    if media_type and MEDIA_TYPE.fullmatch(media_type) is None:
        raise DecodeError("malformed media type")
    return BlobRef(
        kind=kind,
        media_type=media_type,
        size=size,
        key=key,
        chunks=chunks,
        chunk_size=chunk_size,
        index=index,
        name=_text(fields, 6, 255),
        width=width,
        height=height,
        thumbnail=None if thumb is None else decode_ref(thumb, depth=depth + 1),
        borrowed=borrowed,
        caption=_text(fields, 13, MAX_CAPTION),
    )


def _borrowed(
    value: object, index: tuple[bytes, ...], own: bytes, count: int
) -> tuple[tuple[int, int, bytes], ...]:
    """Field 12, checked: runs of a version 2 blob's chunks under other keys, each key
    named once and none its own, runs within the blob and apart, within the bounds."""
    if value is None:
        return ()
    if not index or type(value) is not list or not 0 < len(value) <= MAX_BORROWED_KEYS:
        raise DecodeError("bad borrowed chunks")
    runs: list[tuple[int, int, bytes]] = []
    keys: set[bytes] = set()
    for entry in value:
        if type(entry) is not list or len(entry) != 2:
            raise DecodeError("bad borrowed chunks")
        key, flat = entry
        if type(key) is not bytes or len(key) != 32 or key == own or key in keys:
            raise DecodeError("bad borrowed key")
        keys.add(key)
        if (
            type(flat) is not list
            or not flat
            or len(flat) % 2
            or len(runs) + len(flat) // 2 > MAX_BORROWED_RUNS
            or not all(type(n) is int for n in flat)
        ):
            raise DecodeError("bad borrowed runs")
        runs += [(flat[i], flat[i + 1], key) for i in range(0, len(flat), 2)]
    runs.sort(key=lambda r: r[0])
    end = 0
    for first, length, _ in runs:
        if first < end or length < 1 or first + length > count:
            raise DecodeError("bad borrowed runs")
        end = first + length
    return tuple(runs)


def with_thumbnail(ref: BlobRef, thumbnail: BlobRef) -> BlobRef:
    """`ref` carrying `thumbnail`."""
    return replace(ref, thumbnail=thumbnail)
