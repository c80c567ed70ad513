//! Persistence of the registry: one row per object, written in one transaction per API
//! operation before the operation is acknowledged, read back whole at start. Embedded SQLite
//! (WAL) by default, or PostgreSQL (`pg`) for several nodes; the schema of either is brought
//! up to date at open by forward-only, numbered migrations. No rules here: what may exist is
//! the registry's business.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod migrations;
mod pg;
mod pg_batch;
mod pg_tls;
mod rows;

use migrations::MIGRATIONS;
use rows::{decode, decode_one, kind_name, kind_of, row_of, Row};

use parking_lot::Mutex;
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;
use qdhcp_registry::{Kind, Registry, Stored};
use rusqlite::{params, Connection};

/// What a unique allocation another node made first holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// A fixed IP in its subnet.
    Ip,
    /// A MAC on its network.
    Mac,
}

impl std::fmt::Display for Taken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Taken::Ip => "ip",
            Taken::Mac => "mac",
        })
    }
}

/// A storage failure, naming the database file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused.
    #[error("database {path}: {source}")]
    Sql {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// PostgreSQL refused, or could not be reached.
    #[error("database {url}: {}", with_causes(source))]
    Pg {
        /// The database URL, without its password.
        url: String,
        /// The client's error.
        source: postgres::Error,
    },
    /// No connection to PostgreSQL could be had in time: the server is away and the pool is
    /// still trying to reach it again.
    #[error("database {url}: unavailable ({why})")]
    PgUnavailable {
        /// The database URL, without its password.
        url: String,
        /// The last reason connecting failed.
        why: String,
    },
    /// The URL's TLS settings cannot be followed (an unknown `sslmode`, no root certificate).
    #[error("database {url}: {why}")]
    PgSettings {
        /// The database URL, without its password.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// Another node took the address or MAC in the meantime: the database's unique
    /// constraints refused this write (nothing of it was stored).
    #[error("{what} {value} was taken by another node meanwhile")]
    Conflict {
        /// What was taken.
        what: Taken,
        /// The address or MAC.
        value: String,
    },
    /// An object could not be encoded as a row (nothing of its write was stored).
    #[error("{kind} {id} cannot be stored: {why}")]
    Unencodable {
        /// Object kind.
        kind: &'static str,
        /// Object id.
        id: String,
        /// The encoder's error.
        why: String,
    },
    /// A stored row does not decode.
    #[error("database {path}: {kind} {id} is damaged ({why}); restore the file from a backup or remove the row")]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// Object kind.
        kind: &'static str,
        /// Object id.
        id: String,
        /// The decode error.
        why: String,
    },
}

/// An error with what caused it (the client says "error performing TLS handshake" and keeps
/// the why, such as an unknown issuer, in its source).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// The registry database.
pub struct Store {
    path: PathBuf,
    backend: Backend,
}

enum Backend {
    Sqlite {
        conn: Mutex<Connection>,
        /// Dropped with the store, which ends the checkpoint thread.
        _checkpoints: Option<std::sync::mpsc::Sender<()>>,
    },
    Postgres(Box<pg::PgStore>),
}

/// A qdhcp node as its heartbeats record it: what Neutron shows as a DHCP agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    /// The node's name (Neutron's `host`).
    pub host: String,
    /// Its agent id, kept across restarts.
    pub id: String,
    /// When it last started (UTC).
    pub started_at: NaiveDateTime,
    /// Its last heartbeat (UTC).
    pub heartbeat_at: NaiveDateTime,
}

/// How node times are stored, as Neutron shows agent times (`YYYY-MM-DD HH:MM:SS`, UTC).
pub const NODE_TIME: &str = "%Y-%m-%d %H:%M:%S";

impl NodeRow {
    /// Whether the node is alive at `now`: its last heartbeat is at most `down_secs` old.
    pub fn alive(&self, now: NaiveDateTime, down_secs: u64) -> bool {
        (now - self.heartbeat_at).num_seconds() <= down_secs as i64
    }

    /// A row as stored; a time that does not parse is the zero time (a node long dead).
    fn from_stored(host: String, id: String, started_at: &str, heartbeat_at: &str) -> NodeRow {
        let parse = |t: &str| NaiveDateTime::parse_from_str(t, NODE_TIME).unwrap_or_default();
        NodeRow {
            host,
            id,
            started_at: parse(started_at),
            heartbeat_at: parse(heartbeat_at),
        }
    }
}

