//! `qdhcp dnsmasq` served to real DHCP clients (ISC dhclient, busybox udhcpc, dhcpcd) in
//! network namespaces, with the command line and files Neutron's DHCP agent uses.
//! The flat_net walk-through of the README: 172.16.1.0/24, cirros-vm1 → 172.16.1.103.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

const VM1_MAC: &str = "fa:16:3e:7a:01:03";
const VM1_IP: &str = "172.16.1.103";
const VM2_MAC: &str = "fa:16:3e:7a:01:04";
const VM2_IP: &str = "172.16.1.104";
const SERVER: &str = "172.16.1.2";

const OPTS: &str = "tag:subnet-flat,option:dns-server,8.8.8.8\n\
tag:subnet-flat,option:classless-static-route,169.254.169.254/32,172.16.1.2,0.0.0.0/0,172.16.1.1\n\
tag:subnet-flat,249,169.254.169.254/32,172.16.1.2,0.0.0.0/0,172.16.1.1\n\
tag:subnet-flat,option:router,172.16.1.1\n";

fn host_line(mac: &str, ip: &str) -> String {
    format!("{mac},host-{}.openstacklocal.,{ip}\n", ip.replace('.', "-"))
}

/// flat_net with cirros-vm1 reserved, served by `qdhcp dnsmasq`.
fn flat_net(lease: u32) -> (Topo, DnsmasqSetup) {
    let t = Topo::new(&format!("{SERVER}/24"));
    let s = neutron_args(&t, "172.16.1.0", "255.255.255.0", lease);
    std::fs::write(&s.host, host_line(VM1_MAC, VM1_IP)).unwrap();
    std::fs::write(&s.opts, OPTS).unwrap();
    // Neutron pre-seeds the leases file at spawn
    std::fs::write(&s.leases, format!("0 {VM1_MAC} {VM1_IP} * *\n")).unwrap();
    (t, s)
}

fn assert_all_options(env: &HashMap<String, String>, keys: [&str; 8], lease: &str) {
    let [ip, mask, router, dns, domain, mtu, routes, lease_k] = keys;
    assert_eq!(env.get(ip).map(String::as_str), Some(VM1_IP), "{env:?}");
    assert_eq!(
        env.get(mask).map(String::as_str),
        Some("255.255.255.0"),
        "{env:?}"
    );
    assert_eq!(
        env.get(router).map(String::as_str),
        Some("172.16.1.1"),
        "{env:?}"
    );
    assert_eq!(env.get(dns).map(String::as_str), Some("8.8.8.8"), "{env:?}");
    assert_eq!(
        env.get(domain).map(String::as_str),
        Some("openstacklocal"),
        "{env:?}"
    );
    assert_eq!(env.get(mtu).map(String::as_str), Some("1450"), "{env:?}");
    let r = env.get(routes).expect("classless routes");
    assert!(
        r == "169.254.169.254/32 172.16.1.2 0.0.0.0/0 172.16.1.1"
            || r == "32 169 254 169 254 172 16 1 2 0 172 16 1 1",
        "metadata route via the server: {r}"
    );
    assert_eq!(env.get(lease_k).map(String::as_str), Some(lease), "{env:?}");
}

