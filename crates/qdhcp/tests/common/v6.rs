//! DHCPv6 in the namespace test bed: IPv6 on the server's `ns-…` interface, VMs whose
//! link-local addresses are usable at once, and ISC `dhclient -6` (stateful, or `-S`
//! stateless) run as a real client.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{
    count_in, die_with_test, neutron_args, qdhcp_bin, script_at, sh, start_dnsmasq, DnsmasqSetup,
    Proc, Topo, Vm,
};

/// Waits until no address in namespace `ns` is tentative (duplicate address detection done).
pub fn wait_no_tentative(ns: &str) {
    let start = Instant::now();
    loop {
        let out = Command::new("ip")
            .args(["-n", ns, "-6", "addr", "show", "tentative"])
            .output()
            .expect("ip addr");
        if out.stdout.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "addresses in {ns} still tentative: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Gives the server's interface `cidr` (no DAD) and waits for its link-local address.
pub fn server_v6(t: &Topo, cidr: &str) {
    sh(&[
        "ip", "-n", &t.srv_ns, "-6", "addr", "add", cidr, "dev", &t.srv_if, "nodad",
    ]);
    wait_no_tentative(&t.srv_ns);
}

/// A running `dhclient -6`, keeping its lease until dropped.
pub struct Dhclient6 {
    child: Option<Child>,
    pub events: PathBuf,
    pub leasefile: PathBuf,
    pub pidfile: PathBuf,
    pub conf: PathBuf,
    pub ns: String,
    pub iface: String,
}

impl Dhclient6 {
    /// Every event the client-script saw, in order.
    pub fn events(&self) -> Vec<HashMap<String, String>> {
        super::script_events(&self.events)
    }

    /// The reasons seen, in order.
    pub fn reasons(&self) -> Vec<String> {
        self.events()
            .iter()
            .filter_map(|e| e.get("reason").cloned())
            .collect()
    }

    /// Waits until `reason` has been seen `n` times; returns that event.
    pub fn wait_reason(
        &self,
        reason: &str,
        n: usize,
        timeout: Duration,
    ) -> HashMap<String, String> {
        super::wait_script_event(&self.events, "dhclient -6", reason, n, timeout, String::new)
    }

    /// The client's DUID, as dhclient stored it in its lease file (`default-duid "…";`),
    /// in dnsmasq's colon-hex form.
    pub fn duid(&self) -> String {
        let text = std::fs::read_to_string(&self.leasefile).unwrap_or_default();
        let line = text
            .lines()
            .find(|l| l.starts_with("default-duid"))
            .expect("default-duid in dhclient's lease file");
        let bytes = dhclient_quoted_bytes(line).expect("quoted DUID");
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// `dhclient -6 -r`: sends RELEASE and stops.
    pub fn release(&self) {
        let st = Command::new("ip")
            .args(["netns", "exec", &self.ns, "dhclient", "-6", "-r"])
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
            .expect("dhclient -6 -r");
        assert!(st.success());
    }
}

impl Drop for Dhclient6 {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `dhclient -6` (stateless with `-S` when `stateless`) on `vm`, with `extra` lines in
/// its configuration; returns once it reached BOUND6 (stateful) or the first event (stateless),
/// or failed.
pub fn dhclient6(t: &Topo, vm: &Vm, stateless: bool, extra: &str) -> (bool, Dhclient6) {
    dhclient6_in(t.dir.path(), vm, stateless, extra)
}

/// [`dhclient6`] with its files in `dir` (for test beds other than [`Topo`]).
pub fn dhclient6_in(
    dir: &std::path::Path,
    vm: &Vm,
    stateless: bool,
    extra: &str,
) -> (bool, Dhclient6) {
    super::v6::wait_no_tentative(&vm.ns);
    let base = dir.join(format!("dhclient6-{}", vm.ns));
    let conf = base.with_extension("conf");
    std::fs::write(
        &conf,
        format!(
            "timeout 20;\nretry 1;\ninitial-interval 1;\n\
             request dhcp6.name-servers, dhcp6.domain-search;\n{extra}"
        ),
    )
    .unwrap();
    let mut d = Dhclient6 {
        child: None,
        events: base.with_extension("events"),
        leasefile: base.with_extension("leases"),
        pidfile: base.with_extension("pid"),
        conf,
        ns: vm.ns.clone(),
        iface: vm.iface.clone(),
    };
    let s = script_at(
        dir,
        &format!("dhclient6-{}.sh", vm.ns),
        &format!(
            "case $reason in BOUND6|RENEW6|REBIND6) [ -n \"$new_ip6_address\" ] && ip -6 addr replace $new_ip6_address/128 dev $interface nodad ;; \
             RELEASE6|EXPIRE6|STOP6) [ -n \"$old_ip6_address\" ] && ip -6 addr del $old_ip6_address/128 dev $interface ;; esac\n{}; exit 0",
            super::record_event(&d.events, "env | grep -E '^(reason|new_|old_|cur_)' | sort")
        ),
    );
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &vm.ns, "dhclient", "-6", "-1", "-d", "-v"]);
    if stateless {
        cmd.arg("-S");
    }
    cmd.arg("-cf")
        .arg(&d.conf)
        .arg("-lf")
        .arg(&d.leasefile)
        .arg("-pf")
        .arg(&d.pidfile)
        .arg("-sf")
        .arg(&s)
        .arg(&vm.iface)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(base.with_extension("stderr")).unwrap());
    die_with_test(&mut cmd);
    d.child = Some(cmd.spawn().expect("run dhclient -6"));
    let start = Instant::now();
    let want: &[&str] = if stateless {
        &["BOUND6", "RENEW6", "INFORM6"]
    } else {
        &["BOUND6"]
    };
    let ok = loop {
        if d.reasons().iter().any(|r| want.contains(&r.as_str())) {
            break true;
        }
        if let Some(c) = d.child.as_mut() {
            if c.try_wait().ok().flatten().is_some() {
                break false;
            }
        }
        if start.elapsed() > Duration::from_secs(25) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (ok, d)
}

/// busybox's DHCPv6 client: the system's busybox when it has `udhcpc6` (Debian 13 on), else
/// Debian 13's static busybox that `scripts/busybox-udhcpc6` installs (Debian 12 has none).
pub fn udhcpc6_busybox() -> String {
    let has = |b: &str| {
        Command::new(b)
            .arg("--list")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l == "udhcpc6")
            })
            .unwrap_or(false)
    };
    let local = "/usr/local/lib/qdhcp-test/busybox";
    if has("busybox") {
        return "busybox".into();
    }
    assert!(
        has(local),
        "no busybox with udhcpc6: run scripts/busybox-udhcpc6 (scripts/test-all does)"
    );
    local.into()
}

