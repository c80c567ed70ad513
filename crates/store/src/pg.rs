//! The registry in PostgreSQL (13 or newer), for several qdhcp nodes on one database: the
//! same rows as the SQLite store, in one transaction per operation, the schema brought up to
//! date at open under a lock so that two nodes starting together migrate once.

use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;
use qdhcp_registry::{Kind, Port, Stored};

use crate::pg_batch::{conflicting_value, Rows};
use crate::{kind_name, StoreError, MIGRATIONS};

/// How many connections a node keeps: writes come from one writer (group commit), so the rest
/// serve what must not wait behind a commit: the change feed's catch-up reads, heartbeats and
/// the agents API.
const POOL_SIZE: u32 = 4;

/// How long an operation waits for a connection while the server is away before it fails
/// (503 at the API); meanwhile the pool keeps connecting again, backing off up to half this.
const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The database's connections: a pool, so that no read waits behind a write's commit, and so
/// that a server that went away is connected to again in the background, with backoff.
pub struct PgStore {
    /// Always `Some` but while dropping (see `Drop`).
    pool: Option<r2d2::Pool<Connector>>,
    /// The URL, to connect again after the server went away.
    url: String,
    /// The URL without its password, for errors.
    shown: String,
    /// The revision this store's last write made.
    last_written: std::sync::atomic::AtomicI64,
}

/// Makes the pool's connections with the TLS the URL's `sslmode` asks for.
#[derive(Debug)]
struct Connector {
    url: String,
}

impl r2d2::ManageConnection for Connector {
    type Connection = Client;
    type Error = crate::pg_tls::ConnectError;

    fn connect(&self) -> Result<Client, Self::Error> {
        crate::pg_tls::connect(&self.url)
    }

    /// A connection the server closed (a restart, a failover) is never handed out. The
    /// blocking client learns of a close only when it next talks, so this asks: one round trip
    /// per operation, against a failed API write after every database restart.
    fn is_valid(&self, c: &mut Client) -> Result<(), Self::Error> {
        Ok(c.is_valid(std::time::Duration::from_secs(1))?)
    }

    fn has_broken(&self, c: &mut Client) -> bool {
        c.is_closed()
    }
}

/// Says in the log, once per attempt (at most every `POOL_WAIT / 2`), why connecting failed.
#[derive(Debug)]
struct LogFailures {
    shown: String,
}

impl r2d2::HandleError<crate::pg_tls::ConnectError> for LogFailures {
    fn handle_error(&self, e: crate::pg_tls::ConnectError) {
        tracing::warn!(
            "database {}: connecting failed ({}); trying again",
            self.shown,
            crate::with_causes(&e)
        );
    }
}

/// `url` with any password replaced, for messages.
fn without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// A connection lent by the pool; back to it when dropped.
type Conn = r2d2::PooledConnection<Connector>;

impl Drop for PgStore {
    /// The client's own drop blocks on its runtime: never on an async worker thread.
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let _ = std::thread::spawn(move || drop(pool)).join();
        }
    }
}

/// Runs `f` on a thread of its own. The `postgres` client drives a runtime of its own and must
/// not run on an async worker thread (the API's); nor should any blocking commit.
fn off_runtime<T: Send>(f: impl FnOnce() -> Result<T, StoreError> + Send) -> Result<T, StoreError> {
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(r) => r,
        Err(p) => std::panic::resume_unwind(p),
    })
}

