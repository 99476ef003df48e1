"""Blobs: photos and files, encrypted with their own key, in verifiable chunks (spec/moments.md §4).

A blob's plaintext is split into chunks of CHUNK_SIZE bytes. Chunk i is
encrypted with ChaCha20-Poly1305 under the blob's own random key, nonce i (the
key is never reused, so neither is a nonce), with the blob's total size as
associated data. A chunk is addressed by the BLAKE2b-256 hash of its
ciphertext: anyone can check a chunk against its address on arrival, only
holders of the blob key (carried in the encrypted moment) can read it.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from p2pmoments.core.crypto import CryptoError, aead_decrypt, aead_encrypt, random_bytes
from p2pmoments.core.errors import DecodeError

__all__ = [
    "CHUNK_SIZE",
    "MAX_BLOB",
    "BlobKind",
    "BlobRef",
    "chunk_address",
    "decode_ref",
    "decrypt_chunk",
    "encrypt_blob",
]

CHUNK_SIZE = 256 * 1024
MAX_BLOB = 512 * 1024 * 1024
_PERSON = b"p2pm-chunk"


class BlobKind(enum.IntEnum):
    """What a blob holds."""

    PHOTO = 1
    FILE = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobRef:
    """What a moment says about one of its blobs (inside its encrypted content)."""

    kind: BlobKind
    media_type: str
    size: int
    key: bytes
    chunks: tuple[bytes, ...]
    name: str = ""  # a file's name
    width: int = 0  # photos
    height: int = 0
    thumbnail: BlobRef | None = None  # photos: a small JPEG

    def as_map(self) -> dict[int, Any]:
        """The CBOR form (spec/moments.md §4)."""
        out: dict[int, Any] = {
            1: int(self.kind),
            2: self.media_type,
            3: self.size,
            4: self.key,
            5: list(self.chunks),
        }
        if self.name:
            out[6] = self.name
        if self.width or self.height:
            out[7], out[8] = self.width, self.height
        if self.thumbnail is not None:
            out[9] = self.thumbnail.as_map()
        return out

    def addresses(self) -> list[bytes]:
        """Every chunk address of the blob, its thumbnail's included."""
        return [*self.chunks, *(self.thumbnail.addresses() if self.thumbnail else [])]

    def __repr__(self) -> str:
        return f"BlobRef({self.kind.name}, {self.media_type}, {self.size} bytes)"


def chunk_address(ciphertext: bytes) -> bytes:
    """The address of an encrypted chunk."""
    return hashlib.blake2b(ciphertext, digest_size=32, person=_PERSON).digest()


def _chunk_count(size: int) -> int:
    return max(1, -(-size // CHUNK_SIZE))


def encrypt_blob(
    data: bytes, key: bytes | None = None, **meta: Any
) -> tuple[BlobRef, list[tuple[bytes, bytes]]]:
    """A new blob of `data`: its reference and its (address, ciphertext) chunks.

    `key` is for the worked examples of spec/moments.md only; leave it out."""
    if len(data) > MAX_BLOB:
        raise DecodeError(f"a photo or file is at most {MAX_BLOB // (1 << 20)} MiB")
    key = random_bytes(32) if key is None else key
    ad = len(data).to_bytes(8, "big")
    chunks = []
    for i in range(_chunk_count(len(data))):
        ciphertext = aead_encrypt(key, i, ad, data[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE])
        chunks.append((chunk_address(ciphertext), ciphertext))
    ref = BlobRef(size=len(data), key=key, chunks=tuple(a for a, _ in chunks), **meta)
    return ref, chunks


def decrypt_chunk(ref: BlobRef, index: int, ciphertext: bytes) -> bytes:
    """Check a chunk against its address and decrypt it; DecodeError if it is not the one."""
    if not 0 <= index < len(ref.chunks) or chunk_address(ciphertext) != ref.chunks[index]:
        raise DecodeError("this chunk is not the one its address names")
    try:
        plain = aead_decrypt(ref.key, index, ref.size.to_bytes(8, "big"), ciphertext)
    except CryptoError:
        raise DecodeError("this chunk does not decrypt under its blob key") from None
    last = index == len(ref.chunks) - 1
    expected = ref.size - index * CHUNK_SIZE if last else CHUNK_SIZE
    if len(plain) != expected:
        raise DecodeError("this chunk has the wrong length")
    return plain


def decrypt_blob(ref: BlobRef, chunks: Sequence[bytes]) -> Iterator[bytes]:
    """The plaintext of a blob, chunk by chunk."""
    for i, ciphertext in enumerate(chunks):
        yield decrypt_chunk(ref, i, ciphertext)


def _text(fields: dict[int, Any], key: int, limit: int) -> str:
    value = fields.get(key, "")
    if type(value) is not str or len(value.encode()) > limit:
        raise DecodeError(f"malformed blob reference field {key}")
    return value


def decode_ref(fields: object, *, depth: int = 0) -> BlobRef:
    """A BlobRef from its CBOR map; DecodeError if anything is off."""
    if type(fields) is not dict or depth > 1:
        raise DecodeError("malformed blob reference")
    raw_kind = fields.get(1)
    try:
        kind = BlobKind(raw_kind if type(raw_kind) is int else -1)
    except ValueError:
        raise DecodeError("unknown kind of blob") from None
    size, key, chunks = fields.get(3), fields.get(4), fields.get(5)
    if type(size) is not int or not 0 <= size <= MAX_BLOB:
        raise DecodeError("bad blob size")
    if type(key) is not bytes or len(key) != 32:
        raise DecodeError("bad blob key")
    if (
        type(chunks) is not list
        or len(chunks) != _chunk_count(size)
        or not all(type(c) is bytes and len(c) == 32 for c in chunks)
    ):
        raise DecodeError("bad chunk list")
    width, height = fields.get(7, 0), fields.get(8, 0)
    if type(width) is not int or type(height) is not int or width < 0 or height < 0:
        raise DecodeError("bad photo size")
    thumb = fields.get(9)
    return BlobRef(
        kind=kind,
        media_type=_text(fields, 2, 100),
        size=size,
        key=key,
        chunks=tuple(chunks),
        name=_text(fields, 6, 255),
        width=width,
        height=height,
        thumbnail=None if thumb is None else decode_ref(thumb, depth=depth + 1),
    )
