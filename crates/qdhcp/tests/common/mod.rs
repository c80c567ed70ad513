//! Network-namespace test bed: a bridge standing for `flat_net` inside a test-made "host"
//! namespace, a server namespace joined to it by an `ns-…`/`tap…` veth pair, and VM
//! namespaces with `fa:16:3e:…` MACs. Every namespace is named `qt…` and deleted on drop, so
//! every link the test creates goes with it, even on failure.

#![allow(dead_code)]

pub mod nova;
pub mod serve;
pub mod v6;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// True when namespace tests can run here. Outside CI they skip with a message; in CI
/// (`CI` set) a missing capability fails the test loudly.
pub fn netns_available(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    let ip_ok = Command::new("ip")
        .arg("netns")
        .arg("list")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if root && ip_ok {
        return true;
    }
    let why = if !root {
        "not root"
    } else {
        "`ip netns` unavailable"
    };
    if std::env::var_os("CI").is_some() {
        panic!("{test}: namespace test cannot run in CI ({why})");
    }
    eprintln!("SKIPPED {test}: needs root and iproute2 ({why}); runs in CI");
    false
}

/// Fails the test if a needed client program is missing (CI installs it; so must you).
pub fn require_tool(name: &str) {
    let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(name).exists());
    assert!(
        found,
        "{name} is not installed: run scripts/test-all (it installs the real clients)"
    );
}

pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run command");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test's own namespace, deleted on drop (with every link in it), even when the test fails.
pub struct NetnsGuard(pub String);

impl NetnsGuard {
    /// A new namespace `name` (a stale one of that name from a killed run is removed first),
    /// its loopback up.
    pub fn fresh(name: String) -> NetnsGuard {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&["ip", "netns", "add", &name]);
        let g = NetnsGuard(name);
        sh(&["ip", "-n", &g.0, "link", "set", "lo", "up"]);
        g
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Makes a spawned process die with the test process, even when the test is killed before
/// its destructors run (`ip netns exec` execs, so the setting reaches the real program).
pub fn die_with_test(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

/// A flat network: host namespace with bridge, server namespace on it.
pub struct Topo {
    pub id: String,
    pub host_ns: String,
    pub srv_ns: String,
    /// The server's interface, Neutron style.
    pub srv_if: String,
    vms: Vec<String>,
    pub dir: tempfile::TempDir,
}

/// A VM namespace plugged into the bridge.
pub struct Vm {
    pub ns: String,
    pub iface: String,
    pub mac: String,
}

impl Topo {
    /// Builds the bridge and the server namespace; the server gets `server_cidr` on `ns-…`.
    pub fn new(server_cidr: &str) -> Topo {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let id = format!("{:04x}{:x}", std::process::id() & 0xffff, n);
        let t = Topo {
            host_ns: format!("qth{id}"),
            srv_ns: format!("qts{id}"),
            srv_if: format!("ns-{id}"),
            id: id.clone(),
            vms: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        // as Neutron's conf dirs (0755): `qdhcp dnsmasq` re-reads its files on SIGHUP after
        // dropping to `nobody`, as dnsmasq does
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(t.dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod test dir");
        for ns in [&t.host_ns, &t.srv_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&[
            "ip", "-n", &t.host_ns, "link", "add", "qtbr", "type", "bridge",
        ]);
        sh(&["ip", "-n", &t.host_ns, "link", "set", "qtbr", "up"]);
        let tap = format!("tap{id}");
        sh(&[
            "ip", "-n", &t.host_ns, "link", "add", &tap, "type", "veth", "peer", "name", &t.srv_if,
            "netns", &t.srv_ns,
        ]);
        sh(&[
            "ip", "-n", &t.host_ns, "link", "set", &tap, "master", "qtbr", "up",
        ]);
        sh(&[
            "ip",
            "-n",
            &t.srv_ns,
            "addr",
            "add",
            server_cidr,
            "dev",
            &t.srv_if,
        ]);
        sh(&["ip", "-n", &t.srv_ns, "link", "set", &t.srv_if, "up"]);
        t
    }

    /// Adds a VM namespace with `mac` on the bridge.
    pub fn vm(&mut self, mac: &str) -> Vm {
        let k = self.vms.len();
        let ns = format!("qtv{}{k}", self.id);
        let iface = format!("qte{}{k}", self.id);
        let peer = format!("qtp{}{k}", self.id);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        // recorded before it exists: whatever fails below, the drop removes it
        self.vms.push(ns.clone());
        sh(&["ip", "netns", "add", &ns]);
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "-n",
            &self.host_ns,
            "link",
            "add",
            &peer,
            "type",
            "veth",
            "peer",
            "name",
            &iface,
            "netns",
            &ns,
        ]);
        sh(&[
            "ip",
            "-n",
            &self.host_ns,
            "link",
            "set",
            &peer,
            "master",
            "qtbr",
            "up",
        ]);
        sh(&["ip", "-n", &ns, "link", "set", &iface, "address", mac, "up"]);
        Vm {
            ns,
            iface,
            mac: mac.to_string(),
        }
    }

    /// A path in the test's scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        for ns in self.vms.iter().chain([&self.srv_ns, &self.host_ns]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        for vm in &self.vms {
            // dhcpcd keeps per-interface state outside the namespace
            let iface = vm.replacen("qtv", "qte", 1);
            let _ = std::fs::remove_file(format!("/var/lib/dhcpcd/{iface}.lease"));
        }
    }
}

