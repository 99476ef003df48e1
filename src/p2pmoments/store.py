"""The SQLite store (spec/store.md): WAL, a schema version, forward migrations.

`Store` is synchronous and must be used from one thread. `AsyncStore` runs it on
one dedicated thread, so no database call ever runs on the event loop.
Every write commits with synchronous=FULL before the call returns: what the
daemon acknowledged survives a crash or a power cut.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from p2pmoments.core.errors import P2PMomentsError

__all__ = ["SCHEMA_VERSION", "AsyncStore", "Counts", "Store", "StoreError"]

P = ParamSpec("P")
T = TypeVar("T")

# Each entry moves the schema from version i to i + 1. Never edit one that has
# shipped: append a new one (spec/store.md section 2).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;
    CREATE TABLE friends (
        verify_key BLOB PRIMARY KEY CHECK (length(verify_key) = 32),
        link_key   BLOB NOT NULL CHECK (length(link_key) = 32),
        name       TEXT NOT NULL,
        since      INTEGER NOT NULL,
        last_seen  INTEGER
    ) STRICT;
    CREATE TABLE circles (
        circle_id BLOB PRIMARY KEY CHECK (length(circle_id) = 32),
        owner     BLOB NOT NULL CHECK (length(owner) = 32),
        name      TEXT NOT NULL,
        epoch     INTEGER NOT NULL,
        manifest  BLOB NOT NULL
    ) STRICT;
    CREATE TABLE moments (
        moment_id BLOB PRIMARY KEY CHECK (length(moment_id) = 32),
        circle_id BLOB NOT NULL,
        author    BLOB NOT NULL,
        seq       INTEGER NOT NULL,
        created   INTEGER NOT NULL,
        envelope  BLOB NOT NULL,
        UNIQUE (circle_id, author, seq)
    ) STRICT;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(P2PMomentsError):
    """The database cannot be opened or used."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Counts:
    """How many of each thing the store holds."""

    friends: int
    circles: int
    moments: int


class Store:
    """Synchronous access to the database; one thread only."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def open(cls, path: Path) -> Store:
        """Open (creating if needed) and migrate the database at `path`."""
        try:
            if not path.exists():
                # Private data: create it 0600; SQLite gives -wal and -shm the same mode.
                os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            conn = sqlite3.connect(path, isolation_level=None, timeout=10)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            store = cls(conn)
            store._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: cannot open the database: {exc}") from None
        return store

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _migrate(self) -> None:
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the database is at schema version {version}, newer than this p2pmoments "
                f"understands ({SCHEMA_VERSION}); upgrade p2pmoments"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self._transaction() as conn:
                for statement in MIGRATIONS[target - 1].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={target}")

    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        """Checkpoint and close; safe to call twice."""
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.ProgrammingError:
            return  # already closed
        self._conn.close()

    def get_meta(self, key: str) -> str | None:
        """A value from the meta table."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Set a value in the meta table, durably."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def get_name(self) -> str:
        """Our display name."""
        return self.get_meta("name") or ""

    def set_name(self, name: str) -> None:
        """Change our display name, durably."""
        self.set_meta("name", name)

    def counts(self) -> Counts:
        """How many friends, circles and moments are stored."""
        row = self._conn.execute(
            "SELECT (SELECT count(*) FROM friends), (SELECT count(*) FROM circles),"
            " (SELECT count(*) FROM moments)"
        ).fetchone()
        return Counts(friends=row[0], circles=row[1], moments=row[2])

    def integrity_check(self) -> str:
        """SQLite's own verdict on the file: 'ok' when sound."""
        return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])


def initialise(path: Path, name: str) -> None:
    """Create the database with our name, unless it already has one."""
    store = Store.open(path)
    try:
        if not store.get_name():
            store.set_name(name)
            store.set_meta("created", str(int(time.time())))
    finally:
        store.close()


class AsyncStore:
    """The store on its own thread; every method is awaited from the event loop."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="p2pm-store")
        self._store: Store | None = None

    async def open(self) -> None:
        """Open and migrate the database on the store thread."""
        loop = asyncio.get_running_loop()
        self._store = await loop.run_in_executor(self._executor, Store.open, self._path)

    async def run(
        self, fn: Callable[Concatenate[Store, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Call `fn(store, *args)` on the store thread and return its result."""
        store = self._store
        if store is None:
            raise StoreError("the store is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(store, *args, **kwargs))

    async def close(self) -> None:
        """Close the database and stop the thread; safe to call twice."""
        store, self._store = self._store, None
        if store is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, store.close)
        await asyncio.to_thread(self._executor.shutdown, wait=True)
