//! `qdhcp serve` as a whole: the reference walk-through driven by the real OpenStack CLI, a
//! real DHCP client in a VM namespace on the mapped bridge, instant sync of port changes,
//! concurrent IPAM over HTTP, and kill -9 + restart.

mod common;
#[path = "../../store/tests/support/pg_server.rs"]
mod pg_server;

use std::collections::HashSet;
use std::time::Duration;

use common::serve::{http_call, openstack_available, Host};
use common::*;
use serde_json::{json, Value};

fn port_mac_ip(p: &Value) -> (String, String) {
    let mac = p["mac_address"].as_str().unwrap().to_string();
    let ips = &p["fixed_ips"];
    // the CLI renders fixed_ips as a list of objects
    let ip = ips[0]["ip_address"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| ips.to_string());
    (mac, ip)
}

#[test]
fn openstack_cli_walkthrough_serves_the_vm_and_port_delete_naks_its_renewal() {
    if !netns_available("cli walkthrough") || !openstack_available("cli walkthrough") {
        return;
    }
    require_tool("dhclient");
    let mut h = Host::new("w", 8);
    let _srv = h.start();
    let n = h.openstack_json(&[
        "network",
        "create",
        "flat_net",
        "--provider-network-type",
        "flat",
        "--provider-physical-network",
        "physnet1",
    ]);
    assert_eq!(n["name"], "flat_net");
    assert_eq!(n["provider:physical_network"], "physnet1");
    let s = h.openstack_json(&[
        "subnet",
        "create",
        "--network",
        "flat_net",
        "--subnet-range",
        "172.16.1.0/24",
        "--gateway",
        "172.16.1.1",
        "--allocation-pool",
        "start=172.16.1.100,end=172.16.1.200",
        "flat_subnet",
    ]);
    assert_eq!(s["cidr"], "172.16.1.0/24");
    // the node is a live DHCP agent, and the one serving the network, as the CLI shows agents
    let agents = h.openstack_json(&["network", "agent", "list"]);
    let agents = agents.as_array().unwrap();
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert_eq!(agents[0]["Agent Type"], "DHCP agent", "{agents:?}");
    assert_eq!(agents[0]["Alive"], true, "{agents:?}");
    assert_eq!(agents[0]["Binary"], "neutron-dhcp-agent", "{agents:?}");
    let host = agents[0]["Host"].as_str().unwrap().to_string();
    let serving = h.openstack_json(&["network", "agent", "list", "--network", "flat_net"]);
    assert_eq!(serving.as_array().unwrap().len(), 1, "{serving:?}");
    assert_eq!(serving[0]["Host"], host.as_str());
    let id = agents[0]["ID"].as_str().unwrap().to_string();
    let (s, nets) = h.http("GET", &format!("/v2.0/agents/{id}/dhcp-networks"), None);
    assert_eq!(s, 200);
    assert_eq!(nets["networks"][0]["name"], "flat_net", "{nets}");
    let (s, e) = h.http("GET", "/v2.0/agents/no-such-agent", None);
    assert_eq!(
        (s, e["NeutronError"]["type"].as_str()),
        (404, Some("AgentNotFound"))
    );
    // Neutron's refusals, with its status codes and error types, as the CLI shows them
    let (ok, text) = h.openstack(&[
        "network",
        "create",
        "flat_net2",
        "--provider-network-type",
        "flat",
        "--provider-physical-network",
        "physnet1",
    ]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("409")
            && text.contains(
                "Unable to create the flat network. Physical network physnet1 is in use."
            ),
        "{text}"
    );
    let (s_code, body) = h.http(
        "POST",
        "/v2.0/networks",
        Some(&json!({"network": {"provider:network_type": "flat", "provider:physical_network": "physnet1"}})),
    );
    assert_eq!(
        (s_code, body["NeutronError"]["type"].as_str()),
        (409, Some("FlatNetworkInUse"))
    );
    let (ok, text) = h.openstack(&[
        "subnet",
        "create",
        "--network",
        "flat_net",
        "--subnet-range",
        "172.16.9.0/24",
        "--gateway",
        "172.16.9.50",
        "--allocation-pool",
        "start=172.16.9.10,end=172.16.9.100",
        "gw_in_pool",
    ]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("409")
            && text.contains(
                "Gateway ip 172.16.9.50 conflicts with allocation pool 172.16.9.10-172.16.9.100."
            ),
        "{text}"
    );
    let (s_code, body) = h.http(
        "POST",
        "/v2.0/subnets",
        Some(&json!({"subnet": {"network_id": n["id"], "ip_version": 4, "cidr": "172.16.9.0/24", "gateway_ip": "172.16.9.50", "allocation_pools": [{"start": "172.16.9.10", "end": "172.16.9.100"}]}})),
    );
    assert_eq!(
        (s_code, body["NeutronError"]["type"].as_str()),
        (409, Some("GatewayConflictWithAllocationPools"))
    );
    let p = h.openstack_json(&[
        "port",
        "create",
        "--network",
        "flat_net",
        "--fixed-ip",
        "subnet=flat_subnet,ip-address=172.16.1.103",
        "cirros-vm1-port",
    ]);
    let (mac, ip) = port_mac_ip(&p);
    assert_eq!(ip, "172.16.1.103");
    assert!(mac.starts_with("fa:16:3e:"));

    // list / show / set behave as on Neutron
    let list = h.openstack_json(&["port", "list"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["Name"].as_str())
        .collect();
    assert!(names.contains(&"cirros-vm1-port"), "{list}");
    let shown = h.openstack_json(&["port", "show", "cirros-vm1-port"]);
    assert_eq!(shown["mac_address"], mac.as_str());
    let (ok, out) = h.openstack(&[
        "port",
        "set",
        "--description",
        "the cirros VM",
        "cirros-vm1-port",
    ]);
    assert!(ok, "{out}");
    assert_eq!(
        h.openstack_json(&["port", "show", "cirros-vm1-port"])["description"],
        "the cirros VM"
    );

    // the VM boots on the bridge with that MAC and gets its address and every option
    let vm = h.vm(&mac);
    let topo_dir = tempfile::tempdir().unwrap();
    let (ok, d) = dhclient_at(topo_dir.path(), &vm, 20);
    assert!(
        ok,
        "dhclient got no lease; log:\n{}",
        std::fs::read_to_string(h.log()).unwrap_or_default()
    );
    let env = d.wait_reason("BOUND", 1, Duration::from_secs(5));
    assert_eq!(env["new_ip_address"], "172.16.1.103");
    assert_eq!(env["new_subnet_mask"], "255.255.255.0");
    assert_eq!(env["new_routers"], "172.16.1.1");
    assert_eq!(env["new_domain_name"], "openstacklocal");
    assert_eq!(env["new_interface_mtu"], "1500");
    assert_eq!(env["new_dhcp_lease_time"], "8");
    let server = env["new_dhcp_server_identifier"].clone();
    assert!(
        server.starts_with("172.16.1.1"),
        "DHCP port address from the pool: {server}"
    );
    assert_eq!(
        env["new_rfc3442_classless_static_routes"],
        format!(
            "32 169 254 169 254 {} 0 172 16 1 1",
            server.replace('.', " ")
        )
    );
    let log = h.wait_log("DHCPACK(ns-");
    assert!(log.contains("DHCPDISCOVER(ns-"), "{log}");
    assert!(
        log.contains(&format!(") 172.16.1.103 {mac} host-172-16-1-103")),
        "{log}"
    );

    // port delete: the binding is revoked at once, the next renewal is NAKed
    d.wait_reason("RENEW", 1, Duration::from_secs(15));
    let (ok, out) = h.openstack(&["port", "delete", "cirros-vm1-port"]);
    assert!(ok, "{out}");
    let (ok, _) = h.openstack(&["port", "show", "cirros-vm1-port"]);
    assert!(!ok, "deleted port is gone");
    h.wait_log("DHCPNAK(ns-");
    let log = std::fs::read_to_string(h.log()).unwrap();
    assert!(
        log.contains(&format!(") 172.16.1.103 {mac} lease not found")),
        "{log}"
    );
    // the recycled address is usable by a new port at once
    let p2 = h.openstack_json(&[
        "port",
        "create",
        "--network",
        "flat_net",
        "--fixed-ip",
        "subnet=flat_subnet,ip-address=172.16.1.103",
        "cirros-vm2-port",
    ]);
    assert_eq!(port_mac_ip(&p2).1, "172.16.1.103");
    let (ok, out) = h.openstack(&["port", "delete", "cirros-vm2-port"]);
    assert!(ok, "{out}");
    let (ok, out) = h.openstack(&["network", "delete", "flat_net"]);
    assert!(ok, "{out}");
    // the network's namespace goes with it
    let ns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&ns.stdout).contains(&h.prefix),
        "namespace removed"
    );
}

