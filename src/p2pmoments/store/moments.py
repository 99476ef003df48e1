"""Moments, the blob chunks they use, and what we refused."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from p2pmoments.core.moment import Kind
from p2pmoments.store.database import Database, in_batches, seq_floor_key
from p2pmoments.store.records import Freed, NewMoment, StoredMoment, columns, record

__all__ = ["MomentTables"]

_MOMENT_COLUMNS = columns(StoredMoment)
# The feed's order, newest first; within a second by place (the order stored here, but
# one author's as they were posted: add_moments), then seq (one author's of one place).
FEED_ORDER = "created DESC, place DESC, seq DESC"
_ROWS_A_STATEMENT = 90  # moments inserted by one statement (11 values each: under 999)


class MomentTables(Database):
    """The tables about moments."""

    def add_moments(
        self,
        moments: Sequence[NewMoment],
        packed: Sequence[tuple[bytes, bytes, int, int]] = (),
    ) -> list[bool]:
        """Store verified moments and the blob chunks they use, in one transaction, with
        where our own chunks lie in their pack: (address, pack, start, length).

        Returns, for each, whether it was new (False if already there)."""
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO packed (address, pack, start, length) VALUES (?,?,?,?)",
                packed,
            )
            # One statement for the batch (a catch-up stores thousands at once): those
            # already held, by id or by (circle, author, seq), are left as they are; the
            # ids found before and after tell which were new.
            ids = [m.moment_id for m in moments]
            before = self._held_ids(conn, ids)
            # place: the order stored here (schema 7), past every row held (a place is
            # never above its rowid); _keep_authors_order then puts one author's moments
            # of one second back in the order they were posted.
            base = conn.execute("SELECT coalesce(max(rowid), 0) FROM moments").fetchone()[0]
            rows = [
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
                    base + i,
                )
                for i, m in enumerate(moments, 1)
                if m.moment_id not in before
            ]
            inserted = self._insert_moments(conn, rows)
            # Usually every one was new: no need to look them up again (a row read back is
            # a wait for Python's lock, as long as a busy thread holds it: a catch-up).
            fresh = {r[0] for r in rows}
            after = before | fresh if inserted == len(fresh) else self._held_ids(conn, ids)
            added = []
            for m in moments:
                added.append(m.moment_id in after and m.moment_id not in before)
                before.add(m.moment_id)  # the same moment twice in a batch: new once
            self._keep_authors_order(
                conn, [m for m, new in zip(moments, added, strict=True) if new]
            )
            uses = [
                (m.moment_id, a)
                for m, new in zip(moments, added, strict=True)
                if new
                for a in m.chunks
            ]
            conn.executemany(
                "INSERT OR IGNORE INTO moment_chunks (moment_id, address) VALUES (?, ?)", uses
            )
        return added

    @staticmethod
    def _insert_moments(conn: Any, rows: Sequence[tuple[Any, ...]]) -> int:
        """INSERT OR IGNORE these rows of `moments`, several a statement; returns how many
        went in. Each statement runs with Python's lock let go, and taking it back waits
        behind any busy thread: a statement a row cost a catch-up's store most of its time
        (issue 22). 90 rows of 11 values stay under SQLite's oldest limit of 999."""
        inserted = 0
        for start in range(0, len(rows), _ROWS_A_STATEMENT):
            part = rows[start : start + _ROWS_A_STATEMENT]
            marks = ",".join(["(?,?,?,?,?,?,?,?,?,?,?)"] * len(part))
            sql = (
                "INSERT OR IGNORE INTO moments (moment_id, circle_id, author, seq, created,"
                " kind, reply_to, expires, envelope, epoch, place) VALUES "
            )
            cursor = conn.execute(sql + marks, [value for row in part for value in row])
            inserted += cursor.rowcount
        return inserted

    @staticmethod
    def _keep_authors_order(conn: Any, new: Sequence[NewMoment]) -> None:
        """One author's moments of one second read in the order they were posted: one
        stored after a later one of the same second (a catch-up, relays deliver in any
        order) takes the smallest place of those; seq then orders them. One query per
        author and circle of the batch; only moments that came early change."""
        groups: dict[tuple[bytes, bytes], list[NewMoment]] = {}
        for m in new:
            groups.setdefault((m.circle_id, m.author), []).append(m)
        changes: list[tuple[int, bytes]] = []
        for (circle_id, author), ms in groups.items():
            # Only seconds that hold two or more of them can change: those alone are read.
            where = "circle_id = ? AND author = ? AND seq >= ?"
            rows = conn.execute(
                f"SELECT seq, created, place, moment_id FROM moments WHERE {where}"  # noqa: S608
                f" AND created IN (SELECT created FROM moments WHERE {where}"
                " AND created BETWEEN ? AND ? GROUP BY created HAVING count(*) > 1)"
                " ORDER BY seq DESC",
                (
                    circle_id,
                    author,
                    min(m.seq for m in ms),
                    circle_id,
                    author,
                    min(m.seq for m in ms),
                    min(m.created for m in ms),
                    max(m.created for m in ms),
                ),
            )
            lowest: dict[int, int] = {}  # created -> smallest place among later seqs
            for _, created, place, moment_id in rows:
                before = lowest.get(created)
                if before is not None and before < place:
                    changes.append((before, moment_id))
                    place = before
                lowest[created] = place
        conn.executemany("UPDATE moments SET place = ? WHERE moment_id = ?", changes)

    @staticmethod
    def _held_ids(conn: Any, ids: Sequence[bytes]) -> set[bytes]:
        found: set[bytes] = set()
        for part, marks in in_batches(list(ids)):
            found.update(
                r[0]
                for r in conn.execute(
                    f"SELECT moment_id FROM moments WHERE moment_id IN ({marks})",  # noqa: S608
                    part,
                )
            )
        return found

    def add_moments_and_find_retracted(
        self,
        moments: Sequence[NewMoment],
        packed: Sequence[tuple[bytes, bytes, int, int]] = (),
    ) -> tuple[list[bool], set[bytes]]:
        """add_moments, then retracted_among for those new that are not retractions."""
        added = self.add_moments(moments, packed)
        new = [m.moment_id for m, a in zip(moments, added, strict=True) if a]
        kinds = {m.moment_id: m.kind for m in moments}
        return added, self.retracted_among([i for i in new if kinds[i] is not Kind.RETRACTION])

    def next_seq(self, circle_id: bytes, author: bytes) -> int:
        """The next sequence number of `author` in a circle: past every one held, and past
        every one whose moment was deleted since (never one used twice)."""
        row = self._conn.execute(
            "SELECT max(coalesce((SELECT max(seq) FROM moments WHERE circle_id = ? AND author = ?),"
            " 0), coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?), 0))",
            (circle_id, author, seq_floor_key(circle_id, author)),
        ).fetchone()
        return int(row[0]) + 1

    def highest_seqs(self, author: bytes) -> list[tuple[bytes, int]]:
        """(circle, highest sequence held) of every circle `author` wrote in: a revoked
        device's cut-offs (spec/devices.md section 4)."""
        return list(
            self._conn.execute(
                "SELECT circle_id, max(seq) FROM moments WHERE author = ? GROUP BY circle_id",
                (author,),
            )
        )

    def moment_owners(self, moment_ids: Sequence[bytes]) -> dict[bytes, tuple[bytes, bytes]]:
        """(circle, author) of those of these moments that we hold."""
        out: dict[bytes, tuple[bytes, bytes]] = {}
        for part, marks in in_batches(sorted(set(moment_ids))):
            rows = self._conn.execute(
                f"SELECT moment_id, circle_id, author FROM moments WHERE moment_id IN ({marks})",  # noqa: S608
                part,
            )
            out.update({r[0]: (r[1], r[2]) for r in rows})
        return out

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
    ) -> list[bytes]:
        """The envelopes of a range, in order; retracted and expired ones left out."""
        return [e for _, e in self.seq_envelopes(circle_id, author, epoch, first, last, now)]

    def seq_envelopes(
        self, circle_id: bytes, author: bytes, epoch: int, first: int, last: int, now: int
    ) -> list[tuple[int, bytes]]:
        """(seq, envelope) of a range, in order; retracted and expired ones left out."""
        rows = self._conn.execute(
            "SELECT seq, envelope FROM moments WHERE circle_id = ? AND author = ? AND epoch = ?"
            " AND seq BETWEEN ? AND ? AND retracted = 0 AND (expires IS NULL OR expires > ?)"
            " ORDER BY seq",
            (circle_id, author, epoch, first, last, now),
        )
        return [(r[0], r[1]) for r in rows]

    def retracted_among(self, moment_ids: Sequence[bytes]) -> set[bytes]:
        """Those of these moments whose retraction we hold (it may arrive before them)."""
        found: set[bytes] = set()
        for part, marks in in_batches(list(moment_ids)):
            found.update(
                r[0]
                for r in self._conn.execute(
                    f"SELECT reply_to FROM moments WHERE kind = ? AND reply_to IN ({marks})",  # noqa: S608
                    (Kind.RETRACTION, *part),
                )
            )
        return found

    # --- reading -----------------------------------------------------------------------

    def posts(
        self,
        *,
        now: int,
        circle_id: bytes | None = None,
        before: int | None = None,
        after: tuple[int, bytes] | None = None,
        limit: int = 50,
        among: Sequence[bytes] | None = None,
    ) -> list[StoredMoment]:
        """Posts, newest first, never expired ones; posts of the same second in the order
        they were stored here, the latest first, but one author's in the order they were
        posted, whatever order they came in (add_moments). `after`, a (created, id) pair,
        starts just past that post (should it have gone meanwhile, with every post of its
        second: one may repeat, none is skipped). `among`: only these circles' posts."""
        where = ["(expires IS NULL OR expires > ?)", "kind = ?"]
        args: list[Any] = [now, Kind.POST]
        if circle_id is not None:
            where.append("circle_id = ?")
            args.append(circle_id)
        if among is not None:  # only these circles (the albums, or the conversations)
            if not among:
                return []
            where.append(f"circle_id IN ({','.join('?' * len(among))})")
            args += among
        if before is not None:
            where.append("created < ?")
            args.append(before)
        if after is not None:
            where.append(
                "(created < ? OR (created = ? AND (NOT EXISTS (SELECT 1 FROM moments"
                " WHERE moment_id = ?) OR (place, seq) < (SELECT place, seq"
                " FROM moments WHERE moment_id = ?))))"
            )
            args += [after[0], after[0], after[1], after[1]]
        return self._select(" AND ".join(where), args, FEED_ORDER, limit)

    def moment(self, moment_id: bytes, now: int) -> StoredMoment | None:
        """One moment we hold (retracted ones too), unless it expired."""
        found = self._select(
            "moment_id = ? AND (expires IS NULL OR expires > ?)", [moment_id, now], "created", 1
        )
        return found[0] if found else None

    def replies_to(self, moment_ids: Sequence[bytes], now: int) -> list[StoredMoment]:
        """The comments and reactions of these moments, oldest first (within a second as
        the feed orders posts): one query a page."""
        out: list[StoredMoment] = []
        for part, marks in in_batches(list(moment_ids)):
            out += self._select(
                f"reply_to IN ({marks}) AND kind IN (?, ?) AND retracted = 0"
                " AND (expires IS NULL OR expires > ?)",
                [*part, Kind.COMMENT, Kind.REACTION, now],
                "created, place, seq",
                1000 * len(part),
            )
        return out

    def moment_ids(self, now: int, limit: int) -> list[bytes]:
        """The ids of moments we hold (to find one by a prefix of its id)."""
        rows = self._conn.execute(
            "SELECT moment_id FROM moments WHERE expires IS NULL OR expires > ? LIMIT ?",
            (now, limit),
        )
        return [r[0] for r in rows]

    def _select(
        self, conditions: str, args: Sequence[Any], order: str, limit: int
    ) -> list[StoredMoment]:
        # `conditions` and `order` are fixed fragments written in this module.
        sql = (
            f"SELECT {_MOMENT_COLUMNS} FROM moments WHERE {conditions}"  # noqa: S608
            f" ORDER BY {order} LIMIT ?"
        )
        return [record(StoredMoment, row) for row in self._conn.execute(sql, (*args, limit))]

    # --- chunks ------------------------------------------------------------------------

    def chunks_of_circles(
        self, circle_ids: Sequence[bytes]
    ) -> list[tuple[bytes, bytes, int, bytes]]:
        """(moment, circle, epoch, chunk address) of every chunk that moments of these
        circles use, but our own (in packs: they are all here)."""
        out: list[tuple[bytes, bytes, int, bytes]] = []
        for circle_id in circle_ids:
            out += self._conn.execute(
                "SELECT c.moment_id, m.circle_id, m.epoch, c.address FROM moment_chunks c"
                " JOIN moments m ON m.moment_id = c.moment_id"
                " LEFT JOIN packed p ON p.address = c.address"
                " WHERE m.circle_id = ? AND p.address IS NULL",
                (circle_id,),
            ).fetchall()
        return out

    def add_chunks(self, uses: Sequence[tuple[bytes, bytes]]) -> None:
        """Record more chunks that moments use, as (moment, address): those a chunk index
        names, once it is here (spec/moments.md section 4)."""
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO moment_chunks (moment_id, address)"
                " SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM moments WHERE moment_id = ?1)",
                uses,
            )

    def first_users(self, addresses: Sequence[bytes]) -> dict[bytes, bytes]:
        """address -> the moment that was first recorded as using it (the one that
        follows the chunks a shared index names; spec/moments.md section 4.3)."""
        out: dict[bytes, bytes] = {}
        for part, marks in in_batches(sorted(set(addresses))):
            # SQLite takes the bare column from the row with the smallest rowid.
            rows = self._conn.execute(
                "SELECT address, moment_id, MIN(rowid) FROM moment_chunks"  # noqa: S608
                f" WHERE address IN ({marks}) GROUP BY address",
                part,
            )
            out.update({r[0]: r[1] for r in rows})
        return out

    def packed_at(self, addresses: Sequence[bytes]) -> dict[bytes, tuple[bytes, int, int]]:
        """Where those of these chunks that are ours lie: address -> (pack, start, length)."""
        out: dict[bytes, tuple[bytes, int, int]] = {}
        for part, marks in in_batches(list(addresses)):
            rows = self._conn.execute(
                f"SELECT address, pack, start, length FROM packed WHERE address IN ({marks})",  # noqa: S608
                part,
            )
            out.update({r[0]: (r[1], r[2], r[3]) for r in rows})
        return out

    def moments_by_id(self, moment_ids: Sequence[bytes]) -> list[StoredMoment]:
        """The moments we hold among these (retracted ones too, expired ones not)."""
        out: list[StoredMoment] = []
        for part, marks in in_batches(list(moment_ids)):
            out += self._select(f"moment_id IN ({marks})", part, "created", len(part))
        return out

    def chunks_in_use(self, addresses: Sequence[bytes]) -> set[bytes]:
        """Those of these chunks that some moment uses."""
        return self._found_among("moment_chunks", "address", addresses)

    def packs_in_use(self, packs: Sequence[bytes]) -> set[bytes]:
        """Those of these packs that hold a chunk of ours (a stored post)."""
        return self._found_among("packed", "pack", packs)

    def _found_among(self, table: str, column: str, values: Sequence[bytes]) -> set[bytes]:
        """Those of `values` that `table` holds in `column` (both names of ours, not input)."""
        found: set[bytes] = set()
        for part, marks in in_batches(list(values)):
            query = f"SELECT DISTINCT {column} FROM {table} WHERE {column} IN ({marks})"  # noqa: S608
            found.update(r[0] for r in self._conn.execute(query, part))
        return found

    def chunks_circles(self, addresses: Sequence[bytes]) -> dict[bytes, list[tuple[bytes, int]]]:
        """(circle, epoch) of every moment that uses each of these chunks (none: absent)."""
        out: dict[bytes, list[tuple[bytes, int]]] = {}
        for part, marks in in_batches(list(addresses)):
            sql = (  # only placeholders are formatted in
                "SELECT c.address, m.circle_id, m.epoch FROM moment_chunks c JOIN moments m"  # noqa: S608
                f" ON m.moment_id = c.moment_id WHERE c.address IN ({marks})"
            )
            rows = self._conn.execute(sql, part)
            for address, circle_id, epoch in rows:
                out.setdefault(address, []).append((circle_id, epoch))
        return out

    # --- deleting ------------------------------------------------------------------------

    def retract(self, moment_id: bytes) -> Freed:
        """Delete a moment's content, keep a retracted marker; its comments go too.

        Returns the blob chunks and packs nothing uses any more, for the caller to delete."""
        with self._transaction() as conn:
            # Its comments and reactions go; the retraction itself stays, to travel on.
            replies = [
                r[0]
                for r in conn.execute(
                    "SELECT moment_id FROM moments WHERE reply_to = ? AND kind != ?",
                    (moment_id, Kind.RETRACTION),
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
            freed += self._unused_chunks(conn, chunks) + Freed(moments=(moment_id,))
        return freed

    def delete_expired(self, now: int) -> tuple[int, Freed]:
        """Delete every moment whose expiry has passed, and what answers it.

        Returns how many went, and the blob chunks and packs nothing uses any more."""
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
