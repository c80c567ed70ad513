//! Reliability under abuse, with real processes in `qt` namespaces: kill -9 under load loses
//! no acknowledged lease and never hands one address to two MACs; a flood of unknown clients
//! does not starve reserved ones; lease storage that fills up stops ACKs (never unpersisted
//! ones) and recovers by itself; a vanished hosts file on SIGHUP keeps the old tables.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A namespace with only loopback: the server on lo, the load generator as a relay on lo.
struct LoNs {
    ns: String,
    dir: tempfile::TempDir,
}

impl LoNs {
    fn new(tag: &str) -> LoNs {
        let ns = format!("qtr{tag}{:04x}", std::process::id() & 0xffff);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        assert!(Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .unwrap()
            .success());
        assert!(Command::new("ip")
            .args(["-n", &ns, "link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success());
        LoNs {
            ns,
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, n: &str) -> std::path::PathBuf {
        self.dir.path().join(n)
    }
    fn hosts(&self, n: u32) {
        let mut s = String::new();
        for i in 0..n {
            s.push_str(&format!(
                "fa:16:3e:{:02x}:{:02x}:{:02x},host-{i},10.{}.{}.{}\n",
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255,
                1 + i / 62_500,
                (i / 250) % 250,
                1 + i % 250
            ));
        }
        std::fs::write(self.path("hosts"), s).unwrap();
    }
    fn start(&self, leasefile: &std::path::Path, extra: &[&str]) -> Proc {
        self.start_with(leasefile, extra, true)
    }
    fn start_with(&self, leasefile: &std::path::Path, extra: &[&str], quiet: bool) -> Proc {
        let before = std::fs::read_to_string(self.path("log"))
            .unwrap_or_default()
            .matches("DHCP listening")
            .count();
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.ns,
            qdhcp_bin(),
            "dnsmasq",
            "-k",
            "--interface=lo",
        ])
        .args(if quiet {
            &["--quiet-dhcp"][..]
        } else {
            &[][..]
        })
        .arg(format!("--dhcp-hostsfile={}", self.path("hosts").display()))
        .arg(format!("--dhcp-leasefile={}", leasefile.display()))
        .arg(format!("--log-facility={}", self.path("log").display()))
        .args([
            "--dhcp-range=set:s,10.0.0.0,static,255.0.0.0,3600s",
            "--dhcp-lease-max=100000",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        die_with_test(&mut cmd);
        let p = Proc {
            child: cmd.spawn().unwrap(),
        };
        let start = Instant::now();
        while std::fs::read_to_string(self.path("log"))
            .unwrap_or_default()
            .matches("DHCP listening")
            .count()
            <= before
        {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }
    fn loadgen(&self, args: &[&str]) -> std::process::Child {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, qdhcp_bin(), "loadgen", "--json"])
            .args(args)
            .stdout(Stdio::piped());
        die_with_test(&mut cmd);
        cmd.spawn().unwrap()
    }
}

impl Drop for LoNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// SIGKILLs the server at random moments (`min_gap_ms` to `min_gap_ms + 300` ms apart) and
/// restarts it, 20 times or for 13 s; returns how many kills there were.
fn kill_repeatedly(srv: &mut Proc, min_gap_ms: u64, mut restart: impl FnMut() -> Proc) -> u32 {
    let mut seed = u64::from(std::process::id()) | 1;
    let mut kills = 0;
    let start = Instant::now();
    while kills < 20 && start.elapsed() < Duration::from_secs(13) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(min_gap_ms + seed % 300));
        srv.kill9();
        kills += 1;
        *srv = restart();
    }
    kills
}

fn json_field(out: &str, k: &str) -> f64 {
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("loadgen output {out:?}: {e}"));
    v[k].as_f64().unwrap_or_else(|| panic!("{k} in {out}"))
}

#[test]
fn kill_9_under_load_twenty_times_loses_no_acked_lease_and_never_double_assigns() {
    if !netns_available("kill -9 under load") {
        return;
    }
    let n = LoNs::new("k");
    n.hosts(3000);
    let leases = n.path("leases");
    let record = n.path("acked");
    let mut srv = n.start(&leases, &[]);
    let lg = n.loadgen(&[
        "--clients",
        "3000",
        "--rate",
        "1500",
        "--duration",
        "14",
        "--timeout-ms",
        "300",
        "--record",
        record.to_str().unwrap(),
    ]);
    let kills = kill_repeatedly(&mut srv, 150, || n.start(&leases, &[]));
    let out = lg.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(kills >= 20, "only {kills} kills");
    let text = std::fs::read_to_string(&record).unwrap();
    let mut by_ip: HashMap<&str, &str> = HashMap::new();
    let mut by_mac: HashMap<&str, &str> = HashMap::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (mac, ip) = (f[0], f[1]);
        assert_eq!(
            *by_ip.entry(ip).or_insert(mac),
            mac,
            "{ip} handed to two MACs"
        );
        assert_eq!(
            *by_mac.entry(mac).or_insert(ip),
            ip,
            "{mac} got two addresses"
        );
    }
    assert!(
        by_mac.len() > 1000,
        "enough leases acknowledged to mean something: {}",
        by_mac.len()
    );
    // every acknowledged lease survived the kills
    assert_acked_leases_survive_kill_9(&n, &mut srv, &leases, &record);
}