/// How often the WAL is copied into the database, off the request path.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Checkpoints the WAL from a connection of its own every second. SQLite's automatic checkpoint
/// runs inside the commit that crosses 1,000 WAL pages: that API request waited ~8.5 ms (every
/// ~380th port create with 100,000 ports). A PASSIVE checkpoint here never blocks a writer.
fn spawn_checkpointer(path: &Path) -> Option<std::sync::mpsc::Sender<()>> {
    let conn = Connection::open(path).ok()?;
    // A checkpoint copies pages from the log to the database: it needs no cache to speak of.
    let _ = conn.pragma_update(None, "cache_size", -128);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                rx.recv_timeout(CHECKPOINT_EVERY)
            {
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            }
        })
        .ok()?;
    Some(tx)
}

impl StoreError {
    /// True when the database could not be reached (a server down or restarting): the
    /// operation may succeed later, so the API answers 503, not 500.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Pg { .. } | StoreError::PgUnavailable { .. }
        )
    }

    /// True when another node's write took what this one wanted (a unique constraint).
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }
}

impl Store {
    /// Opens (creating) the database; a file that is not a database is a clear error.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let err = |source| StoreError::Sql {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        // NORMAL in WAL mode: a committed transaction survives the process being killed.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        // The registry lives in memory and SQLite is only written and read back at start:
        // 512 KiB of page cache (not the default 2 MiB), the operating system's cache does
        // the rest.
        conn.pragma_update(None, "cache_size", -512).map_err(err)?;

