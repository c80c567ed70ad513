//! DNS for instances from `qdhcp dnsmasq`, as Neutron's dnsmasq serves it, queried by real
//! resolvers (dig, glibc's getent) from VM namespaces that took their address and DNS server
//! from qdhcp's DHCP: names from Neutron's addn_hosts file, PTR, NXDOMAIN under the domain,
//! forwarding to a real upstream (dnsmasq in a namespace of its own), SIGHUP, strangers, TCP,
//! and `--port=0`.

mod common;

use std::collections::HashMap;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

const VM1_MAC: &str = "fa:16:3e:7a:01:03";
const VM1_IP: &str = "172.16.1.103";
const VM2_MAC: &str = "fa:16:3e:7a:01:04";
const VM2_IP: &str = "172.16.1.104";
const SERVER: &str = "172.16.1.2";
const UPSTREAM: &str = "172.16.1.250";

fn host_line(mac: &str, ip: &str) -> String {
    format!("{mac},host-{}.openstacklocal.,{ip}\n", ip.replace('.', "-"))
}

fn addn_line(ip: &str) -> String {
    let n = format!("host-{}", ip.replace('.', "-"));
    format!("{ip}\t{n}.openstacklocal. {n}\n")
}

/// flat_net with two ports, Neutron's files, no dns_nameservers (the server announces itself).
fn flat_net(extra: &[&str]) -> (Topo, DnsmasqSetup) {
    let t = Topo::new(&format!("{SERVER}/24"));
    let mut s = neutron_args(&t, "172.16.1.0", "255.255.255.0", 86400);
    std::fs::write(
        &s.host,
        host_line(VM1_MAC, VM1_IP) + &host_line(VM2_MAC, VM2_IP),
    )
    .unwrap();
    std::fs::write(t.path("addn_hosts"), addn_line(VM1_IP) + &addn_line(VM2_IP)).unwrap();
    std::fs::write(&s.opts, "tag:subnet-flat,option:router,172.16.1.1\n").unwrap();
    std::fs::write(&s.leases, "").unwrap();
    s.args.extend(extra.iter().map(|a| a.to_string()));
    (t, s)
}

/// A VM that took its lease from qdhcp and configured it as a client script would.
fn vm_with_lease(t: &mut Topo, mac: &str) -> (Vm, HashMap<String, String>) {
    let vm = t.vm(mac);
    let env = udhcpc(t, &vm, 5).expect("lease");
    let ip = env["ip"].clone();
    let st = Command::new("ip")
        .args([
            "-n",
            &vm.ns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            &vm.iface,
        ])
        .status()
        .unwrap();
    assert!(st.success());
    (vm, env)
}

/// A real upstream DNS server (dnsmasq) on the same bridge, answering `*.example.test`.
fn upstream(t: &mut Topo) -> Proc {
    require_tool("dnsmasq");
    let up = t.vm("fa:16:3e:00:00:fe");
    let st = Command::new("ip")
        .args([
            "-n",
            &up.ns,
            "addr",
            "add",
            &format!("{UPSTREAM}/24"),
            "dev",
            &up.iface,
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &up.ns,
        "dnsmasq",
        "-k",
        "-u",
        "root",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        &format!("--listen-address={UPSTREAM}"),
        "--address=/example.test/192.0.2.7",
        "--local-ttl=300",
        "--pid-file=",
        "--log-facility=-",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let p = Proc {
        child: die_with_test(&mut cmd).spawn().expect("upstream dnsmasq"),
    };
    std::thread::sleep(Duration::from_millis(300));
    p
}

fn dig(vm: &Vm, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &vm.ns, "dig", "+tries=1", "+time=2"])
        .args(args)
        .output()
        .expect("dig")
}

fn short(vm: &Vm, args: &[&str]) -> String {
    let mut a = vec!["+short"];
    a.extend(args);
    String::from_utf8_lossy(&dig(vm, &a).stdout)
        .trim()
        .to_string()
}

