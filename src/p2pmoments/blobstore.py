"""Blob chunks on disk: data/blobs/<first 2 hex>/<address hex>, written whole.

Chunks are stored as they travel, encrypted (core.blobs). All methods block:
call them off the event loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
from pathlib import Path

from p2pmoments.core.blobs import CHUNK_SIZE, chunk_address
from p2pmoments.files import write_file_atomically

__all__ = ["BlobStore"]

MAX_CHUNK_FILE = CHUNK_SIZE + 16
MAX_CHECKED = 1 << 16  # chunks remembered as checked (16 GiB of data; about 6 MiB of memory)

_CHUNK_NAME = re.compile(r"[0-9a-f]{64}", re.ASCII)

log = logging.getLogger(__name__)


class BlobStore:
    """Encrypted chunks, by address."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # Chunks this process wrote or has checked: only a crash tears a chunk, and a
        # crash ends the process, so these need no hashing again when read or served.
        self._checked: set[bytes] = set()
        self._folders: set[Path] = set()  # the 256 folders, once made

    def _path(self, address: bytes) -> Path:
        text = address.hex()
        return self.root / text[:2] / text

    def put(self, address: bytes, ciphertext: bytes, *, received: bool = False) -> None:
        """Keep a chunk; its address must be its hash (checked).

        Our own chunks are kept as durably as the database: they may exist nowhere
        else yet. A chunk `received` from a peer is written without waiting for the
        disk: a crash may lose it or leave it torn, `get` then finds it does not match
        its address and deletes it, and it is asked for again like any missing chunk
        (spec/store.md)."""
        if chunk_address(ciphertext) != address:
            raise ValueError("a chunk's address is the hash of its bytes")
        path = self._path(address)
        if not received and path.exists():
            return  # ours again (a file in two posts): already kept
        if path.parent not in self._folders:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._folders.add(path.parent)
        if not received:
            write_file_atomically(path, ciphertext, mode=0o600)
        else:
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
            try:
                try:
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileNotFoundError:  # its folder went since we made it
                    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(ciphertext)
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        self._remember(address)

    def put_received(self, chunks: list[tuple[bytes, bytes]]) -> list[bytes]:
        """Keep chunks from a peer; returns the addresses kept (those whose bytes match
        their address; others are dropped)."""
        kept = []
        for address, ciphertext in chunks:
            try:
                self.put(address, ciphertext, received=True)
            except ValueError:
                continue
            kept.append(address)
        return kept

    def get_many(self, addresses: list[bytes]) -> list[tuple[bytes, bytes]]:
        """(address, chunk) of those of these chunks we hold."""
        out = []
        for address in addresses:
            data = self.get(address)
            if data is not None:
                out.append((address, data))
        return out

    def put_many(self, chunks: list[tuple[bytes, bytes]]) -> None:
        """Keep several chunks."""
        for address, ciphertext in chunks:
            self.put(address, ciphertext)

    def has(self, address: bytes) -> bool:
        """True if we hold the chunk."""
        return self._path(address).is_file()

    def get(self, address: bytes) -> bytes | None:
        """A chunk, or None if we do not hold it. A chunk that does not match its
        address (torn by a crash) is deleted, so that it is asked for again."""
        try:
            data = self._path(address).read_bytes()
        except FileNotFoundError:
            return None
        if address in self._checked:
            return data
        if len(data) > MAX_CHUNK_FILE or chunk_address(data) != address:
            log.warning("chunk %s is damaged: deleted, to be fetched again", address.hex()[:16])
            with contextlib.suppress(FileNotFoundError):
                self._path(address).unlink()
            return None
        self._remember(address)
        return data

    def _remember(self, address: bytes) -> None:
        if len(self._checked) >= MAX_CHECKED:
            self._checked.clear()  # bounded: those forgotten are hashed once more
        self._checked.add(address)

    def old_chunks(self, before: float) -> list[bytes]:
        """Addresses of the chunk files last written before `before` (a Unix time); stray
        temporary files that old (a crash mid-write) are deleted on the way."""
        found = []
        for folder in self.root.glob("[0-9a-f][0-9a-f]"):
            for entry in os.scandir(folder):
                try:
                    if entry.stat(follow_symlinks=False).st_mtime >= before:
                        continue
                except FileNotFoundError:
                    continue
                if _CHUNK_NAME.fullmatch(entry.name) and entry.name.startswith(folder.name):
                    found.append(bytes.fromhex(entry.name))
                elif entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
        return found

    def delete(self, addresses: list[bytes]) -> None:
        """Remove chunks nothing uses any more."""
        for address in addresses:
            self._checked.discard(address)
            with contextlib.suppress(FileNotFoundError):
                self._path(address).unlink()