#[test]
fn walkthrough_dhclient_cirros_vm1_gets_reserved_ip_every_option_and_dora_log() {
    if !netns_available("walkthrough") {
        return;
    }
    require_tool("dhclient");
    let (mut t, s) = flat_net(86400);
    let _srv = start_dnsmasq(&t, &s);
    let vm = t.vm(VM1_MAC);
    let (ok, d) = dhclient(&t, &vm, 20);
    assert!(
        ok,
        "dhclient got no lease; server log:\n{}",
        std::fs::read_to_string(&s.log).unwrap_or_default()
    );
    let env = d.wait_reason("BOUND", 1, Duration::from_secs(5));
    assert_all_options(
        &env,
        [
            "new_ip_address",
            "new_subnet_mask",
            "new_routers",
            "new_domain_name_servers",
            "new_domain_name",
            "new_interface_mtu",
            "new_rfc3442_classless_static_routes",
            "new_dhcp_lease_time",
        ],
        "86400",
    );
    assert_eq!(
        env.get("new_host_name").map(String::as_str),
        Some("host-172-16-1-103")
    );
    assert_eq!(
        env.get("new_dhcp_server_identifier").map(String::as_str),
        Some(SERVER)
    );
    let log = std::fs::read_to_string(&s.log).unwrap();
    let i = &t.srv_if;
    for line in [
        format!("DHCPDISCOVER({i}) {VM1_MAC}"),
        format!("DHCPOFFER({i}) {VM1_IP} {VM1_MAC}"),
        format!("DHCPREQUEST({i}) {VM1_IP} {VM1_MAC}"),
        format!("DHCPACK({i}) {VM1_IP} {VM1_MAC} host-172-16-1-103"),
    ] {
        assert!(log.contains(&line), "log lacks {line:?}:\n{log}");
    }
    assert!(log.contains("dnsmasq-dhcp["), "dnsmasq-style tag:\n{log}");
}

#[test]
fn udhcpc_without_broadcast_flag_gets_unicast_reply_with_every_option() {
    if !netns_available("udhcpc") {
        return;
    }
    require_tool("udhcpc");
    let (mut t, s) = flat_net(86400);
    let _srv = start_dnsmasq(&t, &s);
    let vm = t.vm(VM1_MAC);
    let env = udhcpc(&t, &vm, 5).expect("udhcpc got a lease");
    assert_all_options(
        &env,
        [
            "ip",
            "subnet",
            "router",
            "dns",
            "domain",
            "mtu",
            "staticroutes",
            "lease",
        ],
        "86400",
    );
    assert_eq!(
        env.get("hostname").map(String::as_str),
        Some("host-172-16-1-103")
    );
    assert_eq!(
        env.get("msstaticroutes").map(String::as_str),
        Some("169.254.169.254/32 172.16.1.2 0.0.0.0/0 172.16.1.1")
    );
}

/// Scheduling policy of every thread of `pid`, by thread name (`/proc/PID/task/*/stat`, field
/// 41).
fn thread_policies(pid: u32) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = t.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // fields after "(comm)" start at field 3
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let policy = rest.split(' ').nth(41 - 3).unwrap().parse().unwrap();
        out.push((comm.trim().to_string(), policy));
    }
    out
}

#[test]
fn realtime_flag_serves_from_fifo_threads_and_keeps_background_idle() {
    if !netns_available("realtime") {
        return;
    }
    require_tool("udhcpc");
    let (mut t, mut s) = flat_net(86400);
    s.args.push("--qdhcp-realtime".into());
    let srv = start_dnsmasq(&t, &s);
    let vm = t.vm(VM1_MAC);
    let env = udhcpc(&t, &vm, 5).expect("udhcpc got a lease from the real-time listener");
    assert_eq!(env.get("ip").map(String::as_str), Some(VM1_IP));
    let threads = thread_policies(srv.pid());
    // the kernel keeps 15 bytes of a thread's name
    let policy = |name: &str| {
        threads
            .iter()
            .find(|(n, _)| n.as_str() == &name[..name.len().min(15)])
            .unwrap_or_else(|| panic!("no thread {name} in {threads:?}"))
            .1
    };
    // the event loop serving the interface (one in dnsmasq mode: one interface)
    assert_eq!(policy("dhcp-0"), libc::SCHED_FIFO);
    assert!(
        !threads
            .iter()
            .any(|(n, _)| n.starts_with("dhcp-") && n != "dhcp-0"),
        "one event loop expected: {threads:?}"
    );
    assert_eq!(policy("journal"), libc::SCHED_FIFO);
    assert_eq!(policy("housekeeping"), libc::SCHED_IDLE);
    assert_eq!(policy("leases-file"), libc::SCHED_IDLE);
    assert_eq!(count_in(&s.log, "no real-time priority"), 0);
}

