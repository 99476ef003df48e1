"""Delivered and read marks, and edits (spec/store.md, version 9; spec/moments.md sections
9 and 10): what other members hold and have read of our moments, and the newest text of
an edited post."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from p2pmoments.core.moment import Kind
from p2pmoments.store.database import Database, in_batches
from p2pmoments.store.reading import Place
from p2pmoments.store.records import StoredMoment, columns, record

__all__ = ["ReceiptTables"]

_COLUMNS = columns(StoredMoment)


class ReceiptTables(Database):
    """The delivered marks, read receipts and edits as the store holds them."""

    def record_delivered(
        self, circle_id: bytes, person: bytes, held: Iterable[tuple[int, int]]
    ) -> bool:
        """A member's daemon holds our moments of `circle_id` up to these (epoch, seq):
        raise its marks, never lower them; True if one rose."""
        rose = False
        with self._transaction() as conn:
            for epoch, seq in held:
                cursor = conn.execute(
                    "INSERT INTO delivered (circle_id, person, epoch, seq) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (circle_id, person, epoch) DO UPDATE SET seq = excluded.seq"
                    " WHERE excluded.seq > delivered.seq",
                    (circle_id, person, epoch, seq),
                )
                rose = rose or cursor.rowcount == 1
        return rose

    def delivered_marks(self, circle_id: bytes) -> list[tuple[bytes, int, int]]:
        """(person, epoch, highest seq of ours held) for each member's daemon we heard of."""
        rows = self._conn.execute(
            "SELECT person, epoch, seq FROM delivered WHERE circle_id = ?", (circle_id,)
        )
        return [(r[0], r[1], r[2]) for r in rows]

    def read_receipts(self, circle_id: bytes) -> list[tuple[bytes, int, Place]]:
        """(receipt author, its seq, the place of the post it names) of every read
        receipt in a circle whose post is here (the caller keeps each one's furthest)."""
        rows = self._conn.execute(
            "SELECT r.author, r.seq, t.created, t.place, t.seq FROM moments r"
            " JOIN moments t ON t.moment_id = r.reply_to"
            " WHERE r.circle_id = ? AND r.kind = ? AND t.circle_id = r.circle_id",
            (circle_id, Kind.READ),
        )
        return [(r[0], r[1], (r[2], r[3], r[4])) for r in rows]

    def edits_of(self, moment_ids: Sequence[bytes]) -> list[StoredMoment]:
        """The edits naming these moments (the caller keeps their authors' latest)."""
        out: list[StoredMoment] = []
        for part, marks in in_batches(list(moment_ids)):
            sql = (
                f"SELECT {_COLUMNS} FROM moments WHERE reply_to IN ({marks})"  # noqa: S608
                " AND kind = ? ORDER BY seq"
            )
            rows = self._conn.execute(sql, (*part, Kind.EDIT))
            out += [record(StoredMoment, row) for row in rows]
        return out

    def post_at(self, circle_id: bytes, place: Place) -> tuple[bytes, bytes] | None:
        """(id, author) of the post at a place in a circle's feed, if held."""
        row = self._conn.execute(
            "SELECT moment_id, author FROM moments WHERE circle_id = ? AND kind = ?"
            " AND created = ? AND place = ? AND seq = ?",
            (circle_id, Kind.POST, *place),
        ).fetchone()
        return None if row is None else (row[0], row[1])