/// A running busybox `udhcpc6` in the foreground, ended (SIGTERM) when dropped.
pub struct Udhcpc6 {
    child: Child,
    pub events: PathBuf,
    pub stderr: PathBuf,
}

impl Udhcpc6 {
    /// Starts `udhcpc6 -f` on `vm` with `args` added (`-l` for stateless, `-R` to release on
    /// exit, `-O bootfile_url`, …); its script records every event with the options busybox
    /// exports (`ipv6`, `lease`, `dns`, `search`, `bootfile_url`) and applies `ipv6`.
    pub fn start(dir: &std::path::Path, vm: &Vm, args: &[&str]) -> Udhcpc6 {
        wait_no_tentative(&vm.ns);
        let base = dir.join(format!("udhcpc6-{}", vm.ns));
        let events = base.with_extension("events");
        let stderr = base.with_extension("stderr");
        let script = script_at(
            dir,
            &format!("udhcpc6-{}.sh", vm.ns),
            &format!(
                "case $1 in bound|renew) [ -n \"$ipv6\" ] && ip -6 addr replace $ipv6/128 dev $interface nodad ;; esac\n{}; exit 0",
                super::record_event(
                    &events,
                    "echo reason=$1; env | grep -E '^(ipv6|lease|dns|search|bootfile_url|interface)=' | sort"
                )
            ),
        );
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &vm.ns, &udhcpc6_busybox(), "udhcpc6", "-f"])
            .args(["-i", &vm.iface, "-t", "10", "-T", "1", "-s"])
            .arg(&script)
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        die_with_test(&mut cmd);
        let child = cmd.spawn().expect("run udhcpc6");
        Udhcpc6 {
            child,
            events,
            stderr,
        }
    }

    /// Every event the script saw, in order.
    pub fn events(&self) -> Vec<HashMap<String, String>> {
        super::script_events(&self.events)
    }

    /// Waits up to `timeout` for the `n`th event named `reason` and returns it; on timeout
    /// panics with what the client saw and said.
    pub fn wait(&self, reason: &str, n: usize, timeout: Duration) -> HashMap<String, String> {
        super::wait_script_event(&self.events, "udhcpc6", reason, n, timeout, || {
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        })
    }

    /// SIGUSR1: busybox renews at once.
    pub fn renew(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGUSR1,
        )
        .unwrap();
    }

    /// SIGTERM and wait for the exit (with `-R`, busybox sends RELEASE first).
    pub fn stop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

impl Drop for Udhcpc6 {
    fn drop(&mut self) {
        self.stop();
    }
}

// --- the dual-stack network of the dnsmasq-mode DHCPv6 tests -------------------------------

pub const VM1_MAC: &str = "fa:16:3e:7a:06:03";
pub const VM1_V6: &str = "2001:db8:6::103";
pub const VM2_MAC: &str = "fa:16:3e:7a:06:04";
pub const STRANGER_MAC: &str = "fa:16:3e:7a:06:99";

/// Neutron's lines: VM1 on all three subnets, VM2 on the stateless one only.
pub const HOSTS: &str = "\
fa:16:3e:7a:06:03,host-172-16-1-103.openstacklocal.,172.16.1.103
fa:16:3e:7a:06:03,tag:dhcpv6,host-2001-db8-6--103.openstacklocal,[2001:db8:6::103]
fa:16:3e:7a:06:04,tag:dhcpv6,set:port-p2
";
pub const OPTS: &str = "\
tag:subnet-flat,option:router,172.16.1.1
tag:subnet-v6a,option6:dns-server,[2001:db8:6::53]
tag:subnet-v6a,option6:domain-search,openstacklocal
tag:subnet-v6b,option6:dns-server,[2001:db8:7::53]
tag:subnet-v6b,option6:domain-search,openstacklocal
";