#[test]
fn dhcpcd_gets_reserved_ip_and_every_option() {
    if !netns_available("dhcpcd") {
        return;
    }
    require_tool("dhcpcd");
    let (mut t, s) = flat_net(86400);
    let _srv = start_dnsmasq(&t, &s);
    let vm = t.vm(VM1_MAC);
    let env = dhcpcd(&t, &vm).unwrap_or_else(|| {
        panic!(
            "dhcpcd got no lease; log:\n{}",
            std::fs::read_to_string(&s.log).unwrap_or_default()
        )
    });
    assert_all_options(
        &env,
        [
            "new_ip_address",
            "new_subnet_mask",
            "new_routers",
            "new_domain_name_servers",
            "new_domain_name",
            "new_interface_mtu",
            "new_classless_static_routes",
            "new_dhcp_lease_time",
        ],
        "86400",
    );
}

#[test]
fn unreserved_mac_gets_nothing_and_is_logged() {
    if !netns_available("unreserved") {
        return;
    }
    require_tool("udhcpc");
    let (mut t, s) = flat_net(86400);
    let _srv = start_dnsmasq(&t, &s);
    let vm = t.vm("fa:16:3e:99:99:99");
    assert!(
        udhcpc(&t, &vm, 2).is_none(),
        "an unreserved MAC must get no lease"
    );
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(
        log.contains(&format!(
            "DHCPDISCOVER({}) fa:16:3e:99:99:99 no address available",
            t.srv_if
        )),
        "{log}"
    );
    assert!(!log.contains("DHCPOFFER"), "{log}");
}

#[test]
fn release_then_reacquire_with_dhclient() {
    if !netns_available("release") {
        return;
    }
    require_tool("dhclient");
    let (mut t, s) = flat_net(86400);
    let _srv = start_dnsmasq(&t, &s);
    let vm = t.vm(VM1_MAC);
    let (ok, d) = dhclient(&t, &vm, 20);
    assert!(ok);
    d.release();
    wait_for_log(
        &s.log,
        &format!("DHCPRELEASE({}) {VM1_IP} {VM1_MAC}", t.srv_if),
        Duration::from_secs(5),
    );
    wait_until(Duration::from_secs(5), || {
        !std::fs::read_to_string(&s.leases)
            .unwrap_or_default()
            .contains(VM1_MAC)
    });
    drop(d);
    let (ok, d) = dhclient(&t, &vm, 20);
    assert!(ok, "re-acquire after release");
    assert_eq!(
        d.wait_reason("BOUND", 1, Duration::from_secs(5))
            .get("new_ip_address")
            .map(String::as_str),
        Some(VM1_IP)
    );
    wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&s.leases)
            .unwrap_or_default()
            .contains(VM1_MAC)
    });
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "condition not reached in {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sighup_adds_host_without_restart_while_another_client_keeps_renewing() {
    if !netns_available("sighup") {
        return;
    }
    require_tool("dhclient");
    require_tool("udhcpc");
    // 6 s leases: dhclient renews every ~3 s
    let (mut t, s) = flat_net(6);
    let srv = start_dnsmasq(&t, &s);
    let vm1 = t.vm(VM1_MAC);
    let vm2 = t.vm(VM2_MAC);
    let (ok, d) = dhclient(&t, &vm1, 20);
    assert!(ok);
    d.wait_reason("RENEW", 1, Duration::from_secs(15));
    assert!(udhcpc(&t, &vm2, 1).is_none(), "vm2 not reserved yet");
    // SIGHUP, then the reload line that says how the change was applied
    let reload = |line: &str| {
        srv.signal(Signal::SIGHUP);
        wait_for_log(&s.log, line, Duration::from_secs(5));
    };
    let mut hosts = std::fs::read_to_string(&s.host).unwrap();
    hosts.push_str(&host_line(VM2_MAC, VM2_IP));
    std::fs::write(&s.host, hosts).unwrap();
    reload("reload: 1 added, 0 removed, 0 changed, 1 unchanged, 0 lease(s) revoked, in place");
    let env = udhcpc(&t, &vm2, 5).expect("new VM served after SIGHUP, no restart");
    assert_eq!(env.get("ip").map(String::as_str), Some(VM2_IP));
    // a changed subnet option cannot be applied line by line: the table is rebuilt
    std::fs::write(&s.opts, OPTS.replace("8.8.8.8", "9.9.9.9")).unwrap();
    reload("reload: 0 added, 0 removed, 0 changed, 2 unchanged, 0 lease(s) revoked, rebuilt");
    let env = udhcpc(&t, &vm2, 5).expect("served after the rebuild");
    assert_eq!(env.get("dns").map(String::as_str), Some("9.9.9.9"));
    let renews = d.reasons().iter().filter(|r| *r == "RENEW").count();
    d.wait_reason("RENEW", renews + 2, Duration::from_secs(15));
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(!log.contains("DHCPNAK"), "no NAK during reload:\n{log}");
    assert_eq!(
        count_in(&s.log, "started, qdhcp"),
        1,
        "served without restart"
    );
}

