"""The store: WAL, durable writes, migrations, and never on the event loop."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from p2pmoments.store import SCHEMA_VERSION, AsyncStore, Store, StoreError
from p2pmoments.store import schema as schema_module


def test_new_database_is_wal_at_current_version_and_private(tmp_path: Path) -> None:
    db = Store.open(tmp_path / "db")
    try:
        assert db.schema_version() == SCHEMA_VERSION
        assert db._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.counts().friends == db.counts().circles == db.counts().moments == 0
    finally:
        db.close()
    assert (tmp_path / "db").stat().st_mode & 0o777 == 0o600


def test_writes_survive_reopening(tmp_path: Path) -> None:
    db = Store.open(tmp_path / "db")
    db.set_name("Alice")
    db.close()
    db.close()  # closing twice is harmless
    again = Store.open(tmp_path / "db")
    try:
        assert again.get_name() == "Alice"
        assert again.integrity_check() == "ok"
    finally:
        again.close()


def test_forward_migration_from_an_older_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "db"
    monkeypatch.setattr(schema_module, "MIGRATIONS", schema_module.MIGRATIONS[:1])
    monkeypatch.setattr(schema_module, "SCHEMA_VERSION", 1)
    old = Store.open(path)
    old.set_name("Alice")
    old.close()
    extra = "CREATE TABLE later (x INTEGER) STRICT"
    monkeypatch.setattr(schema_module, "MIGRATIONS", (*schema_module.MIGRATIONS, extra))
    monkeypatch.setattr(schema_module, "SCHEMA_VERSION", 2)
    new = Store.open(path)
    try:
        assert new.schema_version() == 2
        assert new.get_name() == "Alice"
        new._conn.execute("INSERT INTO later VALUES (1)")
    finally:
        new.close()


def test_a_failed_migration_leaves_the_old_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "db"
    Store.open(path).close()
    bad = "CREATE TABLE ok_table (x INTEGER); THIS IS NOT SQL"
    monkeypatch.setattr(schema_module, "MIGRATIONS", (*schema_module.MIGRATIONS, bad))
    monkeypatch.setattr(schema_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError):
        Store.open(path)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "ok_table" not in tables
    finally:
        conn.close()


def test_a_newer_database_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 5}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this p2pmoments understands"):
        Store.open(path)


def test_garbage_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        Store.open(path)


async def test_async_store_runs_off_the_event_loop(tmp_path: Path) -> None:
    db = AsyncStore(tmp_path / "db")
    await db.open()
    try:
        loop_thread = threading.get_ident()
        worker = await db.run(lambda _store: threading.get_ident())
        assert worker != loop_thread
        await db.run(Store.set_name, "Bob")
        assert await db.run(Store.get_name) == "Bob"
    finally:
        await db.close()
        await db.close()
    with pytest.raises(StoreError, match="not open"):
        await db.run(Store.get_name)


def test_a_version_1_store_opens_at_version_2_with_its_circles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Removal notices came with version 2: an older store keeps its circles, and we are
    still a member of each."""
    path = tmp_path / "db"
    with monkeypatch.context() as patch:
        patch.setattr(schema_module, "MIGRATIONS", schema_module.MIGRATIONS[:1])
        patch.setattr(schema_module, "SCHEMA_VERSION", 1)
        old = Store.open(path)
        assert old.save_manifest(b"c" * 32, 0, b"o" * 32, "family", b"manifest-0")
        old.close()
    new = Store.open(path)
    try:
        assert new.schema_version() == SCHEMA_VERSION >= 2
        assert new.manifests() == [b"manifest-0"]
        assert new.removed_from() == {}
        new.set_removed(b"c" * 32, 1, 1_800_000_000)
        assert new.removed_from() == {b"c" * 32: (1, 1_800_000_000)}
    finally:
        new.close()


def test_a_version_4_store_keeps_its_pairings_and_holds_reach_cards_at_version_5(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reach cards and a scanned code's onion came with version 5 (spec/tor.md)."""
    from p2pmoments.core.pairing import Direction, PairingState
    from p2pmoments.store import PairingRecord

    path = tmp_path / "db"
    pairing = PairingRecord(
        id=0,
        direction=Direction.OUT,
        identity=b"i" * 32,
        link_key=b"k" * 32,
        name="Alice",
        token=b"t" * 16,
        expires=1,
        host=None,
        port=None,
        state=PairingState.PENDING,
        reason="",
        created=1,
        updated=1,
    )
    with monkeypatch.context() as patch:
        patch.setattr(schema_module, "MIGRATIONS", schema_module.MIGRATIONS[:4])
        patch.setattr(schema_module, "SCHEMA_VERSION", 4)
        old = Store.open(path)
        old._conn.execute(
            "INSERT INTO pairings (direction, identity, link_key, name, token, expires, state,"
            " created, updated) VALUES ('out', ?, ?, 'Alice', ?, 1, 'pending', 1, 1)",
            (b"i" * 32, b"k" * 32, b"t" * 16),
        )
        old.close()
    new = Store.open(path)
    try:
        assert new.schema_version() == SCHEMA_VERSION >= 5
        assert new.pairings()[0].onion is None
        added = new.add_pairing(pairing.__class__(**{**_fields(pairing), "onion": b"o" * 32}))
        assert added.onion == b"o" * 32
        assert new.save_reach_card(b"a" * 32, 5, b"card-5")
        assert not new.save_reach_card(b"a" * 32, 4, b"card-4")  # older: kept the newer
        assert not new.save_reach_card(b"a" * 32, 5, b"card-5b")
        assert new.save_reach_card(b"a" * 32, 6, b"card-6")
        assert new.reach_cards() == [b"card-6"]
    finally:
        new.close()


def _fields(record: object) -> dict[str, object]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}  # type: ignore[attr-defined]
