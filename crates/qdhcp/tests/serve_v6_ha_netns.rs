//! DHCPv6 on several `qdhcp serve` nodes (one PostgreSQL database), as DHCPv4 is served there:
//! the node the network is scheduled to answers with a DUID made from its DHCP port's MAC, and
//! when that node dies its port moves, MAC and addresses with it, to the live node, which
//! answers the VM's next RENEW (or REBIND) under the same server identifier: the VM keeps its
//! address, with no NoBinding.

mod common;
#[path = "../../store/tests/support/pg_server.rs"]
mod pg_server;

use std::time::{Duration, Instant};

use common::serve::Host;
use common::v6::dhclient6_in;
use common::*;
use serde_json::json;

/// The network's DHCP ports as `h` shows them: (binding:host_id, MAC).
fn dhcp_ports(h: &Host, net: &str) -> Vec<(String, String)> {
    let (s, v) = h.http(
        "GET",
        &format!("/v2.0/ports?network_id={net}&device_owner=network:dhcp"),
        None,
    );
    assert_eq!(s, 200, "{v}");
    let mut out: Vec<(String, String)> = v["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["binding:host_id"].as_str().unwrap_or("").to_string(),
                p["mac_address"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < within, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn log_of(h: &Host) -> String {
    std::fs::read_to_string(h.log()).unwrap_or_default()
}

#[test]
fn a_dead_nodes_dhcpv6_network_moves_with_its_duid_and_the_vm_keeps_its_address() {
    if !netns_available("DHCPv6 failover") {
        return;
    }
    require_tool("dhclient");
    let Some(pg) = pg_server::Pg::start() else {
        return;
    };
    let (a, mut b) = (Host::new("ga", 20), Host::new("gb", 20));
    let url = pg.url();
    a.wire_to(&b);
    let node = |h: &Host, name: &str| {
        h.start_with(&[
            "--database",
            &url,
            "--node",
            name,
            "--node-down-time",
            "3",
            "--dhcp-nodes-per-network",
            "1",
        ])
    };
    let mut srv_a = node(&a, "node-a");
    let _srv_b = node(&b, "node-b");
    std::thread::sleep(Duration::from_millis(1500));
    let net = a.flat_network("ha6");
    a.subnet6(&net, "2001:db8:20::/64", "dhcpv6-stateful", json!({}));
    let mut before = Vec::new();
    wait_until("the DHCP port on node-a", Duration::from_secs(15), || {
        before = dhcp_ports(&b, &net);
        before.len() == 1 && before[0].0 == "node-a"
    });
    wait_until("node-a serving DHCPv6", Duration::from_secs(15), || {
        log_of(&a).contains(&format!("network {net}: DHCPv6 listening"))
    });
    assert!(
        !log_of(&b).contains(&format!("network {net}: DHCPv6 listening")),
        "node-b does not serve a network scheduled to node-a only"
    );
    let (s, p) = a.http(
        "POST",
        "/v2.0/ports",
        Some(&json!({"port": {"network_id": net, "name": "vm", "fixed_ips": [{"ip_address": "2001:db8:20::150"}]}})),
    );
    assert_eq!(s, 201, "{p}");
    let mac = p["port"]["mac_address"].as_str().unwrap().to_string();
    let vm = b.vm(&mac);
    let dir = tempfile::tempdir().unwrap();
    let (ok, d) = dhclient6_in(dir.path(), &vm, false, "");
    assert!(ok, "no lease: {:?}\n{}", d.reasons(), log_of(&a));
    let bound = d.wait_reason("BOUND6", 1, Duration::from_secs(5));
    assert_eq!(bound["new_ip6_address"], "2001:db8:20::150");
    // the server identifier is a DUID-LL of node A's DHCP port's MAC
    let duid_ll = format!("00:03:00:01:{}", before[0].1);
    assert!(
        log_of(&a).contains("DHCPREPLY(") && !log_of(&b).contains("DHCPREPLY("),
        "node-a answered"
    );

    srv_a.kill9();
    a.remove_dhcp_namespaces();
    let mut after = Vec::new();
    wait_until("the DHCP port on node-b", Duration::from_secs(20), || {
        after = dhcp_ports(&b, &net);
        after.len() == 1 && after[0].0 == "node-b"
    });
    assert_eq!(after[0].1, before[0].1, "the port moved with its MAC");
    wait_until("node-b serving DHCPv6", Duration::from_secs(10), || {
        log_of(&b).contains(&format!("network {net}: DHCPv6 listening"))
    });
    // the VM's next RENEW (T1 = 10 s) or REBIND names the same server, and node B answers it
    let t0 = Instant::now();
    loop {
        let kept = d.events().into_iter().skip(1).find(|e| {
            matches!(
                e.get("reason").map(String::as_str),
                Some("RENEW6" | "REBIND6")
            )
        });
        if let Some(e) = kept {
            assert_eq!(e["new_ip6_address"], "2001:db8:20::150", "{e:?}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no renewal answered: {:?}\n{}",
            d.reasons(),
            log_of(&b)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let reply = log_of(&b)
        .lines()
        .find(|l| l.contains("DHCPREPLY(") && l.contains("2001:db8:20::150"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("node-b logged no REPLY:\n{}", log_of(&b)));
    assert!(
        !log_of(&b).contains("DHCPSOLICIT("),
        "the VM never had to solicit again (no NoBinding): {reply}"
    );
    assert!(
        !d.reasons().iter().any(|r| r == "EXPIRE6" || r == "DEPREF6"),
        "{:?}",
        d.reasons()
    );
    // every lease the client holds names the DUID-LL of the port's MAC (the same before and
    // after the failover)
    let ids = server_ids(&std::fs::read_to_string(&d.leasefile).unwrap_or_default());
    assert!(!ids.is_empty(), "no server-id in the client's lease file");
    assert!(ids.iter().all(|i| *i == duid_ll), "{ids:?} vs {duid_ll}");
}

/// The `dhcp6.server-id` values in dhclient's lease file, as two-digit colon hex.
fn server_ids(leases: &str) -> Vec<String> {
    leases
        .lines()
        .filter_map(|l| l.trim().strip_prefix("option dhcp6.server-id "))
        .map(|v| {
            v.trim_end_matches(';')
                .split(':')
                .map(|b| format!("{:02x}", u8::from_str_radix(b, 16).unwrap_or(0)))
                .collect::<Vec<_>>()
                .join(":")
        })
        .collect()
}