#[test]
fn kill_9_and_restart_renewals_are_acked_with_same_address() {
    if !netns_available("kill9") {
        return;
    }
    require_tool("dhclient");
    let (mut t, s) = flat_net(6);
    let mut srv = start_dnsmasq(&t, &s);
    let vm = t.vm(VM1_MAC);
    let (ok, d) = dhclient(&t, &vm, 20);
    assert!(ok);
    d.wait_reason("RENEW", 1, Duration::from_secs(15));
    srv.kill9();
    let journal = std::fs::read_to_string(s.leases.with_extension("journal")).unwrap_or_default();
    let journal2 =
        std::fs::read_to_string(format!("{}.journal", s.leases.display())).unwrap_or_default();
    assert!(
        journal.contains(VM1_MAC) || journal2.contains(VM1_MAC),
        "the ACKed lease is in the journal"
    );
    let before = count_in(&s.log, &format!("DHCPACK({}) {VM1_IP}", t.srv_if));
    let _srv2 = start_dnsmasq(&t, &s);
    let renews = d.reasons().iter().filter(|r| *r == "RENEW").count();
    let env = d.wait_reason("RENEW", renews + 2, Duration::from_secs(20));
    assert_eq!(env.get("new_ip_address").map(String::as_str), Some(VM1_IP));
    assert!(count_in(&s.log, &format!("DHCPACK({}) {VM1_IP}", t.srv_if)) > before);
    assert_eq!(count_in(&s.log, "DHCPNAK"), 0, "no NAK after restart");
    assert!(
        !d.reasons().iter().any(|r| r == "EXPIRE" || r == "FAIL"),
        "{:?}",
        d.reasons()
    );
}

#[test]
fn dhcp_release_from_dnsmasq_utils_frees_the_lease() {
    if !netns_available("dhcp_release") {
        return;
    }
    require_tool("udhcpc");
    require_tool("dhcp_release");
    let (mut t, s) = flat_net(86400);
    std::fs::write(&s.leases, "").unwrap();
    let _srv = start_dnsmasq(&t, &s);
    let vm = t.vm(VM1_MAC);
    udhcpc(&t, &vm, 5).expect("lease");
    wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&s.leases)
            .unwrap_or_default()
            .contains(VM1_MAC)
    });
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
    wait_for_log(
        &s.log,
        &format!("DHCPRELEASE({}) {VM1_IP} {VM1_MAC}", t.srv_if),
        Duration::from_secs(5),
    );
    wait_until(Duration::from_secs(5), || {
        !std::fs::read_to_string(&s.leases)
            .unwrap_or_default()
            .contains(VM1_MAC)
    });
}