/// Kills the server with SIGKILL and starts it again: every lease the load generator recorded
/// as ACKed is in the lease table, and its renewal is ACKed with the same address.
fn assert_acked_leases_survive_kill_9(
    n: &LoNs,
    srv: &mut Proc,
    leases: &std::path::Path,
    record: &std::path::Path,
) {
    srv.kill9();
    *srv = n.start(leases, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let table = std::fs::read_to_string(leases).unwrap();
    let acked = std::fs::read_to_string(record).unwrap();
    let missing: Vec<&str> = acked
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|mac| !table.contains(mac))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged leases lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_every_renewal_acked(n.loadgen(&renew_args(record)));
}

/// The journal's commits of one server, from its SIGUSR1 statistics line (the `n`th such line
/// of its log).
fn journal_commits(n: &LoNs, srv: &Proc, nth: usize) -> u64 {
    srv.signal(nix::sys::signal::Signal::SIGUSR1);
    let stats = || {
        let log = std::fs::read_to_string(n.path("log")).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("DHCP statistics"))
            .nth(nth)
            .map(str::to_string)
    };
    common::v6::wait_until(Duration::from_secs(5), "the statistics line", || {
        stats().is_some()
    });
    let l = stats().unwrap();
    l.split("journal commits ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no commit count in {l}"))
}

/// `--qdhcp-commit-interval` (2 ms unless given, 0 for none): the journal commits at most once
/// per interval, however fast the ACKs come, and still ACKs nothing before its lease is on disk (kill -9, restart: every ACKed
/// lease is there and renews with its address).
#[test]
fn a_commit_interval_spaces_the_journal_commits_and_every_ack_is_still_durable() {
    if !netns_available("commit interval") {
        return;
    }
    let n = LoNs::new("c");
    n.hosts(4500);
    let leases = n.path("leases");
    let record = n.path("acked");
    let load = |first: &str| {
        let out = n
            .loadgen(&[
                "--clients",
                "1500",
                "--first-client",
                first,
                "--rate",
                "1000",
                "--duration",
                "3",
                "--timeout-ms",
                "1000",
                "--record",
                record.to_str().unwrap(),
            ])
            .wait_with_output()
            .unwrap();
        let out = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            json_field(&out, "acks"),
            json_field(&out, "started"),
            "{out}"
        );
        out
    };
    // without the interval: a commit for nearly every batch
    let srv = n.start(&leases, &["--qdhcp-commit-interval=0"]);
    load("0");
    let without = journal_commits(&n, &srv, 0);
    drop(srv);
    // no flag: the default, 2 ms apart at least
    let srv = n.start(&leases, &[]);
    let t0 = Instant::now();
    load("3000");
    let default = journal_commits(&n, &srv, 1);
    assert!(
        default >= 1 && default <= t0.elapsed().as_millis() as u64 / 2 + 2,
        "{default} commits in {:?} with the default interval, 2 ms",
        t0.elapsed()
    );
    drop(srv);
    // 100 ms apart: at most one commit per 100 ms of the run (3 s of load and its tail)
    let mut srv = n.start(&leases, &["--qdhcp-commit-interval=100000"]);
    let t0 = Instant::now();
    load("1500");
    let with = journal_commits(&n, &srv, 2);
    let most = t0.elapsed().as_millis() as u64 / 100 + 2;
    assert!(
        with >= 1 && with <= most,
        "{with} commits in {:?} with 100 ms between them",
        t0.elapsed()
    );
    assert!(
        without > 3 * most,
        "the same load commits {without} times without the interval: too few to tell them apart"
    );
    assert_acked_leases_survive_kill_9(&n, &mut srv, &leases, &record);
}

