//! `qdhcp dnsmasq` serving DHCPv6 to ISC `dhclient -6` in network namespaces, with the
//! command line and files Neutron's driver writes for a dual-stack network: an IPv4 subnet, a
//! dhcpv6-stateful subnet (2001:db8:6::/64) and a dhcpv6-stateless one (2001:db8:7::/64).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::v6::*;
use common::*;
use nix::sys::signal::Signal;

#[test]
fn dhclient6_gets_its_ports_address_dns_and_search_list_with_dnsmasqs_log_and_leases_file() {
    if !netns_available("dhclient6 stateful") {
        return;
    }
    require_tool("dhclient");
    let (mut t, s) = dual_stack();
    let _srv = start(&t, &s);
    let vm = t.vm(VM1_MAC);
    let (ok, c) = dhclient6(&t, &vm, false, "");
    assert!(
        ok,
        "no lease; events {:?}; log:\n{}",
        c.reasons(),
        std::fs::read_to_string(&s.log).unwrap_or_default()
    );
    let ev = c.wait_reason("BOUND6", 1, Duration::from_secs(1));
    assert_eq!(
        ev.get("new_ip6_address").map(String::as_str),
        Some(VM1_V6),
        "{ev:?}"
    );
    assert_eq!(
        ev.get("new_dhcp6_name_servers").map(String::as_str),
        Some("2001:db8:6::53"),
        "{ev:?}"
    );
    assert_eq!(
        ev.get("new_dhcp6_domain_search").map(String::as_str),
        Some("openstacklocal."),
        "{ev:?}"
    );
    // dhclient asks for 7200 s preferred, 7500 s valid: the lesser of that and the lease time,
    // T1 and T2 at 1/2 and 7/8 of the preferred lifetime, as dnsmasq
    assert_eq!(
        ev.get("new_preferred_life").map(String::as_str),
        Some("7200"),
        "{ev:?}"
    );
    assert_eq!(
        ev.get("new_max_life").map(String::as_str),
        Some("7500"),
        "{ev:?}"
    );
    assert_eq!(
        ev.get("new_renew").map(String::as_str),
        Some("3600"),
        "{ev:?}"
    );
    assert_eq!(
        ev.get("new_rebind").map(String::as_str),
        Some("6300"),
        "{ev:?}"
    );
    let duid = c.duid();
    let i = &t.srv_if;
    let log = wait_for_log(
        &s.log,
        &format!("DHCPREPLY({i}) {VM1_V6} {duid} host-2001-db8-6--103"),
        Duration::from_secs(5),
    );
    for needle in [
        format!("DHCPSOLICIT({i}) {duid}"),
        format!("DHCPADVERTISE({i}) {VM1_V6} {duid} host-2001-db8-6--103"),
        format!("DHCPREQUEST({i}) {duid}"),
    ] {
        assert!(log.contains(&needle), "{needle} not in\n{log}");
    }
    // the leases file: the server's DUID line, then the lease with the IAID in decimal
    wait_until(
        Duration::from_secs(5),
        "the v6 lease in the leases file",
        || leases_text(&s).contains(&format!("{VM1_V6} host-2001-db8-6--103 {duid}")),
    );
    let text = leases_text(&s);
    let duid_line = text
        .lines()
        .find(|l| l.starts_with("duid "))
        .expect("duid line");
    let mac = Command::new("ip")
        .args(["-n", &t.srv_ns, "-br", "link", "show", &t.srv_if])
        .output()
        .unwrap();
    let mac = String::from_utf8_lossy(&mac.stdout)
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    assert!(
        duid_line.starts_with("duid 00:01:00:01:") && duid_line.ends_with(&mac),
        "{duid_line} vs {mac}"
    );
    let lease = text.lines().find(|l| l.contains(VM1_V6)).unwrap();
    let f: Vec<&str> = lease.split_whitespace().collect();
    assert_eq!(f.len(), 5, "{lease}");
    assert!(f[1].parse::<u32>().is_ok(), "IAID in decimal: {lease}");

    // dhclient -6 -r: RELEASE, and the lease leaves the file at once
    c.release();
    wait_for_log(
        &s.log,
        &format!("DHCPRELEASE({i}) {duid}"),
        Duration::from_secs(5),
    );
    wait_until(
        Duration::from_secs(3),
        "the released lease gone from the file",
        || !leases_text(&s).contains(VM1_V6),
    );
}