        // checkpoints run on a thread of their own, not inside a commit (unless that thread
        // cannot start: then SQLite's automatic checkpoint stays on)
        let checkpoints = spawn_checkpointer(path);
        if checkpoints.is_some() {
            conn.pragma_update(None, "wal_autocheckpoint", 0)
                .map_err(err)?;
        }
        // forward-only migrations; the database's version is its user_version
        let at: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        for (v, sql, _) in MIGRATIONS.iter().filter(|m| m.0 > at) {
            conn.execute_batch(&format!("BEGIN; {sql} PRAGMA user_version = {v}; COMMIT;"))
                .map_err(err)?;
        }
        Ok(Store {
            path: path.to_path_buf(),
            backend: Backend::Sqlite {
                conn: Mutex::new(conn),
                _checkpoints: checkpoints,
            },
        })
    }

    /// Opens the database `url` names: `postgresql://…` (or `postgres://…`), `sqlite://PATH`,
    /// or a plain path (SQLite). An unreachable server is an error naming it.
    pub fn open_url(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("postgresql://") || url.starts_with("postgres://") {
            let pg = pg::PgStore::open(url)?;
            return Ok(Store {
                path: PathBuf::from(pg.display()),
                backend: Backend::Postgres(Box::new(pg)),
            });
        }
        Store::open(Path::new(url.strip_prefix("sqlite://").unwrap_or(url)))
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        match &self.backend {
            Backend::Sqlite { conn, .. } => conn
                .lock()
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(|e| self.err(e)),
            Backend::Postgres(pg) => pg.schema_version(),
        }
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    /// Reads every object back.
    pub fn load(&self) -> Result<Registry, StoreError> {
        let conn = match &self.backend {
            Backend::Sqlite { conn, .. } => conn.lock(),
            Backend::Postgres(pg) => return decode(pg.rows()?, &self.path),
        };
        let mut stmt = conn
            .prepare("SELECT kind, id, body FROM objects ORDER BY rowid")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let rows: Vec<(String, String, String)> =
            rows.collect::<Result<_, _>>().map_err(|e| self.err(e))?;
        decode(rows, &self.path)
    }

    /// The database's revision: bumped by every write of any node (PostgreSQL); 0 on SQLite,
    /// which one process owns.
    pub fn revision(&self) -> Result<i64, StoreError> {
        match &self.backend {
            Backend::Sqlite { .. } => Ok(0),
            Backend::Postgres(pg) => pg.revision(),
        }
    }

    /// The objects named, as the database holds them now (absent ones as gone), to put memory
    /// back after a write that failed (PostgreSQL); `None` on SQLite, where the caller reads
    /// everything back.
    pub fn objects(
        &self,
        keys: &[(Kind, String)],
    ) -> Result<Option<Vec<qdhcp_registry::Stored>>, StoreError> {
        match &self.backend {
            Backend::Sqlite { .. } => Ok(None),
            Backend::Postgres(pg) => pg.objects(keys, &self.path).map(Some),
        }
    }

    /// What other nodes changed since `revision` (PostgreSQL): the database's revision now and
    /// every object written or deleted after `revision`, read in one snapshot. `None` on SQLite
    /// (nothing to catch up with).
    pub fn changes_since(
        &self,
        revision: i64,
    ) -> Result<Option<(i64, Vec<qdhcp_registry::Stored>)>, StoreError> {
        match &self.backend {
            Backend::Sqlite { .. } => Ok(None),
            Backend::Postgres(pg) => pg.changes_since(revision, &self.path).map(Some),
        }
    }

    /// The revision this store's own last write made (PostgreSQL), so that its node need not
    /// read back what it wrote itself.
    pub fn last_written(&self) -> Option<i64> {
        match &self.backend {
            Backend::Sqlite { .. } => None,
            Backend::Postgres(pg) => pg.last_written(),
        }
    }

    /// Calls `on_change` with the database's revision whenever another write commits (through
    /// PostgreSQL's LISTEN/NOTIFY, on a connection of its own), after every reconnection (to
    /// catch up on what was missed), and at least every 30 s. Nothing to watch on SQLite.
    pub fn watch(&self, on_change: impl Fn(i64) + Send + 'static) -> std::io::Result<()> {
        match &self.backend {
            Backend::Sqlite { .. } => Ok(()),
            Backend::Postgres(pg) => pg.watch(on_change),
        }
    }

    /// Records a node's heartbeat (and its start): the row is made on the first one, and the
    /// node keeps the agent id it had.
    pub fn heartbeat(&self, n: &NodeRow) -> Result<(), StoreError> {
        let conn = match &self.backend {
            Backend::Sqlite { conn, .. } => conn.lock(),
            Backend::Postgres(pg) => return pg.heartbeat(n),
        };
        conn.execute(
            "INSERT INTO nodes (host, id, started_at, heartbeat_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(host) DO UPDATE SET started_at = excluded.started_at,
                                             heartbeat_at = excluded.heartbeat_at",
            params![
                n.host,
                n.id,
                n.started_at.format(NODE_TIME).to_string(),
                n.heartbeat_at.format(NODE_TIME).to_string()
            ],
        )
        .map(|_| ())
        .map_err(|e| self.err(e))
    }

    /// Every node that ever sent a heartbeat, by host.
    pub fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        let conn = match &self.backend {
            Backend::Sqlite { conn, .. } => conn.lock(),
            Backend::Postgres(pg) => return pg.nodes(),
        };
        let mut stmt = conn
            .prepare("SELECT host, id, started_at, heartbeat_at FROM nodes ORDER BY host")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(NodeRow::from_stored(
                    r.get(0)?,
                    r.get(1)?,
                    &r.get::<_, String>(2)?,
                    &r.get::<_, String>(3)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Persists what one batch of writes changed, each object as it is now or gone
    /// ([`Registry::stored`]), in one transaction: all of it or nothing.
    pub fn apply(&self, changed: &[Stored]) -> Result<(), StoreError> {
        let mut conn = match &self.backend {
            Backend::Sqlite { conn, .. } => conn.lock(),
            Backend::Postgres(pg) => return pg.apply(changed),
        };
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        for o in changed {
            match row_of(o)? {
                Row::Put(k, id, body) => {
                    tx.execute(
                        "INSERT INTO objects (kind, id, body) VALUES (?1, ?2, ?3)
                         ON CONFLICT(kind, id) DO UPDATE SET body = excluded.body",
                        params![kind_name(k), id, body],
                    )
                    .map_err(|e| self.err(e))?;
                }
                Row::Gone(k, id) => {
                    tx.execute(
                        "DELETE FROM objects WHERE kind = ?1 AND id = ?2",
                        params![kind_name(k), id],
                    )
                    .map_err(|e| self.err(e))?;
                }
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_alive_until_its_heartbeat_is_older_than_the_down_time() {
        let t = NaiveDateTime::parse_from_str("2026-12-02 01:00:30", NODE_TIME).unwrap();
        let row = |at: &str| NodeRow::from_stored("n".into(), "i".into(), at, at);
        assert!(row("2026-12-02 01:00:00").alive(t, 30));
        assert!(!row("2026-12-02 00:59:59").alive(t, 30));
        assert!(
            !row("not a time").alive(t, 30),
            "a time that does not parse is long dead"
        );
    }
    use qdhcp_registry::requests::{NetworkReq, PortReq, SubnetReq};
    use qdhcp_registry::{Caller, Env};

    struct E(u32);
    impl Env for E {
        fn now(&mut self) -> qdhcp_registry::Stamp {
            "2026-11-25T15:00:00Z".into()
        }
        fn new_id(&mut self) -> qdhcp_registry::ArcStr {
            self.0 += 1;
            format!("id-{}", self.0).into()
        }
        fn random(&mut self) -> u32 {
            self.0 += 7919;
            self.0
        }
    }

    /// A database path in a fresh directory (kept alive by the returned guard), an admin
    /// caller, a deterministic environment and an empty registry.
    fn fixture() -> (tempfile::TempDir, std::path::PathBuf, Caller, E, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("qdhcp.sqlite");
        let caller = Caller {
            project_id: "p".into(),
            is_admin: true,
        };
        (dir, db, caller, E(0), Registry::default())
    }

    #[test]
    fn objects_survive_reopen_and_deletes_stick() {
        let (_dir, db, caller, mut env, mut reg) = fixture();
        let port_id;
        {
            let st = Store::open(&db).unwrap();
            let (n, o) = reg
                .create_network(NetworkReq::default(), &caller, &mut env)
                .unwrap();
            st.apply(&reg.stored(&o.changes)).unwrap();
            let (_, o) = reg
                .create_subnet(
                    SubnetReq {
                        network_id: Some(n.id.to_string()),
                        cidr: Some("10.0.0.0/24".into()),
                        ..Default::default()
                    },
                    &caller,
                    &mut env,
                )
                .unwrap();
            st.apply(&reg.stored(&o.changes)).unwrap();
            let (p, o) = reg
                .create_port(
                    PortReq {
                        network_id: Some(n.id.to_string()),
                        ..Default::default()
                    },
                    &caller,
                    &mut env,
                )
                .unwrap();
            st.apply(&reg.stored(&o.changes)).unwrap();
            let (p2, o) = reg
                .create_port(
                    PortReq {
                        network_id: Some(n.id.to_string()),
                        ..Default::default()
                    },
                    &caller,
                    &mut env,
                )
                .unwrap();
            st.apply(&reg.stored(&o.changes)).unwrap();
            let o = reg.delete_port(&p2.id).unwrap();
            st.apply(&reg.stored(&o.changes)).unwrap();
            port_id = p.id;
        }
        let st = Store::open(&db).unwrap();
        let back = st.load().unwrap();
        assert_eq!(back.networks().count(), 1);
        assert_eq!(back.subnets().count(), 1);
        assert_eq!(back.ports().count(), 2, "the port and the DHCP port");
        assert_eq!(back.port(&port_id), reg.port(&port_id));
    }

    #[test]
    fn committed_objects_reach_the_database_file_without_a_request_checkpointing() {
        let (_dir, db, caller, mut env, mut reg) = fixture();
        let st = Store::open(&db).unwrap();
        let Backend::Sqlite { conn, .. } = &st.backend else {
            unreachable!("a path opens SQLite")
        };
        let auto: i64 = conn
            .lock()
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(auto, 0, "no commit runs a checkpoint");
        let before = std::fs::metadata(&db).unwrap().len();
        for _ in 0..20 {
            let (_, o) = reg
                .create_network(NetworkReq::default(), &caller, &mut env)
                .unwrap();
            st.apply(&reg.stored(&o.changes)).unwrap();
        }
        // far below SQLite's own 1,000-page threshold: only the checkpoint thread moves them
        let start = std::time::Instant::now();
        while std::fs::metadata(&db).unwrap().len() <= before {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "the WAL was never checkpointed into {}",
                db.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(st.load().unwrap().networks().count(), 20);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("qdhcp.sqlite");
        std::fs::write(&db, vec![0x55u8; 8192]).unwrap();
        let e = match Store::open(&db) {
            Err(e) => e.to_string(),
            Ok(st) => st.load().err().map(|e| e.to_string()).unwrap_or_default(),
        };
        assert!(e.contains("qdhcp.sqlite"), "{e}");
    }
}
