//! DHCPv6 from clients on the link, as `qdhcp loadgen --mode dhcpv6 --link` is them: each
//! client sends from its own MAC and EUI-64 link-local address to ff02::1:2, the server finds
//! its MAC in the kernel's neighbour table (resolving a new client first, which the generator
//! answers as a VM's kernel does), and every client gets its port's reservation.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};

use common::v6::{mac, Pair6};
use common::*;
use serde_json::Value;

/// One run of the generator as the clients on the server's link (`clients`: the first one's
/// index and how many); its JSON report.
fn load(r: &Pair6, clients: (u32, u32), rate: u32, secs: &str, record: &std::path::Path) -> Value {
    let mut cmd = r.loadgen6();
    cmd.args([
        "--link",
        "qt6r0",
        "--first-client",
        &clients.0.to_string(),
        "--clients",
        &clients.1.to_string(),
        "--rate",
        &rate.to_string(),
        "--duration",
        secs,
        "--window",
        "400",
        "--json",
    ])
    .arg("--record")
    .arg(record)
    .stdout(Stdio::piped());
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// The client's EUI-64 link-local address.
fn link_local(i: u32) -> String {
    format!("fe80::f816:3eff:fe{:02x}:{:x}", (i >> 16) & 255, i & 0xffff)
}

#[test]
fn clients_on_the_link_are_matched_by_the_mac_their_neighbour_entry_holds() {
    if !netns_available("dhcpv6 on the link") {
        return;
    }
    let r = Pair6::up();
    let dir = tempfile::tempdir().unwrap();
    // (the kernel's IPv6 neighbour table is one for every namespace, 1,024 entries by
    // default: this test holds 600 of them)
    let n: u32 = 200;
    // and 400 more for the burst below
    let all = n + 400;
    let reserved: HashMap<String, String> = (0..all)
        .map(|i| (mac(i), format!("2001:db8::{:x}", 0x100 + i)))
        .collect();
    let hosts: String = (0..all)
        .map(|i| format!("{},tag:dhcpv6,host-{i},[{}]\n", mac(i), reserved[&mac(i)]))
        .collect();
    std::fs::write(dir.path().join("hosts"), hosts).unwrap();
    let _srv = r.start_dnsmasq(dir.path(), "2001:db8::");

    // Every client (twice over): the server knows none of them and resolves each first.
    let first = dir.path().join("first");
    let rep = load(&r, (0, n), 400, "1", &first);
    assert!(rep["started"].as_u64().unwrap() >= u64::from(n), "{rep}");
    assert_eq!(rep["acks"], rep["started"], "every exchange bound: {rep}");
    assert_eq!(rep["drops"], 0, "{rep}");
    assert_eq!(rep["naks"], 0, "{rep}");
    assert!(
        rep["arp_replies"].as_u64().unwrap() >= u64::from(n),
        "each client answered the server's neighbour solicitation: {rep}"
    );
    let bound = std::fs::read_to_string(&first).unwrap();
    let mut seen = std::collections::HashSet::new();
    for l in bound.lines() {
        let (m, a) = l.split_once(' ').unwrap();
        assert_eq!(reserved.get(m), Some(&a.to_string()), "{l}");
        seen.insert(m.to_string());
    }
    assert_eq!(seen.len(), n as usize, "every client bound its reservation");
    // The server's kernel holds each client's link-local at its MAC.
    let neigh = Command::new("ip")
        .args(["-n", &r.srv, "-6", "neigh", "show", "dev", "qt6s0"])
        .output()
        .unwrap();
    let neigh = String::from_utf8_lossy(&neigh.stdout);
    for i in [0, 1, n / 2, n - 1] {
        let want = format!("{} lladdr {}", link_local(i), mac(i));
        assert!(neigh.contains(&want), "{want} in\n{neigh}");
    }

    // Again, five to ten times each, from entries the kernel now has.
    let again = dir.path().join("again");
    let rep = load(&r, (0, n), 3000, "1", &again);
    assert_eq!(rep["acks"], rep["started"], "{rep}");
    assert!(rep["acks"].as_u64().unwrap() >= 1000, "{rep}");
    assert_eq!(rep["drops"], 0, "{rep}");
    for l in std::fs::read_to_string(&again).unwrap().lines() {
        let (m, a) = l.split_once(' ').unwrap();
        assert_eq!(reserved.get(m), Some(&a.to_string()), "{l}");
    }

    // A burst of 400 new clients at once: more than may wait for their neighbour entries at
    // once (256). The excess is dropped, counted and logged (rate-limited); the probe for each
    // went out all the same, so when the clients send again they are answered at once.
    let burst = dir.path().join("burst");
    // (rate 0 with a window of 400: all 400 at once, however the generator is scheduled)
    let rep = load(&r, (n, 400), 0, "0.2", &burst);
    assert!(rep["started"].as_u64().unwrap() >= 400, "{rep}");
    assert!(
        rep["drops"].as_u64().unwrap() > 0,
        "a burst past the backlog loses some: {rep}"
    );
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(
        log.contains("messages already wait for their senders' neighbour entries"),
        "{log}"
    );
    let again = dir.path().join("after-burst");
    let rep = load(&r, (n, 400), 1000, "0.5", &again);
    assert_eq!(
        rep["acks"], rep["started"],
        "all bound when they send again: {rep}"
    );
    assert_eq!(rep["drops"], 0, "{rep}");
}