/// A process we started, killed by PID when dropped.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn qdhcp_bin() -> &'static str {
    env!("CARGO_BIN_EXE_qdhcp")
}

/// Files and flags of a dnsmasq-mode server in a topology, as Neutron lays them out.
pub struct DnsmasqSetup {
    pub host: PathBuf,
    pub opts: PathBuf,
    pub leases: PathBuf,
    pub log: PathBuf,
    pub pid: PathBuf,
    pub args: Vec<String>,
}

/// Neutron's command line for subnet `net`/`mask` with the given lease seconds.
pub fn neutron_args(t: &Topo, net: &str, mask: &str, lease: u32) -> DnsmasqSetup {
    let s = DnsmasqSetup {
        host: t.path("host"),
        opts: t.path("opts"),
        leases: t.path("leases"),
        log: t.path("log"),
        pid: t.path("pid"),
        args: vec![],
    };
    let args = vec![
        "--no-hosts".into(),
        "--no-resolv".into(),
        format!("--pid-file={}", s.pid.display()),
        format!("--dhcp-hostsfile={}", s.host.display()),
        format!("--addn-hosts={}", t.path("addn_hosts").display()),
        format!("--dhcp-optsfile={}", s.opts.display()),
        format!("--dhcp-leasefile={}", s.leases.display()),
        "--dhcp-match=set:ipxe,175".into(),
        "--dhcp-userclass=set:ipxe6,iPXE".into(),
        "--local-service".into(),
        "--bind-dynamic".into(),
        format!("--interface={}", t.srv_if),
        "--except-interface=lo".into(),
        format!("--dhcp-range=set:subnet-flat,{net},static,{mask},{lease}s"),
        "--dhcp-option-force=option:mtu,1450".into(),
        "--dhcp-lease-max=256".into(),
        "--conf-file=/dev/null".into(),
        "--domain=openstacklocal".into(),
        "--log-dhcp".into(),
        format!("--log-facility={}", s.log.display()),
    ];
    DnsmasqSetup { args, ..s }
}

/// Starts `qdhcp dnsmasq -k …` in the server namespace and waits until it serves.
pub fn start_dnsmasq(t: &Topo, s: &DnsmasqSetup) -> Proc {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &t.srv_ns, qdhcp_bin(), "dnsmasq", "-k"])
        .args(&s.args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let p = Proc {
        child: cmd.spawn().expect("spawn qdhcp"),
    };
    wait_for_log(&s.log, "DHCP listening on", Duration::from_secs(10));
    p
}