#[test]
fn ipam_under_concurrency_never_double_allocates_and_exhaustion_is_409() {
    if !netns_available("ipam concurrency") {
        return;
    }
    // API only (DHCP disabled on the subnet): no plumbing, so it can listen on loopback here.
    let dir = tempfile::tempdir().unwrap();
    let port = 20000 + (std::process::id() % 20000) as u16;
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = std::process::Command::new(qdhcp_bin());
    cmd.args(["serve", "--listen", &addr, "--namespace-prefix", "qtipam"])
        .arg("--state-dir")
        .arg(dir.path())
        .arg("--log-file")
        .arg(dir.path().join("log"));
    die_with_test(&mut cmd);
    let _srv = Proc {
        child: cmd.spawn().unwrap(),
    };
    wait_for_log(
        &dir.path().join("log"),
        "started, qdhcp",
        Duration::from_secs(10),
    );
    let (s, n) = http_call(
        &addr,
        "POST",
        "/v2.0/networks",
        &json!({"network": {"name": "n"}}).to_string(),
    );
    assert_eq!(s, 201, "{n}");
    let net = n["network"]["id"].as_str().unwrap().to_string();
    let (s, _) = http_call(&addr, "POST", "/v2.0/subnets", &json!({"subnet": {"network_id": net, "cidr": "10.20.0.0/24", "ip_version": 4, "enable_dhcp": false,
        "allocation_pools": [{"start": "10.20.0.10", "end": "10.20.0.109"}]}}).to_string());
    assert_eq!(s, 201);
    let threads: Vec<_> = (0..10)
        .map(|_| {
            let addr = addr.clone();
            let net = net.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for _ in 0..12 {
                    let (s, v) = http_call(
                        &addr,
                        "POST",
                        "/v2.0/ports",
                        &json!({"port": {"network_id": net}}).to_string(),
                    );
                    got.push((s, v));
                }
                got
            })
        })
        .collect();
    let results: Vec<(u16, Value)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let ok: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, v)| v)
        .collect();
    let conflicts: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 409)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(ok.len(), 100, "exactly the pool size succeeds");
    assert_eq!(conflicts.len(), 20);
    assert!(
        conflicts
            .iter()
            .all(|v| v["NeutronError"]["type"] == "IpAddressGenerationFailure"),
        "{conflicts:?}"
    );
    let ips: HashSet<String> = ok
        .iter()
        .map(|v| {
            v["port"]["fixed_ips"][0]["ip_address"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let macs: HashSet<String> = ok
        .iter()
        .map(|v| v["port"]["mac_address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ips.len(), 100, "no address twice");
    assert_eq!(macs.len(), 100, "no MAC twice");
    for ip in &ips {
        let last: u32 = ip.rsplit('.').next().unwrap().parse().unwrap();
        assert!(
            ip.starts_with("10.20.0.") && (10..=109).contains(&last),
            "{ip} inside the pool"
        );
    }
    let (_, list) = http_call(&addr, "GET", "/v2.0/ports", "");
    assert_eq!(
        list["ports"].as_array().unwrap().len(),
        100,
        "nothing half-created"
    );
}

#[test]
fn listening_off_loopback_without_tokens_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(qdhcp_bin())
        .args(["serve", "--listen", "0.0.0.0:1", "--log-file"])
        .arg(dir.path().join("log"))
        .arg("--state-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs --tokens-file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kill_9_and_restart_keep_api_objects_and_renewals_get_ack() {
    if !netns_available("serve restart") {
        return;
    }
    require_tool("dhclient");
    let mut h = Host::new("r", 6);
    let mut srv = h.start();
    let (s, n) = h.http("POST", "/v2.0/networks", Some(&json!({"network": {"name": "flat_net", "provider:network_type": "flat", "provider:physical_network": "physnet1"}})));
    assert_eq!(s, 201, "{n}");
    let net = n["network"]["id"].as_str().unwrap().to_string();
    let (s, _) = h.http("POST", "/v2.0/subnets", Some(&json!({"subnet": {"network_id": net, "cidr": "172.16.1.0/24", "ip_version": 4, "dns_nameservers": ["8.8.8.8"]}})));
    assert_eq!(s, 201);
    let (s, p) = h.http(
        "POST",
        "/v2.0/ports",
        Some(&json!({"port": {"network_id": net, "name": "vm1"}})),
    );
    assert_eq!(s, 201);
    let mac = p["port"]["mac_address"].as_str().unwrap().to_string();
    let ip = p["port"]["fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_string();
    let vm = h.vm(&mac);
    let dir = tempfile::tempdir().unwrap();
    let (ok, d) = dhclient_at(dir.path(), &vm, 20);
    assert!(
        ok,
        "{}",
        std::fs::read_to_string(h.log()).unwrap_or_default()
    );
    assert_eq!(
        d.wait_reason("BOUND", 1, Duration::from_secs(5))["new_domain_name_servers"],
        "8.8.8.8"
    );
    d.wait_reason("RENEW", 1, Duration::from_secs(15));
    let (_, before) = h.http("GET", "/v2.0/ports", None);

    srv.kill9();
    let _srv2 = h.start();
    // its namespace survived: it is served before its plumbing is checked
    h.wait_log("1 networks served again");
    h.wait_log("plumbing of 1 networks checked");
    let (_, after) = h.http("GET", "/v2.0/ports", None);
    assert_eq!(
        before, after,
        "the API shows the same objects after kill -9"
    );
    let renews = d.reasons().iter().filter(|r| *r == "RENEW").count();
    let env = d.wait_reason("RENEW", renews + 2, Duration::from_secs(20));
    assert_eq!(env["new_ip_address"], ip);
    let log = std::fs::read_to_string(h.log()).unwrap();
    assert!(
        !log.contains("DHCPNAK"),
        "a valid port is never NAKed:\n{log}"
    );

    // a subnet change (DNS, routes) is served on the next reply, with no reload
    let subnet_id = p["port"]["fixed_ips"][0]["subnet_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = h.http(
        "PUT",
        &format!("/v2.0/subnets/{subnet_id}"),
        Some(&json!({"subnet": {"dns_nameservers": ["9.9.9.9"], "host_routes": [{"destination": "10.99.0.0/16", "nexthop": "172.16.1.254"}]}})),
    );
    assert_eq!(s, 200, "{v}");
    let renews = d.reasons().iter().filter(|r| *r == "RENEW").count();
    let env = d.wait_reason("RENEW", renews + 1, Duration::from_secs(15));
    assert_eq!(env["new_domain_name_servers"], "9.9.9.9");
    assert!(
        env["new_rfc3442_classless_static_routes"].starts_with("16 10 99 172 16 1 254"),
        "{env:?}"
    );
    let (s, metrics) = h.http_text("/metrics");
    assert_eq!(s, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("qdhcp_dhcp_packets_out_total{")
                && l.contains("type=\"ack\"")
                && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(metrics.contains("qdhcp_leases_active{"), "{metrics}");

    // re-addressing the port revokes the old binding at once: the next renewal is NAKed
    let (s, v) = h.http(
        "PUT",
        &format!("/v2.0/ports/{}", p["port"]["id"].as_str().unwrap()),
        Some(&json!({"port": {"fixed_ips": [{"ip_address": "172.16.1.250"}]}})),
    );
    assert_eq!(s, 200, "{v}");
    h.wait_log("DHCPNAK(ns-");
    // and the client then gets the new address
    let env = d.wait_reason("BOUND", 2, Duration::from_secs(20));
    assert_eq!(env["new_ip_address"], "172.16.1.250");
}

/// The DHCP port answers DNS for the network, as Neutron's dnsmasq does: a subnet without
/// `dns_nameservers` announces the DHCP port's address; names come from the registry and
/// change with the next query after a port is renamed (`dns_name`) or deleted; `0.0.0.0`
/// announces no server.
#[test]
fn dhcp_port_serves_dns_names_from_the_registry_and_follows_port_changes() {
    if !netns_available("serve dns") {
        return;
    }
    require_tool("dhclient");
    require_tool("dig");
    let mut h = Host::new("n", 60);
    let _srv = h.start();
    let (s, n) = h.http("POST", "/v2.0/networks", Some(&json!({"network": {"name": "flat_net", "provider:network_type": "flat", "provider:physical_network": "physnet1"}})));
    assert_eq!(s, 201, "{n}");
    let net = n["network"]["id"].as_str().unwrap().to_string();
    let (s, sub) = h.http("POST", "/v2.0/subnets", Some(&json!({"subnet": {"network_id": net, "cidr": "172.16.1.0/24", "ip_version": 4, "allocation_pools": [{"start": "172.16.1.100", "end": "172.16.1.200"}]}})));
    assert_eq!(s, 201, "{sub}");
    let port = |name: &str, ip: &str| {
        let (s, p) = h.http(
            "POST",
            "/v2.0/ports",
            Some(&json!({"port": {"network_id": net, "name": name, "fixed_ips": [{"ip_address": ip}]}})),
        );
        assert_eq!(s, 201, "{p}");
        (
            p["port"]["id"].as_str().unwrap().to_string(),
            p["port"]["mac_address"].as_str().unwrap().to_string(),
        )
    };
    let (_, mac1) = port("vm1", "172.16.1.103");
    let (id2, _) = port("vm2", "172.16.1.104");
    let vm = h.vm(&mac1);
    let dir = tempfile::tempdir().unwrap();
    let (ok, d) = dhclient_at(dir.path(), &vm, 20);
    assert!(
        ok,
        "{}",
        std::fs::read_to_string(h.log()).unwrap_or_default()
    );
    let bound = d.wait_reason("BOUND", 1, Duration::from_secs(5));
    // the DHCP port (first pool address) is the network's DNS server
    assert_eq!(
        bound["new_domain_name_servers"], "172.16.1.100",
        "{bound:?}"
    );
    let dig = |args: &[&str]| {
        let o = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &vm.ns,
                "dig",
                "+tries=2",
                "+time=1",
                "@172.16.1.100",
            ])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let short = |name: &str| dig(&["+short", name]).trim().to_string();
    assert_eq!(short("host-172-16-1-104.openstacklocal"), "172.16.1.104");
    assert_eq!(short("host-172-16-1-104"), "172.16.1.104");
    assert_eq!(
        dig(&["+short", "-x", "172.16.1.104"]).trim(),
        "host-172-16-1-104.openstacklocal."
    );
    // a rename (dns_name) and a delete are seen by the next query
    let (s, _) = h.http(
        "PUT",
        &format!("/v2.0/ports/{id2}"),
        Some(&json!({"port": {"dns_name": "web"}})),
    );
    assert_eq!(s, 200);
    assert_eq!(short("web.openstacklocal"), "172.16.1.104");
    assert!(dig(&["host-172-16-1-104.openstacklocal"]).contains("status: NXDOMAIN"));
    // dns_assignment says the same names as Neutron's dns-integration computes them
    let (_, p2) = h.http("GET", &format!("/v2.0/ports/{id2}"), None);
    assert_eq!(
        p2["port"]["dns_assignment"],
        json!([{"hostname": "web", "ip_address": "172.16.1.104", "fqdn": "web.openstacklocal."}])
    );
    // dns-integration: the network's dns_domain is stored, shown, and its ports' names are
    // answered under it too (the PTR keeps the server's domain)
    let (s, n) = h.http(
        "PUT",
        &format!("/v2.0/networks/{net}"),
        Some(&json!({"network": {"dns_domain": "example.org."}})),
    );
    assert_eq!(s, 200, "{n}");
    assert_eq!(n["network"]["dns_domain"], "example.org.");
    let (_, n) = h.http("GET", &format!("/v2.0/networks/{net}"), None);
    assert_eq!(n["network"]["dns_domain"], "example.org.");
    assert_eq!(short("web.example.org"), "172.16.1.104");
    assert_eq!(short("web.openstacklocal"), "172.16.1.104");
    // names under it that do not exist are NXDOMAIN with authority (not forwarded or refused)
    let nx = dig(&["nosuch.example.org"]);
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains(" aa"),
        "{nx}"
    );
    assert!(nx.contains("example.org.") && nx.contains("SOA"), "{nx}");
    assert_eq!(
        dig(&["+short", "-x", "172.16.1.104"]).trim(),
        "web.openstacklocal."
    );
    let (s, e) = h.http(
        "PUT",
        &format!("/v2.0/networks/{net}"),
        Some(&json!({"network": {"dns_domain": "-bad-.org"}})),
    );
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["NeutronError"]["type"], "HTTPBadRequest", "{e}");
    // a re-address moves the name and the PTR; the old address answers nothing
    let (s, p2) = h.http(
        "PUT",
        &format!("/v2.0/ports/{id2}"),
        Some(&json!({"port": {"fixed_ips": [{"ip_address": "172.16.1.105"}]}})),
    );
    assert_eq!(s, 200, "{p2}");
    assert_eq!(short("web.openstacklocal"), "172.16.1.105");
    assert_eq!(
        dig(&["+short", "-x", "172.16.1.105"]).trim(),
        "web.openstacklocal."
    );
    assert!(dig(&["-x", "172.16.1.104"]).contains("status: NXDOMAIN"));
    let (s, _) = h.http("DELETE", &format!("/v2.0/ports/{id2}"), None);
    assert_eq!(s, 204);
    assert!(dig(&["web.openstacklocal"]).contains("status: NXDOMAIN"));
    assert!(dig(&["web.example.org"]).contains("status: NXDOMAIN"));
    assert!(dig(&["-x", "172.16.1.105"]).contains("status: NXDOMAIN"));
    // ports created in one bulk POST are all answered
    let (s, b) = h.http(
        "POST",
        "/v2.0/ports",
        Some(&json!({"ports": [
            {"network_id": net, "fixed_ips": [{"ip_address": "172.16.1.110"}]},
            {"network_id": net, "fixed_ips": [{"ip_address": "172.16.1.111"}], "dns_name": "db"},
        ]})),
    );
    assert_eq!(s, 201, "{b}");
    assert_eq!(short("host-172-16-1-110.example.org"), "172.16.1.110");
    assert_eq!(short("db.openstacklocal"), "172.16.1.111");
    assert_eq!(
        dig(&["+short", "-x", "172.16.1.111"]).trim(),
        "db.openstacklocal."
    );
    for p in b["ports"].as_array().unwrap() {
        let id = p["id"].as_str().unwrap();
        let (s, _) = h.http("DELETE", &format!("/v2.0/ports/{id}"), None);
        assert_eq!(s, 204);
    }
    // no upstream configured: other names are refused, not hung
    assert!(dig(&["www.example.test"]).contains("status: REFUSED"));
    // counted in /metrics, per network, by type and by answer
    let (s, metrics) = h.http_text("/metrics");
    assert_eq!(s, 200);
    let value = |series: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} missing in\n{metrics}"))
    };
    assert!(
        value(&format!(
            "qdhcp_dns_answers_total{{network=\"{net}\",answer=\"local\"}}"
        )) >= 4
    );
    assert!(
        value(&format!(
            "qdhcp_dns_answers_total{{network=\"{net}\",answer=\"nxdomain\"}}"
        )) >= 2
    );
    assert!(
        value(&format!(
            "qdhcp_dns_answers_total{{network=\"{net}\",answer=\"refused\"}}"
        )) >= 1
    );
    assert!(
        value(&format!(
            "qdhcp_dns_queries_total{{network=\"{net}\",qtype=\"PTR\"}}"
        )) >= 1
    );
    assert_eq!(
        value(&format!("qdhcp_dns_names{{network=\"{net}\"}}")),
        6,
        "DHCP port and vm1, each under both domains (openstacklocal, the network's example.org) and bare"
    );

    // dns_nameservers = 0.0.0.0: no server announced at the next lease
    let sub_id = sub["subnet"]["id"].as_str().unwrap();
    let (s, _) = h.http(
        "PUT",
        &format!("/v2.0/subnets/{sub_id}"),
        Some(&json!({"subnet": {"dns_nameservers": ["0.0.0.0"]}})),
    );
    assert_eq!(s, 200);
    d.release();
    let dir2 = tempfile::tempdir().unwrap();
    let (ok, d2) = dhclient_at(dir2.path(), &vm, 20);
    assert!(ok);
    let bound = d2.wait_reason("BOUND", 1, Duration::from_secs(5));
    assert_eq!(bound.get("new_domain_name_servers"), None, "{bound:?}");
}

/// `ip netns exec HOST qdhcp serve` runs qdhcp in a private mount namespace (a slave of the
/// host's): namespaces bound there alone cannot be entered from outside ("Invalid argument").
/// qdhcp binds them in the mount namespace it was started from instead.
#[test]
fn serve_under_ip_netns_exec_leaves_namespaces_others_can_enter() {
    if !netns_available("serve under ip netns exec") {
        return;
    }
    let h = Host::new("x", 60);
    let _srv = h.start_under_ip_netns_exec();
    let (s, n) = h.http("POST", "/v2.0/networks", Some(&json!({"network": {"name": "n", "provider:network_type": "flat", "provider:physical_network": "physnet1"}})));
    assert_eq!(s, 201, "{n}");
    let net = n["network"]["id"].as_str().unwrap().to_string();
    let (s, _) = h.http(
        "POST",
        "/v2.0/subnets",
        Some(&json!({"subnet": {"network_id": net, "cidr": "172.16.7.0/24", "ip_version": 4}})),
    );
    assert_eq!(s, 201);
    let ns = format!("{}{}", h.prefix, &net[..15 - h.prefix.len()]);
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "ip", "-4", "addr"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(h.log()).unwrap_or_default()
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("172.16.7.2/24"),
        "the DHCP port's address: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // and the network's delete removes it for everyone
    let (s, _) = h.http("DELETE", &format!("/v2.0/networks/{net}"), None);
    assert_eq!(s, 204);
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(&ns),
        "{}",
        String::from_utf8_lossy(&list.stdout)
    );
}

