//! DHCPv6 durability: `kill -9` of `qdhcp dnsmasq` under a relayed DHCPv6 load loses no lease
//! whose REPLY left (a REPLY that binds is sent only after its batch is on disk), and the
//! restarted server serves the same clients with the same DUID.

mod common;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The server namespace and a relay namespace joined by a veth pair, as bench/dhcpv6.sh.
struct Relay6 {
    srv: String,
    relay: String,
}

impl Relay6 {
    fn new() -> Relay6 {
        let id = format!("{:04x}", std::process::id() & 0xffff);
        let r = Relay6 {
            srv: format!("qt6s{id}"),
            relay: format!("qt6r{id}"),
        };
        for ns in [&r.srv, &r.relay] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ]);
        }
        sh(&[
            "ip", "-n", &r.srv, "link", "add", "qt6s0", "type", "veth", "peer", "name", "qt6r0",
            "netns", &r.relay,
        ]);
        sh(&[
            "ip",
            "-n",
            &r.srv,
            "addr",
            "add",
            "2001:db8::1/64",
            "dev",
            "qt6s0",
            "nodad",
        ]);
        sh(&[
            "ip",
            "-n",
            &r.relay,
            "addr",
            "add",
            "2001:db8::2/64",
            "dev",
            "qt6r0",
            "nodad",
        ]);
        sh(&["ip", "-n", &r.srv, "link", "set", "qt6s0", "up"]);
        sh(&["ip", "-n", &r.relay, "link", "set", "qt6r0", "up"]);
        sh(&[
            "ip",
            "-n",
            &r.srv,
            "-6",
            "route",
            "add",
            "2001:db8:1::/64",
            "via",
            "2001:db8::2",
            "dev",
            "qt6s0",
        ]);
        v6::wait_no_tentative(&r.srv);
        v6::wait_no_tentative(&r.relay);
        r
    }
}

impl Drop for Relay6 {
    fn drop(&mut self) {
        for ns in [&self.srv, &self.relay] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn mac(i: u32) -> String {
    format!(
        "fa:16:3e:{:02x}:{:02x}:{:02x}",
        (i >> 16) & 255,
        (i >> 8) & 255,
        i & 255
    )
}

fn start(r: &Relay6, dir: &std::path::Path) -> Proc {
    let log = dir.join("log");
    let before = count_in(&log, "DHCPv6 listening on");
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &r.srv,
        qdhcp_bin(),
        "dnsmasq",
        "-k",
        "-u",
        "root",
        "--no-hosts",
        "--no-resolv",
        "--port=0",
        "--interface=qt6s0",
        "--bind-interfaces",
        "--dhcp-range=set:s6,2001:db8:1::,static,64,86400s",
        "--quiet-dhcp",
        "--qdhcp-client-rate=0",
    ])
    .arg(format!("--dhcp-hostsfile={}", dir.join("hosts").display()))
    .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
    .arg(format!("--log-facility={}", log.display()))
    .stdin(Stdio::null())
    .stdout(Stdio::null());
    die_with_test(&mut cmd);
    let p = Proc {
        child: cmd.spawn().unwrap(),
    };
    let t0 = Instant::now();
    while count_in(&log, "DHCPv6 listening on") <= before {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    p
}

#[test]
fn kill_9_under_dhcpv6_load_loses_no_replied_lease_and_keeps_the_duid() {
    if !netns_available("dhcpv6 kill -9") {
        return;
    }
    let r = Relay6::new();
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
    let mut srv = start(&r, dir.path());
    let record = dir.path().join("replied");
    let mut load = Command::new("ip");
    load.args([
        "netns",
        "exec",
        &r.relay,
        qdhcp_bin(),
        "loadgen",
        "--mode",
        "dhcpv6",
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
    die_with_test(&mut load);
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
    let _srv = start(&r, dir.path());
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
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &r.relay,
            qdhcp_bin(),
            "loadgen",
            "--mode",
            "dhcpv6",
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
