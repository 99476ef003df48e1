"""Blob chunks on disk: data/blobs/<first 2 hex>/<address hex>, written whole.

Chunks are stored as they travel, encrypted (core.blobs). All methods block:
call them off the event loop.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from p2pmoments.core.blobs import CHUNK_SIZE, chunk_address
from p2pmoments.home import write_file_atomically

__all__ = ["BlobStore"]

MAX_CHUNK_FILE = CHUNK_SIZE + 16


class BlobStore:
    """Encrypted chunks, by address."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, address: bytes) -> Path:
        text = address.hex()
        return self.root / text[:2] / text

    def put(self, address: bytes, ciphertext: bytes) -> None:
        """Keep a chunk; its address must be its hash (checked)."""
        if chunk_address(ciphertext) != address:
            raise ValueError("a chunk's address is the hash of its bytes")
        path = self._path(address)
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_file_atomically(path, ciphertext, mode=0o600)

    def put_many(self, chunks: list[tuple[bytes, bytes]]) -> None:
        """Keep several chunks."""
        for address, ciphertext in chunks:
            self.put(address, ciphertext)

    def has(self, address: bytes) -> bool:
        """True if we hold the chunk."""
        return self._path(address).is_file()

    def get(self, address: bytes) -> bytes | None:
        """A chunk, or None if we do not hold it."""
        try:
            data = self._path(address).read_bytes()
        except FileNotFoundError:
            return None
        return data if len(data) <= MAX_CHUNK_FILE else None

    def delete(self, addresses: list[bytes]) -> None:
        """Remove chunks nothing uses any more."""
        for address in addresses:
            with contextlib.suppress(FileNotFoundError):
                self._path(address).unlink()
