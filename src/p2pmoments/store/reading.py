"""What the person has read: a mark per circle (spec/store.md, version 7)."""

from __future__ import annotations

from p2pmoments.core.moment import Kind
from p2pmoments.store.database import Database
from p2pmoments.store.moments import FEED_ORDER

__all__ = ["Place", "ReadTables"]

# A post's position in the feed's order (store/moments.py FEED_ORDER): (created, place, seq).
Place = tuple[int, int, int]


class ReadTables(Database):
    """The read marks, and how many posts lie past them."""

    def read_marks(self) -> dict[bytes, Place]:
        """Every circle's mark: the place of the newest post the person has seen there."""
        rows = self._conn.execute("SELECT circle_id, created, place, seq FROM read_marks")
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def mark_read(self, circle_id: bytes, place: Place, now: int) -> bool:
        """Move a circle's mark up to `place`, never back; True if it moved."""
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO read_marks (circle_id, created, place, seq, updated)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (circle_id) DO UPDATE SET"
                " created = excluded.created, place = excluded.place, seq = excluded.seq,"
                " updated = excluded.updated WHERE (excluded.created, excluded.place,"
                " excluded.seq) > (read_marks.created, read_marks.place, read_marks.seq)",
                (circle_id, *place, now),
            )
            return cursor.rowcount == 1

    def newest_post(self, circle_id: bytes, now: int) -> Place | None:
        """The place of a circle's newest post held (not expired), if any."""
        row = self._conn.execute(
            f"SELECT created, place, seq FROM moments WHERE circle_id = ? AND kind = ?"  # noqa: S608
            f" AND (expires IS NULL OR expires > ?) ORDER BY {FEED_ORDER} LIMIT 1",
            (circle_id, Kind.POST, now),
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def unread_by_author(self, now: int) -> list[tuple[bytes, bytes, int, int]]:
        """(circle, author, highest seq, count) of posts past each circle's mark (every
        post of a circle without one), neither retracted nor expired: by author, for the
        caller to leave out the person's own."""
        return list(
            self._conn.execute(
                "SELECT m.circle_id, m.author, max(m.seq), count(*) FROM moments m"
                " LEFT JOIN read_marks r ON r.circle_id = m.circle_id"
                " WHERE m.kind = ? AND m.retracted = 0 AND (m.expires IS NULL OR m.expires > ?)"
                " AND (r.circle_id IS NULL OR (m.created, m.place, m.seq)"
                " > (r.created, r.place, r.seq))"
                " GROUP BY m.circle_id, m.author",
                (Kind.POST, now),
            )
        )