impl PgStore {
    /// Connects and migrates; an unreachable server or a refused login is an error naming the
    /// database.
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        off_runtime(|| Self::open_here(url))
    }

    fn open_here(url: &str) -> Result<PgStore, StoreError> {
        let shown = without_password(url);
        let err = |source| StoreError::Pg {
            url: shown.clone(),
            source,
        };
        let mut client = match crate::pg_tls::connect(url) {
            Ok(c) => c,
            Err(crate::pg_tls::ConnectError::Db(e)) => return Err(err(e)),
            Err(crate::pg_tls::ConnectError::Settings(why)) => {
                return Err(StoreError::PgSettings { url: shown, why })
            }
        };
        let mut tx = client.transaction().map_err(err)?;
        // One node migrates at a time, from before anything is created: `CREATE TABLE IF NOT
        // EXISTS` is not safe against another session creating the same table at once.
        tx.batch_execute("SELECT pg_advisory_xact_lock(7340079)")
            .map_err(err)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version    BIGINT PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            );
            LOCK TABLE schema_migrations IN EXCLUSIVE MODE;",
        )
        .map_err(err)?;
        let at: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .map_err(err)?
            .get(0);
        for (v, _, sql) in MIGRATIONS.iter().filter(|m| m.0 > at) {
            tx.batch_execute(sql).map_err(err)?;
            tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[v])
                .map_err(err)?;
            if *v == 4 {
                // the ports stored before the constraints existed take their places
                let rows = tx
                    .query("SELECT body FROM objects WHERE kind = 'port'", &[])
                    .map_err(err)?;
                for r in rows {
                    let body: String = r.get(0);
                    let Ok(p) = serde_json::from_str::<Port>(&body) else {
                        continue;
                    };
                    tx.execute(
                        "INSERT INTO mac_allocations (network_id, mac, port_id) VALUES ($1, $2, $3)
                         ON CONFLICT DO NOTHING",
                        &[
                            &p.network_id.as_str(),
                            &p.mac_address.to_string(),
                            &p.id.as_str(),
                        ],
                    )
                    .map_err(err)?;
                    for f in &p.fixed_ips {
                        tx.execute(
                            "INSERT INTO ip_allocations (subnet_id, ip, port_id) VALUES ($1, $2, $3)
                             ON CONFLICT DO NOTHING",
                            &[&f.subnet_id.as_str(), &f.ip_address.to_string(), &p.id.as_str()],
                        )
                        .map_err(err)?;
                    }
                }
            }
        }
        tx.commit().map_err(err)?;
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(POOL_WAIT)
            .test_on_check_out(true)
            // connections are made (and retried) on one thread, not r2d2's default three
            .thread_pool(std::sync::Arc::new(
                scheduled_thread_pool::ScheduledThreadPool::builder()
                    .num_threads(1)
                    .thread_name_pattern("pg-connect")
                    .build(),
            ))
            .error_handler(Box::new(LogFailures {
                shown: shown.clone(),
            }))
            .build_unchecked(Connector {
                url: url.to_string(),
            });
        // the pool makes its own connections (one at once, in the background)
        drop(client);
        Ok(PgStore {
            pool: Some(pool),
            url: url.to_string(),
            shown,
            last_written: std::sync::atomic::AtomicI64::new(0),
        })
    }

    /// The database, for messages.
    pub fn display(&self) -> &str {
        &self.shown
    }

    fn err(&self, source: postgres::Error) -> StoreError {
        StoreError::Pg {
            url: self.shown.clone(),
            source,
        }
    }

    /// A connection from the pool. While the server is away this waits up to `POOL_WAIT` for
    /// the pool to reach it again, then fails as unavailable (503 at the API).
    fn client(&self) -> Result<Conn, StoreError> {
        let pool = self.pool.as_ref().expect("the pool lives until drop");
        pool.get().map_err(|e| StoreError::PgUnavailable {
            url: self.shown.clone(),
            why: e.to_string(),
        })
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        off_runtime(|| self.schema_version_here())
    }

    fn schema_version_here(&self) -> Result<i64, StoreError> {
        Ok(self
            .client()?
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .map_err(|e| self.err(e))?
            .get(0))
    }

    /// Every object row, in the order first written.
    pub fn rows(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        off_runtime(|| self.rows_here())
    }

    fn rows_here(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        Ok(self
            .client()?
            .query("SELECT kind, id, body FROM objects ORDER BY seq", &[])
            .map_err(|e| self.err(e))?
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// See [`crate::Store::objects`].
    pub fn objects(
        &self,
        keys: &[(Kind, String)],
        path: &std::path::Path,
    ) -> Result<Vec<qdhcp_registry::Stored>, StoreError> {
        off_runtime(|| {
            let mut client = self.client()?;
            let mut out = Vec::new();
            for (k, id) in keys {
                let row = client
                    .query_opt(
                        "SELECT body FROM objects WHERE kind = $1 AND id = $2",
                        &[&kind_name(*k), id],
                    )
                    .map_err(|e| self.err(e))?;
                match row {
                    Some(r) => {
                        let body: String = r.get(0);
                        if let Some(s) = crate::decode_one(kind_name(*k), id, &body, path)? {
                            out.push(s);
                        }
                    }
                    None => out.push(qdhcp_registry::Stored::Gone(qdhcp_registry::ObjectId::of(
                        *k, id,
                    ))),
                }
            }
            Ok(out)
        })
    }

    /// See [`crate::Store::changes_since`].
    pub fn changes_since(
        &self,
        revision: i64,
        path: &std::path::Path,
    ) -> Result<(i64, Vec<qdhcp_registry::Stored>), StoreError> {
        off_runtime(|| {
            let mut client = self.client()?;
            let mut tx = client
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(|e| self.err(e))?;
            let at: i64 = tx
                .query_one("SELECT n FROM revision WHERE id = 1", &[])
                .map_err(|e| self.err(e))?
                .get(0);
            let mut out = Vec::new();
            for r in tx
                .query(
                    "SELECT kind, id, body FROM objects WHERE rev > $1",
                    &[&revision],
                )
                .map_err(|e| self.err(e))?
            {
                let (kind, id, body): (String, String, String) = (r.get(0), r.get(1), r.get(2));
                if let Some(s) = crate::decode_one(&kind, &id, &body, path)? {
                    out.push(s);
                }
            }
            for r in tx
                .query(
                    "SELECT kind, id FROM tombstones WHERE rev > $1",
                    &[&revision],
                )
                .map_err(|e| self.err(e))?
            {
                let (kind, id): (String, String) = (r.get(0), r.get(1));
                if let Some(k) = crate::kind_of(&kind) {
                    out.push(qdhcp_registry::Stored::Gone(qdhcp_registry::ObjectId::of(
                        k, &id,
                    )));
                }
            }
            tx.commit().map_err(|e| self.err(e))?;
            Ok((at, out))
        })
    }

    /// See [`crate::Store::apply`].
    pub fn apply(&self, changed: &[Stored]) -> Result<(), StoreError> {
        off_runtime(|| self.apply_here(changed))
    }

    /// See [`crate::Store::heartbeat`].
    pub fn heartbeat(&self, n: &crate::NodeRow) -> Result<(), StoreError> {
        off_runtime(|| {
            self.client()?
                .execute(
                    "INSERT INTO nodes (host, id, started_at, heartbeat_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (host) DO UPDATE SET started_at = excluded.started_at,
                                                      heartbeat_at = excluded.heartbeat_at",
                    &[
                        &n.host,
                        &n.id,
                        &n.started_at.format(crate::NODE_TIME).to_string(),
                        &n.heartbeat_at.format(crate::NODE_TIME).to_string(),
                    ],
                )
                .map(|_| ())
                .map_err(|e| self.err(e))
        })
    }

    /// See [`crate::Store::nodes`].
    pub fn nodes(&self) -> Result<Vec<crate::NodeRow>, StoreError> {
        off_runtime(|| {
            Ok(self
                .client()?
                .query(
                    "SELECT host, id, started_at, heartbeat_at FROM nodes ORDER BY host",
                    &[],
                )
                .map_err(|e| self.err(e))?
                .into_iter()
                .map(|r| {
                    crate::NodeRow::from_stored(
                        r.get(0),
                        r.get(1),
                        r.get::<_, &str>(2),
                        r.get::<_, &str>(3),
                    )
                })
                .collect())
        })
    }

    /// Stores a batch in a fixed number of statements, whatever its size: the rows of each
    /// table go in one statement as arrays (`unnest`), so a batch of 100 port creates costs the
    /// same round trips as one. Each object's last change in the batch is what is stored.
    fn apply_here(&self, changed: &[Stored]) -> Result<(), StoreError> {
        let rows = Rows::of(changed)?;
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(|e| self.err(e))?;
        // What the ports held under the unique constraints is released first, then what they
        // hold now is taken (a batch may move an address from one port to another). This
        // comes before the revision, so that what another node's write waits for here is
        // never the revision row, and two nodes' writes overlap up to their last statement.
        if !rows.ports.is_empty() {
            tx.execute(
                "DELETE FROM ip_allocations WHERE port_id = ANY($1)",
                &[&rows.ports],
            )
            .map_err(|e| self.err(e))?;
            tx.execute(
                "DELETE FROM mac_allocations WHERE port_id = ANY($1)",
                &[&rows.ports],
            )
            .map_err(|e| self.err(e))?;
        }
        if !rows.macs.0.is_empty() {
            tx.execute(
                "INSERT INTO mac_allocations (network_id, mac, port_id)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[])",
                &[&rows.macs.0, &rows.macs.1, &rows.macs.2],
            )
            .map_err(|e| self.taken(crate::Taken::Mac, e))?;
        }
        if !rows.ips.0.is_empty() {
            tx.execute(
                "INSERT INTO ip_allocations (subnet_id, ip, port_id)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[])",
                &[&rows.ips.0, &rows.ips.1, &rows.ips.2],
            )
            .map_err(|e| self.taken(crate::Taken::Ip, e))?;
        }
        // Then, in one statement, the revision, the rows stamped with it and the notice
        // (delivered to every listener when the transaction commits, never before). Writers
        // queue on the revision row until the one holding it commits, so revisions commit in
        // order; each sub-statement reads `r`, so none touches a row before the revision is
        // held.
        let n: i64 = tx
            .query_one(
                "WITH r AS (UPDATE revision SET n = n + 1 WHERE id = 1 RETURNING n),
                 put AS (INSERT INTO objects (kind, id, body, rev)
                         SELECT t.k, t.i, t.b, r.n
                         FROM r, unnest($1::text[], $2::text[], $3::text[]) AS t (k, i, b)
                         ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body, rev = excluded.rev),
                 del AS (DELETE FROM objects o USING r, unnest($4::text[], $5::text[]) AS t (k, i)
                         WHERE o.kind = t.k AND o.id = t.i),
                 tomb AS (INSERT INTO tombstones (kind, id, rev)
                          SELECT t.k, t.i, r.n FROM r, unnest($4::text[], $5::text[]) AS t (k, i)
                          ON CONFLICT (kind, id) DO UPDATE SET rev = excluded.rev)
                 SELECT n, pg_notify('qdhcp_changes', n::text) FROM r",
                &[
                    &rows.put.0,
                    &rows.put.1,
                    &rows.put.2,
                    &rows.gone.0,
                    &rows.gone.1,
                ],
            )
            .map_err(|e| self.err(e))?
            .get(0);
        tx.commit().map_err(|e| self.err(e))?;
        self.last_written
            .store(n, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// A unique constraint refusing an address or MAC another port holds (another node's
    /// write, or a batch of this one's) is a [`StoreError::Conflict`] naming the value.
    fn taken(&self, what: crate::Taken, e: postgres::Error) -> StoreError {
        match e.as_db_error() {
            Some(db) if db.code() == &postgres::error::SqlState::UNIQUE_VIOLATION => {
                StoreError::Conflict {
                    what,
                    value: db.detail().and_then(conflicting_value).unwrap_or_default(),
                }
            }
            _ => self.err(e),
        }
    }

    /// See [`crate::Store::revision`].
    pub fn revision(&self) -> Result<i64, StoreError> {
        off_runtime(|| {
            Ok(self
                .client()?
                .query_one("SELECT n FROM revision WHERE id = 1", &[])
                .map_err(|e| self.err(e))?
                .get(0))
        })
    }

    /// See [`crate::Store::last_written`].
    pub fn last_written(&self) -> Option<i64> {
        Some(self.last_written.load(std::sync::atomic::Ordering::SeqCst)).filter(|n| *n > 0)
    }

    /// See [`crate::Store::watch`].
    pub fn watch(&self, on_change: impl Fn(i64) + Send + 'static) -> std::io::Result<()> {
        let url = self.url.clone();
        let shown = self.shown.clone();
        std::thread::Builder::new()
            .name("change-feed".into())
            .spawn(move || {
                let mut backoff = std::time::Duration::from_millis(100);
                loop {
                    if let Err(e) = follow(&url, &on_change) {
                        tracing::warn!("database {shown}: change feed lost ({e}); connecting again in {backoff:?}");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                    }
                }
            })
            .map(|_| ())
    }
}

/// One connection's life of the change feed: LISTEN, catch up, then every notification (and a
/// look every 30 s) hands the revision to `on_change`. Returns only with the connection's
/// error.
fn follow(url: &str, on_change: &impl Fn(i64)) -> Result<(), crate::pg_tls::ConnectError> {
    let mut c = crate::pg_tls::connect(url)?;
    c.batch_execute("LISTEN qdhcp_changes")?;
    let current = |c: &mut Client| -> Result<i64, postgres::Error> {
        Ok(c.query_one("SELECT n FROM revision WHERE id = 1", &[])?
            .get(0))
    };
    let first = current(&mut c)?;
    on_change(first);
    loop {
        let mut newest: Option<i64> = None;
        {
            let mut n = c.notifications();
            let mut it = n.timeout_iter(std::time::Duration::from_secs(30));
            if let Some(m) = it.next()? {
                newest = m.payload().parse().ok();
            }
        }
        // whatever else is queued already, without waiting
        {
            let mut n = c.notifications();
            let mut it = n.iter();
            while let Some(m) = it.next()? {
                newest = newest.max(m.payload().parse().ok());
            }
        }
        let v = match newest {
            Some(v) => v,
            None => current(&mut c)?,
        };
        on_change(v);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_never_shown() {
        assert_eq!(
            super::without_password("postgresql://qdhcp:s3cret@db:5432/neutron?sslmode=require"),
            "postgresql://qdhcp:***@db:5432/neutron?sslmode=require"
        );
        assert_eq!(
            super::without_password("postgresql://qdhcp@db/neutron"),
            "postgresql://qdhcp@db/neutron"
        );
    }
}
