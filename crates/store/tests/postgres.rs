//! The registry in a real PostgreSQL server (Debian's `postgresql`, started here with
//! `initdb`/`pg_ctl` as the `postgres` user in a temporary directory, on a unix socket only):
//! migrations at open, objects round-tripped, a restart of the control plane reading them
//! back, and an unreachable server named in the error.

use std::path::{Path, PathBuf};
use std::process::Command;

use qdhcp_registry::requests::{NetworkReq, PortReq, SubnetReq};
use qdhcp_registry::{Caller, Env, Registry};
use qdhcp_store::Store;

/// A throwaway PostgreSQL server, stopped (and its files removed) on drop.
struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

fn pg_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

fn as_postgres(cmd: &Path, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(cmd)
        .args(args)
        .output()
        .expect("runuser")
}

impl Pg {
    /// Starts a server, or says why it cannot (a failure in CI, a skip elsewhere).
    fn start() -> Option<Pg> {
        let why = if !nix::unistd::geteuid().is_root() {
            "needs root (to run the server as postgres)"
        } else if pg_bin().is_none() {
            "PostgreSQL is not installed (scripts/test-all installs it)"
        } else {
            ""
        };
        if !why.is_empty() {
            assert!(std::env::var_os("CI").is_none(), "PostgreSQL test: {why}");
            eprintln!("SKIPPED PostgreSQL test: {why}; runs in CI");
            return None;
        }
        let bin = pg_bin()?;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        assert!(Command::new("chown")
            .args(["postgres", &d])
            .status()
            .unwrap()
            .success());
        let data = format!("{d}/data");
        let o = as_postgres(
            &bin.join("initdb"),
            &["-D", &data, "-A", "trust", "-U", "postgres"],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let opts = format!("-k {d} -c listen_addresses='' -c fsync=on -c synchronous_commit=on");
        let log = format!("{d}/log");
        let o = as_postgres(
            &bin.join("pg_ctl"),
            &["-D", &data, "-l", &log, "-o", &opts, "-w", "start"],
        );
        assert!(
            o.status.success(),
            "{}{}",
            String::from_utf8_lossy(&o.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Some(Pg { dir, bin })
    }

    fn url(&self) -> String {
        format!(
            "postgresql://postgres@localhost/postgres?host={}",
            self.dir.path().display()
        )
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let data = format!("{}/data", self.dir.path().display());
        let _ = as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", &data, "-m", "immediate", "stop"],
        );
    }
}

struct E(u32);
impl Env for E {
    fn now(&mut self) -> String {
        "2026-12-01T22:00:00Z".into()
    }
    fn new_id(&mut self) -> String {
        self.0 += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.0)
    }
    fn random(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(1_103_515_245).wrapping_add(12345);
        self.0
    }
}

#[test]
fn objects_round_trip_through_postgresql_with_migrations_applied_once() {
    let Some(pg) = Pg::start() else { return };
    let st = Store::open_url(&pg.url()).expect("open");
    assert_eq!(st.schema_version().unwrap(), 1);
    let caller = Caller {
        project_id: "p1".into(),
        is_admin: true,
    };
    let mut env = E(0);
    let mut reg = Registry::default();
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
    drop(st);

    // a second node (or a restart) on the same database: nothing migrated twice, all read back
    let again = Store::open_url(&pg.url()).unwrap();
    assert_eq!(again.schema_version().unwrap(), 1);
    let back = again.load().unwrap();
    assert_eq!(back.networks().count(), 1);
    assert_eq!(back.ports().count(), 2, "the port and the DHCP port");
    assert_eq!(back.port(&p.id), reg.port(&p.id));
    // a delete is durable too
    let o = reg.delete_port(&p.id).unwrap();
    again.apply(&reg, &o.changes).unwrap();
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
