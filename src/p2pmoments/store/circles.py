"""Circles: every manifest kept, each circle's current one, and removal notices."""

from __future__ import annotations

from collections.abc import Sequence

from p2pmoments.store.database import Database
from p2pmoments.store.records import Freed

__all__ = ["CircleTables"]


class CircleTables(Database):
    """The tables about circles."""

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

    def manifests(self) -> list[bytes]:
        """Every manifest kept, of every epoch."""
        return [r[0] for r in self._conn.execute("SELECT manifest FROM manifests")]

    def delete_circle(self, circle_id: bytes) -> Freed:
        """Forget a circle, its manifests and every moment in it; returns what it freed."""
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
            conn.execute("DELETE FROM given_keys WHERE circle_id = ?", (circle_id,))
            conn.execute("DELETE FROM circle_ops WHERE circle_id = ?", (circle_id,))
            conn.execute("DELETE FROM read_marks WHERE circle_id = ?", (circle_id,))
            conn.execute("DELETE FROM delivered WHERE circle_id = ?", (circle_id,))
        return freed

    # --- removal notices (spec/moments.md section 8) -----------------------------------

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

    def given_keys(self) -> list[tuple[bytes, int, bytes]]:
        """Epoch keys another device of ours gave us: (circle, epoch, sealed to us)."""
        return list(self._conn.execute("SELECT circle_id, epoch, sealed FROM given_keys"))

    def save_given_keys(self, keys: list[tuple[bytes, int, bytes]]) -> None:
        """Keep epoch keys given by another device of ours, sealed to this one."""
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO given_keys (circle_id, epoch, sealed) VALUES (?, ?, ?)",
                keys,
            )

    def circle_ops(self) -> list[tuple[bytes, bytes]]:
        """Every circle op held: (circle, op as signed), in the order kept."""
        return list(self._conn.execute("SELECT circle_id, op FROM circle_ops ORDER BY rowid"))

    def save_circle_ops(self, ops: list[tuple[bytes, bytes, bytes]]) -> None:
        """Keep verified circle ops, as (circle, op id, op); known ones once."""
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO circle_ops (circle_id, op_id, op) VALUES (?, ?, ?)", ops
            )
