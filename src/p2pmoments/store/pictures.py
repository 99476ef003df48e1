"""Profile pictures (spec/store.md, version 12; spec/identity.md section 5)."""

from __future__ import annotations

from p2pmoments.store.database import Database

__all__ = ["PictureTables"]


class PictureTables(Database):
    """One row a person: the picture we hold of them (or ours), or its removal."""

    def picture_heads(self) -> list[tuple[bytes, int, bytes | None]]:
        """(person, set at, digest or None if removed) of every row."""
        rows = self._conn.execute("SELECT person, set_at, digest FROM pictures")
        return [(r[0], r[1], r[2]) for r in rows]

    def picture(self, person: bytes) -> tuple[str, bytes] | None:
        """(media type, bytes) of a person's picture, None if we hold none."""
        row = self._conn.execute(
            "SELECT media_type, image FROM pictures WHERE person = ? AND image IS NOT NULL",
            (person,),
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def put_picture(
        self, person: bytes, set_at: int, digest: bytes | None, picture: tuple[str, bytes] | None
    ) -> None:
        """Keep a person's picture (or its removal: digest and picture None)."""
        media_type, image = picture if picture is not None else (None, None)
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO pictures (person, set_at, digest, media_type, image)"
                " VALUES (?, ?, ?, ?, ?)",
                (person, set_at, digest, media_type, image),
            )