#[test]
fn flood_of_unknown_clients_does_not_starve_reserved_ones() {
    if !netns_available("flood") {
        return;
    }
    let n = LoNs::new("f");
    n.hosts(500);
    let _srv = n.start(&n.path("leases"), &[]);
    // the flood: unreserved MACs (client indexes past the hosts file) as fast as possible
    let flood = n.loadgen(&[
        "--giaddr",
        "127.0.0.3",
        "--clients",
        "200000",
        "--first-client",
        "100000",
        "--duration",
        "6",
        "--window",
        "8192",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let legit = n.loadgen(&["--clients", "500", "--rate", "200", "--duration", "4"]);
    let out = String::from_utf8(legit.wait_with_output().unwrap().stdout).unwrap();
    let f = String::from_utf8(flood.wait_with_output().unwrap().stdout).unwrap();
    let started = json_field(&out, "started");
    let acks = json_field(&out, "acks");
    assert!(json_field(&f, "sent") > 20_000.0, "the flood was real: {f}");
    assert!(
        acks >= 0.99 * started,
        "reserved clients completed {acks}/{started} DORA under flood {f}"
    );
}

#[test]
fn a_flood_of_unknown_clients_does_not_flood_the_log() {
    if !netns_available("log flood") {
        return;
    }
    let n = LoNs::new("l");
    n.hosts(10);
    let srv = n.start_with(&n.path("leases"), &[], false);
    let flood = n.loadgen(&[
        "--giaddr",
        "127.0.0.3",
        "--clients",
        "100000",
        "--first-client",
        "100000",
        "--duration",
        "3",
        "--rate",
        "20000",
    ]);
    let f = String::from_utf8(flood.wait_with_output().unwrap().stdout).unwrap();
    assert!(json_field(&f, "sent") > 40_000.0, "{f}");
    srv.signal(nix::sys::signal::Signal::SIGUSR1);
    let log = wait_for_log(&n.path("log"), "DHCP statistics", Duration::from_secs(5));
    let lines = log
        .lines()
        .filter(|l| l.contains("no address available"))
        .count();
    // 200 a second per interface, over the ~3-4 s the flood lasted
    assert!(
        (100..=1000).contains(&lines),
        "{lines} unanswered-message lines for a flood of {f}"
    );
}

#[test]
fn full_lease_storage_withholds_acks_logs_once_and_recovers() {
    if !netns_available("storage full") {
        return;
    }
    let n = LoNs::new("s");
    n.hosts(4000);
    let mnt = n.path("tiny");
    std::fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "qttmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(ok.success(), "mount tmpfs");
    struct Umount(std::path::PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Umount(mnt.clone());
    let srv = n.start(&mnt.join("leases"), &[]);
    // 100 clients get durable leases while there is room
    let early = n.path("early");
    let lg = n.loadgen(&[
        "--clients",
        "100",
        "--first-client",
        "3900",
        "--rate",
        "200",
        "--duration",
        "0.5",
        "--record",
        early.to_str().unwrap(),
    ]);
    let out = String::from_utf8(lg.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(json_field(&out, "acks"), 100.0, "{out}");
    // 4000 leases at ~100 bytes each do not fit in 64 KiB
    let lg = n.loadgen(&[
        "--clients",
        "4000",
        "--rate",
        "2000",
        "--duration",
        "2",
        "--timeout-ms",
        "300",
    ]);
    let out = String::from_utf8(lg.wait_with_output().unwrap().stdout).unwrap();
    let acks = json_field(&out, "acks");
    assert!(
        acks > 0.0 && acks < 4000.0,
        "some ACKs until the disk filled, none after: {out}"
    );
    let log = std::fs::read_to_string(n.path("log")).unwrap();
    let errors = log
        .lines()
        .filter(|l| l.contains("not acknowledging leases that cannot be stored"))
        .count();
    assert!(
        (1..=10).contains(&errors),
        "rate-limited error lines: {errors}\n{log}"
    );
    // the journal holds exactly what was acknowledged: nothing unpersisted was ACKed
    let journal = std::fs::read_to_string(mnt.join("leases.journal")).unwrap();
    let records = journal.lines().filter(|l| l.starts_with("B ")).count();
    assert!(
        records as f64 >= acks,
        "{records} durable records for {acks} ACKs"
    );
    // the disk is still full: clients with a durable lease keep their address when they renew
    let lg = n.loadgen(&[
        "--mode",
        "renew",
        "--renew-from",
        early.to_str().unwrap(),
        "--rate",
        "200",
        "--duration",
        "0.5",
    ]);
    let out = String::from_utf8(lg.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(
        json_field(&out, "acks"),
        json_field(&out, "started"),
        "renewals served from durable leases: {out}"
    );
    assert_eq!(json_field(&out, "naks"), 0.0, "{out}");
    srv.signal(nix::sys::signal::Signal::SIGUSR1);
    // space returns: service recovers by itself
    let _ = std::fs::remove_file(mnt.join("leases"));
    Command::new("mount")
        .args(["-o", "remount,size=8m"])
        .arg(&mnt)
        .status()
        .unwrap();
    let lg = n.loadgen(&[
        "--clients",
        "200",
        "--first-client",
        "3800",
        "--rate",
        "500",
        "--duration",
        "1",
    ]);
    let out = String::from_utf8(lg.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(
        json_field(&out, "acks"),
        json_field(&out, "started"),
        "recovered: {out}"
    );
}

#[test]
fn sighup_with_hosts_file_gone_keeps_serving_the_previous_table() {
    if !netns_available("sighup missing file") {
        return;
    }
    let n = LoNs::new("h");
    n.hosts(100);
    let srv = n.start(&n.path("leases"), &[]);
    std::fs::remove_file(n.path("hosts")).unwrap();
    srv.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for_log(
        &n.path("log"),
        "reload failed, keeping the previous tables",
        Duration::from_secs(5),
    );
    let lg = n.loadgen(&["--clients", "100", "--rate", "200", "--duration", "1"]);
    let out = String::from_utf8(lg.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(
        json_field(&out, "acks"),
        json_field(&out, "started"),
        "{out}"
    );
}

#[test]
fn kill_9_of_qdhcp_serve_under_load_twenty_times_loses_no_acked_lease() {
    if !netns_available("serve kill -9 under load") {
        return;
    }
    use common::serve::Host;
    use serde_json::json;
    let mut h = Host::new("k", 3600);
    let mut srv = h.start();
    let (s, n) = h.http("POST", "/v2.0/networks", Some(&json!({"network": {"name": "n", "provider:network_type": "flat", "provider:physical_network": "physnet1"}})));
    assert_eq!(s, 201, "{n}");
    let net = n["network"]["id"].as_str().unwrap().to_string();
    let (s, sub) = h.http("POST", "/v2.0/subnets", Some(&json!({"subnet": {"network_id": net, "cidr": "10.0.0.0/8", "ip_version": 4,
        "gateway_ip": "10.0.0.254", "allocation_pools": [{"start": "10.0.1.1", "end": "10.0.1.250"}]}})));
    assert_eq!(s, 201, "{sub}");
    let subnet = sub["subnet"]["id"].as_str().unwrap().to_string();
    let ports: Vec<serde_json::Value> = (0u32..1000)
        .map(|i| json!({"network_id": net, "mac_address": format!("fa:16:3e:00:{:02x}:{:02x}", i >> 8, i & 255),
            "fixed_ips": [{"subnet_id": subnet, "ip_address": format!("10.2.{}.{}", i / 250, 1 + i % 250)}]}))
        .collect();
    let (s, v) = h.http("POST", "/v2.0/ports", Some(&json!({"ports": ports})));
    assert_eq!(s, 201, "{v}");
    // the load generator is a relay on the bridge
    let vm = h.vm("fa:16:3e:ff:ff:01");
    assert!(Command::new("ip")
        .args(["-n", &vm.ns, "addr", "add", "10.0.0.2/8", "dev", &vm.iface])
        .status()
        .unwrap()
        .success());
    let record = h.dir.path().join("acked");
    let loadgen = |args: &[&str]| {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &vm.ns,
            qdhcp_bin(),
            "loadgen",
            "--json",
            "--server",
            "10.0.1.1",
            "--giaddr",
            "10.0.0.2",
            "--device",
            &vm.iface,
        ])
        .args(args)
        .stdout(Stdio::piped());
        die_with_test(&mut cmd);
        cmd.spawn().unwrap()
    };
    let lg = loadgen(&[
        "--clients",
        "1000",
        "--rate",
        "800",
        "--duration",
        "14",
        "--timeout-ms",
        "300",
        "--record",
        record.to_str().unwrap(),
    ]);
    let kills = kill_repeatedly(&mut srv, 100, || h.start());
    let out = lg.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(kills >= 20, "only {kills} kills");
    let text = std::fs::read_to_string(&record).unwrap();
    let mut by_ip: HashMap<&str, &str> = HashMap::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(
            *by_ip.entry(f[1]).or_insert(f[0]),
            f[0],
            "{} handed to two MACs",
            f[1]
        );
    }
    assert!(
        by_ip.len() > 500,
        "enough leases acknowledged: {}",
        by_ip.len()
    );
    let renew = loadgen(&renew_args(&record));
    assert_every_renewal_acked(renew);
    let (_, list) = h.http("GET", "/v2.0/ports?device_owner=", None);
    assert_eq!(
        list["ports"].as_array().unwrap().len(),
        1000,
        "every API object survived"
    );
}

/// Load generator arguments that renew every lease recorded in `record` once.
fn renew_args(record: &std::path::Path) -> [&str; 8] {
    [
        "--mode",
        "renew",
        "--renew-from",
        record.to_str().unwrap(),
        "--rate",
        "2000",
        "--duration",
        "1",
    ]
}

/// Every renewal the load generator sent was ACKed (none NAKed, none unanswered).
fn assert_every_renewal_acked(renew: std::process::Child) {
    let out = String::from_utf8(renew.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(json_field(&out, "naks"), 0.0, "{out}");
    assert_eq!(
        json_field(&out, "acks"),
        json_field(&out, "started"),
        "{out}"
    );
}