#[test]
fn a_stateless_client_gets_options_only_and_an_unknown_mac_gets_no_address() {
    if !netns_available("dhclient6 stateless") {
        return;
    }
    require_tool("dhclient");
    let (mut t, s) = dual_stack();
    let _srv = start(&t, &s);
    // VM2 is a port on the stateless subnet only: its options, from that subnet
    let vm2 = t.vm(VM2_MAC);
    let (ok, c) = dhclient6(&t, &vm2, true, "");
    assert!(ok, "no reply; events {:?}", c.reasons());
    let ev = c
        .events()
        .into_iter()
        .find(|e| e.contains_key("new_dhcp6_name_servers"))
        .unwrap_or_else(|| {
            panic!(
                "no name servers: {:?}\n{}",
                c.events(),
                std::fs::read_to_string(&s.log).unwrap_or_default()
            )
        });
    assert_eq!(
        ev.get("new_dhcp6_name_servers").map(String::as_str),
        Some("2001:db8:7::53"),
        "{ev:?}"
    );
    assert!(!ev.contains_key("new_ip6_address"), "{ev:?}");
    wait_for_log(
        &s.log,
        &format!("DHCPINFORMATION-REQUEST({})", t.srv_if),
        Duration::from_secs(5),
    );

    // a MAC with no host line: ADVERTISE with NoAddrsAvail, no address
    let stranger = t.vm(STRANGER_MAC);
    let (ok, c) = dhclient6(&t, &stranger, false, "timeout 4;\n");
    assert!(!ok, "an unknown MAC got an address: {:?}", c.events());
    wait_for_log(
        &s.log,
        &format!("DHCPADVERTISE({}) ", t.srv_if),
        Duration::from_secs(5),
    );
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(log.contains("no addresses available"), "{log}");
}

#[test]
fn a_client_with_a_random_link_local_and_a_duid_without_a_mac_is_matched_by_its_mac() {
    if !netns_available("dhclient6 random link-local") {
        return;
    }
    require_tool("dhclient");
    let (mut t, s) = dual_stack();
    let _srv = start(&t, &s);
    let vm = t.vm(VM1_MAC);
    // a random interface identifier instead of EUI-64 (addr_gen_mode 3), re-made by a flap
    for args in [
        vec![
            "ip",
            "netns",
            "exec",
            &vm.ns,
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{}.addr_gen_mode=3", vm.iface),
        ],
        vec!["ip", "-n", &vm.ns, "link", "set", &vm.iface, "down"],
        vec!["ip", "-n", &vm.ns, "link", "set", &vm.iface, "up"],
    ] {
        sh(&args);
    }
    wait_no_tentative(&vm.ns);
    let ll = Command::new("ip")
        .args([
            "-n", &vm.ns, "-6", "addr", "show", "dev", &vm.iface, "scope", "link",
        ])
        .output()
        .unwrap();
    let ll = String::from_utf8_lossy(&ll.stdout).to_string();
    assert!(!ll.contains("ff:fe"), "not an EUI-64 link-local: {ll}");
    // DUID-EN (type 2): enterprise number and an identifier, no MAC in it
    let (ok, c) = dhclient6(
        &t,
        &vm,
        false,
        "send dhcp6.client-id 00:02:00:00:ab:cd:01:02:03:04:05:06:07:08;\n",
    );
    assert!(
        ok,
        "no lease; events {:?}; log:\n{}",
        c.reasons(),
        std::fs::read_to_string(&s.log).unwrap_or_default()
    );
    let ev = c.wait_reason("BOUND6", 1, Duration::from_secs(1));
    assert_eq!(
        ev.get("new_ip6_address").map(String::as_str),
        Some(VM1_V6),
        "{ev:?}"
    );
    wait_for_log(
        &s.log,
        &format!(
            "DHCPREPLY({}) {VM1_V6} 00:02:00:00:ab:cd:01:02:03:04:05:06:07:08",
            t.srv_if
        ),
        Duration::from_secs(5),
    );
}

