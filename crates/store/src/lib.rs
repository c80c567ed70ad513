//! Persistence of the registry in embedded SQLite (WAL): one row per object, written in one
//! transaction per API operation before the operation is acknowledged, read back whole at
//! start. No rules here: what may exist is the registry's business.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use qdhcp_registry::{Change, Kind, Network, Port, Registry, Subnet};
use rusqlite::{params, Connection};

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

/// The registry database.
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Dropped with the store, which ends the checkpoint thread.
    _checkpoints: Option<std::sync::mpsc::Sender<()>>,
}

/// How often the WAL is copied into the database, off the request path.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Checkpoints the WAL from a connection of its own every second. SQLite's automatic checkpoint
/// runs inside the commit that crosses 1,000 WAL pages: that API request waited ~8.5 ms (every
/// ~380th port create with 100,000 ports). A PASSIVE checkpoint here never blocks a writer.
fn spawn_checkpointer(path: &Path) -> Option<std::sync::mpsc::Sender<()>> {
    let conn = Connection::open(path).ok()?;
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

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Network => "network",
        Kind::Subnet => "subnet",
        Kind::Port => "port",
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

        // checkpoints run on a thread of their own, not inside a commit (unless that thread
        // cannot start: then SQLite's automatic checkpoint stays on)
        let checkpoints = spawn_checkpointer(path);
        if checkpoints.is_some() {
            conn.pragma_update(None, "wal_autocheckpoint", 0)
                .map_err(err)?;
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS objects (
                kind TEXT NOT NULL,
                id   TEXT NOT NULL,
                body TEXT NOT NULL,
                PRIMARY KEY (kind, id)
            );",
        )
        .map_err(err)?;
        Ok(Store {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            _checkpoints: checkpoints,
        })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    /// Reads every object back.
    pub fn load(&self) -> Result<Registry, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
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
        let (mut nets, mut subs, mut ports) = (Vec::new(), Vec::new(), Vec::new());
        for row in rows {
            let (kind, id, body) = row.map_err(|e| self.err(e))?;
            let damaged = |kind: &'static str, e: serde_json::Error| StoreError::Damaged {
                path: self.path.clone(),
                kind,
                id: id.clone(),
                why: e.to_string(),
            };
            match kind.as_str() {
                "network" => nets.push(
                    serde_json::from_str::<Network>(&body).map_err(|e| damaged("network", e))?,
                ),
                "subnet" => subs
                    .push(serde_json::from_str::<Subnet>(&body).map_err(|e| damaged("subnet", e))?),
                "port" => {
                    ports.push(serde_json::from_str::<Port>(&body).map_err(|e| damaged("port", e))?)
                }
                _ => {}
            }
        }
        Ok(Registry::from_parts(nets, subs, ports))
    }

    /// Persists the changes of one operation in one transaction.
    pub fn apply(&self, reg: &Registry, changes: &[Change]) -> Result<(), StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        for c in changes {
            match c {
                Change::Put(k, id) => {
                    let body = match k {
                        Kind::Network => reg.network(id).map(serde_json::to_string),
                        Kind::Subnet => reg.subnet(id).map(serde_json::to_string),
                        Kind::Port => reg.port(id).map(serde_json::to_string),
                    };
                    if let Some(Ok(body)) = body {
                        tx.execute(
                            "INSERT INTO objects (kind, id, body) VALUES (?1, ?2, ?3)
                             ON CONFLICT(kind, id) DO UPDATE SET body = excluded.body",
                            params![kind_name(*k), id, body],
                        )
                        .map_err(|e| self.err(e))?;
                    }
                }
                Change::Delete(k, id) => {
                    tx.execute(
                        "DELETE FROM objects WHERE kind = ?1 AND id = ?2",
                        params![kind_name(*k), id],
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
    use qdhcp_registry::requests::{NetworkReq, PortReq, SubnetReq};
    use qdhcp_registry::{Caller, Env};

    struct E(u32);
    impl Env for E {
        fn now(&mut self) -> String {
            "2026-11-25T15:00:00Z".into()
        }
        fn new_id(&mut self) -> String {
            self.0 += 1;
            format!("id-{}", self.0)
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
            st.apply(&reg, &o.changes).unwrap();
            let (_, o) = reg
                .create_subnet(
                    SubnetReq {
                        network_id: Some(n.id.clone()),
                        cidr: Some("10.0.0.0/24".into()),
                        ..Default::default()
                    },
                    &caller,
                    &mut env,
                )
                .unwrap();
            st.apply(&reg, &o.changes).unwrap();
            let (p, o) = reg
                .create_port(
                    PortReq {
                        network_id: Some(n.id.clone()),
                        ..Default::default()
                    },
                    &caller,
                    &mut env,
                )
                .unwrap();
            st.apply(&reg, &o.changes).unwrap();
            let (p2, o) = reg
                .create_port(
                    PortReq {
                        network_id: Some(n.id),
                        ..Default::default()
                    },
                    &caller,
                    &mut env,
                )
                .unwrap();
            st.apply(&reg, &o.changes).unwrap();
            let o = reg.delete_port(&p2.id).unwrap();
            st.apply(&reg, &o.changes).unwrap();
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
        let auto: i64 = st
            .conn
            .lock()
            .unwrap()
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(auto, 0, "no commit runs a checkpoint");
        let before = std::fs::metadata(&db).unwrap().len();
        for _ in 0..20 {
            let (_, o) = reg
                .create_network(NetworkReq::default(), &caller, &mut env)
                .unwrap();
            st.apply(&reg, &o.changes).unwrap();
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
