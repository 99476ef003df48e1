"""The store's side of files with versions (spec/moments.md section 9): a post's
version records, and letting go of the content of versions that are dropped. Version
records are moments (kind VERSION, reply_to the post): no table of their own."""

from __future__ import annotations

from collections.abc import Sequence

from p2pmoments.core.moment import Kind
from p2pmoments.store.database import Database, in_batches
from p2pmoments.store.records import Freed, StoredMoment, columns, record

__all__ = ["VersionTables"]

_COLUMNS = columns(StoredMoment)


class VersionTables(Database):
    """Version records, read; dropped versions' chunks, let go."""

    def versions_of(self, root: bytes) -> list[StoredMoment]:
        """The version records of a post we hold (not retracted), in no given order."""
        sql = (
            f"SELECT {_COLUMNS} FROM moments"  # noqa: S608
            " WHERE reply_to = ? AND kind = ? AND retracted = 0"
        )
        return [record(StoredMoment, r) for r in self._conn.execute(sql, (root, Kind.VERSION))]

    def version_facts(
        self, moment_ids: Sequence[bytes], roots: Sequence[bytes]
    ) -> tuple[dict[bytes, bytes], dict[bytes, int]]:
        """For the rules (core/replication/rules.py): of these moments held, the post
        whose file each is a version of (itself for a post, b"" for other kinds); and
        how many versions of each of `roots` are held."""
        files: dict[bytes, bytes] = {}
        for part, marks in in_batches(sorted(set(moment_ids))):
            rows = self._conn.execute(
                f"SELECT moment_id, kind, reply_to FROM moments WHERE moment_id IN ({marks})",  # noqa: S608
                part,
            )
            for moment_id, kind, reply_to in rows:
                if kind == Kind.POST:
                    files[moment_id] = moment_id
                else:
                    files[moment_id] = reply_to if kind == Kind.VERSION and reply_to else b""
        counts: dict[bytes, int] = {}
        for root in set(roots):
            row = self._conn.execute(
                "SELECT count(*) FROM moments WHERE reply_to = ? AND kind = ?",
                (root, Kind.VERSION),
            ).fetchone()
            counts[root] = int(row[0])
        return files, counts

    def drop_chunk_uses(self, uses: Sequence[tuple[bytes, bytes]]) -> Freed:
        """Forget that these moments use these chunks, as (moment, address): a dropped
        version's. Returns the chunks and packs nothing uses any more."""
        with self._transaction() as conn:
            conn.executemany("DELETE FROM moment_chunks WHERE moment_id = ? AND address = ?", uses)
            return self._unused_chunks(conn, {a for _, a in uses})

    def chunk_uses(self, moment_id: bytes) -> list[bytes]:
        """The chunks a moment is recorded as using."""
        rows = self._conn.execute(
            "SELECT address FROM moment_chunks WHERE moment_id = ?", (moment_id,)
        )
        return [r[0] for r in rows]
