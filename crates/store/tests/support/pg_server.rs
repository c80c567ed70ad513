//! A throwaway PostgreSQL server for tests: Debian's `postgresql`, started with `initdb` and
//! `pg_ctl` as the `postgres` user in a temporary directory, listening on a unix socket only,
//! stopped on drop. Shared by the store's and the API's PostgreSQL tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A throwaway PostgreSQL server, stopped (and its files removed) on drop.
pub struct Pg {
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
    pub fn start() -> Option<Pg> {
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

    pub fn url(&self) -> String {
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

impl Pg {
    /// Stops the server (fast shutdown), as a database outage.
    pub fn stop(&self) {
        let data = format!("{}/data", self.dir.path().display());
        let o = as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", &data, "-m", "fast", "-w", "stop"],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    /// Starts it again on the same data.
    pub fn restart(&self) {
        let d = self.dir.path().display().to_string();
        let opts = format!("-k {d} -c listen_addresses='' -c fsync=on -c synchronous_commit=on");
        let o = as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                &format!("{d}/data"),
                "-l",
                &format!("{d}/log"),
                "-o",
                &opts,
                "-w",
                "start",
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}
