//! The schema of both backends, as numbered, forward-only migrations.

/// The schema, as forward-only migrations: (version, SQLite statements, PostgreSQL statements).
/// A database is brought to the last version at open; a version is never changed once
/// released, only followed by a new one.
pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "CREATE TABLE IF NOT EXISTS objects (
        kind TEXT NOT NULL,
        id   TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (kind, id)
    );",
        "CREATE TABLE IF NOT EXISTS objects (
        kind TEXT NOT NULL,
        id   TEXT NOT NULL,
        body TEXT NOT NULL,
        seq  BIGSERIAL,
        PRIMARY KEY (kind, id)
    );",
    ),
    (
        2,
        "CREATE TABLE IF NOT EXISTS nodes (
        host         TEXT PRIMARY KEY,
        id           TEXT NOT NULL,
        started_at   TEXT NOT NULL,
        heartbeat_at TEXT NOT NULL
    );",
        "CREATE TABLE IF NOT EXISTS nodes (
        host         TEXT PRIMARY KEY,
        id           TEXT NOT NULL,
        started_at   TEXT NOT NULL,
        heartbeat_at TEXT NOT NULL
    );",
    ),
    (
        3,
        "CREATE TABLE IF NOT EXISTS revision (id INTEGER PRIMARY KEY, n BIGINT NOT NULL);
         INSERT OR IGNORE INTO revision (id, n) VALUES (1, 0);",
        "CREATE TABLE IF NOT EXISTS revision (id INTEGER PRIMARY KEY, n BIGINT NOT NULL);
         INSERT INTO revision (id, n) VALUES (1, 0) ON CONFLICT DO NOTHING;",
    ),
    (
        4,
        // SQLite has one writer, whose registry keeps addresses and MACs unique: nothing to add.
        "SELECT 1;",
        // Several nodes write through PostgreSQL: its unique constraints keep an address or a
        // MAC from being given twice by two nodes at once (filled from the ports at open).
        "CREATE TABLE IF NOT EXISTS ip_allocations (
            subnet_id TEXT NOT NULL,
            ip        TEXT NOT NULL,
            port_id   TEXT NOT NULL,
            PRIMARY KEY (subnet_id, ip)
         );
         CREATE TABLE IF NOT EXISTS mac_allocations (
            network_id TEXT NOT NULL,
            mac        TEXT NOT NULL,
            port_id    TEXT NOT NULL,
            PRIMARY KEY (network_id, mac)
         );
         CREATE INDEX IF NOT EXISTS ip_allocations_port ON ip_allocations (port_id);
         CREATE INDEX IF NOT EXISTS mac_allocations_port ON mac_allocations (port_id);",
    ),
    (
        5,
        // One node on SQLite reads nothing back.
        "SELECT 1;",
        // The revision each object was last written at, and deletions (tombstones): a node
        // catches up by reading what changed since its revision, not every object.
        "ALTER TABLE objects ADD COLUMN IF NOT EXISTS rev BIGINT NOT NULL DEFAULT 0;
         CREATE INDEX IF NOT EXISTS objects_rev ON objects (rev);
         CREATE TABLE IF NOT EXISTS tombstones (
            kind TEXT NOT NULL,
            id   TEXT NOT NULL,
            rev  BIGINT NOT NULL,
            PRIMARY KEY (kind, id)
         );
         CREATE INDEX IF NOT EXISTS tombstones_rev ON tombstones (rev);",
    ),
];
