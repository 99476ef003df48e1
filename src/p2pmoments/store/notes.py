"""Notes written together (spec/notes.md, spec/store.md version 9): each note's
document as merged so far, re-encoded (a cache of its moments: rebuilt from them if
lost), and its history of versions."""

from __future__ import annotations

from collections.abc import Sequence

from p2pmoments.core.moment import Kind
from p2pmoments.store.database import Database
from p2pmoments.store.moments import _MOMENT_COLUMNS
from p2pmoments.store.records import StoredMoment, record

__all__ = ["NoteRow", "NoteTables", "VersionRow"]

# (note, circle, state, applied, title, updated)
NoteRow = tuple[bytes, bytes, bytes, int, str, int]
# (id, author, first, last, edits, text: zlib of title NUL text)
VersionRow = tuple[int, bytes, int, int, int, bytes]

_NOTE_KINDS = (int(Kind.NOTE), int(Kind.NOTE_EDIT), int(Kind.NOTE_SNAPSHOT))


class NoteTables(Database):
    """The notes' documents and versions."""

    def note(self, note_id: bytes) -> NoteRow | None:
        """A note's document as merged so far, if any."""
        row = self._conn.execute(
            "SELECT note_id, circle_id, state, applied, title, updated FROM notes"
            " WHERE note_id = ?",
            (note_id,),
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2], row[3], row[4], row[5])

    def note_ids(self, circle_id: bytes) -> list[bytes]:
        """Every note of a circle we hold a moment that makes it of: its first moment, or
        a snapshot of it (a member who joined later holds only that), oldest first."""
        rows = self._conn.execute(
            "SELECT coalesce(reply_to, moment_id) AS note, min(rowid) FROM moments"
            " WHERE circle_id = ? AND kind IN (?, ?) AND retracted = 0"
            " GROUP BY note ORDER BY min(rowid)",
            (circle_id, int(Kind.NOTE), int(Kind.NOTE_SNAPSHOT)),
        )
        return [r[0] for r in rows]

    def note_moments(
        self, note_id: bytes, after: int, limit: int
    ) -> list[tuple[int, StoredMoment]]:
        """(rowid, moment) of a note's moments stored after rowid `after`, in the order
        stored, their envelopes still here."""
        # Two lookups by index (its first moment by id, the rest by reply_to), not one
        # scan: a note is read at every keystroke.
        rows = self._conn.execute(
            f"SELECT rowid, {_MOMENT_COLUMNS} FROM moments"  # noqa: S608
            " WHERE moment_id = ? AND kind = ? AND rowid > ? AND retracted = 0"
            f" UNION ALL SELECT rowid, {_MOMENT_COLUMNS} FROM moments"
            " WHERE reply_to = ? AND kind IN (?, ?) AND rowid > ? AND retracted = 0"
            " ORDER BY rowid LIMIT ?",
            (note_id, int(Kind.NOTE), after, note_id, *_NOTE_KINDS[1:], after, limit),
        )
        return [(r[0], record(StoredMoment, r[1:])) for r in rows]

    def note_whole_epoch(self, note_id: bytes) -> int:
        """The newest epoch in which the whole note was sent: its first moment, or a
        snapshot of it (spec/notes.md §5); -1 if none is held."""
        first = self._conn.execute(
            "SELECT max(epoch) FROM moments WHERE moment_id = ? AND kind = ?",
            (note_id, int(Kind.NOTE)),
        ).fetchone()[0]
        snapshot = self._conn.execute(
            "SELECT max(epoch) FROM moments WHERE reply_to = ? AND kind = ?",
            (note_id, int(Kind.NOTE_SNAPSHOT)),
        ).fetchone()[0]
        return max(-1 if first is None else first, -1 if snapshot is None else snapshot)

    def save_note(self, row: NoteRow, versions: Sequence[VersionRow]) -> None:
        """Keep a note's document and its newest versions (a version with an id already
        held is replaced: its author went on editing)."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO notes (note_id, circle_id, state, applied, title,"
                " updated) VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )
            conn.executemany(
                "INSERT OR REPLACE INTO note_versions (id, note_id, author, first, last,"
                " edits, text) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(v[0], row[0], *v[1:]) for v in versions],
            )

    def note_versions(self, note_id: bytes, limit: int) -> list[VersionRow]:
        """A note's newest versions, oldest first."""
        rows = self._conn.execute(
            "SELECT id, author, first, last, edits, text FROM note_versions WHERE note_id = ?"
            " ORDER BY id DESC LIMIT ?",
            (note_id, limit),
        ).fetchall()
        return [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in reversed(rows)]

    def next_version_id(self) -> int:
        """An id for a new version."""
        return int(
            self._conn.execute("SELECT coalesce(max(id), 0) + 1 FROM note_versions").fetchone()[0]
        )

    def trim_versions(self, note_id: bytes, keep: int) -> None:
        """Forget all but a note's newest `keep` versions."""
        with self._transaction() as conn:
            conn.execute(
                "DELETE FROM note_versions WHERE note_id = ? AND id NOT IN (SELECT id FROM"
                " note_versions WHERE note_id = ? ORDER BY id DESC LIMIT ?)",
                (note_id, note_id, keep),
            )

    def compact_note(self, note_id: bytes, moment_ids: Sequence[bytes]) -> int:
        """Drop the envelopes of these moments of a note, held in a snapshot now: each
        stays as a marker (as a retracted moment does) so that what we hold of its
        author stays gap-free (spec/sync.md §2), and is served to no one. Returns the
        bytes freed."""
        with self._transaction() as conn:
            freed = 0
            for moment_id in moment_ids:
                row = conn.execute(
                    "SELECT length(envelope) FROM moments WHERE moment_id = ? AND reply_to = ?"
                    " AND kind IN (?, ?)",
                    (moment_id, note_id, int(Kind.NOTE_EDIT), int(Kind.NOTE_SNAPSHOT)),
                ).fetchone()
                if row is None:
                    continue
                freed += row[0]
                conn.execute(
                    "UPDATE moments SET retracted = 1, envelope = x'' WHERE moment_id = ?",
                    (moment_id,),
                )
            return freed

    def note_size(self, note_id: bytes) -> tuple[int, int, int]:
        """(moments held with their envelopes, their bytes, the stored document's bytes)."""
        count, size = self._conn.execute(
            "SELECT count(*), coalesce(sum(length(envelope)), 0) FROM moments"
            " WHERE (moment_id = ? OR reply_to = ?) AND kind IN (?, ?, ?) AND retracted = 0",
            (note_id, note_id, *_NOTE_KINDS),
        ).fetchone()
        state = self._conn.execute(
            "SELECT coalesce(length(state), 0) FROM notes WHERE note_id = ?", (note_id,)
        ).fetchone()
        return int(count), int(size), int(state[0]) if state else 0
