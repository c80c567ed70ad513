//! Several `qdhcp serve` nodes on one PostgreSQL database: writes through one node reach the
//! other (change feed); IPAM never gives an address twice across nodes; and nodes serve the
//! same networks, each on a DHCP port of its own (Neutron's DHCP agent scheduler), with a VM
//! on the layer 2 shared by two test hosts: both nodes answer its DISCOVER, the node it did not
//! choose ignores its REQUEST, and when a node dies (kill -9 and its namespaces gone, as with a
//! host) the VM keeps its address from the other without a NAK. (Its renewals to the dead
//! server go unanswered until T2, then it broadcasts and the survivor answers.)

mod common;
#[path = "../../store/tests/support/pg_server.rs"]
mod pg_server;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::serve::Host;
use common::*;
use serde_json::{json, Value};

/// (binding:host_id, first IP, MAC, id) of the network's DHCP ports as `h`'s API shows them.
fn dhcp_ports(h: &Host, net: &str) -> Vec<(String, String, String, String)> {
    let (s, v) = h.http("GET", &format!("/v2.0/ports?network_id={net}"), None);
    assert_eq!(s, 200, "{v}");
    let mut out: Vec<_> = v["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["device_owner"] == "network:dhcp")
        .map(|p| {
            (
                p["binding:host_id"].as_str().unwrap_or("").to_string(),
                p["fixed_ips"][0]["ip_address"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                p["mac_address"].as_str().unwrap().to_string(),
                p["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Waits until `h` shows the network's DHCP ports on exactly `hosts`.
fn wait_ports_on(
    h: &Host,
    net: &str,
    hosts: &[&str],
    within: Duration,
) -> Vec<(String, String, String, String)> {
    let t0 = Instant::now();
    loop {
        let p = dhcp_ports(h, net);
        if p.iter().map(|x| x.0.as_str()).collect::<Vec<_>>() == hosts {
            return p;
        }
        assert!(
            t0.elapsed() < within,
            "DHCP ports never on {hosts:?}: {p:?}\n{}",
            std::fs::read_to_string(h.log()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Lines of `h`'s log that hold all of `words`.
fn lines_with(h: &Host, words: &[&str]) -> Vec<String> {
    std::fs::read_to_string(h.log())
        .unwrap_or_default()
        .lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .map(String::from)
        .collect()
}

fn wait_line(h: &Host, words: &[&str], within: Duration) -> String {
    let t0 = Instant::now();
    loop {
        if let Some(l) = lines_with(h, words).pop() {
            return l;
        }
        assert!(
            t0.elapsed() < within,
            "no log line with {words:?} in\n{}",
            std::fs::read_to_string(h.log()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A flat network on physnet1 with one subnet, created through `h`; returns its id.
fn network(h: &Host, cidr: &str, pool: (&str, &str)) -> String {
    let (s, n) = h.http(
        "POST",
        "/v2.0/networks",
        Some(&json!({"network": {"name": "ha", "provider:network_type": "flat", "provider:physical_network": "physnet1"}})),
    );
    assert_eq!(s, 201, "{n}");
    let net = n["network"]["id"].as_str().unwrap().to_string();
    let (s, sub) = h.http(
        "POST",
        "/v2.0/subnets",
        Some(
            &json!({"subnet": {"network_id": net, "cidr": cidr, "ip_version": 4,
            "allocation_pools": [{"start": pool.0, "end": pool.1}]}}),
        ),
    );
    assert_eq!(s, 201, "{sub}");
    net
}

/// A port for a VM at `ip`, created through `api`, and the VM on `at`'s bridge bound by
/// dhclient (files in `dir`): (MAC, the running client, its BOUND event).
fn vm_bound(
    api: &Host,
    at: &mut Host,
    net: &str,
    ip: &str,
    dir: &std::path::Path,
) -> (String, Dhclient, HashMap<String, String>) {
    let (s, p) = api.http(
        "POST",
        "/v2.0/ports",
        Some(
            &json!({"port": {"network_id": net, "name": "vm", "fixed_ips": [{"ip_address": ip}]}}),
        ),
    );
    assert_eq!(s, 201, "{p}");
    let mac = p["port"]["mac_address"].as_str().unwrap().to_string();
    let vm = at.vm(&mac);
    let (ok, d) = dhclient_at(dir, &vm, 20);
    let logs = [api, &*at].map(|h| std::fs::read_to_string(h.log()).unwrap_or_default());
    assert!(ok, "{logs:?}");
    let bound = d.wait_reason("BOUND", 1, Duration::from_secs(5));
    assert_eq!(bound["new_ip_address"], ip, "{bound:?}");
    (mac, d, bound)
}

/// A PostgreSQL server and two test hosts for nodes on it; `None` (after saying why) where
/// namespaces or PostgreSQL cannot run outside CI.
fn pair(what: &str, tags: (&str, &str), lease: u32) -> Option<(pg_server::Pg, Host, Host)> {
    if !netns_available(what) {
        return None;
    }
    require_tool("dhclient");
    let pg = pg_server::Pg::start()?;
    Some((pg, Host::new(tags.0, lease), Host::new(tags.1, lease)))
}

/// Starts a node on `url` with a 3 s down time (heartbeats every second, so that the others'
/// schedulers see it alive within a second or two).
fn node(h: &Host, url: &str, name: &str, per_network: &str) -> Proc {
    h.start_with(&[
        "--database",
        url,
        "--node",
        name,
        "--node-down-time",
        "3",
        "--dhcp-nodes-per-network",
        per_network,
    ])
}

/// Two nodes serve the network, each on its own DHCP port: both offer the VM its
/// reservation, the one it did not choose ignores its REQUEST, option 6 names both ports;
/// after the chosen node dies the VM rebinds (T2) to the other and keeps its address, with no
/// NAK anywhere.
#[test]
fn two_nodes_both_offer_and_a_vm_rebinds_to_the_survivor_without_a_nak() {
    let Some((pg, a, mut b)) = pair("two DHCP nodes", ("ha", "hb"), 40) else {
        return;
    };
    require_tool("dig");
    let url = pg.url();
    a.wire_to(&b);
    let mut srv_a = Some(node(&a, &url, "node-a", "2"));
    let mut srv_b = Some(node(&b, &url, "node-b", "2"));
    let net = network(&a, "172.16.9.0/24", ("172.16.9.100", "172.16.9.200"));
    let ports = wait_ports_on(&a, &net, &["node-a", "node-b"], Duration::from_secs(15));
    wait_ports_on(&b, &net, &["node-a", "node-b"], Duration::from_secs(15));
    assert_ne!(
        ports[0].1, ports[1].1,
        "each node's port has its own address"
    );
    for h in [&a, &b] {
        wait_line(
            h,
            &[&format!("network {net}: DHCP listening")],
            Duration::from_secs(15),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let (mac, d, bound) = vm_bound(&a, &mut b, &net, "172.16.9.150", dir.path());
    let mut dns: Vec<&str> = bound["new_domain_name_servers"].split(' ').collect();
    dns.sort();
    assert_eq!(
        dns,
        [ports[0].1.as_str(), ports[1].1.as_str()],
        "option 6: both DHCP ports"
    );
    // each node's DHCP port answers the VM's DNS queries with the network's names
    for (_, ip, _, _) in &ports {
        let out = std::process::Command::new("ip")
            .args([
                "netns", "exec", &d.ns, "dig", "+short", "+tries=2", "+time=2",
            ])
            .arg(format!("@{ip}"))
            .arg("host-172-16-9-150.openstacklocal")
            .output()
            .expect("dig");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "172.16.9.150",
            "DNS on the DHCP port {ip}"
        );
    }
    // both answered the DISCOVER from the same reservation
    for h in [&a, &b] {
        wait_line(
            h,
            &["DHCPOFFER(", "172.16.9.150", &mac],
            Duration::from_secs(5),
        );
    }
    let chosen = bound["new_dhcp_server_identifier"].clone();
    let (chosen_is_a, survivor) = if chosen == ports[0].1 {
        (true, &b)
    } else {
        assert_eq!(chosen, ports[1].1, "server identifier is one of the ports");
        (false, &a)
    };
    // the other node saw the REQUEST for the chosen server and stayed silent
    wait_line(
        survivor,
        &["DHCPREQUEST(", &mac, "for another server, ignored"],
        Duration::from_secs(5),
    );
    // the chosen node dies with its host
    let (dead, dead_srv) = if chosen_is_a {
        (&a, &mut srv_a)
    } else {
        (&b, &mut srv_b)
    };
    dead_srv.take().unwrap().kill9();
    dead.remove_dhcp_namespaces();
    let acks_before = lines_with(survivor, &["DHCPACK(", &mac]).len();
    // T1 = 10 s: renewals to the dead server go unanswered; T2 = 17.5 s: rebind by broadcast
    // T1 = 20 s: renewals to the dead server go unanswered; after T2 = 35 s the client
    // broadcasts (ISC dhclient still calls it RENEW) and the survivor acks the same address
    let survivor_ip = if chosen_is_a {
        &ports[1].1
    } else {
        &ports[0].1
    };
    let t0 = Instant::now();
    let kept = loop {
        let after_bound = d
            .events()
            .into_iter()
            .skip_while(|e| e["reason"] != "BOUND")
            .skip(1);
        if let Some(e) = after_bound
            .filter(|e| matches!(e["reason"].as_str(), "RENEW" | "REBIND"))
            .find(|e| e.get("new_dhcp_server_identifier") == Some(survivor_ip))
        {
            break e;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "never rebound to the survivor: {:#?}\n{}",
            d.events(),
            std::fs::read_to_string(survivor.log()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(kept["new_ip_address"], "172.16.9.150", "{kept:?}");
    assert!(
        lines_with(survivor, &["DHCPACK(", &mac]).len() > acks_before,
        "the survivor acked the rebind"
    );
    for h in [&a, &b] {
        assert!(
            lines_with(h, &["DHCPNAK"]).is_empty(),
            "no NAK: {:?}",
            lines_with(h, &["DHCPNAK"])
        );
    }
    assert!(
        !d.reasons().iter().any(|r| r == "EXPIRE" || r == "FAIL"),
        "{:?}",
        d.reasons()
    );
}

/// One node per network: the network is on node A only; when A dies, node B (after the down
/// time) takes over A's DHCP port with its address and MAC, plumbs it and serves, and the VM
/// keeps its address; Neutron's agent API shows the network on B.
#[test]
fn a_dead_nodes_network_moves_to_a_live_node_with_its_address() {
    let Some((pg, a, mut b)) = pair("DHCP failover", ("fa", "fb"), 20) else {
        return;
    };
    let url = pg.url();
    a.wire_to(&b);
    let mut srv_a = node(&a, &url, "node-a", "1");
    let _srv_b = node(&b, &url, "node-b", "1");
    // both nodes live before the network is made
    std::thread::sleep(Duration::from_millis(1500));
    let net = network(&a, "172.16.10.0/24", ("172.16.10.100", "172.16.10.200"));
    let before = wait_ports_on(&b, &net, &["node-a"], Duration::from_secs(15));
    wait_line(
        &a,
        &[&format!("network {net}: DHCP listening")],
        Duration::from_secs(15),
    );
    assert!(
        lines_with(&b, &[&format!("network {net}: DHCP listening")]).is_empty(),
        "node B does not serve a network scheduled to A only"
    );
    let dir = tempfile::tempdir().unwrap();
    let (mac, d, bound) = vm_bound(&a, &mut b, &net, "172.16.10.150", dir.path());
    assert_eq!(bound["new_dhcp_server_identifier"], before[0].1.as_str());
    srv_a.kill9();
    a.remove_dhcp_namespaces();
    let t0 = Instant::now();
    let after = wait_ports_on(&b, &net, &["node-b"], Duration::from_secs(20));
    let moved_in = t0.elapsed();
    assert_eq!(
        (&after[0].1, &after[0].2, &after[0].3),
        (&before[0].1, &before[0].2, &before[0].3),
        "the same port, address and MAC"
    );
    wait_line(
        &b,
        &[&format!("network {net}: DHCP listening")],
        Duration::from_secs(10),
    );
    let (s, agents) = b.http("GET", &format!("/v2.0/networks/{net}/dhcp-agents"), None);
    assert_eq!(s, 200);
    let hosts: Vec<&Value> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["host"])
        .collect();
    assert_eq!(hosts, [&json!("node-b")], "{agents}");
    // the next renewal (unicast to the same server address, or a rebind) is acked by B
    let t1 = Instant::now();
    loop {
        let kept = d.events().into_iter().skip(1).find(|e| {
            matches!(
                e.get("reason").map(String::as_str),
                Some("RENEW" | "REBIND")
            )
        });
        if let Some(e) = kept {
            assert_eq!(e["new_ip_address"], "172.16.10.150", "{e:?}");
            eprintln!(
                "moved in {moved_in:?}; the VM's {} was acked by node B",
                e["reason"]
            );
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(30),
            "no renewal acked: {:?}\n{}",
            d.reasons(),
            std::fs::read_to_string(b.log()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!lines_with(&b, &["DHCPACK(", "172.16.10.150", &mac]).is_empty());
    assert!(lines_with(&b, &["DHCPNAK"]).is_empty());
}

/// Two nodes on one PostgreSQL database: what is written through one node's API reaches the
/// other's registry and reservation tables through the change feed (LISTEN/NOTIFY), and a VM
/// behind the second node gets the address of a port created through the first.
#[test]
fn a_port_created_through_one_node_is_served_by_another_on_the_same_database() {
    let Some((pg, a, mut b)) = pair("change feed", ("ca", "cb"), 60) else {
        return;
    };
    let url = pg.url();
    let _srv_a = node(&a, &url, "node-a", "2");
    let _srv_b = node(&b, &url, "node-b", "2");
    let (s, n) = a.http("POST", "/v2.0/networks", Some(&json!({"network": {"name": "shared", "provider:network_type": "flat", "provider:physical_network": "physnet1"}})));
    assert_eq!(s, 201, "{n}");
    let net = n["network"]["id"].as_str().unwrap().to_string();
    let (s, sub) = a.http("POST", "/v2.0/subnets", Some(&json!({"subnet": {"network_id": net, "cidr": "172.16.7.0/24", "ip_version": 4, "allocation_pools": [{"start": "172.16.7.100", "end": "172.16.7.200"}]}})));
    assert_eq!(s, 201, "{sub}");
    let (s, p) = a.http("POST", "/v2.0/ports", Some(&json!({"port": {"network_id": net, "name": "vm-b", "fixed_ips": [{"ip_address": "172.16.7.150"}]}})));
    assert_eq!(s, 201, "{p}");
    let mac = p["port"]["mac_address"].as_str().unwrap().to_string();
    // node B's API shows it, and its log says it came through the feed
    b.wait_log("changes from other nodes applied");
    let t0 = std::time::Instant::now();
    loop {
        let (_, ports) = b.http("GET", "/v2.0/ports?name=vm-b", None);
        if ports["ports"][0]["mac_address"] == mac.as_str() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "node B never saw the port: {ports}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // the scheduler gives node B a DHCP port of its own on the network (two per network)
    b.wait_log(&format!("network {net}: DHCP listening"));
    let vm = b.vm(&mac);
    let dir = tempfile::tempdir().unwrap();
    let (ok, d) = dhclient_at(dir.path(), &vm, 20);
    assert!(
        ok,
        "{}",
        std::fs::read_to_string(b.log()).unwrap_or_default()
    );
    let bound = d.wait_reason("BOUND", 1, Duration::from_secs(5));
    assert_eq!(bound["new_ip_address"], "172.16.7.150", "{bound:?}");
    // a delete through node A is seen by node B too
    let pid = p["port"]["id"].as_str().unwrap().to_string();
    let (s, _) = a.http("DELETE", &format!("/v2.0/ports/{pid}"), None);
    assert_eq!(s, 204);
    let t0 = std::time::Instant::now();
    loop {
        let (s, _) = b.http("GET", &format!("/v2.0/ports/{pid}"), None);
        if s == 404 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "node B still has the port"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Concurrent creates through two nodes on one PostgreSQL database and a small pool: no
/// address or MAC is given twice (the database's unique constraints refuse the loser, which
/// answers 409 and catches up), and the exhausted pool is answered 409 on both nodes.
#[test]
fn concurrent_creates_through_two_nodes_never_give_an_address_twice() {
    let Some((pg, a, b)) = pair("ipam across nodes", ("ia", "ib"), 60) else {
        return;
    };
    let url = pg.url();
    // one DHCP port in the network, whichever node the scheduler sees when
    let _srv_a = node(&a, &url, "node-a", "1");
    let _srv_b = node(&b, &url, "node-b", "1");
    let (s, n) = a.http(
        "POST",
        "/v2.0/networks",
        Some(&json!({"network": {"name": "small", "provider:network_type": "local"}})),
    );
    assert_eq!(s, 201, "{n}");
    let net = n["network"]["id"].as_str().unwrap().to_string();
    // 12 addresses: the DHCP port takes one, 11 are left for 2 x 10 creates
    let (s, sub) = a.http("POST", "/v2.0/subnets", Some(&json!({"subnet": {"network_id": net, "cidr": "172.16.8.0/24", "ip_version": 4, "allocation_pools": [{"start": "172.16.8.10", "end": "172.16.8.21"}]}})));
    assert_eq!(s, 201, "{sub}");
    let t0 = std::time::Instant::now();
    while b.http("GET", &format!("/v2.0/networks/{net}"), None).0 != 200 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "node B never saw the network"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let results: Vec<(u16, Value)> = std::thread::scope(|sc| {
        let hs: Vec<_> = [&a, &b]
            .into_iter()
            .map(|h| {
                let net = net.clone();
                sc.spawn(move || {
                    (0..10)
                        .map(|i| {
                            h.http(
                                "POST",
                                "/v2.0/ports",
                                Some(
                                    &json!({"port": {"network_id": net, "name": format!("p{i}")}}),
                                ),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut ips = std::collections::HashSet::new();
    let mut macs = std::collections::HashSet::new();
    let mut created = 0;
    for (s, v) in &results {
        match s {
            201 => {
                created += 1;
                let ip = v["port"]["fixed_ips"][0]["ip_address"]
                    .as_str()
                    .unwrap()
                    .to_string();
                assert!(ips.insert(ip.clone()), "{ip} given twice: {results:?}");
                let mac = v["port"]["mac_address"].as_str().unwrap().to_string();
                assert!(macs.insert(mac.clone()), "{mac} given twice");
            }
            409 => {
                let t = v["NeutronError"]["type"].as_str().unwrap_or("");
                assert!(
                    [
                        "IpAddressGenerationFailure",
                        "IpAddressAlreadyAllocated",
                        "MacAddressInUse"
                    ]
                    .contains(&t),
                    "{v}"
                );
            }
            other => panic!("{other}: {v}"),
        }
    }
    assert!(created <= 11, "{created} ports for 11 addresses");
    // what is in the database agrees, and the exhausted pool is 409 on both nodes
    std::thread::sleep(Duration::from_millis(500));
    for h in [&a, &b] {
        let mut last = (0, Value::Null);
        for _ in 0..12 {
            last = h.http(
                "POST",
                "/v2.0/ports",
                Some(&json!({"port": {"network_id": net}})),
            );
            if last.0 != 201 {
                break;
            }
            created += 1;
        }
        assert_eq!(last.0, 409, "{}", last.1);
        assert_eq!(
            last.1["NeutronError"]["type"], "IpAddressGenerationFailure",
            "{}",
            last.1
        );
    }
    let (_, ports) = a.http("GET", &format!("/v2.0/ports?network_id={net}"), None);
    let all: Vec<&str> = ports["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["fixed_ips"][0]["ip_address"].as_str().unwrap())
        .collect();
    let distinct: std::collections::HashSet<&str> = all.iter().copied().collect();
    assert_eq!(all.len(), distinct.len(), "{all:?}");
    assert_eq!(
        all.len(),
        12,
        "the DHCP port and 11 others fill the pool: {all:?}"
    );
    assert_eq!(created, 11);
}
