"""The connection: opening, migrating, transactions, and what every table set shares."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from p2pmoments.core.errors import P2PMomentsError
from p2pmoments.core.moment import Kind
from p2pmoments.disk import reporting
from p2pmoments.store import schema
from p2pmoments.store.records import Counts, Freed, FriendState

__all__ = ["Database", "StoreError", "seq_floor_key"]


def seq_floor_key(circle_id: bytes, author: bytes) -> str:
    """The meta key of the highest sequence number of a (circle, author) whose row is gone."""
    return f"seq_floor:{circle_id.hex()}:{author.hex()}"


class StoreError(P2PMomentsError):
    """The database cannot be opened or used."""


class Database:
    """Synchronous access to the database; one thread only."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def open(cls, path: Path) -> Self:
        """Open (creating if needed) and migrate the database at `path`; DiskFullError
        if the disk has no room for that (a migration is one transaction: rolled back,
        the file is as it was)."""
        try:
            with reporting(path.parent, f"to open and update {path.name}"):
                return cls._open(path)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: cannot open the database: {exc}") from None

    @classmethod
    def _open(cls, path: Path) -> Self:
        if not path.exists():
            # Private data: create it 0600; SQLite gives -wal and -shm the same mode.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        conn = sqlite3.connect(path, isolation_level=None, timeout=10)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        store = cls(conn)
        store._migrate()
        return store

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (a full disk: SQLITE_FULL), and a
            # COMMIT that failed leaves the transaction open: never a second error
            # hiding the first, never a transaction left open for the next write.
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def _migrate(self) -> None:
        version, newest = self.schema_version(), schema.SCHEMA_VERSION
        if version > newest:
            raise StoreError(
                f"the database is at schema version {version}, newer than this p2pmoments "
                f"understands ({newest}); upgrade p2pmoments"
            )
        if version == 2 and self._has_column("circles", "removed_epoch"):
            version = self._renumbered_2()
        for target in range(version + 1, newest + 1):
            with self._transaction() as conn:
                for statement in schema.MIGRATIONS[target - 1].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={target}")

    def _has_column(self, table: str, column: str) -> bool:
        return any(row[1] == column for row in self._conn.execute(f"PRAGMA table_info({table})"))

    def _renumbered_2(self) -> int:
        """A version 2 of main before a merge renumbered it (spec/store.md section 2): the
        removal notices (today's 3) without the people table (today's 2). Adds the latter
        and records version 3, which is what the database then is."""
        with self._transaction() as conn:
            for statement in schema.MIGRATIONS[1].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("PRAGMA user_version=3")
        return 3

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

    def integrity_check(self) -> str:
        """SQLite's own verdict on the file: 'ok' when sound."""
        return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])

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

    def initialise(self, name: str) -> None:
        """Record our name and when this home was made, unless it has a name."""
        if not self.get_name():
            self.set_name(name)
            self.set_meta("created", str(int(time.time())))

    def counts(self) -> Counts:
        """How many friends, circles and posts are stored."""
        row = self._conn.execute(
            "SELECT (SELECT count(*) FROM friends WHERE state = ?),"
            " (SELECT count(*) FROM circles),"
            " (SELECT count(*) FROM moments WHERE kind = ? AND retracted = 0)",
            (FriendState.FRIEND.value, Kind.POST),
        ).fetchone()
        return Counts(friends=row[0], circles=row[1], moments=row[2])

    # --- shared by the table sets -------------------------------------------------

    @staticmethod
    def _delete_moments(conn: sqlite3.Connection, moment_ids: Sequence[bytes]) -> Freed:
        """Delete moments and their chunk records; returns what nothing else uses."""
        freed: set[bytes] = set()
        for moment_id in moment_ids:
            Database._keep_seq_floor(conn, moment_id)
            freed.update(
                r[0]
                for r in conn.execute(
                    "SELECT address FROM moment_chunks WHERE moment_id = ?", (moment_id,)
                )
            )
            conn.execute("DELETE FROM moment_chunks WHERE moment_id = ?", (moment_id,))
            conn.execute("DELETE FROM moments WHERE moment_id = ?", (moment_id,))
        return Database._unused_chunks(conn, freed) + Freed(moments=tuple(moment_ids))

    @staticmethod
    def _keep_seq_floor(conn: sqlite3.Connection, moment_id: bytes) -> None:
        """Before a moment's row goes (a reply to a retracted post, an expired moment),
        remember its (circle, author, seq): a sequence number is never used twice, even
        when the author's newest moments in a circle are gone (spec/store.md section 2)."""
        row = conn.execute(
            "SELECT circle_id, author, seq FROM moments WHERE moment_id = ?", (moment_id,)
        ).fetchone()
        if row is None:
            return
        key = seq_floor_key(row[0], row[1])
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE"
            " SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
            (key, str(row[2])),
        )

    @staticmethod
    def _unused_chunks(conn: sqlite3.Connection, addresses: Iterable[bytes]) -> Freed:
        """Those of these chunks that no moment uses any more, and the packs they leave
        empty (their rows go: the caller deletes the files once this commits)."""
        unused = [
            a
            for a in addresses
            if conn.execute("SELECT 1 FROM moment_chunks WHERE address = ?", (a,)).fetchone()
            is None
        ]
        packs: set[bytes] = set()
        for address in unused:
            row = conn.execute(
                "DELETE FROM packed WHERE address = ? RETURNING pack", (address,)
            ).fetchone()
            if row is not None:
                packs.add(row[0])
        empty = tuple(
            p
            for p in sorted(packs)
            if conn.execute("SELECT 1 FROM packed WHERE pack = ? LIMIT 1", (p,)).fetchone() is None
        )
        return Freed(chunks=tuple(unused), packs=empty)


def in_batches(values: Sequence[bytes], size: int = 500) -> Iterator[tuple[list[bytes], str]]:
    """Values in batches small enough for one `IN (...)`, with their placeholders."""
    for start in range(0, len(values), size):
        part = list(values[start : start + size])
        yield part, ",".join("?" * len(part))
