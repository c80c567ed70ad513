//! The registry in a real PostgreSQL server (Debian's `postgresql`, started here with
//! `initdb`/`pg_ctl` as the `postgres` user in a temporary directory, on a unix socket only):
//! migrations at open, objects round-tripped, a restart of the control plane reading them
//! back, and an unreachable server named in the error.

#[path = "support/pg_server.rs"]
mod pg_server;

use pg_server::Pg;
use qdhcp_registry::requests::{NetworkReq, PortReq, SubnetReq};
use qdhcp_registry::{Caller, Env, ObjectId, Registry};
use qdhcp_store::Store;

struct E(u32);
impl Env for E {
    fn now(&mut self) -> qdhcp_registry::Stamp {
        "2026-12-01T22:00:00Z".into()
    }
    fn new_id(&mut self) -> qdhcp_registry::ArcStr {
        self.0 += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.0).into()
    }
    fn random(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(1_103_515_245).wrapping_add(12345);
        self.0
    }
}

/// A network with a subnet 10.0.0.0/24, made by an admin of project p1 and stored through
/// `st`: what most tests below start from.
fn network_with_subnet(st: &Store, reg: &mut Registry, env: &mut E) -> qdhcp_registry::Network {
    let caller = Caller {
        project_id: "p1".into(),
        is_admin: true,
    };
    let (n, o) = reg
        .create_network(NetworkReq::default(), &caller, env)
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
            env,
        )
        .unwrap();
    st.apply(&reg.stored(&o.changes)).unwrap();
    n
}

#[test]
fn objects_round_trip_through_postgresql_with_migrations_applied_once() {
    let Some(pg) = Pg::start() else { return };
    let st = Store::open_url(&pg.url()).expect("open");
    assert_eq!(st.schema_version().unwrap(), 5);
    let caller = Caller {
        project_id: "p1".into(),
        is_admin: true,
    };
    let mut env = E(0);
    let mut reg = Registry::default();
    let n = network_with_subnet(&st, &mut reg, &mut env);
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
    drop(st);

    // a second node (or a restart) on the same database: nothing migrated twice, all read back
    let again = Store::open_url(&pg.url()).unwrap();
    assert_eq!(again.schema_version().unwrap(), 5);
    let back = again.load().unwrap();
    assert_eq!(back.networks().count(), 1);
    assert_eq!(back.ports().count(), 2, "the port and the DHCP port");
    assert_eq!(back.port(&p.id), reg.port(&p.id));
    // a delete is durable too
    let o = reg.delete_port(&p.id).unwrap();
    again.apply(&reg.stored(&o.changes)).unwrap();
    assert!(Store::open_url(&pg.url())
        .unwrap()
        .load()
        .unwrap()
        .port(&p.id)
        .is_none());
}

#[test]
fn an_unreachable_database_is_named_in_the_error_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "postgresql://qdhcp:s3cret@localhost/neutron?host={}&connect_timeout=2",
        dir.path().display()
    );
    let e = Store::open_url(&url)
        .err()
        .expect("nobody listens there")
        .to_string();
    assert!(
        e.contains("postgresql://qdhcp:***@localhost/neutron"),
        "{e}"
    );
    assert!(!e.contains("s3cret"), "{e}");
}

/// Two nodes heartbeat into one database: each row keeps its agent id, the later heartbeat
/// replaces the earlier one.
#[test]
fn node_heartbeats_are_shared_through_postgresql() {
    let Some(pg) = Pg::start() else { return };
    let a = Store::open_url(&pg.url()).expect("open");
    let b = Store::open_url(&pg.url()).expect("open");
    let t = |s: &str| chrono::NaiveDateTime::parse_from_str(s, qdhcp_store::NODE_TIME).unwrap();
    let row = |host: &str, id: &str, at: &str| qdhcp_store::NodeRow {
        host: host.into(),
        id: id.into(),
        started_at: t("2026-12-02 01:00:00"),
        heartbeat_at: t(at),
    };
    a.heartbeat(&row("node-a", "id-a", "2026-12-02 01:00:00"))
        .unwrap();
    b.heartbeat(&row("node-b", "id-b", "2026-12-02 01:00:05"))
        .unwrap();
    a.heartbeat(&row("node-a", "other-id", "2026-12-02 01:00:10"))
        .unwrap();
    let seen = b.nodes().unwrap();
    assert_eq!(
        seen,
        vec![
            row("node-a", "id-a", "2026-12-02 01:00:10"),
            row("node-b", "id-b", "2026-12-02 01:00:05")
        ]
    );
}

