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
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from p2pmoments.core.errors import P2PMomentsError

__all__ = [
    "SCHEMA_VERSION",
    "AsyncStore",
    "Counts",
    "FriendRecord",
    "MomentRow",
    "PairingRecord",
    "Store",
    "StoreError",
    "TokenRecord",
]

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
        verify_key     BLOB PRIMARY KEY CHECK (length(verify_key) = 32),
        link_key       BLOB NOT NULL UNIQUE CHECK (length(link_key) = 32),
        link_signature BLOB NOT NULL CHECK (length(link_signature) = 64),
        name           TEXT NOT NULL,
        their_name     TEXT NOT NULL,
        state          TEXT NOT NULL DEFAULT 'friend' CHECK (state IN ('friend', 'blocked')),
        since          INTEGER NOT NULL,
        last_seen      INTEGER,
        host           TEXT,
        port           INTEGER
    ) STRICT;
    CREATE TABLE pair_tokens (
        token      BLOB PRIMARY KEY CHECK (length(token) = 16),
        created    INTEGER NOT NULL,
        expires    INTEGER NOT NULL,
        claimed_by BLOB
    ) STRICT;
    CREATE TABLE pairings (
        id         INTEGER PRIMARY KEY,
        direction  TEXT NOT NULL CHECK (direction IN ('out', 'in')),
        identity   BLOB,
        link_key   BLOB NOT NULL,
        name       TEXT NOT NULL,
        token      BLOB NOT NULL,
        expires    INTEGER NOT NULL,
        host       TEXT,
        port       INTEGER,
        state      TEXT NOT NULL CHECK (state IN ('pending', 'confirmed', 'expired', 'refused')),
        reason     TEXT NOT NULL DEFAULT '',
        created    INTEGER NOT NULL,
        updated    INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE circles (
        circle_id BLOB PRIMARY KEY CHECK (length(circle_id) = 32),
        owner     BLOB NOT NULL CHECK (length(owner) = 32),
        name      TEXT NOT NULL,
        epoch     INTEGER NOT NULL,
        manifest  BLOB NOT NULL
    ) STRICT;
    CREATE TABLE manifests (
        circle_id BLOB NOT NULL,
        epoch     INTEGER NOT NULL,
        manifest  BLOB NOT NULL,
        PRIMARY KEY (circle_id, epoch)
    ) STRICT;
    CREATE TABLE moments (
        moment_id BLOB PRIMARY KEY CHECK (length(moment_id) = 32),
        circle_id BLOB NOT NULL,
        author    BLOB NOT NULL,
        seq       INTEGER NOT NULL,
        epoch     INTEGER NOT NULL DEFAULT 0,
        created   INTEGER NOT NULL,
        kind      INTEGER NOT NULL,
        reply_to  BLOB,
        expires   INTEGER,
        retracted INTEGER NOT NULL DEFAULT 0,
        envelope  BLOB NOT NULL,
        UNIQUE (circle_id, author, seq)
    ) STRICT;
    CREATE TABLE moment_chunks (
        moment_id BLOB NOT NULL,
        address   BLOB NOT NULL CHECK (length(address) = 32),
        PRIMARY KEY (moment_id, address)
    ) STRICT;
    CREATE INDEX chunks_by_address ON moment_chunks (address);
    CREATE INDEX moments_by_circle ON moments (circle_id, created);
    CREATE INDEX moments_by_reply ON moments (reply_to);
    CREATE TABLE rejected (
        id       INTEGER PRIMARY KEY,
        time     INTEGER NOT NULL,
        reason   TEXT NOT NULL,
        size     INTEGER NOT NULL,
        sender   BLOB
    ) STRICT;
    """,
    # 2: what people we link with call themselves (their hello), so co-members who are
    # not our friends are shown by name after a restart too (issue 10, item 17).
    """
    CREATE TABLE people (
        verify_key BLOB PRIMARY KEY CHECK (length(verify_key) = 32),
        name       TEXT NOT NULL,
        seen       INTEGER NOT NULL
    ) STRICT;
    """,
    # 3: removal notices (spec/moments.md section 8): the owner keeps each to hand to the
    # member it names; a removed member records that it was removed, and when.
    """
    ALTER TABLE circles ADD COLUMN removed_epoch INTEGER;
    ALTER TABLE circles ADD COLUMN removed_at INTEGER;
    CREATE TABLE removals (
        circle_id BLOB NOT NULL CHECK (length(circle_id) = 32),
        member    BLOB NOT NULL CHECK (length(member) = 32),
        epoch     INTEGER NOT NULL,
        notice    BLOB NOT NULL,
        PRIMARY KEY (circle_id, member)
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


@dataclass(frozen=True, slots=True, kw_only=True)
class FriendRecord:
    """A friend (or a blocked one) as stored."""

    verify_key: bytes
    link_key: bytes
    link_signature: bytes
    name: str  # what we call them (they may rename; we keep our label)
    their_name: str  # what they call themselves
    state: str
    since: int
    last_seen: int | None
    host: str | None
    port: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRecord:
    """A pairing token we issued."""

    token: bytes
    created: int
    expires: int
    claimed_by: bytes | None  # the link key that used it


@dataclass(frozen=True, slots=True, kw_only=True)
class PairingRecord:
    """One pairing attempt, ours ('out', we scanned) or theirs ('in', they scanned ours)."""

    id: int
    direction: str
    identity: bytes | None
    link_key: bytes
    name: str
    token: bytes
    expires: int
    host: str | None
    port: int | None
    state: str
    reason: str
    created: int
    updated: int


_FRIEND_COLUMNS = (
    "verify_key, link_key, link_signature, name, their_name, state, since, last_seen, host, port"
)
_PAIRING_COLUMNS = (
    "id, direction, identity, link_key, name, token, expires, host, port, state, reason, "
    "created, updated"
)


R = TypeVar("R")


def _record(cls: type[R], row: tuple[object, ...]) -> R:
    # Columns are selected in the order of the dataclass's fields.
    return cls(**dict(zip(cls.__dataclass_fields__, row, strict=True)))  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True, kw_only=True)
class MomentRow:
    """A verified moment as the store keeps it."""

    moment_id: bytes
    circle_id: bytes
    author: bytes
    seq: int
    epoch: int
    created: int
    kind: int
    reply_to: bytes | None
    expires: int | None
    envelope: bytes
    chunks: tuple[bytes, ...] = ()


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
            "SELECT (SELECT count(*) FROM friends WHERE state = 'friend'),"
            " (SELECT count(*) FROM circles),"
            " (SELECT count(*) FROM moments WHERE kind = 1 AND retracted = 0)"
        ).fetchone()
        return Counts(friends=row[0], circles=row[1], moments=row[2])

    # --- friends ----------------------------------------------------------

    def friends(self) -> list[FriendRecord]:
        """Every friend and blocked identity, oldest first."""
        rows = self._conn.execute(
            f"SELECT {_FRIEND_COLUMNS} FROM friends ORDER BY since, name"  # noqa: S608 - constant
        )
        return [_record(FriendRecord, row) for row in rows]

    def upsert_friend(self, record: FriendRecord) -> bool:
        """Add a friend, or update keys and their name if known; True if new.

        Our own label for them and a block survive re-pairing.
        """
        with self._transaction() as conn:
            existing = conn.execute(
                "SELECT 1 FROM friends WHERE verify_key = ?", (record.verify_key,)
            ).fetchone()
            # A link key belongs to one identity: drop any stale row claiming it.
            conn.execute(
                "DELETE FROM friends WHERE link_key = ? AND verify_key != ?",
                (record.link_key, record.verify_key),
            )
            if existing:
                conn.execute(
                    "UPDATE friends SET link_key = ?, link_signature = ?, their_name = ?,"
                    " last_seen = ?, host = coalesce(?, host), port = coalesce(?, port)"
                    " WHERE verify_key = ?",
                    (
                        record.link_key,
                        record.link_signature,
                        record.their_name,
                        record.last_seen,
                        record.host,
                        record.port,
                        record.verify_key,
                    ),
                )
            else:
                conn.execute(
                    f"INSERT INTO friends ({_FRIEND_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",  # noqa: S608
                    (
                        record.verify_key,
                        record.link_key,
                        record.link_signature,
                        record.name,
                        record.their_name,
                        record.state,
                        record.since,
                        record.last_seen,
                        record.host,
                        record.port,
                    ),
                )
        return existing is None

    def update_friend(self, verify_key: bytes, /, **fields: object) -> bool:
        """Change some of name, state, last_seen, host, port; False if no such friend."""
        allowed = {"name", "state", "last_seen", "host", "port", "their_name"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"can only update {sorted(allowed)}")
        assignments = ", ".join(f"{k} = ?" for k in fields)
        with self._transaction() as conn:
            cursor = conn.execute(
                f"UPDATE friends SET {assignments} WHERE verify_key = ?",  # noqa: S608 - keys checked
                (*fields.values(), verify_key),
            )
        return cursor.rowcount == 1

    def remove_friend(self, verify_key: bytes) -> bool:
        """Forget a friend; False if there was none."""
        with self._transaction() as conn:
            cursor = conn.execute("DELETE FROM friends WHERE verify_key = ?", (verify_key,))
        return cursor.rowcount == 1

    # --- people we have linked with --------------------------------------------

    def people(self) -> dict[bytes, str]:
        """What each identity we have linked with calls itself."""
        return {r[0]: r[1] for r in self._conn.execute("SELECT verify_key, name FROM people")}

    def remember_person(self, verify_key: bytes, name: str, now: int) -> None:
        """Keep the name an identity gave in its hello."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO people (verify_key, name, seen) VALUES (?, ?, ?) ON CONFLICT"
                " (verify_key) DO UPDATE SET name = excluded.name, seen = excluded.seen",
                (verify_key, name, now),
            )

    # --- pairing tokens and attempts ----------------------------------------

    def add_token(self, token: bytes, created: int, expires: int, *, keep: int = 32) -> None:
        """Record a token we issued; of the unclaimed ones, only the newest `keep` stay
        valid (codes shown and never scanned do not pile up)."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO pair_tokens (token, created, expires) VALUES (?, ?, ?)",
                (token, created, expires),
            )
            conn.execute(
                "DELETE FROM pair_tokens WHERE claimed_by IS NULL AND rowid NOT IN"
                " (SELECT rowid FROM pair_tokens WHERE claimed_by IS NULL"
                " ORDER BY created DESC, rowid DESC LIMIT ?)",
                (keep,),
            )

    def tokens(self, now: int) -> list[TokenRecord]:
        """Tokens that have not expired, newest first; older ones are deleted."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM pair_tokens WHERE expires <= ?", (now,))
        rows = self._conn.execute(
            "SELECT token, created, expires, claimed_by FROM pair_tokens ORDER BY created DESC"
        )
        return [_record(TokenRecord, row) for row in rows]

    def claim_token(self, token: bytes, link_key: bytes, now: int) -> str:
        """Claim a token for a link key: 'ok' (also again by the same key), 'expired', 'used'."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT expires, claimed_by FROM pair_tokens WHERE token = ?", (token,)
            ).fetchone()
            if row is None or row[0] <= now:
                return "expired"
            if row[1] is not None and row[1] != link_key:
                return "used"
            conn.execute("UPDATE pair_tokens SET claimed_by = ? WHERE token = ?", (link_key, token))
        return "ok"

    def add_pairing(self, record: PairingRecord) -> int:
        """Record a pairing attempt; returns its id."""
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO pairings (direction, identity, link_key, name, token, expires, host,"
                " port, state, reason, created, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    record.direction,
                    record.identity,
                    record.link_key,
                    record.name,
                    record.token,
                    record.expires,
                    record.host,
                    record.port,
                    record.state,
                    record.reason,
                    record.created,
                    record.updated,
                ),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def set_pairing_state(self, pairing_id: int, state: str, reason: str, now: int) -> None:
        """Move a pairing attempt to a new state."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE pairings SET state = ?, reason = ?, updated = ? WHERE id = ?",
                (state, reason, now, pairing_id),
            )

    def pairings(self, limit: int = 100) -> list[PairingRecord]:
        """The most recent pairing attempts, newest first."""
        rows = self._conn.execute(
            f"SELECT {_PAIRING_COLUMNS} FROM pairings ORDER BY id DESC LIMIT ?",  # noqa: S608
            (limit,),
        )
        return [_record(PairingRecord, row) for row in rows]

    # --- circles and moments -------------------------------------------------

    def save_manifest(
        self, circle_id: bytes, epoch: int, owner: bytes, name: str, raw: bytes
    ) -> bool:
        """Keep a manifest; it becomes the circle's current one if its epoch is newer.

        Returns False if it was already kept (two members may hand it over at once)."""
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO manifests (circle_id, epoch, manifest) VALUES (?, ?, ?)",
                (circle_id, epoch, raw),
            )
            if cursor.rowcount != 1:
                return False
            row = conn.execute(
                "SELECT epoch FROM circles WHERE circle_id = ?", (circle_id,)
            ).fetchone()
            if row is not None and row[0] >= epoch:
                return True
            conn.execute(
                "INSERT INTO circles (circle_id, owner, name, epoch, manifest) VALUES (?,?,?,?,?)"
                " ON CONFLICT (circle_id) DO UPDATE SET name = excluded.name,"
                " epoch = excluded.epoch, manifest = excluded.manifest",
                (circle_id, owner, name, epoch, raw),
            )
        return True

    def save_removal(self, circle_id: bytes, member: bytes, epoch: int, notice: bytes) -> None:
        """Keep the newest removal notice for a member of a circle we own."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO removals (circle_id, member, epoch, notice) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (circle_id, member) DO UPDATE SET epoch = excluded.epoch,"
                " notice = excluded.notice",
                (circle_id, member, epoch, notice),
            )

    def drop_removals(self, circle_id: bytes, members: Sequence[bytes]) -> None:
        """Forget removal notices of members who are back in the circle."""
        with self._transaction() as conn:
            conn.executemany(
                "DELETE FROM removals WHERE circle_id = ? AND member = ?",
                [(circle_id, m) for m in members],
            )

    def removals_for(self, member: bytes) -> list[bytes]:
        """The removal notices we hold for `member`."""
        rows = self._conn.execute("SELECT notice FROM removals WHERE member = ?", (member,))
        return [r[0] for r in rows]

    def set_removed(self, circle_id: bytes, epoch: int | None, at: int | None) -> None:
        """Record that we were removed from a circle from `epoch` on (None: we are in it)."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE circles SET removed_epoch = ?, removed_at = ? WHERE circle_id = ?",
                (epoch, at, circle_id),
            )

    def removed_from(self) -> dict[bytes, tuple[int, int]]:
        """The circles we were removed from: circle -> (first epoch without us, when)."""
        rows = self._conn.execute(
            "SELECT circle_id, removed_epoch, removed_at FROM circles"
            " WHERE removed_epoch IS NOT NULL"
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    def manifests(self) -> list[tuple[bytes, int, bytes]]:
        """Every manifest kept: (circle id, epoch, raw)."""
        return list(self._conn.execute("SELECT circle_id, epoch, manifest FROM manifests"))

    def current_manifests(self) -> list[bytes]:
        """The current manifest of each circle."""
        return [r[0] for r in self._conn.execute("SELECT manifest FROM circles ORDER BY name")]

    def delete_circle(self, circle_id: bytes) -> list[bytes]:
        """Forget a circle, its manifests and every moment in it; returns freed chunks."""
        with self._transaction() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT moment_id FROM moments WHERE circle_id = ?", (circle_id,)
                )
            ]
            freed = self._delete_moments(conn, ids)
            conn.execute("DELETE FROM manifests WHERE circle_id = ?", (circle_id,))
            conn.execute("DELETE FROM circles WHERE circle_id = ?", (circle_id,))
            conn.execute("DELETE FROM removals WHERE circle_id = ?", (circle_id,))
        return freed

    def add_moments(self, moments: Sequence[MomentRow]) -> list[bool]:
        """Store verified moments and the blob chunks they use, in one transaction.

        Returns, for each, whether it was new (False if already there)."""
        added: list[bool] = []
        with self._transaction() as conn:
            for m in moments:
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO moments (moment_id, circle_id, author, seq, created,"
                    " kind, reply_to, expires, envelope, epoch) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        m.moment_id,
                        m.circle_id,
                        m.author,
                        m.seq,
                        m.created,
                        m.kind,
                        m.reply_to,
                        m.expires,
                        m.envelope,
                        m.epoch,
                    ),
                )
                added.append(cursor.rowcount == 1)
                if added[-1] and m.chunks:
                    conn.executemany(
                        "INSERT OR IGNORE INTO moment_chunks (moment_id, address) VALUES (?, ?)",
                        [(m.moment_id, a) for a in m.chunks],
                    )
        return added

    def moment_owners(self, moment_ids: Sequence[bytes]) -> dict[bytes, tuple[bytes, bytes]]:
        """(circle, author) of those of these moments that we hold."""
        out: dict[bytes, tuple[bytes, bytes]] = {}
        for moment_id in set(moment_ids):
            row = self._conn.execute(
                "SELECT circle_id, author FROM moments WHERE moment_id = ?", (moment_id,)
            ).fetchone()
            if row is not None:
                out[moment_id] = (row[0], row[1])
        return out

    @staticmethod
    def _delete_moments(conn: sqlite3.Connection, moment_ids: Sequence[bytes]) -> list[bytes]:
        """Delete moments and their chunk records; returns chunks nothing else uses."""
        freed: set[bytes] = set()
        for moment_id in moment_ids:
            freed.update(
                r[0]
                for r in conn.execute(
                    "SELECT address FROM moment_chunks WHERE moment_id = ?", (moment_id,)
                )
            )
            conn.execute("DELETE FROM moment_chunks WHERE moment_id = ?", (moment_id,))
            conn.execute("DELETE FROM moments WHERE moment_id = ?", (moment_id,))
        return Store._unused_chunks(conn, freed)

    @staticmethod
    def _unused_chunks(conn: sqlite3.Connection, addresses: Iterable[bytes]) -> list[bytes]:
        """Those of these chunks that no moment uses any more."""
        return [
            a
            for a in addresses
            if conn.execute("SELECT 1 FROM moment_chunks WHERE address = ?", (a,)).fetchone()
            is None
        ]

    def holdings(self) -> list[tuple[bytes, bytes, int, int]]:
        """(circle, author, epoch, highest seq) of everything held: the sync vectors."""
        return list(
            self._conn.execute(
                "SELECT circle_id, author, epoch, max(seq) FROM moments"
                " GROUP BY circle_id, author, epoch"
            )
        )

    def envelopes(
        self, circle_id: bytes, author: bytes, epoch: int, first: int, last: int, now: int
    ) -> list[tuple[int, bytes]]:
        """(seq, envelope) of a range, in order; retracted and expired ones left out."""
        return list(
            self._conn.execute(
                "SELECT seq, envelope FROM moments WHERE circle_id = ? AND author = ? AND epoch = ?"
                " AND seq BETWEEN ? AND ? AND retracted = 0 AND (expires IS NULL OR expires > ?)"
                " ORDER BY seq",
                (circle_id, author, epoch, first, last, now),
            )
        )

    def retracted_among(self, moment_ids: Sequence[bytes]) -> set[bytes]:
        """Those of these moments whose retraction we hold (it may arrive before them)."""
        found: set[bytes] = set()
        ids = list(moment_ids)
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))  # only placeholders
            found.update(
                r[0]
                for r in self._conn.execute(
                    f"SELECT reply_to FROM moments WHERE kind = 4 AND reply_to IN ({marks})",  # noqa: S608
                    part,
                )
            )
        return found

    def chunks_of_circles(self, circle_ids: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
        """(moment, chunk address) of every chunk used by moments of these circles."""
        out: list[tuple[bytes, bytes]] = []
        for circle_id in circle_ids:
            out += self._conn.execute(
                "SELECT c.moment_id, c.address FROM moment_chunks c JOIN moments m"
                " ON m.moment_id = c.moment_id WHERE m.circle_id = ?",
                (circle_id,),
            ).fetchall()
        return out

    def chunks_in_use(self, addresses: Sequence[bytes]) -> set[bytes]:
        """Those of these chunks that some moment uses."""
        found: set[bytes] = set()
        for start in range(0, len(addresses), 500):
            part = list(addresses[start : start + 500])
            marks = ",".join("?" * len(part))  # only placeholders
            found.update(
                r[0]
                for r in self._conn.execute(
                    f"SELECT DISTINCT address FROM moment_chunks WHERE address IN ({marks})",  # noqa: S608
                    part,
                )
            )
        return found

    def chunks_circles(self, addresses: Sequence[bytes]) -> dict[bytes, list[tuple[bytes, int]]]:
        """(circle, epoch) of every moment that uses each of these chunks (none: absent)."""
        out: dict[bytes, list[tuple[bytes, int]]] = {}
        for address in addresses:
            uses = self._conn.execute(
                "SELECT m.circle_id, m.epoch FROM moment_chunks c JOIN moments m"
                " ON m.moment_id = c.moment_id WHERE c.address = ?",
                (address,),
            ).fetchall()
            if uses:
                out[address] = uses
        return out

    def next_seq(self, circle_id: bytes, author: bytes) -> int:
        """The next sequence number of `author` in a circle."""
        row = self._conn.execute(
            "SELECT coalesce(max(seq), 0) FROM moments WHERE circle_id = ? AND author = ?",
            (circle_id, author),
        ).fetchone()
        return int(row[0]) + 1

    def moment_rows(
        self,
        *,
        circle_id: bytes | None = None,
        before: int | None = None,
        after: tuple[int, bytes] | None = None,
        limit: int = 50,
        reply_to: bytes | None = None,
        moment_id: bytes | None = None,
        now: int,
    ) -> list[tuple[Any, ...]]:
        """Moments as (id, circle, author, seq, created, kind, reply_to, expires, retracted,
        envelope), newest first, never expired ones. The order is (created descending, id):
        `after`, a (created, id) pair, starts just past that moment, whatever its time."""
        where = ["(expires IS NULL OR expires > ?)"]
        args: list[Any] = [now]
        if moment_id is not None:
            where.append("moment_id = ?")
            args.append(moment_id)
        elif reply_to is not None:
            where.append("reply_to = ?")
            args.append(reply_to)
        else:
            where.append("kind = 1")
        if circle_id is not None:
            where.append("circle_id = ?")
            args.append(circle_id)
        if before is not None:
            where.append("created < ?")
            args.append(before)
        if after is not None:
            where.append("(created < ? OR (created = ? AND moment_id > ?))")
            args += [after[0], after[0], after[1]]
        columns = "moment_id, circle_id, author, seq, created, kind, reply_to, expires, retracted"
        conditions = " AND ".join(where)  # only the fixed fragments above
        sql = f"SELECT {columns}, envelope FROM moments WHERE {conditions}"  # noqa: S608
        sql += " ORDER BY created DESC, moment_id LIMIT ?"
        return list(self._conn.execute(sql, (*args, limit)))

    def retract(self, moment_id: bytes) -> list[bytes]:
        """Delete a moment's content, keep a retracted marker; its comments go too.

        Returns the blob chunks nothing uses any more, for the caller to delete."""
        with self._transaction() as conn:
            # Its comments and reactions go; the retraction itself stays, to travel on.
            replies = [
                r[0]
                for r in conn.execute(
                    "SELECT moment_id FROM moments WHERE reply_to = ? AND kind != 4",
                    (moment_id,),
                )
            ]
            freed = self._delete_moments(conn, replies)
            chunks = [
                r[0]
                for r in conn.execute(
                    "SELECT address FROM moment_chunks WHERE moment_id = ?", (moment_id,)
                )
            ]
            conn.execute("DELETE FROM moment_chunks WHERE moment_id = ?", (moment_id,))
            conn.execute(
                "UPDATE moments SET retracted = 1, envelope = x'' WHERE moment_id = ?",
                (moment_id,),
            )
            freed += self._unused_chunks(conn, chunks)
        return freed

    def delete_expired(self, now: int) -> tuple[int, list[bytes]]:
        """Delete every moment whose expiry has passed, and what answers it.

        Returns how many went, and the blob chunks nothing uses any more."""
        with self._transaction() as conn:
            gone = [
                r[0]
                for r in conn.execute(
                    "SELECT moment_id FROM moments WHERE expires IS NOT NULL AND expires <= ?",
                    (now,),
                )
            ]
            replies = [
                r[0]
                for g in gone
                for r in conn.execute("SELECT moment_id FROM moments WHERE reply_to = ?", (g,))
            ]
            freed = self._delete_moments(conn, gone + replies)
        return len(gone), freed

    def record_rejections(
        self, now: int, rejections: Sequence[tuple[str, int]], sender: bytes | None
    ) -> None:
        """Remember why things a peer sent were not stored, as (reason, size), in one
        transaction (bounded to the last 1000)."""
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO rejected (time, reason, size, sender) VALUES (?, ?, ?, ?)",
                [(now, reason, size, sender) for reason, size in rejections[-1000:]],
            )
            conn.execute("DELETE FROM rejected WHERE id <= (SELECT max(id) - 1000 FROM rejected)")

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
