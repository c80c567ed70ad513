//! DHCPv6 durability: `kill -9` of `qdhcp dnsmasq` under a relayed DHCPv6 load loses no lease
//! whose REPLY left (a REPLY that binds is sent only after its batch is on disk), and the
//! restarted server serves the same clients with the same DUID.

mod common;

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use common::v6::{mac, Pair6};
use common::*;

#[test]
fn kill_9_under_dhcpv6_load_loses_no_replied_lease_and_keeps_the_duid() {
    if !netns_available("dhcpv6 kill -9") {
        return;
    }
    let r = Pair6::up();
    let dir = tempfile::tempdir().unwrap();
    let n = 3000;
    let hosts: String = (0..n)
        .map(|i| {
            format!(
                "{},tag:dhcpv6,host-{i},[2001:db8:1::{:x}]\n",
                mac(i),
                i + 16
            )
        })
        .collect();
    std::fs::write(dir.path().join("hosts"), hosts).unwrap();
    let mut srv = r.start_dnsmasq(dir.path(), "2001:db8:1::");
    let record = dir.path().join("replied");
    let mut load = r.loadgen6();
    load.args([
        "--server6",
        "2001:db8::1",
        "--relay6",
        "2001:db8::2",
        "--link6",
        "2001:db8:1::1",
        "--device",
        "qt6r0",
        "--clients",
        &n.to_string(),
        "--rate",
        "1500",
        "--duration",
        "2",
    ])
    .arg("--record")
    .arg(&record)
    .stdout(Stdio::piped());
    let load = load.spawn().unwrap();
    // in the middle of the load
    std::thread::sleep(Duration::from_millis(1000));
    srv.kill9();
    let out = load.wait_with_output().unwrap();
    assert!(out.status.success());
    let replied: Vec<String> = std::fs::read_to_string(&record)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(
        replied.len() > 300,
        "too few REPLYs before the kill to prove anything: {}",
        replied.len()
    );
    let duid_before = std::fs::read_to_string(dir.path().join("leases"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("duid ").map(str::to_string));

    // restarted: every REPLYed lease is back (from the journal), in the leases file
    let _srv = r.start_dnsmasq(dir.path(), "2001:db8:1::");
    let text = std::fs::read_to_string(dir.path().join("leases")).unwrap();
    let held: HashSet<String> = text
        .lines()
        .filter(|l| !l.starts_with("duid "))
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    let lost: Vec<&String> = replied
        .iter()
        .filter(|l| !held.contains(l.split_whitespace().nth(1).unwrap()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} REPLYed leases lost after kill -9, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    if let Some(d) = duid_before {
        assert!(
            text.contains(&format!("duid {d}")),
            "the DUID changed across kill -9"
        );
    }
    // and it serves: a client renews what it was REPLYed
    let out = r
        .loadgen6()
        .args([
            "--server6",
            "2001:db8::1",
            "--relay6",
            "2001:db8::2",
            "--link6",
            "2001:db8:1::1",
            "--device",
            "qt6r0",
            "--clients",
            "50",
            "--rate",
            "100",
            "--duration",
            "0.5",
            "--json",
        ])
        .output()
        .unwrap();
    let j = String::from_utf8_lossy(&out.stdout);
    assert!(j.contains("\"drops\":0"), "{j}");
}
