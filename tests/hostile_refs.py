"""Chunk indexes as a hostile member makes them (issue 22, 4): shared by the tests of
hostile indexes and benchmarks/costs.py."""

from __future__ import annotations

from p2pmoments.core.blobs import (
    BIG_CHUNK_SIZE,
    INDEX_PIECE,
    BlobKind,
    BlobRef,
    _index_nonce,
    _size_ad,
    chunk_address,
)
from p2pmoments.core.crypto import Aead, random_bytes

__all__ = ["hostile_index"]


def hostile_index(pieces: int = 1) -> tuple[BlobRef, bytes, bytes]:
    """A second-form file reference of `pieces` index pieces (up to 128: 1 TiB claimed)
    whose first piece names 16,384 chunks that exist nowhere, and whose later pieces
    exist nowhere either: (reference, first piece's address, first piece). Its author
    serves the first piece, and nothing else."""
    key = random_bytes(32)
    size = pieces * INDEX_PIECE * BIG_CHUNK_SIZE
    plain = b"".join(random_bytes(32) for _ in range(INDEX_PIECE))
    piece = Aead(key).encrypt(_index_nonce(0), _size_ad(size), plain)
    address = chunk_address(piece, 2)
    ref = BlobRef(
        kind=BlobKind.FILE,
        media_type="",
        size=size,
        key=key,
        chunk_size=BIG_CHUNK_SIZE,
        index=(address, *(random_bytes(32) for _ in range(pieces - 1))),
        name="claim.bin",
    )
    return ref, address, piece