#[test]
fn daemonizes_like_dnsmasq_and_tracks_by_pid_file() {
    if !netns_available("daemon") {
        return;
    }
    require_tool("udhcpc");
    let (mut t, s) = flat_net(86400);
    let start = Instant::now();
    let st = Command::new("ip")
        .args(["netns", "exec", &t.srv_ns, qdhcp_bin(), "dnsmasq"])
        .args(&s.args)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "parent returns 0 once the daemon serves");
    assert!(start.elapsed() < Duration::from_secs(5));
    let pid: i32 = std::fs::read_to_string(&s.pid)
        .expect("pid file")
        .trim()
        .parse()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(pid);
    struct KillOnDrop(nix::unistd::Pid);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.0, Signal::SIGKILL);
        }
    }
    let _guard = KillOnDrop(pid);
    assert!(nix::sys::signal::kill(pid, None).is_ok(), "daemon alive");
    let vm = t.vm(VM1_MAC);
    assert!(udhcpc(&t, &vm, 5).is_some());
    // it runs as `nobody` with only the packet path's capabilities, as dnsmasq does
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap()
    };
    assert_eq!(field("Uid:"), ["65534"; 4], "{status}");
    // CAP_NET_BIND_SERVICE (10), NET_ADMIN (12), NET_RAW (13), SYS_NICE (23)
    let want = (1u64 << 10) | (1 << 12) | (1 << 13) | (1 << 23);
    for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert_eq!(
            u64::from_str_radix(field(set)[0], 16).unwrap(),
            want,
            "{set} {status}"
        );
    }
    assert_eq!(field("NoNewPrivs:"), ["1"]);
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    // gone; as nobody it cannot remove its pid file from a root-owned directory (neither can
    // dnsmasq): Neutron removes it, and checks /proc/<pid>/cmdline anyway
    wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|st| st.contains(") Z "))
            .unwrap_or(true)
    });

    // a bad command line fails at once with the reason, as dnsmasq does
    let out = Command::new(qdhcp_bin())
        .args(["dnsmasq", "--dhcp-range=10.0.0.0,10.0.0.9,1h"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only static ranges"));
}

#[test]
fn init_reboot_for_another_address_is_nakd_at_once() {
    if !netns_available("init-reboot") {
        return;
    }
    require_tool("dhclient");
    let (mut t, s) = flat_net(86400);
    let _srv = start_dnsmasq(&t, &s);
    let vm = t.vm(VM1_MAC);
    // the VM remembers an address from before its port was re-addressed
    let lf = t.path(&format!("dhclient-{}.leases", vm.ns));
    std::fs::write(&lf, format!(
        "lease {{\n  interface \"{}\";\n  fixed-address 172.16.1.150;\n  option subnet-mask 255.255.255.0;\n  \
         option dhcp-lease-time 86400;\n  option dhcp-server-identifier 172.16.1.2;\n  \
         renew 4 2037/01/01 00:00:00;\n  rebind 4 2037/01/01 00:00:00;\n  expire 4 2037/01/01 00:00:00;\n}}\n",
        vm.iface
    )).unwrap();
    let start = Instant::now();
    let (ok, d) = dhclient(&t, &vm, 30);
    assert!(ok);
    assert_eq!(
        d.wait_reason("BOUND", 1, Duration::from_secs(5))
            .get("new_ip_address")
            .map(String::as_str),
        Some(VM1_IP)
    );
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "NAK came at once, took {:?}",
        start.elapsed()
    );
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(
        log.contains(&format!(
            "DHCPNAK({}) 172.16.1.150 {VM1_MAC} wrong address",
            t.srv_if
        )),
        "{log}"
    );
}