#[test]
fn dhcp_release6_frees_one_lease_and_a_restart_keeps_the_server_duid_for_renewals() {
    if !netns_available("dhcp_release6") {
        return;
    }
    require_tool("dhclient");
    require_tool("dhcp_release6");
    let (mut t, s) = dual_stack();
    let mut srv = start(&t, &s);
    let vm = t.vm(VM1_MAC);
    let (ok, c) = dhclient6(&t, &vm, false, "");
    assert!(ok, "no lease; events {:?}", c.reasons());
    let duid = c.duid();
    wait_until(Duration::from_secs(5), "the lease in the file", || {
        leases_text(&s).contains(VM1_V6)
    });
    let text = leases_text(&s);
    let server_duid = text
        .lines()
        .find_map(|l| l.strip_prefix("duid "))
        .unwrap()
        .to_string();
    let iaid = text
        .lines()
        .find(|l| l.contains(VM1_V6))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();

    // restart: the same DUID from the leases file, the lease from the journal
    srv.signal(Signal::SIGTERM);
    let _ = srv.child.wait();
    let _srv2 = start(&t, &s);
    let text = leases_text(&s);
    assert!(text.contains(&format!("duid {server_duid}")), "{text}");
    assert!(
        text.contains(VM1_V6),
        "the lease survives the restart: {text}"
    );

    // Neutron's reload_allocations() for a removed port: the host line goes, then
    // dhcp_release6 with the lease's DUID, IAID and server id
    std::fs::write(
        &s.host,
        HOSTS
            .lines()
            .filter(|l| !l.contains(VM1_MAC))
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    )
    .unwrap();
    _srv2.signal(Signal::SIGHUP);
    let t0 = Instant::now();
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.srv_ns,
            "dhcp_release6",
            "--iface",
            &t.srv_if,
            "--ip",
            VM1_V6,
            "--client-id",
            &duid,
            "--server-id",
            &server_duid,
            "--iaid",
            &iaid,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dhcp_release6: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&s.log).unwrap_or_default()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "dhcp_release6 took {:?} (no reply?)",
        t0.elapsed()
    );
    wait_until(
        Duration::from_secs(2),
        "the released lease gone from the file",
        || !leases_text(&s).contains(VM1_V6),
    );
    drop(c);
}

/// Runs a python `script` in namespace `ns` that sends datagrams out of `iface` (as a hostile
/// or broken client would).
fn send6(ns: &str, iface: &str, script: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", script, iface])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const GARBAGE: &str = r#"
import socket, sys, os, struct
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
idx = socket.if_nametoindex(sys.argv[1])
dst = ('ff02::1:2', 547, 0, idx)
def opt(c, d): return struct.pack('!HH', c, len(d)) + d
cid = opt(1, b'\x00\x03\x00\x01' + os.urandom(6))
for i in range(200):
    for pkt in [
        b'\x01',                                          # too short
        b'\x01\x00\x00\x01' + struct.pack('!HH', 1, 500) + b'x',  # option past the end
        b'\x01\x00\x00\x01' + cid + opt(3, b'\x00' * 5),     # IA_NA too short
        b'\x01\x00\x00\x01' + cid + opt(13, b'\x00'),        # status code of one byte
        b'\x02\x00\x00\x01' + cid,                         # an ADVERTISE: not for a server
        bytes([12, 0]) + bytes(32) + opt(9, bytes([12, 0]) + bytes(32)),  # relay, nothing in it
        os.urandom(i % 300),
    ]:
        s.sendto(pkt, dst)
    # relays nested past the limit
    m = b'\x01\x00\x00\x01' + cid
    for h in range(12):
        m = bytes([12, h]) + bytes(32) + opt(9, m)
    s.sendto(m, dst)
"#;

const SOLICIT_FLOOD: &str = r#"
import socket, sys, os, struct
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
idx = socket.if_nametoindex(sys.argv[1])
def opt(c, d): return struct.pack('!HH', c, len(d)) + d
for i in range(3000):
    duid = b'\x00\x04' + os.urandom(16)   # DUID-UUID: random, no MAC
    m = b'\x01' + os.urandom(3) + opt(1, duid) + opt(8, b'\x00\x00') + opt(3, os.urandom(4) + bytes(8))
    s.sendto(m, ('ff02::1:2', 547, 0, idx))
"#;

#[test]
fn hostile_datagrams_are_dropped_counted_and_logged_and_a_solicit_flood_does_not_starve_a_known_client(
) {
    if !netns_available("dhcpv6 hostile input") {
        return;
    }
    require_tool("dhclient");
    require_tool("python3");
    let (mut t, s) = dual_stack();
    let srv = start(&t, &s);
    let bad = t.vm(STRANGER_MAC);
    wait_no_tentative(&bad.ns);
    send6(&bad.ns, &bad.iface, GARBAGE);
    wait_for_log(&s.log, "dropped a DHCPv6 datagram", Duration::from_secs(5));
    // rate-limited: 1,600 bad datagrams, a few lines and a count of the rest
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        count_in(&s.log, "dropped a DHCPv6 datagram") <= 20,
        "not rate-limited"
    );
    assert!(
        std::fs::read_to_string(format!("/proc/{}/status", srv.pid())).is_ok(),
        "server died"
    );

    // a flood of SOLICITs from random DUIDs (one stranger MAC) while a known client binds
    let flood = std::thread::spawn({
        let ns = bad.ns.clone();
        let iface = bad.iface.clone();
        move || send6(&ns, &iface, SOLICIT_FLOOD)
    });
    let vm = t.vm(VM1_MAC);
    let t0 = Instant::now();
    let (ok, c) = dhclient6(&t, &vm, false, "");
    assert!(
        ok,
        "the known client got nothing during the flood: {:?}",
        c.reasons()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t0.elapsed()
    );
    let ev = c.wait_reason("BOUND6", 1, Duration::from_secs(1));
    assert_eq!(ev.get("new_ip6_address").map(String::as_str), Some(VM1_V6));
    flood.join().unwrap();
    // the stranger's SOLICITs were answered NoAddrsAvail at most 30 a second (its budget)
    let advertised = count_in(&s.log, "no addresses available");
    assert!(
        advertised < 3000,
        "every flooded SOLICIT was answered: {advertised}"
    );
}