/// `sslmode` as libpq reads it, against a server that refuses anything but TLS: `disable` is
/// refused by the server; `require` is TLS without checking the certificate; `verify-ca`
/// checks the chain against `sslrootcert` (the right CA passes, another is refused) but not the
/// name; `verify-full` checks the name too (`db.example`, reached at 127.0.0.1 by `hostaddr`).
#[test]
fn tls_is_used_and_checked_as_sslmode_asks() {
    let Some(pg) = Pg::start_tls() else { return };
    let at = |host: &str, q: &str| format!("postgresql://postgres@{host}:{}/postgres?{q}", pg.port);
    let ca = pg.ca().display().to_string();
    let other = pg.other_ca().display().to_string();
    let e = Store::open_url(&at("127.0.0.1", "sslmode=disable"))
        .err()
        .expect("plain text refused");
    assert!(e.to_string().contains("127.0.0.1"), "{e}");
    Store::open_url(&at("127.0.0.1", "sslmode=require")).expect("require: TLS, unchecked");
    Store::open_url(&at("127.0.0.1", "")).expect("prefer: TLS when offered");
    Store::open_url(&at(
        "localhost",
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    ))
    .expect("verify-ca: the chain, not the name");
    let e = Store::open_url(&at(
        "localhost",
        &format!("sslmode=verify-ca&sslrootcert={other}"),
    ))
    .err()
    .expect("a certificate of another CA is refused");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    let e = Store::open_url(&at(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .err()
    .expect("verify-full: localhost is not db.example");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    let st = Store::open_url(&at(
        "db.example",
        &format!("hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}"),
    ))
    .expect("verify-full with the right name and CA");
    assert_eq!(st.schema_version().unwrap(), 5);
}

/// Nodes starting together on a fresh database: every one opens it (the migrations run once,
/// under a lock taken before anything is created). Creating `schema_migrations` before the
/// lock let two of them race: one failed with a duplicate `pg_type` key.
#[test]
fn nodes_opening_a_fresh_database_at_once_all_succeed() {
    let Some(pg) = Pg::start() else { return };
    for round in 0..3 {
        // a fresh database each round
        let url = pg.url();
        let db = format!("fresh{round}");
        postgres::Client::connect(&url, postgres::NoTls)
            .unwrap()
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .unwrap();
        let fresh = url.replace("/postgres?", &format!("/{db}?"));
        let results: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..6)
                .map(|_| s.spawn(|| Store::open_url(&fresh).map(|st| st.schema_version())))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in results {
            assert_eq!(r.expect("every node opens").unwrap(), 5, "round {round}");
        }
    }
}

/// What a node reads to catch up: every object written after its revision and every one
/// deleted after it, at the revision the database is at; nothing from before.
#[test]
fn changes_since_a_revision_are_the_objects_written_and_deleted_after_it() {
    use qdhcp_registry::Stored;
    let Some(pg) = Pg::start() else { return };
    let st = Store::open_url(&pg.url()).expect("open");
    let caller = Caller {
        project_id: "p1".into(),
        is_admin: true,
    };
    let mut env = E(0);
    let mut reg = Registry::default();
    let n = network_with_subnet(&st, &mut reg, &mut env);
    let port = || PortReq {
        network_id: Some(n.id.to_string()),
        ..Default::default()
    };
    let (old, o) = reg.create_port(port(), &caller, &mut env).unwrap();
    st.apply(&reg.stored(&o.changes)).unwrap();
    let mark = st.revision().unwrap();
    let (at, none) = st.changes_since(mark).unwrap().unwrap();
    assert_eq!((at, none.len()), (mark, 0), "nothing since the mark yet");
    let (new, o) = reg.create_port(port(), &caller, &mut env).unwrap();
    st.apply(&reg.stored(&o.changes)).unwrap();
    let o = reg.delete_port(&old.id).unwrap();
    st.apply(&reg.stored(&o.changes)).unwrap();
    let (at, changes) = st.changes_since(mark).unwrap().unwrap();
    assert_eq!(at, mark + 2);
    let mut seen: Vec<String> = changes
        .iter()
        .map(|c| match c {
            Stored::Port(p) => format!("put {}", p.id),
            Stored::Gone(ObjectId::Port(id)) => format!("gone {id}"),
            other => format!("{other:?}"),
        })
        .collect();
    seen.sort();
    let mut want = vec![format!("put {}", new.id), format!("gone {}", old.id)];
    want.sort();
    assert_eq!(seen, want);
    // objects written before the mark are not in it
    assert!(!seen.iter().any(|s| s.contains(n.id.as_str())));
}

/// A network create stored through `st`, for the tests below.
fn one_network(st: &Store, reg: &mut Registry, env: &mut E) {
    let caller = Caller {
        project_id: "p1".into(),
        is_admin: true,
    };
    let (_, o) = reg
        .create_network(NetworkReq::default(), &caller, env)
        .unwrap();
    st.apply(&reg.stored(&o.changes)).unwrap();
}

/// Reads do not queue behind a write: while a write waits on a row another session holds
/// (as it would behind a slow commit), the node still reads the revision and the agents.
#[test]
fn reads_are_answered_while_a_write_waits_on_the_database() {
    let Some(pg) = Pg::start() else { return };
    let st = std::sync::Arc::new(Store::open_url(&pg.url()).expect("open"));
    let mut env = E(0);
    let mut reg = Registry::default();
    one_network(&st, &mut reg, &mut env);
    let before = st.revision().unwrap();

    // another session holds the revision row every write updates first
    let mut other = postgres::Client::connect(&pg.url(), postgres::NoTls).unwrap();
    let mut hold = other.transaction().unwrap();
    hold.query_one("SELECT n FROM revision WHERE id = 1 FOR UPDATE", &[])
        .unwrap();

    let (_, o) = reg
        .create_network(
            NetworkReq::default(),
            &Caller {
                project_id: "p1".into(),
                is_admin: true,
            },
            &mut env,
        )
        .unwrap();
    let writer = {
        let st = st.clone();
        let reg = reg.clone();
        std::thread::spawn(move || st.apply(&reg.stored(&o.changes)))
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!writer.is_finished(), "the write waits for the held row");

    let (tx, rx) = std::sync::mpsc::channel();
    {
        let st = st.clone();
        std::thread::spawn(move || {
            let _ = tx.send((st.revision(), st.nodes()));
        });
    }
    let (rev, nodes) = rx
        .recv_timeout(std::time::Duration::from_secs(1))
        .expect("reads answered while the write waits");
    assert_eq!(rev.unwrap(), before, "the waiting write is not seen");
    assert!(nodes.unwrap().is_empty());

    hold.commit().unwrap();
    writer
        .join()
        .unwrap()
        .expect("the write goes through once the row is free");
    assert_eq!(st.revision().unwrap(), before + 1);
}

/// The server goes away and comes back with no operation in between: operations meanwhile
/// fail as unavailable within the pool's wait, and the first one after it is back succeeds
/// at once (no stale connection is handed out, no back-off wait once it is back).
#[test]
fn the_pool_connects_again_by_itself_after_the_server_restarts() {
    let Some(pg) = Pg::start() else { return };
    let st = Store::open_url(&pg.url()).expect("open");
    let mut env = E(0);
    let mut reg = Registry::default();
    one_network(&st, &mut reg, &mut env);

    pg.stop();
    for _ in 0..2 {
        let t0 = std::time::Instant::now();
        let e = st.revision().expect_err("the server is down");
        assert!(e.is_unavailable(), "{e}");
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(4),
            "{:?}",
            t0.elapsed()
        );
    }
    pg.restart();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let t0 = std::time::Instant::now();
    one_network(&st, &mut reg, &mut env);
    assert!(
        t0.elapsed() < std::time::Duration::from_millis(500),
        "no stale connection, no back-off wait: {:?}",
        t0.elapsed()
    );
    assert_eq!(st.load().unwrap().networks().count(), 2);
}