#[test]
fn an_unreachable_postgresql_database_stops_serve_at_start_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "postgresql://qdhcp:s3cret@localhost/neutron?host={}&connect_timeout=2",
        dir.path().display()
    );
    let out = std::process::Command::new(qdhcp_bin())
        .args([
            "serve",
            "--database",
            &url,
            "--listen",
            "127.0.0.1:19696",
            "--log-file",
        ])
        .arg(dir.path().join("log"))
        .arg("--state-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
    );
    assert!(
        err.contains("postgresql://qdhcp:***@localhost/neutron"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}

/// `qdhcp serve` on PostgreSQL: the API writes through it, DHCP serves from it, and after a
/// kill -9 the registry comes back from the database.
#[test]
fn serve_on_postgresql_keeps_the_registry_across_kill_9() {
    if !netns_available("serve on postgresql") {
        return;
    }
    require_tool("dhclient");
    let Some(pg) = pg_server::Pg::start() else {
        return;
    };
    let url = pg.url();
    let mut h = Host::new("p", 60);
    let node_a = [
        "--database",
        &url,
        "--node",
        "node-a",
        "--node-down-time",
        "3",
    ];
    let mut srv = h.start_with(&node_a);
    let (s, n) = h.http("POST", "/v2.0/networks", Some(&json!({"network": {"name": "flat_net", "provider:network_type": "flat", "provider:physical_network": "physnet1"}})));
    assert_eq!(s, 201, "{n}");
    let net = n["network"]["id"].as_str().unwrap().to_string();
    let (s, _) = h.http(
        "POST",
        "/v2.0/subnets",
        Some(&json!({"subnet": {"network_id": net, "cidr": "172.16.1.0/24", "ip_version": 4}})),
    );
    assert_eq!(s, 201);
    let (_, a) = h.http("GET", "/v2.0/agents", None);
    assert_eq!(a["agents"][0]["host"], "node-a", "{a}");
    assert_eq!(a["agents"][0]["alive"], true, "{a}");
    let agent_a = a["agents"][0]["id"].clone();
    let (s, p) = h.http(
        "POST",
        "/v2.0/ports",
        Some(&json!({"port": {"network_id": net, "name": "vm1"}})),
    );
    assert_eq!(s, 201, "{p}");
    let mac = p["port"]["mac_address"].as_str().unwrap().to_string();
    let vm = h.vm(&mac);
    let dir = tempfile::tempdir().unwrap();
    let (ok, d) = dhclient_at(dir.path(), &vm, 20);
    assert!(
        ok,
        "{}",
        std::fs::read_to_string(h.log()).unwrap_or_default()
    );
    d.release();
    srv.kill9();
    // another node on the same database: node-a shows down once its heartbeats are older than
    // the down time, and node-b alive, serving the network
    let _srv = h.start_with(&[
        "--database",
        &url,
        "--node",
        "node-b",
        "--node-down-time",
        "3",
    ]);
    let (_, ports) = h.http("GET", "/v2.0/ports?name=vm1", None);
    assert_eq!(ports["ports"][0]["mac_address"], mac.as_str(), "{ports}");
    std::thread::sleep(Duration::from_secs(5));
    let (_, a) = h.http("GET", "/v2.0/agents", None);
    let by_host = |host: &str| {
        a["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["host"] == host)
            .cloned()
            .unwrap_or_else(|| panic!("{host} missing: {a}"))
    };
    assert_eq!(by_host("node-a")["alive"], false, "{a}");
    assert_eq!(by_host("node-a")["id"], agent_a, "the agent id is kept");
    assert_eq!(by_host("node-b")["alive"], true, "{a}");
    // node-a's DHCP port moves to node-b once node-a is down (the scheduler's failover)
    let t0 = std::time::Instant::now();
    loop {
        let (_, serving) = h.http("GET", &format!("/v2.0/networks/{net}/dhcp-agents"), None);
        let hosts: Vec<&str> = serving["agents"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x["host"].as_str())
            .collect();
        if hosts == ["node-b"] {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the network never moved to node-b: {serving}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let dir = tempfile::tempdir().unwrap();
    let (ok, _d) = dhclient_at(dir.path(), &vm, 20);
    assert!(ok, "served again from the database");
}

/// `dns_assignment` is under the server's `--dns-domain`, as Neutron's dns-integration puts
/// it under its `dns_domain` option (it said `openstacklocal.` whatever the domain was).
#[test]
fn dns_assignment_is_under_the_configured_domain() {
    if !netns_available("dns_assignment") {
        return;
    }
    let h = Host::new("da", 60);
    let _srv = h.start_with(&["--dns-domain", "example.com"]);
    let (s, n) = h.http(
        "POST",
        "/v2.0/networks",
        Some(&json!({"network": {"name": "n", "provider:network_type": "local"}})),
    );
    assert_eq!(s, 201, "{n}");
    let net = n["network"]["id"].as_str().unwrap().to_string();
    let (s, sub) = h.http(
        "POST",
        "/v2.0/subnets",
        Some(&json!({"subnet": {"network_id": net, "cidr": "10.44.0.0/24", "ip_version": 4}})),
    );
    assert_eq!(s, 201, "{sub}");
    let (s, p) = h.http(
        "POST",
        "/v2.0/ports",
        Some(&json!({"port": {"network_id": net, "fixed_ips": [{"ip_address": "10.44.0.20"}]}})),
    );
    assert_eq!(s, 201, "{p}");
    assert_eq!(
        p["port"]["dns_assignment"],
        json!([{"hostname": "host-10-44-0-20", "ip_address": "10.44.0.20", "fqdn": "host-10-44-0-20.example.com."}])
    );
    let id = p["port"]["id"].as_str().unwrap().to_string();
    let (s, p) = h.http(
        "PUT",
        &format!("/v2.0/ports/{id}"),
        Some(&json!({"port": {"dns_name": "db"}})),
    );
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["port"]["dns_assignment"][0]["fqdn"], "db.example.com.");
}