#[test]
fn dhcpcd6_gets_its_ports_address_and_dns() {
    if !netns_available("dhcpcd -6") {
        return;
    }
    require_tool("dhcpcd");
    let (mut t, s) = dual_stack();
    let _srv = start(&t, &s);
    let vm = t.vm(VM1_MAC);
    wait_no_tentative(&vm.ns);
    let env = t.path("dhcpcd6.env");
    let script = script_at(
        t.dir.path(),
        "dhcpcd6.sh",
        &format!(
            "[ \"$reason\" = BOUND6 ] && env | grep -E '^new_dhcp6' | sort > {}; exit 0",
            env.display()
        ),
    );
    let conf = t.path("dhcpcd6.conf");
    std::fs::write(
        &conf,
        format!(
            "noipv6rs\nipv6only\nia_na 1\noption dhcp6_name_servers, dhcp6_domain_search\nscript {}\n",
            script.display()
        ),
    )
    .unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &vm.ns, "timeout", "30", "dhcpcd", "-f"])
        .arg(&conf)
        .args(["-6", "-1", "-B", "-t", "15", &vm.iface])
        .output()
        .unwrap();
    // dhcpcd keeps its lease outside the namespace
    let _ = std::fs::remove_file(format!("/var/lib/dhcpcd/{}.lease6", vm.iface));
    let text = std::fs::read_to_string(&env).unwrap_or_default();
    assert!(
        text.contains(&format!("new_dhcp6_ia_na1_ia_addr1={VM1_V6}")),
        "dhcpcd: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("new_dhcp6_name_servers=2001:db8:6::53"),
        "{text}"
    );
    assert!(
        text.contains("new_dhcp6_domain_search=openstacklocal"),
        "{text}"
    );
}

