"""A full disk: told apart from other failures, said plainly, and waited out (issue 23).

Any write of the daemon may meet a full disk: the store's commits (SQLite's "database
or disk is full"), the pack of a post, a chunk from a peer (ENOSPC, or EDQUOT past a
quota). Where it does, the error becomes a `DiskFullError` naming the file system to
free space on, and nothing is stored half: a commit is rolled back, a pack deleted, a
chunk's temporary file removed.

`Disk` remembers that the disk was found full: `status` says so, replication stops
asking for chunks (core.replication), and a watch looks at the free space every POLL
seconds until there is ROOM again; then it says so and calls `on_room` (transfers
resume). A post is never refused for the flag alone: it is tried, so posting works
again as soon as there is space, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from p2pmoments.errors import DiskFullError
from p2pmoments.events import EventBus

__all__ = ["POLL", "ROOM", "Disk", "full_error", "is_full", "mount_point", "reporting"]

log = logging.getLogger(__name__)

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
ROOM = 16 << 20  # free bytes that count as room again (incoming transfers resume)
POLL = 1.0  # seconds between looks at the free space, while the disk is full


def is_full(exc: BaseException) -> bool:
    """True if `exc` says the disk is full (and nothing else)."""
    if isinstance(exc, DiskFullError):
        return True
    if isinstance(exc, OSError):
        return exc.errno in FULL_ERRNOS
    if isinstance(exc, sqlite3.DatabaseError):
        code = getattr(exc, "sqlite_errorcode", None)
        return code == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc)
    return False


def _io_error_with_no_room(exc: BaseException, path: Path) -> bool:
    """SQLite says "disk I/O error" where a write of its -wal or -shm file found no room
    (opening a store on a full disk): taken for a full disk if there is less than ROOM."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None or code & 0xFF != sqlite3.SQLITE_IOERR:
        return False
    try:
        return shutil.disk_usage(path).free < ROOM
    except OSError:
        return False


def mount_point(path: Path) -> Path:
    """The top folder of the file system `path` is on (what to free space on)."""
    path = path.absolute()
    try:
        device = path.stat().st_dev
        while path.parent != path and path.parent.stat().st_dev == device:
            path = path.parent
    except OSError:
        pass
    return path


def full_error(path: Path, doing: str = "") -> DiskFullError:
    """The error for a full disk under `path`."""
    return DiskFullError(str(mount_point(path)), doing)


@contextlib.contextmanager
def reporting(
    path: Path, doing: str = "", on_full: Callable[[], None] | None = None
) -> Iterator[None]:
    """Raise a full disk met inside as DiskFullError (other errors pass as they are);
    `on_full` is called first (from whatever thread this runs on)."""
    try:
        yield
    except DiskFullError:
        if on_full is not None:
            on_full()
        raise
    except (OSError, sqlite3.DatabaseError) as exc:
        if not (is_full(exc) or _io_error_with_no_room(exc, path)):
            raise
        if on_full is not None:
            on_full()
        raise full_error(path, doing) from exc


class Disk:
    """Whether the disk of the data directory was found full, until there is room."""

    def __init__(
        self,
        path: Path,
        events: EventBus,
        on_room: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.path = path
        self.on_room = on_room
        self._events = events
        self.full_since: float | None = None  # set from any thread; read on the loop
        self._told = False

    def noticed(self) -> None:
        """A write found the disk full (safe from any thread)."""
        if self.full_since is None:
            self.full_since = time.time()

    def noticed_full(self) -> bool:
        """True while the disk is known to be full."""
        return self.full_since is not None

    def free(self) -> int:
        """Free bytes on the data directory's file system (blocks, briefly)."""
        try:
            return shutil.disk_usage(self.path).free
        except OSError:
            return 0

    def status(self) -> dict[str, Any]:
        """What GET /status shows of the disk."""
        return {
            "full": self.full_since is not None,
            "since": self.full_since,
            "free": self.free(),
            "path": str(mount_point(self.path)),
        }

    async def check(self) -> None:
        """Say that the disk is full, once; if it was and there is room again, say so
        and call on_room."""
        if self.full_since is None:
            return
        free, where = await asyncio.to_thread(lambda: (self.free(), str(mount_point(self.path))))
        if not self._told:
            self._told = True
            log.warning("the disk is full: free space on %s", where)
            self._events.publish("disk.full", path=where)
        if free < ROOM:
            return
        self.full_since, self._told = None, False
        log.info("there is room on the disk again")
        self._events.publish("disk.room", path=where)
        if self.on_room is not None:
            await self.on_room()

    async def watch(self) -> None:
        """Check every POLL seconds, until cancelled."""
        while True:
            await asyncio.sleep(POLL)
            try:
                await self.check()
            except Exception:  # a bug here must not end the daemon's other work
                log.exception("checking the free space failed")
