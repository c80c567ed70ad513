//! `qdhcp serve` with IPv6 subnets, driven by the real OpenStack CLI: a dhcpv6-stateful subnet
//! beside an IPv4 one, Neutron's validation of the address modes, a VM namespace on the bridge
//! that takes its port's IPv6 address, DNS servers and search list with ISC `dhclient -6`,
//! resolves a neighbour's AAAA and PTR at the DHCP port, reads its metadata at
//! `[fe80::a9fe:a9fe]`, and loses the address once its port is deleted.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::serve::{openstack_available, Host};
use common::v6::dhclient6_in;
use common::*;
use serde_json::{json, Value};

/// The port's address in the subnet `cidr_prefix` (text prefix of the address).
fn address_in(p: &Value, prefix: &str) -> String {
    p["fixed_ips"]
        .as_array()
        .expect("fixed_ips")
        .iter()
        .filter_map(|f| f["ip_address"].as_str())
        .find(|a| a.starts_with(prefix))
        .unwrap_or_else(|| panic!("no address under {prefix} in {p}"))
        .to_string()
}

fn in_vm(vm: &Vm, args: &[&str]) -> String {
    let o = Command::new("ip")
        .args(["netns", "exec", &vm.ns])
        .args(args)
        .output()
        .expect("command in the VM");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A random DUID byte can be a quote or a backslash, which dhclient writes as `\"` and
/// `\\` (CI once failed on a DUID holding one).
#[test]
fn dhclients_quoted_duid_is_read_with_every_escape_it_writes() {
    let line = r#"default-duid "\000\001\000\001\"\\a \377";"#;
    assert_eq!(
        common::v6::dhclient_quoted_bytes(line),
        Some(vec![0, 1, 0, 1, b'"', b'\\', b'a', b' ', 0xff])
    );
    assert_eq!(
        common::v6::dhclient_quoted_bytes(r#"default-duid "\00"#),
        None
    );
}

#[test]
fn a_vm_on_a_dhcpv6_stateful_subnet_gets_its_ports_address_dns_and_metadata_and_loses_it_on_delete()
{
    if !netns_available("serve v6") || !openstack_available("serve v6") {
        return;
    }
    require_tool("dhclient");
    require_tool("dig");
    require_tool("curl");
    let mut h = Host::new("6", 8);
    let _srv = h.start();
    h.openstack_json(&[
        "network",
        "create",
        "dual_net",
        "--provider-network-type",
        "flat",
        "--provider-physical-network",
        "physnet1",
    ]);
    h.openstack_json(&[
        "subnet",
        "create",
        "--network",
        "dual_net",
        "--subnet-range",
        "172.16.1.0/24",
        "v4_subnet",
    ]);
    // Neutron's refusal of modes that differ, with its error type
    let (ok, text) = h.openstack(&[
        "subnet",
        "create",
        "--network",
        "dual_net",
        "--ip-version",
        "6",
        "--ipv6-address-mode",
        "slaac",
        "--ipv6-ra-mode",
        "dhcpv6-stateful",
        "--subnet-range",
        "2001:db8:17::/64",
        "bad_v6",
    ]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("400") && text.contains("must be the same value"),
        "{text}"
    );
    let s = h.openstack_json(&[
        "subnet",
        "create",
        "--network",
        "dual_net",
        "--ip-version",
        "6",
        "--ipv6-address-mode",
        "dhcpv6-stateful",
        "--ipv6-ra-mode",
        "dhcpv6-stateful",
        "--subnet-range",
        "2001:db8:16::/64",
        "v6_subnet",
    ]);
    assert_eq!(s["ip_version"], 6, "{s}");
    assert_eq!(s["ipv6_address_mode"], "dhcpv6-stateful", "{s}");
    assert_eq!(s["ipv6_ra_mode"], "dhcpv6-stateful", "{s}");
    assert_eq!(s["gateway_ip"], "2001:db8:16::1", "{s}");
    let vm1 = h.openstack_json(&[
        "port",
        "create",
        "--network",
        "dual_net",
        "--device",
        "0b5c6e4e-6a0e-4c1f-9f45-0123456789ab",
        "vm1-port",
    ]);
    let vm2 = h.openstack_json(&["port", "create", "--network", "dual_net", "vm2-port"]);
    let mac = vm1["mac_address"].as_str().unwrap().to_string();
    let v6 = address_in(&vm1, "2001:db8:16:");
    let v6_vm2 = address_in(&vm2, "2001:db8:16:");
    let (code, dhcp) = h.http("GET", "/v2.0/ports?device_owner=network:dhcp", None);
    assert_eq!(code, 200, "{dhcp}");
    let dhcp = dhcp["ports"][0].clone();
    assert_eq!(
        address_in(&dhcp, "2001:db8:16:"),
        "2001:db8:16::2",
        "{dhcp}"
    );

    // the VM boots on the bridge and asks with dhclient -6
    let vm = h.vm(&mac);
    let (ok, d) = dhclient6_in(h.dir.path(), &vm, false, "");
    assert!(
        ok,
        "dhclient -6 got no lease; events {:?}; log:\n{}",
        d.reasons(),
        std::fs::read_to_string(h.log()).unwrap_or_default()
    );
    let env = d.wait_reason("BOUND6", 1, Duration::from_secs(5));
    assert_eq!(env["new_ip6_address"], v6);
    assert_eq!(env["new_dhcp6_name_servers"], "2001:db8:16::2");
    assert!(
        env["new_dhcp6_domain_search"].contains("openstacklocal"),
        "{env:?}"
    );
    let log = h.wait_log("DHCPREPLY(ns-");
    assert!(log.contains("DHCPSOLICIT(ns-"), "{log}");
    assert!(log.contains("DHCPADVERTISE(ns-"), "{log}");
    assert!(log.contains(&v6), "{log}");
    // its ADVERTISE and REPLY left as frames to its MAC, not through the UDP socket's route
    // and neighbour lookups (dataplane::linkout)
    let (_, metrics) = h.http_text("/metrics");
    let frames: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("qdhcp_dhcpv6_frames_out_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(frames >= 2, "{frames} DHCPv6 frames out:\n{metrics}");

    // the lease in the operators' view, with the client's DUID
    let (code, leases) = h.http("GET", "/v2.0/leases", None);
    assert_eq!(code, 200, "{leases}");
    let row = leases["leases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["ip_address"] == v6.as_str())
        .unwrap_or_else(|| panic!("no lease for {v6}: {leases}"))
        .clone();
    assert_eq!(row["state"], "bound", "{row}");
    assert_eq!(row["ip_version"], 6, "{row}");
    assert_eq!(row["port_id"], vm1["id"], "{row}");
    assert_eq!(row["client_duid"], d.duid().as_str(), "{row}");

    // DNS at the DHCP port's IPv6 address, the server option 23 named (the on-link route is
    // what the router's advertisement would give)
    let st = Command::new("ip")
        .args([
            "-n",
            &vm.ns,
            "-6",
            "route",
            "add",
            "2001:db8:16::/64",
            "dev",
            &vm.iface,
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let dns = "2001:db8:16::2";
    let name2 = format!("host-{}.openstacklocal", v6_vm2.replace(':', "-"));
    let at = format!("@{dns}");
    let start = Instant::now();
    let aaaa = loop {
        let a = in_vm(
            &vm,
            &["dig", "+short", "+tries=1", "+time=2", &at, "AAAA", &name2],
        );
        if !a.is_empty() || start.elapsed() > Duration::from_secs(10) {
            break a;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(aaaa, v6_vm2, "AAAA of the neighbour");
    let ptr = in_vm(
        &vm,
        &["dig", "+short", "+tries=1", "+time=2", &at, "-x", &v6_vm2],
    );
    assert_eq!(
        ptr,
        format!("{name2}."),
        "PTR of the neighbour's IPv6 address"
    );

    // metadata at the IPv6 address, from the VM's link-local source
    let url = format!(
        "http://[fe80::a9fe:a9fe%{}]/openstack/latest/meta_data.json",
        vm.iface
    );
    // (once, in CI under load, the first request got no answer at all: asked again for up to
    // 15 s, and if it never answers the server's metadata lines say whether it listened)
    let start = Instant::now();
    let body = loop {
        let b = in_vm(&vm, &["curl", "-s", "-g", "--max-time", "5", &url]);
        if !b.is_empty() || start.elapsed() > Duration::from_secs(15) {
            break b;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let md: Value = serde_json::from_str(&body).unwrap_or_else(|e| {
        let log = std::fs::read_to_string(h.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("metadata")).collect();
        panic!("metadata over IPv6: {e}: {body:?}; the server's metadata lines:\n{lines:#?}")
    });
    assert_eq!(md["uuid"], "0b5c6e4e-6a0e-4c1f-9f45-0123456789ab", "{md}");

    // port delete: the next renewal is answered NoBinding and the address goes away
    let (ok, out) = h.openstack(&["port", "delete", "vm1-port"]);
    assert!(ok, "{out}");
    let start = Instant::now();
    loop {
        let addrs = in_vm(&vm, &["ip", "-6", "addr", "show", "dev", &vm.iface]);
        let gone = !addrs.contains(&v6);
        if gone {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "{v6} still on the VM after its port was deleted; events {:?}",
            d.reasons()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// kill -9 and a restart: the network is served again with the same DUID (made from the DHCP
/// port's MAC), the REPLYed lease comes back from the journal (the leases view lists it), the
/// VM's next RENEW is answered, and readiness waits for the DHCPv6 listener too.
#[test]
fn after_kill_9_the_dhcpv6_lease_comes_back_and_the_vms_renewal_is_answered() {
    if !netns_available("serve v6 restart") {
        return;
    }
    require_tool("dhclient");
    let mut h = Host::new("r6", 8);
    let mut srv = h.start();
    let net = h.flat_network("v6only");
    h.subnet6(&net, "2001:db8:30::/64", "dhcpv6-stateful", json!({}));
    let (s, p) = h.http(
        "POST",
        "/v2.0/ports",
        Some(&json!({"port": {"network_id": net, "name": "vm"}})),
    );
    assert_eq!(s, 201, "{p}");
    let mac = p["port"]["mac_address"].as_str().unwrap().to_string();
    let addr = p["port"]["fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(addr.starts_with("2001:db8:30::"), "{p}");
    h.wait_log(&format!("network {net}: DHCPv6 listening"));
    let vm = h.vm(&mac);
    let (ok, d) = dhclient6_in(h.dir.path(), &vm, false, "");
    assert!(
        ok,
        "{:?}\n{}",
        d.reasons(),
        std::fs::read_to_string(h.log()).unwrap()
    );
    assert_eq!(
        d.wait_reason("BOUND6", 1, Duration::from_secs(5))["new_ip6_address"],
        addr
    );

    srv.kill9();
    let _srv = h.start();
    let (code, ready) = h.http("GET", "/readyz", None);
    let start = Instant::now();
    let mut code = code;
    while code != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never ready: {ready}"
        );
        std::thread::sleep(Duration::from_millis(100));
        code = h.http("GET", "/readyz", None).0;
    }
    // ready means DHCPv6 listens again
    let log = std::fs::read_to_string(h.log()).unwrap();
    assert_eq!(
        log.matches(&format!("network {net}: DHCPv6 listening"))
            .count(),
        2,
        "{log}"
    );
    let (_, leases) = h.http("GET", "/v2.0/leases", None);
    let row = leases["leases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["ip_address"] == addr.as_str())
        .unwrap_or_else(|| panic!("the lease did not come back from the journal: {leases}"))
        .clone();
    assert_eq!(row["client_duid"], d.duid().as_str(), "{row}");
    // the next RENEW (T1 = 4 s) names the server the VM knows, and is answered
    let renewed = d.wait_reason("RENEW6", 1, Duration::from_secs(15));
    assert_eq!(renewed["new_ip6_address"], addr, "{renewed:?}");
    let log = std::fs::read_to_string(h.log()).unwrap();
    assert_eq!(
        log.matches("DHCPSOLICIT(").count(),
        1,
        "the VM never had to solicit again: {log}"
    );
}

/// A dhcpv6-stateless subnet in `qdhcp serve`: the port's address is its EUI-64 (asking for
/// another is 400 `AllocationOnAutoAddressSubnet`), and `dhclient -6 -S` gets the subnet's DNS
/// servers and search list, and no address, from the DHCP port.
#[test]
fn a_stateless_subnets_vm_gets_options_only_and_its_port_an_eui64_address() {
    if !netns_available("serve v6 stateless") {
        return;
    }
    require_tool("dhclient");
    let mut h = Host::new("s6", 60);
    let _srv = h.start();
    let net = h.flat_network("sl");
    let sub = h.subnet6(
        &net,
        "2001:db8:40::/64",
        "dhcpv6-stateless",
        json!({"dns_nameservers": ["2001:db8:40::53"]}),
    );
    assert_eq!(sub["ipv6_address_mode"], "dhcpv6-stateless");
    // Neutron's refusal of modes that differ: 400 InvalidInput
    let (s, e) = h.http(
        "POST",
        "/v2.0/subnets",
        Some(
            &json!({"subnet": {"network_id": net, "cidr": "2001:db8:41::/64", "ip_version": 6,
            "ipv6_address_mode": "slaac", "ipv6_ra_mode": "dhcpv6-stateless"}}),
        ),
    );
    assert_eq!(
        (s, e["NeutronError"]["type"].as_str()),
        (400, Some("InvalidInput")),
        "{e}"
    );
    let (s, e) = h.http(
        "POST",
        "/v2.0/ports",
        Some(
            &json!({"port": {"network_id": net, "fixed_ips": [{"ip_address": "2001:db8:40::99"}]}}),
        ),
    );
    assert_eq!(
        (s, e["NeutronError"]["type"].as_str()),
        (400, Some("AllocationOnAutoAddressSubnet")),
        "{e}"
    );
    let mac = "fa:16:3e:40:00:07";
    let (s, p) = h.http(
        "POST",
        "/v2.0/ports",
        Some(&json!({"port": {"network_id": net, "mac_address": mac}})),
    );
    assert_eq!(s, 201, "{p}");
    // Neutron's EUI-64 of fa:16:3e:40:00:07 in 2001:db8:40::/64
    let eui: std::net::Ipv6Addr = p["port"]["fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let want: std::net::Ipv6Addr = "2001:db8:40::f816:3eff:fe40:7".parse().unwrap();
    assert_eq!(eui, want, "{p}");
    h.wait_log(&format!("network {net}: DHCPv6 listening"));
    let vm = h.vm(mac);
    let (ok, c) = dhclient6_in(h.dir.path(), &vm, true, "");
    assert!(
        ok,
        "no reply: {:?}\n{}",
        c.reasons(),
        std::fs::read_to_string(h.log()).unwrap()
    );
    let ev = c
        .events()
        .into_iter()
        .find(|e| e.contains_key("new_dhcp6_name_servers"))
        .unwrap_or_else(|| panic!("no name servers: {:?}", c.events()));
    assert_eq!(ev["new_dhcp6_name_servers"], "2001:db8:40::53", "{ev:?}");
    assert!(
        ev.get("new_dhcp6_domain_search")
            .is_some_and(|d| d.contains("openstacklocal")),
        "{ev:?}"
    );
    assert!(!ev.contains_key("new_ip6_address"), "{ev:?}");
    h.wait_log("DHCPINFORMATION-REQUEST(ns-");
}
