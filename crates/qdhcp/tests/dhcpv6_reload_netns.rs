//! `qdhcp dnsmasq` DHCPv6 across changes: a host line added by SIGHUP is served without a
//! restart, a leases file written by dnsmasq before qdhcp took over keeps its DHCPv6 leases,
//! and Rapid Commit with `--dhcp-rapid-commit` (ISC `dhclient -6` asking for it).

mod common;

use std::time::Duration;

use common::v6::*;
use common::*;
use nix::sys::signal::Signal;

#[test]
fn a_host_added_by_sighup_is_served_without_a_restart() {
    if !netns_available("dhcpv6 sighup") {
        return;
    }
    require_tool("dhclient");
    let (mut t, s) = dual_stack();
    let srv = start(&t, &s);
    let mac = "fa:16:3e:7a:06:55";
    let vm = t.vm(mac);
    let (ok, _c) = dhclient6(&t, &vm, false, "timeout 4;\n");
    assert!(!ok, "served before its host line exists");
    std::fs::write(
        &s.host,
        format!("{HOSTS}{mac},tag:dhcpv6,host-2001-db8-6--155.openstacklocal,[2001:db8:6::155]\n"),
    )
    .unwrap();
    srv.signal(Signal::SIGHUP);
    wait_for_log(&s.log, "DHCPv6 table rebuilt", Duration::from_secs(5));
    let (ok, c) = dhclient6(&t, &vm, false, "");
    assert!(ok, "not served after SIGHUP: {:?}", c.reasons());
    let ev = c.wait_reason("BOUND6", 1, Duration::from_secs(1));
    assert_eq!(
        ev.get("new_ip6_address").map(String::as_str),
        Some("2001:db8:6::155")
    );
    assert_eq!(
        count_in(&s.log, "started, qdhcp"),
        1,
        "restarted instead of reloading"
    );
}

#[test]
fn dnsmasqs_v6_leases_and_duid_are_taken_from_the_leases_file() {
    if !netns_available("dhcpv6 leases file") {
        return;
    }
    let (t, s) = dual_stack();
    // what dnsmasq left: its DUID line and a lease of VM1 (no journal yet)
    let client = "00:01:00:01:2e:f1:00:01:fa:16:3e:7a:06:03";
    let server = "00:01:00:01:2e:f1:aa:bb:fa:16:3e:00:00:fe";
    std::fs::write(
        &s.leases,
        format!("duid {server}\n4102444800 1234 {VM1_V6} host-2001-db8-6--103 {client}\n"),
    )
    .unwrap();
    let _srv = start(&t, &s);
    wait_for_log(
        &s.log,
        "1 DHCPv6 lease(s) taken from",
        Duration::from_secs(5),
    );
    let text = leases_text(&s);
    assert!(text.contains(&format!("duid {server}")), "{text}");
    assert!(
        text.contains(&format!("1234 {VM1_V6} host-2001-db8-6--103 {client}")),
        "{text}"
    );
}

#[test]
fn rapid_commit_gives_a_reply_at_once_when_the_server_allows_it() {
    if !netns_available("dhcpv6 rapid commit") {
        return;
    }
    require_tool("dhclient");
    let (mut t, mut s) = dual_stack();
    s.args.push("--dhcp-rapid-commit".into());
    let _srv = start(&t, &s);
    let vm = t.vm(VM1_MAC);
    let (ok, c) = dhclient6(&t, &vm, false, "send dhcp6.rapid-commit;\n");
    assert!(ok, "no lease: {:?}", c.reasons());
    let ev = c.wait_reason("BOUND6", 1, Duration::from_secs(1));
    assert_eq!(ev.get("new_ip6_address").map(String::as_str), Some(VM1_V6));
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(
        log.contains(&format!("DHCPREPLY({}) {VM1_V6}", t.srv_if)),
        "{log}"
    );
    assert!(
        !log.contains("DHCPADVERTISE("),
        "an ADVERTISE despite Rapid Commit:\n{log}"
    );
    assert!(
        !log.contains("DHCPREQUEST("),
        "a REQUEST despite Rapid Commit:\n{log}"
    );
}
