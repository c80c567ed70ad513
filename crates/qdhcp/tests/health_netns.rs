//! Health and readiness of `qdhcp serve` as service managers see them: `/healthz` and
//! `/readyz` (the database reachable, every network scheduled here serving), and systemd's
//! `READY=1` on `$NOTIFY_SOCKET` once it serves (`Type=notify`).

mod common;
#[path = "../../store/tests/support/pg_server.rs"]
mod pg_server;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::serve::Host;
use common::*;
use serde_json::json;

#[test]
fn healthz_and_readyz_follow_the_database_and_ready_reaches_the_service_manager() {
    if !netns_available("health") {
        return;
    }
    let Some(pg) = pg_server::Pg::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&sock_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    // the child inherits it, as from systemd
    std::env::set_var("NOTIFY_SOCKET", &sock_path);
    let h = Host::new("h", 60);
    let _srv = h.start_with(&["--database", &pg.url()]);
    std::env::remove_var("NOTIFY_SOCKET");
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 from qdhcp serve");
    assert!(
        String::from_utf8_lossy(&buf[..n]).contains("READY=1"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );

    let (s, body) = h.http("GET", "/healthz", None);
    assert_eq!((s, body), (200, json!({"status": "ok"})));
    let (s, n) = h.http("POST", "/v2.0/networks", Some(&json!({"network": {"name": "n", "provider:network_type": "flat", "provider:physical_network": "physnet1"}})));
    assert_eq!(s, 201, "{n}");
    let net = n["network"]["id"].as_str().unwrap().to_string();
    let (s, _) = h.http(
        "POST",
        "/v2.0/subnets",
        Some(&json!({"subnet": {"network_id": net, "cidr": "172.16.1.0/24", "ip_version": 4}})),
    );
    assert_eq!(s, 201);
    let (s, r) = h.http("GET", "/readyz", None);
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["ready"], true);
    assert_eq!(r["checks"]["registry"]["networks"], 1);
    assert_eq!(r["checks"]["networks_serving"]["not_serving"], json!([]));

    // the database away: not ready (503, naming it), yet alive
    pg.stop();
    let (s, r) = h.http("GET", "/readyz", None);
    assert_eq!(s, 503, "{r}");
    assert_eq!(r["ready"], false);
    assert_eq!(r["checks"]["database"]["ok"], false, "{r}");
    assert_eq!(h.http("GET", "/healthz", None).0, 200);
    pg.restart();
    let t0 = std::time::Instant::now();
    loop {
        let (s, r) = h.http("GET", "/readyz", None);
        if s == 200 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "never ready again: {r}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
