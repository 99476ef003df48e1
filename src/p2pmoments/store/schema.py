"""The database schema, as forward migrations (spec/store.md section 2)."""

from __future__ import annotations

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]

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
    # 4: our own chunks live in packs, one file per post synced once (spec/store.md
    # section 1); where each lies. Chunks from peers stay files of their own, as before.
    """
    CREATE TABLE packed (
        address BLOB PRIMARY KEY CHECK (length(address) = 32),
        pack    BLOB NOT NULL CHECK (length(pack) = 16),
        start   INTEGER NOT NULL CHECK (start >= 0),
        length  INTEGER NOT NULL CHECK (length > 0)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX packed_by_pack ON packed (pack);
    """,
    # 5: reach cards (spec/tor.md section 6): where friends and co-members are reachable
    # beyond the LAN, signed by each, kept to dial them and to pass on to co-members; and
    # the onion address of a pairing code we scanned, to dial its owner through Tor.
    """
    CREATE TABLE reach (
        verify_key  BLOB PRIMARY KEY CHECK (length(verify_key) = 32),
        issued      INTEGER NOT NULL,
        card        BLOB NOT NULL
    ) STRICT;
    ALTER TABLE pairings ADD COLUMN onion BLOB CHECK (onion IS NULL OR length(onion) = 32);
    """,
    # 6: rosters (spec/devices.md section 2): the signed entries that say which device
    # keys are whose, ours and those of the friends and co-members who have several
    # devices; kept as they came, checked again when loaded. And the epoch keys another
    # device of ours gave this one (section 9), sealed to this device's own link key.
    """
    CREATE TABLE roster_entries (
        person   BLOB NOT NULL CHECK (length(person) = 32),
        entry_id BLOB NOT NULL CHECK (length(entry_id) = 32),
        entry    BLOB NOT NULL CHECK (length(entry) <= 16384),
        PRIMARY KEY (person, entry_id)
    ) STRICT;
    CREATE TABLE given_keys (
        circle_id BLOB NOT NULL CHECK (length(circle_id) = 32),
        epoch     INTEGER NOT NULL CHECK (epoch >= 0),
        sealed    BLOB NOT NULL,
        PRIMARY KEY (circle_id, epoch)
    ) STRICT;
    """,
    # 7: the op logs of circles a person with several devices owns (spec/devices.md
    # section 6.3): each edit signed by the device that made it, kept as signed.
    """
    CREATE TABLE circle_ops (
        circle_id BLOB NOT NULL CHECK (length(circle_id) = 32),
        op_id     BLOB NOT NULL CHECK (length(op_id) = 32),
        op        BLOB NOT NULL CHECK (length(op) <= 1024),
        PRIMARY KEY (circle_id, op_id)
    ) STRICT;
    """,
    # 8: the order of one second's moments (issue 20, item 2): `place`, the order this
    # device stored them in, but one author's in the order they were posted (a moment
    # stored after a later one of its author's, in the same second, takes that one's
    # place; seq then orders them). And what the person has read (item 4): per circle,
    # the newest post seen, as its place in the feed (created, place, seq). A store
    # from before starts with everything it holds read, so an upgrade does not flood
    # every circle with "new".
    """
    ALTER TABLE moments ADD COLUMN place INTEGER NOT NULL DEFAULT 0;
    UPDATE moments SET place = rowid;
    CREATE TABLE read_marks (
        circle_id BLOB PRIMARY KEY CHECK (length(circle_id) = 32),
        created   INTEGER NOT NULL,
        place     INTEGER NOT NULL,
        seq       INTEGER NOT NULL,
        updated   INTEGER NOT NULL
    ) STRICT;
    INSERT INTO read_marks (circle_id, created, place, seq, updated)
        SELECT circle_id, created, place, seq, 0 FROM moments m
        WHERE kind = 1 AND NOT EXISTS (
            SELECT 1 FROM moments n WHERE n.circle_id = m.circle_id AND n.kind = 1
            AND (n.created, n.place, n.seq) > (m.created, m.place, m.seq));
    """,
    # 9: friends the person removed (spec/devices.md section 9): the removal is told to
    # the person's other devices, which remove that friend too unless paired again since.
    """
    CREATE TABLE friend_removals (
        verify_key BLOB PRIMARY KEY CHECK (length(verify_key) = 32),
        removed_at INTEGER NOT NULL
    ) STRICT;
    """,
    # 10: notes written together (spec/notes.md): each note's document re-encoded, with the
    # highest moments rowid merged into it (a cache: rebuilt from the moments if lost);
    # and its versions, one author's edits with no long pause, each with the title and
    # text after it (zlib), to list and to restore.
    """
    CREATE TABLE notes (
        note_id   BLOB PRIMARY KEY CHECK (length(note_id) = 32),
        circle_id BLOB NOT NULL CHECK (length(circle_id) = 32),
        state     BLOB NOT NULL,
        applied   INTEGER NOT NULL,
        title     TEXT NOT NULL,
        updated   INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE note_versions (
        id      INTEGER PRIMARY KEY,
        note_id BLOB NOT NULL CHECK (length(note_id) = 32),
        author  BLOB NOT NULL CHECK (length(author) = 32),
        first   INTEGER NOT NULL,
        last    INTEGER NOT NULL,
        edits   INTEGER NOT NULL,
        text    BLOB NOT NULL
    ) STRICT;
    CREATE INDEX note_versions_by_note ON note_versions (note_id, id);
    """,
    # 11: what each member's daemon holds of our own moments, per circle and epoch (issue
    # 20, item 3: delivered marks): the highest sequence number of ours its have named.
    """
    CREATE TABLE delivered (
        circle_id BLOB NOT NULL CHECK (length(circle_id) = 32),
        person    BLOB NOT NULL CHECK (length(person) = 32),
        epoch     INTEGER NOT NULL,
        seq       INTEGER NOT NULL,
        PRIMARY KEY (circle_id, person, epoch)
    ) STRICT;
    """,
    # 12: profile pictures (spec/identity.md section 5): ours and those of friends and
    # co-members, one a person, or when it was removed (no picture, so an older one
    # heard later is not taken back).
    """
    CREATE TABLE pictures (
        person     BLOB PRIMARY KEY CHECK (length(person) = 32),
        set_at     INTEGER NOT NULL,
        digest     BLOB CHECK (digest IS NULL OR length(digest) = 32),
        media_type TEXT,
        image      BLOB
    ) STRICT;
    """,
    # 13: the feed's pages read from an index in the feed's order (issue 22, target 3:
    # a store of 100,000 moments sorted them all at every page, 58 ms); the circle and
    # whether it was retracted after, so that a page of some circles only is filtered,
    # and the posts counted (status), in the index alone.
    """
    CREATE INDEX moments_feed ON moments (kind, created, place, seq, circle_id, retracted);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
