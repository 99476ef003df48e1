"""Blob chunks on disk (spec/store.md section 1): our own in packs, those from peers loose.

Chunks are stored as they travel, encrypted (core.blobs).

- A **pack** holds every chunk of one of our posts, each from a 4 KiB boundary, in one
  file: data/blobs/packs/<first 2 hex>/<pack id hex>. It is written as the upload
  arrives and synced to disk once, before the post is acknowledged; the database says
  where each chunk lies in it (table `packed`, committed with the post).
- A chunk received from a peer is a file of its own, data/blobs/<first 2 hex>/<address
  hex>, written whole and not synced: it exists elsewhere, and one a crash tore is
  found (it does not hash to its name), deleted and fetched again.

Both are written, and packs read, with direct I/O (O_DIRECT) where the file system
allows it: the disk takes the bytes from our buffer, instead of the kernel copying them
into its page cache first (on this kind of machine that copy cost 2.2 s of CPU a GB,
more than encrypting and hashing it; issue 13). Where direct I/O is refused (tmpfs,
another system), the same files are written and read the ordinary way.

All methods block: call them off the event loop.

Why so long: the two layouts share one on-disk format (spec/store.md section 1), the
direct-I/O helpers with their fallbacks, the folders and the sweep's scan; split in two
modules, each would hold half of what a reader of the data directory needs to know.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import queue
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from p2pmoments.core.blobs import MAX_CHUNK, chunk_matches
from p2pmoments.disk import reporting
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


ALIGN = 4096  # direct I/O: offsets, lengths and buffers on this boundary
BUFFER = 4 << 20  # a pack's writes, and its reads, this many bytes at a time
_DIRECT = getattr(os, "O_DIRECT", 0)


def _aligned(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


def _open_direct(path: Path | str, flags: int, mode: int = 0o600) -> tuple[int, bool]:
    """(fd, direct): opened with O_DIRECT if the file system takes it, else without."""
    if _DIRECT:
        try:
            return os.open(path, flags | _DIRECT, mode), True
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
    return os.open(path, flags, mode), False


def _older_than(root: Path, before: float) -> Iterator[tuple[Path, os.DirEntry[str]]]:
    """(folder, entry) of the files in root's two-hex-digit folders last written before
    `before` (a Unix time)."""
    for folder in root.glob("[0-9a-f][0-9a-f]"):
        for entry in os.scandir(folder):
            try:
                if entry.stat(follow_symlinks=False).st_mtime < before:
                    yield folder, entry
            except FileNotFoundError:
                continue


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


_local = threading.local()


KEPT_BUFFER = 1 << 20  # bytes of the aligned buffer each thread keeps


def _buffer(size: int) -> mmap.mmap:
    """A page-aligned buffer of at least `size` bytes (direct I/O needs one): this
    thread's own, up to KEPT_BUFFER; a bigger one (a run of packed chunks read at once)
    is made for the call and goes with it. Before, each worker thread kept the biggest
    it had needed (4 MiB): the chaos soak's daemon held 11 MiB of them after 25 minutes,
    against 6 MiB after the first."""
    if size > KEPT_BUFFER:
        return mmap.mmap(-1, size)
    buf: mmap.mmap | None = getattr(_local, "buffer", None)
    if buf is None:
        buf = _local.buffer = mmap.mmap(-1, KEPT_BUFFER)
    return buf


class PackWriter:
    """One pack being written: chunks appended in order, each from an ALIGN boundary (the
    gap is zeros), then synced once (blocking).

    Chunks are gathered in one buffer while a thread of the pack's own writes the one
    before (two buffers of BUFFER bytes). With direct I/O the bytes reach the disk as
    they are written, so the one sync that acknowledges the post has little to do.
    Without, what is written is handed to the disk in the background every SYNC_STEP
    bytes (fdatasync on another thread), to the same end."""

    def __init__(self, path: Path, pack: bytes, on_full: Callable[[], None] | None = None) -> None:
        self.pack = pack
        self.path = path
        self._on_full = on_full
        self._fd: int | None
        self._fd, self.direct = _open_direct(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        self._free: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        self._full: queue.SimpleQueue[tuple[mmap.mmap, int] | None] = queue.SimpleQueue()
        self._free.put(mmap.mmap(-1, BUFFER))  # page-aligned, as direct I/O needs
        self._buffer = mmap.mmap(-1, BUFFER)
        self._fill = 0  # bytes of the buffer not yet handed over
        self._offset = 0  # where the next chunk goes in the pack
        self._writer: threading.Thread | None = None
        self._error: BaseException | None = None
        self._unsynced = 0
        self._syncing: threading.Thread | None = None
        self._sync_error: OSError | None = None
        self.placed: list[tuple[bytes, Location]] = []  # (address, where), in order

    def append(self, chunks: list[tuple[bytes, bytes]]) -> None:
        """Add encrypted chunks (address, ciphertext) at the end of the pack;
        DiskFullError if the disk is full."""
        assert self._fd is not None, "the pack is closed"
        with reporting(self.path.parent, on_full=self._on_full):
            self._append(chunks)

    def _append(self, chunks: list[tuple[bytes, bytes]]) -> None:
        for address, ciphertext in chunks:
            size = len(ciphertext)
            slot = _aligned(size)
            if slot > BUFFER:
                raise ValueError("a chunk bigger than a pack's buffer")
            if self._fill + slot > BUFFER:
                self._hand_over()
            self._buffer[self._fill : self._fill + size] = ciphertext
            self._buffer[self._fill + size : self._fill + slot] = bytes(slot - size)
            self._fill += slot
            self.placed.append((address, Location(self.pack, self._offset, size)))
            self._offset += slot

    def _hand_over(self) -> None:
        """Give the full buffer to the writing thread; carry on in the other."""
        if self._error is not None:
            raise self._error
        if not self._fill:
            return
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="p2pm-pack-writer")
            self._writer.start()
        self._full.put((self._buffer, self._fill))
        self._buffer, self._fill = self._free.get(), 0  # waits while both are in use

    def _write_loop(self) -> None:
        while (item := self._full.get()) is not None:
            buffer, size = item
            try:
                if self._error is None:
                    self._write_out(memoryview(buffer)[:size])
            except BaseException as exc:  # told to the appender, which raises it
                self._error = exc
            finally:
                self._free.put(buffer)

    def _stop_writing(self) -> None:
        if self._writer is not None:
            self._full.put(None)
            self._writer.join()
            self._writer = None
        if self._syncing is not None:
            self._syncing.join()
            self._syncing = None

    def _write_out(self, data: memoryview) -> None:
        assert self._fd is not None
        written = len(data)
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            if not self.direct or exc.errno != errno.EINVAL:
                raise
            # Taken at open, refused at write (some file systems): the ordinary way.
            os.close(self._fd)
            self._fd, self.direct = os.open(self.path, os.O_WRONLY), False
            os.lseek(self._fd, 0, os.SEEK_END)
            _write_all(self._fd, data)
        finally:
            data.release()
        if not self.direct:
            self._sync_behind(written)

    def _sync_behind(self, written: int) -> None:
        self._unsynced += written
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

    def finish(self) -> list[tuple[bytes, Location]]:
        """Sync the pack and its folder to disk; returns where each chunk lies
        (DiskFullError if the disk is full)."""
        assert self._fd is not None, "the pack is closed"
        with reporting(self.path.parent, on_full=self._on_full):
            return self._finish()

    def _finish(self) -> list[tuple[bytes, Location]]:
        assert self._fd is not None
        try:
            self._hand_over()
            self._stop_writing()
            if self._error is not None:
                raise self._error
            if self._sync_error is not None:
                raise self._sync_error
            os.fsync(self._fd)
        finally:
            self._stop_writing()
            os.close(self._fd)
            self._fd = None
        fsync_dir(self.path.parent)
        return self.placed

    def abort(self) -> None:
        """Close and delete the pack (a refused or failed post leaves nothing behind)."""
        self._stop_writing()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class BlobStore:
    """Encrypted chunks: ours in packs, received ones by address."""

    def __init__(self, root: Path, on_full: Callable[[], None] | None = None) -> None:
        self.root = root
        self.on_full = on_full  # told (from a worker thread) when a write finds the disk full
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
        with reporting(self.root, on_full=self.on_full):
            self._folder(path.parent, durable=True)
            return PackWriter(path, pack, self.on_full)

    def read_packed(self, location: Location) -> bytes | None:
        """A chunk of ours from its pack; None if the pack is gone or too short."""
        found = self.read_many_packed([(b"", location)])
        return found[0][1] if found else None

    def read_many_packed(self, wanted: list[tuple[bytes, Location]]) -> list[tuple[bytes, bytes]]:
        """(address, chunk) of those of these chunks of ours that could be read, in order.
        Neighbouring chunks of a pack are read together, BUFFER bytes at most."""
        out: dict[int, tuple[bytes, bytes]] = {}
        by_pack: dict[bytes, list[tuple[int, bytes, Location]]] = {}
        for i, (address, where) in enumerate(wanted):
            by_pack.setdefault(where.pack, []).append((i, address, where))
        for pack, items in by_pack.items():
            items.sort(key=lambda item: item[2].offset)
            path = self._pack_path(pack)
            try:
                fd, direct = _open_direct(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                try:
                    out.update(self._read_pack(fd, direct, items))
                except OSError as exc:
                    if not direct or exc.errno != errno.EINVAL:
                        raise
                    # A file system that takes O_DIRECT when opening but not when
                    # reading: the ordinary way, as the writer does.
                    os.close(fd)
                    fd = os.open(path, os.O_RDONLY)
                    out.update(self._read_pack(fd, False, items))
            finally:
                os.close(fd)
        return [out[i] for i in sorted(out)]

    def _read_pack(
        self, fd: int, direct: bool, items: list[tuple[int, bytes, Location]]
    ) -> dict[int, tuple[bytes, bytes]]:
        """The chunks `items` (in the order of their offsets) of one open pack."""
        out: dict[int, tuple[bytes, bytes]] = {}
        run: list[tuple[int, bytes, Location]] = []
        for item in items:
            where = item[2]
            if run and (
                where.offset < run[-1][2].offset + _aligned(run[-1][2].length)
                or _aligned(where.offset + where.length) - run[0][2].offset > BUFFER
            ):
                out.update(self._read_run(fd, direct, run))
                run = []
            run.append(item)
        if run:
            out.update(self._read_run(fd, direct, run))
        return out

    @staticmethod
    def _read_run(
        fd: int, direct: bool, run: list[tuple[int, bytes, Location]]
    ) -> dict[int, tuple[bytes, bytes]]:
        """Chunks that lie one after another in a pack, in one read."""
        start = run[0][2].offset // ALIGN * ALIGN
        end = max(where.offset + where.length for _, _, where in run)
        size = _aligned(end - start)
        if direct and start == run[0][2].offset:
            buf = _buffer(size)
            with memoryview(buf)[:size] as view:
                got = os.preadv(fd, [view], start)
            data: bytes | mmap.mmap = buf
        else:
            data = os.pread(fd, end - start, start)
            got = len(data)
        found = {}
        for i, address, where in run:
            first = where.offset - start
            if first + where.length <= got:
                found[i] = (address, bytes(data[first : first + where.length]))
        return found

    def delete_packs(self, packs: list[bytes]) -> None:
        """Remove packs none of whose chunks is used any more."""
        for pack in packs:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._pack_path(pack))

    def old_packs(self, before: float) -> list[bytes]:
        """Ids of the packs last written before `before` (a Unix time)."""
        return [
            bytes.fromhex(entry.name)
            for _, entry in _older_than(self.packs, before)
            if _PACK_NAME.fullmatch(entry.name)
        ]

    # --- loose chunks: received from peers (and all of a store before schema 4) --------

    def _path(self, address: bytes) -> Path:
        text = address.hex()
        return self.root / text[:2] / text

    def _folder(self, folder: Path, durable: bool = False) -> None:
        """Make `folder` (under root) and those above it, each 0700; `durable`: each new
        one's entry synced to disk (a pack synced in a folder whose own entry a crash
        loses is lost too; a received chunk is not synced, and is fetched again)."""
        if folder in self._folders:
            return
        above = [p for p in folder.parents if p == self.root or self.root in p.parents]
        for path in [*reversed(above), folder]:
            try:
                path.mkdir(mode=0o700)
            except FileExistsError:
                continue
            if durable:
                fsync_dir(path.parent)
        self._folders.add(folder)

    def put(self, address: bytes, ciphertext: bytes) -> None:
        """Keep a chunk from a peer; its address must be its hash (checked);
        DiskFullError if the disk is full.

        Written without waiting for the disk: a crash may lose it or leave it torn, `get`
        then finds it does not match its address and deletes it, and it is asked for
        again like any missing chunk (spec/store.md)."""
        if len(ciphertext) > MAX_CHUNK_FILE or not chunk_matches(address, ciphertext):
            raise ValueError("a chunk's address is the hash of its bytes (and it is bounded)")
        with reporting(self.root, on_full=self.on_full):
            self._put(address, ciphertext)
        self._remember(address)

    def _put(self, address: bytes, ciphertext: bytes) -> None:
        path = self._path(address)
        self._folder(path.parent)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            try:
                fd, direct = _open_direct(tmp, flags)
            except FileNotFoundError:  # its folder went since we made it
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd, direct = _open_direct(tmp, flags)
            try:
                size = len(ciphertext)
                if direct:  # whole blocks from an aligned buffer, then cut to its size
                    slot = _aligned(size)
                    buf = _buffer(slot)
                    buf[:size] = ciphertext
                    with memoryview(buf)[:slot] as view:
                        try:
                            _write_all(fd, view)
                        except OSError as exc:
                            if exc.errno != errno.EINVAL:
                                raise
                            os.close(fd)
                            fd = os.open(tmp, os.O_WRONLY)
                            direct = False
                    if direct:
                        os.ftruncate(fd, size)
                if not direct:
                    _write_all(fd, memoryview(ciphertext))
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def put_received(self, chunks: list[tuple[bytes, bytes]]) -> list[bytes]:
        """Keep chunks from a peer; returns the addresses kept (those whose bytes match
        their address; others are dropped)."""

        def put(chunk: tuple[bytes, bytes]) -> bytes | None:
            try:
                self.put(*chunk)
            except ValueError:
                return None
            return chunk[0]

        # Two at a time (this thread and a helper, each half of the batch): each waits for
        # the disk (direct I/O) and hashes outside Python's lock, so they overlap.
        half = chunks[: len(chunks) // 2]
        helped: list[bytes | None] = []
        failed: list[BaseException] = []

        def help_out() -> None:
            try:
                helped.extend(map(put, half))
            except BaseException as exc:  # a disk error: raised below, as if ours
                failed.append(exc)

        helper = threading.Thread(target=help_out, name="p2pm-chunk-writer")
        if half:
            helper.start()
        try:
            mine = [put(c) for c in chunks[len(half) :]]
        finally:
            if half:
                helper.join()
        if failed:
            raise failed[0]
        return [a for a in [*helped, *mine] if a is not None]

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
        for folder, entry in _older_than(self.root, before):
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
