//! The Nova stand-in of the metadata tests (`tests/metadata/nova_standin.py`: it checks what
//! Nova's metadata handler checks and records what it received), run in a host namespace.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::serve::Host;
use super::{die_with_test, Proc};

/// Starts the stand-in in `h`'s namespace on 127.0.0.1:`port` with the secret `s3cret`,
/// recording to `record`, over HTTPS with `(cert, key)` when given; killed with the test.
pub fn nova_standin(h: &Host, port: u16, record: &Path, tls: Option<(&Path, &Path)>) -> Proc {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/metadata/nova_standin.py");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &h.ns, "python3"])
        .arg(script)
        .args(["s3cret", "127.0.0.1", &port.to_string()])
        .arg(record);
    if let Some((cert, key)) = tls {
        cmd.arg(cert).arg(key);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let p = Proc {
        child: die_with_test(&mut cmd).spawn().expect("nova stand-in"),
    };
    let t0 = Instant::now();
    loop {
        let ns = std::fs::File::open(format!("/var/run/netns/{}", h.ns)).unwrap();
        let up = std::thread::spawn(move || {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .join()
        .unwrap();
        if up {
            return p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "Nova stand-in did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the stand-in received, one JSON object per request.
pub fn recorded(record: &Path) -> Vec<Value> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
