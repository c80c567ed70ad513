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
    /// The TCP port of a server started by [`Pg::start_tls`].
    pub port: u16,
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
        Some(Pg { dir, bin, port: 0 })
    }

    /// A server that takes TLS connections only, on 127.0.0.1 (`hostssl` in pg_hba.conf,
    /// `hostnossl … reject`), with a certificate for `db.example` signed by the CA in
    /// [`Pg::ca`]; [`Pg::other_ca`] is a CA that signed nothing of it.
    pub fn start_tls() -> Option<Pg> {
        let mut pg = Pg::start()?;
        pg.stop();
        let d = pg.dir.path().to_path_buf();
        let sh = |cmd: &str| {
            let o = Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .current_dir(&d)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{cmd}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=qt-ca");
        sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other-ca.crt -days 2 -subj /CN=qt-other");
        sh("openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=db.example");
        sh("printf 'subjectAltName=DNS:db.example\\n' > san && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile san");
        sh("chown postgres server.key server.crt && chmod 600 server.key");
        std::fs::write(
            d.join("data/pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dd = d.display();
        let opts = format!(
            "-k {dd} -c listen_addresses=127.0.0.1 -c port={port} -c ssl=on -c ssl_cert_file={dd}/server.crt -c ssl_key_file={dd}/server.key"
        );
        let o = as_postgres(
            &pg.bin.join("pg_ctl"),
            &[
                "-D",
                &format!("{dd}/data"),
                "-l",
                &format!("{dd}/log"),
                "-o",
                &opts,
                "-w",
                "start",
            ],
        );
        assert!(
            o.status.success(),
            "{}{}",
            String::from_utf8_lossy(&o.stderr),
            std::fs::read_to_string(d.join("log")).unwrap_or_default()
        );
        pg.port = port;
        Some(pg)
    }

    /// The CA that signed a [`Pg::start_tls`] server's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A CA that signed nothing of the server's.
    pub fn other_ca(&self) -> PathBuf {
        self.dir.path().join("other-ca.crt")
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