/// A batch is stored whole or not at all: node B, not yet caught up, stores three port creates
/// in one batch, the first of which takes the address node A's port got meanwhile; the unique
/// constraint refuses the batch, names that address, and none of the three is stored.
#[test]
fn a_batch_with_one_address_taken_meanwhile_is_refused_whole_naming_it() {
    let Some(pg) = Pg::start() else { return };
    let a = Store::open_url(&pg.url()).expect("open");
    let b = Store::open_url(&pg.url()).expect("open");
    let caller = Caller {
        project_id: "p1".into(),
        is_admin: true,
    };
    let mut env_a = E(0);
    let mut reg_a = Registry::default();
    let n = network_with_subnet(&a, &mut reg_a, &mut env_a);
    let port = || PortReq {
        network_id: Some(n.id.to_string()),
        ..Default::default()
    };
    let mut reg_b = b.load().unwrap();
    let mut env_b = E(1_000);

    let (pa, o) = reg_a.create_port(port(), &caller, &mut env_a).unwrap();
    a.apply(&reg_a.stored(&o.changes)).unwrap();

    let mut batch = Vec::new();
    let mut made = Vec::new();
    for _ in 0..3 {
        let (p, o) = reg_b.create_port(port(), &caller, &mut env_b).unwrap();
        batch.extend(o.changes);
        made.push(p);
    }
    assert_eq!(made[0].fixed_ips[0].ip_address, pa.fixed_ips[0].ip_address);
    let e = b
        .apply(&reg_b.stored(&batch))
        .expect_err("the address is taken");
    assert!(e.is_conflict(), "{e}");
    assert!(
        e.to_string()
            .contains(&pa.fixed_ips[0].ip_address.to_string()),
        "{e}"
    );
    let stored = a.load().unwrap();
    assert!(stored.port(&pa.id).is_some());
    for p in &made {
        assert!(
            stored.port(&p.id).is_none(),
            "nothing of the batch is stored"
        );
    }
}
