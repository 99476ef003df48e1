"""Friends, the names people give themselves, pairing codes and pairing attempts."""

from __future__ import annotations

from p2pmoments.core.admission import Claim
from p2pmoments.core.pairing import PairingState
from p2pmoments.store.database import Database
from p2pmoments.store.records import (
    FriendRecord,
    FriendState,
    PairingRecord,
    TokenRecord,
    columns,
    record,
)

__all__ = ["PeopleTables"]

_FRIEND_COLUMNS = columns(FriendRecord)
_PAIRING_COLUMNS = columns(PairingRecord)
_FRIEND_FIELDS = frozenset({"name", "state", "last_seen", "host", "port", "their_name"})


class PeopleTables(Database):
    """The tables about people."""

    # --- friends ----------------------------------------------------------------

    def friends(self) -> list[FriendRecord]:
        """Every friend and blocked identity, oldest first."""
        rows = self._conn.execute(
            f"SELECT {_FRIEND_COLUMNS} FROM friends ORDER BY since, name"  # noqa: S608 - constant
        )
        return [record(FriendRecord, row) for row in rows]

    def upsert_friend(self, friend: FriendRecord) -> bool:
        """Add a friend, or update keys and their name if known; True if new.

        Our own label for them and a block survive re-pairing."""
        with self._transaction() as conn:
            existing = conn.execute(
                "SELECT 1 FROM friends WHERE verify_key = ?", (friend.verify_key,)
            ).fetchone()
            # A link key belongs to one identity: drop any stale row claiming it.
            conn.execute(
                "DELETE FROM friends WHERE link_key = ? AND verify_key != ?",
                (friend.link_key, friend.verify_key),
            )
            if existing:
                conn.execute(
                    "UPDATE friends SET link_key = ?, link_signature = ?, their_name = ?,"
                    " last_seen = ?, host = coalesce(?, host), port = coalesce(?, port)"
                    " WHERE verify_key = ?",
                    (
                        friend.link_key,
                        friend.link_signature,
                        friend.their_name,
                        friend.last_seen,
                        friend.host,
                        friend.port,
                        friend.verify_key,
                    ),
                )
            else:
                conn.execute(
                    f"INSERT INTO friends ({_FRIEND_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",  # noqa: S608
                    (
                        friend.verify_key,
                        friend.link_key,
                        friend.link_signature,
                        friend.name,
                        friend.their_name,
                        friend.state.value,
                        friend.since,
                        friend.last_seen,
                        friend.host,
                        friend.port,
                    ),
                )
        return existing is None

    def update_friend(self, verify_key: bytes, /, **fields: object) -> bool:
        """Change some of name, state, last_seen, host, port, their_name; False if there
        is no such friend."""
        if not fields or set(fields) - _FRIEND_FIELDS:
            raise ValueError(f"can only update {sorted(_FRIEND_FIELDS)}")
        values = [v.value if isinstance(v, FriendState) else v for v in fields.values()]
        assignments = ", ".join(f"{k} = ?" for k in fields)  # names checked above
        with self._transaction() as conn:
            cursor = conn.execute(
                f"UPDATE friends SET {assignments} WHERE verify_key = ?",  # noqa: S608
                (*values, verify_key),
            )
        return cursor.rowcount == 1

    def remove_friend(self, verify_key: bytes, removed_at: int | None = None) -> bool:
        """Forget a friend; with `removed_at`, remember when (the person's other devices
        learn of it, spec/devices.md section 9). False if there was none."""
        with self._transaction() as conn:
            cursor = conn.execute("DELETE FROM friends WHERE verify_key = ?", (verify_key,))
            if removed_at is not None:
                conn.execute(
                    "INSERT INTO friend_removals (verify_key, removed_at) VALUES (?, ?) "
                    "ON CONFLICT (verify_key) DO UPDATE SET "
                    "removed_at = max(removed_at, excluded.removed_at)",
                    (verify_key, removed_at),
                )
        return cursor.rowcount == 1

    def friend_removals(self) -> dict[bytes, int]:
        """Friends the person removed, and when (newest removal each)."""
        rows = self._conn.execute("SELECT verify_key, removed_at FROM friend_removals")
        return {bytes(k): int(t) for k, t in rows}

    def forget_removal(self, verify_key: bytes) -> None:
        """A removed friend is a friend again (paired since)."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM friend_removals WHERE verify_key = ?", (verify_key,))

    # --- what people we linked with call themselves -----------------------------------

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

    # --- reach cards (spec/tor.md section 6) ---------------------------------------

    def roster_entries(self) -> list[tuple[bytes, bytes]]:
        """Every roster entry held, as (person, entry as signed), in the order kept."""
        return list(self._conn.execute("SELECT person, entry FROM roster_entries ORDER BY rowid"))

    def save_roster_entries(self, person: bytes, entries: list[tuple[bytes, bytes]]) -> None:
        """Keep verified entries of `person`'s roster, as (id, entry); known ones once."""
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO roster_entries (person, entry_id, entry) VALUES (?, ?, ?)",
                [(person, i, e) for i, e in entries],
            )

    def reach_cards(self) -> list[bytes]:
        """Every reach card held (ours among them), as signed."""
        return [r[0] for r in self._conn.execute("SELECT card FROM reach ORDER BY verify_key")]

    def save_reach_card(self, verify_key: bytes, issued: int, card: bytes) -> bool:
        """Keep a verified card unless one as new is held; True if kept."""
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO reach (verify_key, issued, card) VALUES (?, ?, ?) ON CONFLICT"
                " (verify_key) DO UPDATE SET issued = excluded.issued, card = excluded.card"
                " WHERE excluded.issued > reach.issued",
                (verify_key, issued, card),
            )
        return cursor.rowcount == 1

    # --- pairing codes --------------------------------------------------------------

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
        return [record(TokenRecord, row) for row in rows]

    def claim_token(self, token: bytes, link_key: bytes, now: int) -> Claim:
        """Claim a token for a link key (the same key may claim it again)."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT expires, claimed_by FROM pair_tokens WHERE token = ?", (token,)
            ).fetchone()
            if row is None or row[0] <= now:
                return Claim.EXPIRED
            if row[1] is not None and row[1] != link_key:
                return Claim.USED
            conn.execute("UPDATE pair_tokens SET claimed_by = ? WHERE token = ?", (link_key, token))
        return Claim.OK

    # --- pairing attempts ---------------------------------------------------------

    def add_pairing(self, pairing: PairingRecord) -> PairingRecord:
        """Record a pairing attempt; returns it with its id."""
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO pairings (direction, identity, link_key, name, token, expires, host,"
                " port, state, reason, created, updated, onion) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    pairing.direction.value,
                    pairing.identity,
                    pairing.link_key,
                    pairing.name,
                    pairing.token,
                    pairing.expires,
                    pairing.host,
                    pairing.port,
                    pairing.state.value,
                    pairing.reason,
                    pairing.created,
                    pairing.updated,
                    pairing.onion,
                ),
            )
        assert cursor.lastrowid is not None
        return self.pairing(cursor.lastrowid) or pairing

    def set_pairing_state(
        self, pairing_id: int, state: PairingState, reason: str, now: int
    ) -> PairingRecord | None:
        """Move a pairing attempt to a new state; returns it as it now is."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE pairings SET state = ?, reason = ?, updated = ? WHERE id = ?",
                (state.value, reason, now, pairing_id),
            )
        return self.pairing(pairing_id)

    def pairing(self, pairing_id: int) -> PairingRecord | None:
        """One pairing attempt."""
        row = self._conn.execute(
            f"SELECT {_PAIRING_COLUMNS} FROM pairings WHERE id = ?",  # noqa: S608
            (pairing_id,),
        ).fetchone()
        return None if row is None else record(PairingRecord, row)

    def pairings(self, limit: int = 100) -> list[PairingRecord]:
        """The most recent pairing attempts, newest first."""
        rows = self._conn.execute(
            f"SELECT {_PAIRING_COLUMNS} FROM pairings ORDER BY id DESC LIMIT ?",  # noqa: S608
            (limit,),
        )
        return [record(PairingRecord, row) for row in rows]