#[test]
fn malformed_packets_are_dropped_counted_and_logged_and_service_continues() {
    if !netns_available("malformed") {
        return;
    }
    require_tool("udhcpc");
    let (mut t, s) = flat_net(86400);
    let srv = start_dnsmasq(&t, &s);
    let vm = t.vm(VM1_MAC);
    send_garbage(&vm, 200);
    let env = udhcpc(&t, &vm, 5).expect("still serving after garbage");
    assert_eq!(env.get("ip").map(String::as_str), Some(VM1_IP));
    srv.signal(Signal::SIGUSR1);
    let log = wait_for_log(&s.log, "DHCP statistics", Duration::from_secs(5));
    let dropped = log.lines().filter(|l| l.contains("dropped packet")).count();
    assert!(
        (1..=10).contains(&dropped),
        "rate-limited drop lines: {dropped}"
    );
    let stats = log.lines().find(|l| l.contains("DHCP statistics")).unwrap();
    let malformed: u64 = stats
        .split("malformed ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(malformed >= 200, "every bad packet counted: {stats}\n{log}");
}

/// Sends `n` hostile packets from inside the VM namespace to the server's port 67.
fn send_garbage(vm: &Vm, n: usize) {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let ns = std::fs::File::open(format!("/var/run/netns/{}", vm.ns)).unwrap();
    let iface = vm.iface.clone();
    std::thread::spawn(move || {
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        sock.set_broadcast(true).unwrap();
        sock.bind_device(Some(iface.as_bytes())).unwrap();
        let to = SockAddr::from(std::net::SocketAddrV4::new(
            std::net::Ipv4Addr::BROADCAST,
            67,
        ));
        let mut seed = 0x1234_5678u32;
        for i in 0..n {
            let mut p = vec![0u8; 300];
            for b in p.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                *b = seed as u8;
            }
            p[0] = 1;
            p[1] = 1;
            p[2] = if i % 2 == 0 { 17 } else { 6 }; // hlen > 16 panics a naive decoder
            p[236..240].copy_from_slice(&[99, 130, 83, 99]);
            p[240] = 53;
            p[241] = 1;
            p[242] = 1;
            p[243] = 81; // FQDN with a length dhcproto asserts on
            p[244] = 1;
            sock.send_to(&p, &to).unwrap();
            if i % 25 == 24 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    })
    .join()
    .unwrap();
}

#[test]
fn logs_go_to_syslog_by_default_in_dnsmasq_format() {
    if !netns_available("syslog") {
        return;
    }
    require_tool("udhcpc");
    let (mut t, s) = flat_net(86400);
    let sock_path = t.path("syslog.sock");
    let syslog = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    syslog
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let args: Vec<String> = s
        .args
        .iter()
        .filter(|a| !a.starts_with("--log-facility"))
        .cloned()
        .collect();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &t.srv_ns, qdhcp_bin(), "dnsmasq", "-k"])
        .args(&args)
        .env("QDHCP_SYSLOG_SOCKET", &sock_path)
        .stdin(Stdio::null());
    die_with_test(&mut cmd);
    let _srv = Proc {
        child: cmd.spawn().unwrap(),
    };
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    while !got.iter().any(|l: &String| l.contains("DHCP listening"))
        && start.elapsed() < Duration::from_secs(10)
    {
        if let Ok(n) = syslog.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let vm = t.vm(VM1_MAC);
    assert!(udhcpc(&t, &vm, 5).is_some());
    while !got.iter().any(|l| l.contains("DHCPACK(")) && start.elapsed() < Duration::from_secs(20) {
        if let Ok(n) = syslog.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let ack = got
        .iter()
        .find(|l| l.contains("DHCPACK("))
        .unwrap_or_else(|| panic!("no DHCPACK via syslog: {got:?}"));
    // <priority>timestamp tag[pid]: message, facility daemon (3), severity info (6) -> 30
    assert!(ack.starts_with("<30>"), "{ack}");
    assert!(ack.contains(" dnsmasq-dhcp["), "{ack}");
    assert!(
        ack.contains(&format!(
            "DHCPACK({}) {VM1_IP} {VM1_MAC} host-172-16-1-103",
            t.srv_if
        )),
        "{ack}"
    );
}
