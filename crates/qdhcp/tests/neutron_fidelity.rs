//! What Neutron's DHCP agent does to the dnsmasq it runs, done to `qdhcp dnsmasq`: the version
//! check, the command line it builds, `restart()` (SIGTERM, pid file removed, a new instance
//! spawned at once) and `_release_unused_leases` (dhcp_release, then the leases file re-read
//! 0.3 s later). Neutron's own driver code runs against qdhcp in `neutron_driver.rs`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const VM1_MAC: &str = "fa:16:3e:7a:01:03";
const VM1_IP: &str = "172.16.1.103";
const SERVER: &str = "172.16.1.2";

fn flat_net() -> (Topo, DnsmasqSetup) {
    let t = Topo::new(&format!("{SERVER}/24"));
    let s = neutron_args(&t, "172.16.1.0", "255.255.255.0", 86400);
    std::fs::write(
        &s.host,
        format!("{VM1_MAC},host-172-16-1-103.openstacklocal.,{VM1_IP}\n"),
    )
    .unwrap();
    std::fs::write(&s.opts, "tag:subnet-flat,option:router,172.16.1.1\n").unwrap();
    std::fs::write(&s.leases, format!("0 {VM1_MAC} {VM1_IP} * *\n")).unwrap();
    (t, s)
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

fn read_pid(p: &std::path::Path) -> Option<i32> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    // a zombie is not serving: look at the state, not only at kill(0)
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// Kills every daemon a test started (by the PIDs it saw), even when the test fails.
struct Daemons(Vec<i32>);
impl Drop for Daemons {
    fn drop(&mut self) {
        for &p in &self.0 {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
}

/// Starts the daemon as Neutron's ProcessManager does (the parent returns once it serves).
fn spawn_daemon(t: &Topo, s: &DnsmasqSetup) {
    let st = Command::new("ip")
        .args(["netns", "exec", &t.srv_ns, qdhcp_bin(), "dnsmasq"])
        .args(&s.args)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "the daemon started");
}

#[test]
fn version_banner_passes_neutrons_version_check() {
    let out = Command::new(qdhcp_bin())
        .args(["dnsmasq", "--version"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    // neutron.cmd.sanity.checks.dnsmasq_version_supported: re.search(r"version (\d+\.\d+)")
    let ver = text
        .split("version ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("a `version N.N` in the banner");
    let (major, minor) = ver.split_once('.').unwrap();
    let (major, minor): (u32, u32) = (major.parse().unwrap(), minor.parse().unwrap());
    assert!((major, minor) >= (2, 67), "Neutron's minimum: {text}");
    assert!(
        text.contains(&format!("qdhcp version {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    // dnsmasq_local_service_supported: `dnsmasq --test --local-service` exits 0
    let st = Command::new(qdhcp_bin())
        .args(["dnsmasq", "--test", "--local-service"])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn neutrons_empty_argument_and_txt_record_are_accepted_and_unknown_flags_named() {
    // dnsmasq_local_resolv=True without dnsmasq_dns_servers puts '' where --no-resolv goes
    let out = Command::new(qdhcp_bin())
        .args(["dnsmasq", "--no-hosts", "", "--txt-record=a,b", "--test"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(qdhcp_bin())
        .args(["dnsmasq", "--no-such-flag", "--test"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
}

/// Neutron's `restart()`: SIGTERM, the pid file removed by the agent, a new instance spawned
/// about 0.15 s later that writes its own pid file, while the old one may still be exiting.
#[test]
fn restart_as_neutron_does_keeps_the_new_instances_pid_file_and_serves() {
    if !netns_available("restart") {
        return;
    }
    require_tool("udhcpc");
    let (mut t, s) = flat_net();
    let mut daemons = Daemons(Vec::new());
    spawn_daemon(&t, &s);
    let mut pid = read_pid(&s.pid).expect("pid file");
    daemons.0.push(pid);
    for round in 0..10 {
        kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
        std::fs::remove_file(&s.pid).unwrap();
        std::thread::sleep(Duration::from_millis(20 + 15 * round));
        // the agent rewrites the leases file before each spawn
        std::fs::write(&s.leases, format!("0 {VM1_MAC} {VM1_IP} * *\n")).unwrap();
        spawn_daemon(&t, &s);
        let new = read_pid(&s.pid).expect("the new instance wrote its pid file");
        daemons.0.push(new);
        assert_ne!(new, pid, "round {round}");
        assert!(
            wait_until(Duration::from_secs(5), || !alive(pid)),
            "the old instance exits"
        );
        // the old instance's exit must leave the new one's pid file alone
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            read_pid(&s.pid),
            Some(new),
            "round {round}: the pid file names the running instance"
        );
        assert!(alive(new));
        pid = new;
    }
    let vm = t.vm(VM1_MAC);
    let env = udhcpc(&t, &vm, 5).expect("the instance the pid file names serves");
    assert_eq!(env.get("ip").map(String::as_str), Some(VM1_IP));
}

/// Neutron's `disable()`: SIGTERM, the pid file removed, then the namespace and the whole conf
/// directory. An instance whose pid file is gone must write, rename and create nothing there
/// while it exits, or Neutron's `rmtree` can race with it and leave the directory behind.
#[test]
fn an_instance_whose_pid_file_was_removed_exits_without_touching_its_directory() {
    if !netns_available("disable") {
        return;
    }
    require_tool("udhcpc");
    let (mut t, s) = flat_net();
    let mut daemons = Daemons(Vec::new());
    spawn_daemon(&t, &s);
    let pid = read_pid(&s.pid).expect("pid file");
    daemons.0.push(pid);
    // a lease, so that the exit would have something to compact and export
    let vm = t.vm(VM1_MAC);
    udhcpc(&t, &vm, 5).expect("lease");
    std::thread::sleep(Duration::from_millis(1500));
    let snapshot = || {
        let mut v: Vec<(String, u64, i64, i64)> = std::fs::read_dir(t.dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name() != "log")
            .map(|e| {
                use std::os::unix::fs::MetadataExt;
                let m = e.metadata().unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    m.ino(),
                    m.mtime(),
                    m.mtime_nsec(),
                )
            })
            .collect();
        v.sort();
        v
    };
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    std::fs::remove_file(&s.pid).unwrap();
    let before = snapshot();
    assert!(wait_until(Duration::from_secs(5), || !alive(pid)));
    assert_eq!(
        snapshot(),
        before,
        "the exiting instance changed its directory"
    );
}

/// The same instance, stopped by an operator with its pid file in place, still leaves its
/// files tidy: leases file current, and (running as root, `--user=root`) pid file removed; as
/// `nobody` it cannot remove a file from Neutron's root-owned directory, nor can dnsmasq.
#[test]
fn an_instance_stopped_with_its_pid_file_in_place_cleans_up() {
    if !netns_available("sigterm-owner") {
        return;
    }
    let (t, mut s) = flat_net();
    s.args.push("--user=root".into());
    let mut daemons = Daemons(Vec::new());
    spawn_daemon(&t, &s);
    let pid = read_pid(&s.pid).expect("pid file");
    daemons.0.push(pid);
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    assert!(wait_until(Duration::from_secs(5), || !alive(pid)));
    assert!(!s.pid.exists(), "its own pid file is removed");
    assert!(std::fs::read_to_string(&s.leases)
        .unwrap()
        .contains(VM1_MAC));
}

/// `_release_unused_leases`: dhcp_release for each removed port, then the leases file is read
/// again 0.3 s later; a released lease must be gone by then (dnsmasq rewrites it at once).
#[test]
fn released_lease_leaves_the_leases_file_before_neutron_rereads_it() {
    if !netns_available("release-rewrite") {
        return;
    }
    require_tool("udhcpc");
    require_tool("dhcp_release");
    let (mut t, s) = flat_net();
    let _srv = start_dnsmasq(&t, &s);
    let vm = t.vm(VM1_MAC);
    let has_vm1 = || {
        std::fs::read_to_string(&s.leases)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains(VM1_MAC) && !l.starts_with("0 "))
    };
    for round in 0..3 {
        udhcpc(&t, &vm, 5).expect("lease");
        assert!(
            wait_until(Duration::from_secs(3), has_vm1),
            "round {round}: lease exported"
        );
        let st = Command::new("ip")
            .args([
                "netns",
                "exec",
                &t.srv_ns,
                "dhcp_release",
                &t.srv_if,
                VM1_IP,
                VM1_MAC,
            ])
            .status()
            .unwrap();
        assert!(st.success());
        let t0 = Instant::now();
        assert!(wait_until(Duration::from_secs(3), || !has_vm1()));
        assert!(
            t0.elapsed() < Duration::from_millis(250),
            "round {round}: the leases file showed the released lease for {:?}",
            t0.elapsed()
        );
    }
}