/// busybox `udhcpc6` (Debian 13's static busybox; Debian 12 builds none): the stateful port
/// gets its address, DNS and search list, renews on SIGUSR1 and releases on exit (`-R`), the
/// lease leaving the leases file; a stateless one (`-l`) gets its subnet's DNS and its port's
/// bootfile-url (PXE over IPv6) and no address.
#[test]
fn busybox_udhcpc6_binds_renews_and_releases_and_a_stateless_one_gets_its_options() {
    if !netns_available("udhcpc6") {
        return;
    }
    let (mut t, s) = dual_stack();
    let mut opts = std::fs::read_to_string(&s.opts).unwrap();
    opts.push_str("tag:port-p2,option6:bootfile-url,http://[2001:db8:7::1]/boot.ipxe\n");
    std::fs::write(&s.opts, opts).unwrap();
    let _srv = start(&t, &s);

    let vm1 = t.vm(VM1_MAC);
    // busybox's client identifier: a DUID-LL of the interface's MAC
    let duid = format!("00:03:00:01:{VM1_MAC}");
    let mut c = Udhcpc6::start(t.dir.path(), &vm1, &["-R"]);
    let bound = c.wait("bound", 1, Duration::from_secs(20));
    assert_eq!(addr6(&bound, "ipv6"), Some(ip6(VM1_V6)), "{bound:?}");
    assert_eq!(
        addr6(&bound, "dns"),
        Some(ip6("2001:db8:6::53")),
        "{bound:?}"
    );
    assert_eq!(
        bound.get("search").map(|d| d.trim()),
        Some("openstacklocal"),
        "{bound:?}"
    );
    assert_eq!(
        bound.get("lease").map(String::as_str),
        Some("86400"),
        "{bound:?}"
    );
    wait_for_log(
        &s.log,
        &format!(
            "DHCPREPLY({}) {VM1_V6} {duid} host-2001-db8-6--103",
            t.srv_if
        ),
        Duration::from_secs(5),
    );
    wait_until(
        Duration::from_secs(10),
        "the lease in the leases file",
        || leases_text(&s).contains(&format!("{VM1_V6} host-2001-db8-6--103 {duid}")),
    );

    c.renew();
    let renewed = c.wait("renew", 1, Duration::from_secs(15));
    assert_eq!(addr6(&renewed, "ipv6"), Some(ip6(VM1_V6)), "{renewed:?}");
    wait_for_log(
        &s.log,
        &format!("DHCPRENEW({}) {duid}", t.srv_if),
        Duration::from_secs(5),
    );

    c.stop();
    wait_for_log(
        &s.log,
        &format!("DHCPRELEASE({}) {duid}", t.srv_if),
        Duration::from_secs(5),
    );
    wait_until(
        Duration::from_secs(10),
        "the released lease gone from the file",
        || !leases_text(&s).contains(VM1_V6),
    );

    let vm2 = t.vm(VM2_MAC);
    let c2 = Udhcpc6::start(t.dir.path(), &vm2, &["-l", "-O", "bootfile_url"]);
    // busybox names the event of an answered INFORMATION-REQUEST "renew"
    let info = c2.wait("renew", 1, Duration::from_secs(20));
    assert_eq!(addr6(&info, "dns"), Some(ip6("2001:db8:7::53")), "{info:?}");
    assert_eq!(
        info.get("bootfile_url").map(String::as_str),
        Some("http://[2001:db8:7::1]/boot.ipxe"),
        "{info:?}"
    );
    assert!(
        !info.contains_key("ipv6"),
        "a stateless client got an address: {info:?}"
    );
    wait_for_log(
        &s.log,
        &format!("DHCPINFORMATION-REQUEST({})", t.srv_if),
        Duration::from_secs(5),
    );
}

/// busybox writes addresses in full (`2001:0db8:0006:…`): the one address in `key`, parsed.
fn addr6(ev: &std::collections::HashMap<String, String>, key: &str) -> Option<std::net::Ipv6Addr> {
    let v = ev.get(key)?.trim();
    assert!(!v.contains(' '), "one address expected in {key}={v}");
    v.parse().ok()
}

fn ip6(s: &str) -> std::net::Ipv6Addr {
    s.parse().unwrap()
}

/// On a dual-stack network `qdhcp dnsmasq` answers DNS on IPv6 too, as dnsmasq does: the IPv6
/// lines of Neutron's addn_hosts file give AAAA and ip6.arpa PTR, asked at the server's IPv6
/// address by a VM that took its address with dhclient -6.
#[test]
fn dns_answers_aaaa_and_ip6_arpa_over_ipv6_from_neutrons_addn_hosts() {
    if !netns_available("dnsmasq DNS over IPv6") {
        return;
    }
    require_tool("dhclient");
    require_tool("dig");
    let (mut t, s) = dual_stack();
    std::fs::write(
        t.path("addn_hosts"),
        "2001:db8:6::103\thost-2001-db8-6--103.openstacklocal. host-2001-db8-6--103\n\
         2001:db8:6::104\thost-2001-db8-6--104.openstacklocal. host-2001-db8-6--104\n",
    )
    .unwrap();
    let _srv = start(&t, &s);
    wait_for_log(&s.log, "DNS listening on", Duration::from_secs(5));
    let vm = t.vm(VM1_MAC);
    let (ok, c) = dhclient6(&t, &vm, false, "");
    assert!(ok, "no lease: {:?}", c.reasons());
    // the on-link route a router advertisement would give
    sh(&[
        "ip",
        "-n",
        &vm.ns,
        "-6",
        "route",
        "add",
        "2001:db8:6::/64",
        "dev",
        &vm.iface,
    ]);
    let dig = |args: &[&str]| {
        let o = Command::new("ip")
            .args([
                "netns", "exec", &vm.ns, "dig", "+short", "+tries=1", "+time=2",
            ])
            .args(["@2001:db8:6::2"])
            .args(args)
            .output()
            .expect("dig");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(
        dig(&["AAAA", "host-2001-db8-6--104.openstacklocal"]),
        "2001:db8:6::104",
        "{}",
        std::fs::read_to_string(&s.log).unwrap_or_default()
    );
    assert_eq!(
        dig(&["-x", "2001:db8:6::104"]),
        "host-2001-db8-6--104.openstacklocal."
    );
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(log.contains("port 53 (IPv6)"), "{log}");
}