fn status(vm: &Vm, args: &[&str]) -> String {
    let text = String::from_utf8_lossy(&dig(vm, args).stdout).into_owned();
    text.split("status: ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or("NO ANSWER")
        .to_string()
}

#[test]
fn vm_resolves_neighbours_ptr_and_the_outside_world_through_the_dhcp_port() {
    if !netns_available("dns") {
        return;
    }
    require_tool("udhcpc");
    require_tool("dig");
    let (mut t, s) = flat_net(&[&format!("--server={UPSTREAM}"), "--log-queries"]);
    let _up = upstream(&mut t);
    let _srv = start_dnsmasq(&t, &s);
    let (vm, env) = vm_with_lease(&mut t, VM1_MAC);
    // no dns_nameservers on the subnet: the DHCP port is the DNS server, as with dnsmasq
    assert_eq!(env.get("dns").map(String::as_str), Some(SERVER), "{env:?}");
    let at = format!("@{SERVER}");
    assert_eq!(
        short(&vm, &[&at, "host-172-16-1-104.openstacklocal"]),
        VM2_IP
    );
    assert_eq!(short(&vm, &[&at, "host-172-16-1-104"]), VM2_IP, "bare name");
    assert_eq!(
        short(&vm, &[&at, "-x", VM2_IP]),
        "host-172-16-1-104.openstacklocal."
    );
    assert_eq!(status(&vm, &[&at, "nope.openstacklocal"]), "NXDOMAIN");
    assert_eq!(status(&vm, &[&at, "-x", "172.16.1.99"]), "NXDOMAIN");
    // the outside world, through the upstream; then from the cache
    assert_eq!(short(&vm, &[&at, "www.example.test"]), "192.0.2.7");
    assert_eq!(short(&vm, &[&at, "www.example.test"]), "192.0.2.7");
    // over TCP too
    assert_eq!(
        short(&vm, &["+tcp", &at, "host-172-16-1-103.openstacklocal"]),
        VM1_IP
    );
    assert_eq!(short(&vm, &["+tcp", &at, "www.example.test"]), "192.0.2.7");
    let log = std::fs::read_to_string(&s.log).unwrap();
    for line in [
        "query[A] host-172-16-1-104.openstacklocal. from 172.16.1.103",
        "config host-172-16-1-104.openstacklocal. is 172.16.1.104",
        &format!("forwarded www.example.test. to {UPSTREAM}"),
        "reply www.example.test. is 192.0.2.7",
        "cached www.example.test. is 192.0.2.7",
    ] {
        assert!(log.contains(line), "{line:?} not in\n{log}");
    }

    // glibc's resolver with the resolv.conf the lease gives, as `ip netns exec` uses it
    let etc = std::path::PathBuf::from(format!("/etc/netns/{}", vm.ns));
    struct RmDir(std::path::PathBuf);
    impl Drop for RmDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    std::fs::create_dir_all(&etc).unwrap();
    let _rm = RmDir(etc.clone());
    std::fs::write(
        etc.join("resolv.conf"),
        format!("search {}\nnameserver {}\n", env["domain"], env["dns"]),
    )
    .unwrap();
    let getent = |name: &str| {
        let o = Command::new("ip")
            .args(["netns", "exec", &vm.ns, "getent", "hosts", name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(getent("host-172-16-1-104.openstacklocal").starts_with(VM2_IP));
    assert!(
        getent("host-172-16-1-104").starts_with(VM2_IP),
        "via the search domain"
    );
    assert!(getent("www.example.test").starts_with("192.0.2.7"));

    // a port removed and another added (Neutron rewrites addn_hosts, then SIGHUP): the next
    // query sees it
    std::fs::write(
        t.path("addn_hosts"),
        addn_line(VM1_IP) + &addn_line("172.16.1.105"),
    )
    .unwrap();
    _srv.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for_log(&s.log, "reload:", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        short(&vm, &[&at, "host-172-16-1-105.openstacklocal"]),
        "172.16.1.105"
    );
    assert_eq!(
        status(&vm, &[&at, "host-172-16-1-104.openstacklocal"]),
        "NXDOMAIN"
    );
}

#[test]
fn strangers_get_nothing_and_without_upstream_other_names_are_refused() {
    if !netns_available("dns strangers") {
        return;
    }
    require_tool("udhcpc");
    require_tool("dig");
    let (mut t, s) = flat_net(&[]);
    let _srv = start_dnsmasq(&t, &s);
    let (vm, _) = vm_with_lease(&mut t, VM1_MAC);
    let at = format!("@{SERVER}");
    assert_eq!(status(&vm, &[&at, "www.example.test"]), "REFUSED");
    // a host outside the subnet, on the same wire, routed to the server
    let stranger = t.vm("fa:16:3e:00:00:77");
    for args in [
        vec![
            "-n",
            &stranger.ns,
            "addr",
            "add",
            "10.99.0.5/24",
            "dev",
            &stranger.iface,
        ],
        vec![
            "-n",
            &stranger.ns,
            "route",
            "add",
            "172.16.1.0/24",
            "dev",
            &stranger.iface,
        ],
        vec![
            "-n",
            &t.srv_ns,
            "route",
            "add",
            "10.99.0.0/24",
            "dev",
            &t.srv_if,
        ],
    ] {
        assert!(Command::new("ip").args(&args).status().unwrap().success());
    }
    let o = dig(&stranger, &[&at, "host-172-16-1-103.openstacklocal"]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stdout).contains("timed out"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn port_zero_turns_dns_off_and_the_server_announces_none() {
    if !netns_available("dns off") {
        return;
    }
    require_tool("udhcpc");
    require_tool("dig");
    let (mut t, s) = flat_net(&["--port=0"]);
    let _srv = start_dnsmasq(&t, &s);
    let (vm, env) = vm_with_lease(&mut t, VM1_MAC);
    assert_eq!(env.get("dns"), None, "{env:?}");
    let o = dig(
        &vm,
        &[&format!("@{SERVER}"), "host-172-16-1-103.openstacklocal"],
    );
    assert!(!o.status.success());
}

/// A flood of queries from one VM is cut to its share (counted), and its neighbour's queries
/// are still answered meanwhile.
#[test]
fn a_flooding_vm_does_not_starve_its_neighbour() {
    if !netns_available("dns flood") {
        return;
    }
    require_tool("udhcpc");
    require_tool("dig");
    let (mut t, s) = flat_net(&["--qdhcp-dns-rate=200"]);
    let srv = start_dnsmasq(&t, &s);
    let (vm1, _) = vm_with_lease(&mut t, VM1_MAC);
    let (vm2, _) = vm_with_lease(&mut t, VM2_MAC);
    // A query for host-172-16-1-103.openstacklocal, built by hand
    let mut q = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["host-172-16-1-103", "openstacklocal"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let ns = std::fs::File::open(format!("/var/run/netns/{}", vm2.ns)).unwrap();
    let flood = std::thread::spawn(move || {
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let t0 = std::time::Instant::now();
        let mut sent = 0u32;
        // about 40,000 queries a second for 3 s: a VM gone wild, 200 times its share
        while t0.elapsed() < Duration::from_secs(3) {
            for _ in 0..40 {
                let _ = sock.send_to(&q, (SERVER, 53));
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        sent
    });
    std::thread::sleep(Duration::from_millis(500));
    let at = format!("@{SERVER}");
    for _ in 0..5 {
        assert_eq!(
            short(&vm1, &[&at, "host-172-16-1-104.openstacklocal"]),
            VM2_IP
        );
    }
    let sent = flood.join().unwrap();
    assert!(sent > 1000, "the flood sent {sent}");
    srv.signal(nix::sys::signal::Signal::SIGUSR1);
    let log = wait_for_log(&s.log, "over rate", Duration::from_secs(5));
    let line = log.lines().rev().find(|l| l.contains("over rate")).unwrap();
    let over: u64 = line
        .split("over rate ")
        .nth(1)
        .and_then(|r| r.trim().parse().ok())
        .unwrap();
    assert!(over > 0, "{line}");
}
