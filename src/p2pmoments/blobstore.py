"""Blob chunks on disk (spec/store.md section 1): our own in packs, those from peers loose.

Chunks are stored as they travel, encrypted (core.blobs).

- A **pack** holds every chunk of one of our posts, back to back, in one file:
  data/blobs/packs/<first 2 hex>/<pack id hex>. It is written as the upload arrives
  and synced to disk once, before the post is acknowledged; the database says where
  each chunk lies in it (table `packed`, committed with the post).
- A chunk received from a peer is a file of its own, data/blobs/<first 2 hex>/<address
  hex>, written whole and not synced: it exists elsewhere, and one a crash tore is
  found (it does not hash to its name), deleted and fetched again.

All methods block: call them off the event loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from p2pmoments.core.blobs import MAX_CHUNK, chunk_matches
from p2pmoments.files import fsync_dir

__all__ = ["BlobStore", "Location", "PackWriter"]

MAX_CHUNK_FILE = MAX_CHUNK
MAX_CHECKED = 1 << 16  # chunks remembered as checked (32 GiB of data; about 6 MiB of memory)
PACK_ID = 16  # bytes of a pack's random id
SYNC_STEP = 16 << 20  # bytes of a pack handed to the disk in the background at once

_CHUNK_NAME = re.compile(r"[0-9a-f]{64}", re.ASCII)
_PACK_NAME = re.compile(r"[0-9a-f]{32}", re.ASCII)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Location:
    """Where a chunk of ours lies: in which pack, from which byte, how long."""

    pack: bytes
    offset: int
    length: int


class PackWriter:
    """One pack being written: chunks appended in order, then synced once (blocking).

    While a big upload goes on, what is written is handed to the disk in the background
    every SYNC_STEP bytes (fdatasync on a thread of its own), so that the one sync that
    acknowledges the post finds little left to write."""

    def __init__(self, path: Path, pack: bytes) -> None:
        self.pack = pack
        self.path = path
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._offset = 0
        self._unsynced = 0
        self._syncing: threading.Thread | None = None
        self._sync_error: OSError | None = None
        self.placed: list[tuple[bytes, Location]] = []  # (address, where), in order

    def append(self, chunks: list[tuple[bytes, bytes]]) -> None:
        """Add encrypted chunks (address, ciphertext) at the end of the pack."""
        assert self._fd is not None, "the pack is closed"
        for address, ciphertext in chunks:
            view = memoryview(ciphertext)
            while view:
                view = view[os.write(self._fd, view) :]
            self.placed.append((address, Location(self.pack, self._offset, len(ciphertext))))
            self._offset += len(ciphertext)
            self._unsynced += len(ciphertext)
        if self._unsynced >= SYNC_STEP and not (self._syncing and self._syncing.is_alive()):
            self._unsynced = 0
            self._syncing = threading.Thread(
                target=self._sync_some, args=(self._fd,), name="p2pm-pack-sync"
            )
            self._syncing.start()

    def _sync_some(self, fd: int) -> None:
        try:
            os.fdatasync(fd)
        except OSError as exc:
            self._sync_error = exc

    def _stop_syncing(self) -> None:
        if self._syncing is not None:
            self._syncing.join()
            self._syncing = None

    def finish(self) -> list[tuple[bytes, Location]]:
        """Sync the pack and its folder to disk; returns where each chunk lies."""
        assert self._fd is not None, "the pack is closed"
        try:
            self._stop_syncing()
            if self._sync_error is not None:
                raise self._sync_error
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None
        fsync_dir(self.path.parent)
        return self.placed

    def abort(self) -> None:
        """Close and delete the pack (a refused or failed post leaves nothing behind)."""
        self._stop_syncing()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class BlobStore:
    """Encrypted chunks: ours in packs, received ones by address."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.packs = root / "packs"
        # Chunks this process wrote or has checked: only a crash tears a chunk, and a
        # crash ends the process, so these need no hashing again when read or served.
        self._checked: set[bytes] = set()
        self._folders: set[Path] = set()  # folders made already

    # --- packs: our own posts -----------------------------------------------------------

    def _pack_path(self, pack: bytes) -> Path:
        text = pack.hex()
        return self.packs / text[:2] / text

    def new_pack(self) -> PackWriter:
        """A new, empty pack for the chunks of one post."""
        pack = secrets.token_bytes(PACK_ID)
        path = self._pack_path(pack)
        self._folder(path.parent)
        return PackWriter(path, pack)

    def read_packed(self, location: Location) -> bytes | None:
        """A chunk of ours from its pack; None if the pack is gone or too short."""
        try:
            fd = os.open(self._pack_path(location.pack), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            data = os.pread(fd, location.length, location.offset)
        finally:
            os.close(fd)
        return data if len(data) == location.length else None

    def read_many_packed(self, wanted: list[tuple[bytes, Location]]) -> list[tuple[bytes, bytes]]:
        """(address, chunk) of those of these chunks of ours that could be read."""
        out: list[tuple[bytes, bytes]] = []
        fds: dict[bytes, int] = {}
        try:
            for address, where in wanted:
                fd = fds.get(where.pack)
                if fd is None:
                    try:
                        fd = fds[where.pack] = os.open(self._pack_path(where.pack), os.O_RDONLY)
                    except FileNotFoundError:
                        continue
                data = os.pread(fd, where.length, where.offset)
                if len(data) == where.length:
                    out.append((address, data))
        finally:
            for fd in fds.values():
                os.close(fd)
        return out

    def delete_packs(self, packs: list[bytes]) -> None:
        """Remove packs none of whose chunks is used any more."""
        for pack in packs:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._pack_path(pack))

    def old_packs(self, before: float) -> list[bytes]:
        """Ids of the packs last written before `before` (a Unix time)."""
        found = []
        for folder in self.packs.glob("[0-9a-f][0-9a-f]"):
            for entry in os.scandir(folder):
                try:
                    if entry.stat(follow_symlinks=False).st_mtime >= before:
                        continue
                except FileNotFoundError:
                    continue
                if _PACK_NAME.fullmatch(entry.name):
                    found.append(bytes.fromhex(entry.name))
        return found

    # --- loose chunks: received from peers (and all of a store before schema 4) --------

    def _path(self, address: bytes) -> Path:
        text = address.hex()
        return self.root / text[:2] / text

    def _folder(self, folder: Path) -> None:
        if folder not in self._folders:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._folders.add(folder)

    def put(self, address: bytes, ciphertext: bytes) -> None:
        """Keep a chunk from a peer; its address must be its hash (checked).

        Written without waiting for the disk: a crash may lose it or leave it torn, `get`
        then finds it does not match its address and deletes it, and it is asked for
        again like any missing chunk (spec/store.md)."""
        if not chunk_matches(address, ciphertext):
            raise ValueError("a chunk's address is the hash of its bytes")
        path = self._path(address)
        self._folder(path.parent)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileNotFoundError:  # its folder went since we made it
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(ciphertext)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
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
                self.put(address, ciphertext)
            except ValueError:
                continue
            kept.append(address)
        return kept

    def get_many(self, addresses: list[bytes]) -> list[tuple[bytes, bytes]]:
        """(address, chunk) of those of these loose chunks we hold."""
        out = []
        for address in addresses:
            data = self.get(address)
            if data is not None:
                out.append((address, data))
        return out

    def has(self, address: bytes) -> bool:
        """True if we hold the chunk loose (ours are in packs: the database knows)."""
        return self._path(address).is_file()

    def get(self, address: bytes) -> bytes | None:
        """A loose chunk, or None if we do not hold it. A chunk that does not match its
        address (torn by a crash) is deleted, so that it is asked for again."""
        try:
            data = self._path(address).read_bytes()
        except FileNotFoundError:
            return None
        if address in self._checked:
            return data
        if len(data) > MAX_CHUNK_FILE or not chunk_matches(address, data):
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
        """Addresses of the loose chunk files last written before `before` (a Unix time);
        stray temporary files that old (a crash mid-write) are deleted on the way."""
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
        """Remove loose chunks nothing uses any more."""
        for address in addresses:
            self._checked.discard(address)
            with contextlib.suppress(FileNotFoundError):
                self._path(address).unlink()