pub fn dual_stack() -> (Topo, DnsmasqSetup) {
    let t = Topo::new("172.16.1.2/24");
    server_v6(&t, "2001:db8:6::2/64");
    let mut s = neutron_args(&t, "172.16.1.0", "255.255.255.0", 86400);
    s.args
        .push("--dhcp-range=set:subnet-v6a,2001:db8:6::,static,64,86400s".into());
    s.args
        .push("--dhcp-range=set:subnet-v6b,2001:db8:7::,static,64,86400s".into());
    std::fs::write(&s.host, HOSTS).unwrap();
    std::fs::write(&s.opts, OPTS).unwrap();
    std::fs::write(&s.leases, "").unwrap();
    (t, s)
}

/// Starts the server and waits until this instance serves DHCPv6.
pub fn start(t: &Topo, s: &DnsmasqSetup) -> Proc {
    let before = count_in(&s.log, "DHCPv6 listening on");
    let p = start_dnsmasq(t, s);
    wait_until(Duration::from_secs(10), "DHCPv6 listening", || {
        count_in(&s.log, "DHCPv6 listening on") > before
    });
    p
}

pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn leases_text(s: &DnsmasqSetup) -> String {
    std::fs::read_to_string(&s.leases).unwrap_or_default()
}

/// The bytes of the first quoted string in a dhclient lease-file line, as ISC's
/// `quotify_buf` escapes them: `\ooo` octal for unprintable bytes, `\"` and `\\` for a
/// quote and a backslash, anything else as itself. `None` without a closed quote.
pub fn dhclient_quoted_bytes(line: &str) -> Option<Vec<u8>> {
    let start = line.find('"')? + 1;
    let mut it = line.as_bytes()[start..].iter().copied();
    let mut bytes = Vec::new();
    while let Some(b) = it.next() {
        match b {
            b'"' => return Some(bytes),
            b'\\' => {
                let first = it.next()?;
                if first.is_ascii_digit() {
                    let oct = [first, it.next()?, it.next()?];
                    bytes.push(u8::from_str_radix(std::str::from_utf8(&oct).ok()?, 8).ok()?);
                } else {
                    bytes.push(first);
                }
            }
            _ => bytes.push(b),
        }
    }
    None
}
/// A server namespace (`qt6s0`, 2001:db8::1/64) and a peer namespace (`qt6r0`, 2001:db8::2/64)
/// joined by a veth pair, as bench/dhcpv6.sh: the peer is a relay agent for 2001:db8:1::/64
/// (routed via 2001:db8::2) or the clients themselves on the link.
pub struct Pair6 {
    pub srv: String,
    pub peer: String,
}

impl Pair6 {
    pub fn up() -> Pair6 {
        let id = format!("{:04x}", std::process::id() & 0xffff);
        let r = Pair6 {
            srv: format!("qt6s{id}"),
            peer: format!("qt6r{id}"),
        };
        for ns in [&r.srv, &r.peer] {
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
            "netns", &r.peer,
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
            &r.peer,
            "addr",
            "add",
            "2001:db8::2/64",
            "dev",
            "qt6r0",
            "nodad",
        ]);
        sh(&["ip", "-n", &r.srv, "link", "set", "qt6s0", "up"]);
        sh(&["ip", "-n", &r.peer, "link", "set", "qt6r0", "up"]);
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
        wait_no_tentative(&r.srv);
        wait_no_tentative(&r.peer);
        r
    }
}

impl Drop for Pair6 {
    fn drop(&mut self) {
        for ns in [&self.srv, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Client `i`'s MAC, as the load generator numbers them.
pub fn mac(i: u32) -> String {
    format!(
        "fa:16:3e:{:02x}:{:02x}:{:02x}",
        (i >> 16) & 255,
        (i >> 8) & 255,
        i & 255
    )
}

impl Pair6 {
    /// `qdhcp loadgen --mode dhcpv6` in the peer namespace, dying with the test; the caller
    /// adds how it reaches the server (`--server6 … --relay6 …`, or `--link qt6r0`).
    pub fn loadgen6(&self) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.peer,
            qdhcp_bin(),
            "loadgen",
            "--mode",
            "dhcpv6",
        ]);
        die_with_test(&mut cmd);
        cmd
    }

    /// `qdhcp dnsmasq` in the server namespace on `qt6s0` for the /64 at `range` (`::`-ended),
    /// with Neutron's hosts file `dir/hosts`, once it listens for DHCPv6.
    pub fn start_dnsmasq(&self, dir: &std::path::Path, range: &str) -> Proc {
        let r = self;
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
            "--quiet-dhcp",
            "--qdhcp-client-rate=0",
        ])
        .arg(format!("--dhcp-range=set:s6,{range},static,64,86400s"))
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
}