/// Waits until `path` contains `needle` (counting from the start), or fails with the log.
pub fn wait_for_log(path: &Path, needle: &str, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        if start.elapsed() > timeout {
            panic!("{:?} never showed {needle:?}; it has:\n{text}", path);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many lines of the file contain `needle`.
pub fn count_in(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

fn read_env(path: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn script(t: &Topo, name: &str, body: &str) -> PathBuf {
    script_at(t.dir.path(), name, body)
}

pub fn script_at(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// Runs busybox udhcpc once (no broadcast flag: replies must be unicast to the MAC).
/// Returns the `bound` environment, or None when no lease was obtained.
pub fn udhcpc(t: &Topo, vm: &Vm, tries: u32) -> Option<HashMap<String, String>> {
    let out = t.path(&format!("udhcpc-{}", vm.ns));
    let _ = std::fs::remove_file(out.with_extension("bound"));
    let s = script(t, "udhcpc.sh", &format!(
        "env | grep -E '^(ip|subnet|router|dns|domain|mtu|staticroutes|msstaticroutes|lease|serverid|hostname|broadcast)=' > {}.$1",
        out.display()
    ));
    let st = Command::new("ip")
        .args([
            "netns", "exec", &vm.ns, "udhcpc", "-i", &vm.iface, "-n", "-q", "-f",
        ])
        .arg("-s")
        .arg(&s)
        .args(["-t", &tries.to_string(), "-T", "2", "-A", "1"])
        .args([
            "-O",
            "121",
            "-O",
            "249",
            "-O",
            "mtu",
            "-O",
            "domain",
            "-O",
            "hostname",
            "-O",
            "broadcast",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run udhcpc");
    if !st.success() {
        return None;
    }
    Some(read_env(&out.with_extension("bound")))
}

/// A running ISC dhclient, keeping its lease (renewing) until dropped.
pub struct Dhclient {
    child: Option<Child>,
    pub pidfile: PathBuf,
    pub events: PathBuf,
    pub leasefile: PathBuf,
    pub conf: PathBuf,
    pub ns: String,
    pub iface: String,
}

/// The events a client-script appended to `path` (`env` lines, each block ended by `--`):
/// only blocks the script finished, so a block still being appended is left for the next read.
pub fn script_events(path: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let done = text.rfind("\n--\n").map_or(0, |i| i + 4);
    text[..done]
        .split("\n--\n")
        .filter(|b| !b.trim().is_empty())
        .map(|b| {
            b.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
                .collect()
        })
        .collect()
}

/// Shell lines that append one event to `events` as [`script_events`] reads it: what `env_cmd`
/// prints, then `--`, the block written whole so a reader never sees half of one.
pub fn record_event(events: &Path, env_cmd: &str) -> String {
    format!(
        "{{ {env_cmd}; echo --; }} > {0}.part.$$ && cat {0}.part.$$ >> {0}; rm -f {0}.part.$$",
        events.display()
    )
}

/// Waits up to `timeout` until the client script writing `events` (see [`script_events`]) has
/// recorded `reason` `n` times and returns that event; else panics with every reason seen and
/// `more()` (the client's own output, say).
pub fn wait_script_event(
    events: &Path,
    client: &str,
    reason: &str,
    n: usize,
    timeout: Duration,
    more: impl Fn() -> String,
) -> HashMap<String, String> {
    let start = Instant::now();
    loop {
        let all = script_events(events);
        let seen: Vec<_> = all
            .iter()
            .filter(|e| e.get("reason").map(String::as_str) == Some(reason))
            .collect();
        if seen.len() >= n {
            return seen[n - 1].clone();
        }
        let reasons: Vec<_> = all.iter().filter_map(|e| e.get("reason")).collect();
        assert!(
            start.elapsed() < timeout,
            "{client} never reached {reason} x{n}; saw {reasons:?}\n{}",
            more()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Dhclient {
    /// Every event the client-script saw, in order, as (reason, env).
    pub fn events(&self) -> Vec<HashMap<String, String>> {
        script_events(&self.events)
    }
    pub fn reasons(&self) -> Vec<String> {
        self.events()
            .iter()
            .filter_map(|e| e.get("reason").cloned())
            .collect()
    }
    /// Waits until `reason` has been seen `n` times.
    pub fn wait_reason(
        &self,
        reason: &str,
        n: usize,
        timeout: Duration,
    ) -> HashMap<String, String> {
        wait_script_event(&self.events, "dhclient", reason, n, timeout, String::new)
    }
    /// Sends DHCPRELEASE and stops (`dhclient -r`).
    pub fn release(&self) {
        let st = Command::new("ip")
            .args(["netns", "exec", &self.ns, "dhclient", "-4", "-r"])
            .arg("-cf")
            .arg(&self.conf)
            .arg("-lf")
            .arg(&self.leasefile)
            .arg("-pf")
            .arg(&self.pidfile)
            .arg("-sf")
            .arg("/bin/true")
            .arg(&self.iface)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("dhclient -r");
        assert!(st.success());
    }
}

impl Drop for Dhclient {
    fn drop(&mut self) {
        if let Ok(p) = std::fs::read_to_string(&self.pidfile) {
            if let Ok(pid) = p.trim().parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Starts ISC dhclient; it returns once bound (or fails) and keeps renewing in the background.
pub fn dhclient(t: &Topo, vm: &Vm, timeout_s: u32) -> (bool, Dhclient) {
    dhclient_at(t.dir.path(), vm, timeout_s)
}

/// `dhclient` with its files in `dir`.
pub fn dhclient_at(dir: &Path, vm: &Vm, timeout_s: u32) -> (bool, Dhclient) {
    let base = dir.join(format!("dhclient-{}", vm.ns));
    let conf = base.with_extension("conf");
    std::fs::write(
        &conf,
        format!(
            "option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;\n\
         timeout {timeout_s};\nretry 1;\ninitial-interval 1;\nbackoff-cutoff 2;\n\
         request subnet-mask, broadcast-address, routers, domain-name, domain-name-servers, \
         host-name, interface-mtu, rfc3442-classless-static-routes;\n"
        ),
    )
    .unwrap();
    let mut d = Dhclient {
        child: None,
        pidfile: base.with_extension("pid"),
        events: base.with_extension("events"),
        leasefile: base.with_extension("leases"),
        conf,
        ns: vm.ns.clone(),
        iface: vm.iface.clone(),
    };
    let s = script_at(dir, &format!("dhclient-{}.sh", vm.ns), &format!(
        "case $reason in BOUND|RENEW|REBIND|REBOOT) ip addr replace $new_ip_address/24 dev $interface ;; \
         RELEASE|EXPIRE|FAIL|STOP) ip addr flush dev $interface ;; esac\n{}",
        record_event(&d.events, "env | grep -E '^(reason|new_|old_)' | sort")
    ));
    // Foreground (-d) and our child, so it dies with the test; -1: give up after `timeout`.
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &vm.ns, "dhclient", "-4", "-1", "-d", "-v"])
        .arg("-cf")
        .arg(&d.conf)
        .arg("-lf")
        .arg(&d.leasefile)
        .arg("-pf")
        .arg(&d.pidfile)
        .arg("-sf")
        .arg(&s)
        .arg(&vm.iface)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    die_with_test(&mut cmd);
    d.child = Some(cmd.spawn().expect("run dhclient"));
    let start = Instant::now();
    let bound = loop {
        let r = d.reasons();
        if r.iter().any(|r| r == "BOUND" || r == "REBOOT") {
            break true;
        }
        if let Some(c) = d.child.as_mut() {
            if c.try_wait().ok().flatten().is_some() {
                break false;
            }
        }
        if start.elapsed() > Duration::from_secs(u64::from(timeout_s) + 5) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if bound {
        // The script records an event only after it applied the address: routes via the
        // lease's router can be added as soon as BOUND is seen.
        let ev = d.events();
        let ip = ev
            .iter()
            .filter(|e| {
                matches!(
                    e.get("reason").map(String::as_str),
                    Some("BOUND" | "REBOOT")
                )
            })
            .find_map(|e| e.get("new_ip_address"))
            .expect("BOUND without new_ip_address");
        let out = Command::new("ip")
            .args(["-n", &vm.ns, "-4", "-o", "addr", "show", "dev", &vm.iface])
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(
            shown.contains(&format!(" {ip}/")),
            "BOUND seen but {ip} not on {}: {shown}",
            vm.iface
        );
    }
    (bound, d)
}

/// Runs dhcpcd once; returns its BOUND environment, or None.
pub fn dhcpcd(t: &Topo, vm: &Vm) -> Option<HashMap<String, String>> {
    let out = t.path(&format!("dhcpcd-{}", vm.ns));
    let s = script(
        t,
        "dhcpcd.sh",
        &format!(
            "[ \"$reason\" = BOUND ] && env | grep -E '^(reason|new_)' > {}.bound; true",
            out.display()
        ),
    );
    let st = Command::new("ip")
        .args([
            "netns",
            "exec",
            &vm.ns,
            "dhcpcd",
            "-4",
            "-1",
            "-B",
            "--noarp",
            "-t",
            "20",
            "-f",
            "/dev/null",
        ])
        .arg("-c")
        .arg(&s)
        .args([
            "-o",
            "interface_mtu",
            "-o",
            "classless_static_routes",
            "-o",
            "domain_name",
            "-o",
            "host_name",
            "-o",
            "domain_name_servers",
        ])
        .arg(&vm.iface)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run dhcpcd");
    if !st.success() {
        return None;
    }
    Some(read_env(&out.with_extension("bound")))
}
