//! The leases view of `qdhcp serve` with real clients: a VM bound by dhclient, one that
//! released its lease (dhclient -r), one that was only offered an address (a DISCOVER from
//! `qdhcp loadgen --link`), found through `GET /v2.0/leases` and `qdhcp leases`.

mod common;

use std::process::Command;

use common::serve::Host;
use common::*;
use serde_json::{json, Value};

#[test]
fn bound_released_and_offered_leases_are_listed_by_the_api_and_the_cli() {
    if !netns_available("leases view") {
        return;
    }
    require_tool("dhclient");
    let mut h = Host::new("e", 600);
    let _srv = h.start_with(&["--node", "node-e"]);
    let (s, n) = h.http("POST", "/v2.0/networks", Some(&json!({"network": {"name": "n", "provider:network_type": "flat", "provider:physical_network": "physnet1"}})));
    assert_eq!(s, 201, "{n}");
    let net = n["network"]["id"].as_str().unwrap().to_string();
    let (s, sub) = h.http("POST", "/v2.0/subnets", Some(&json!({"subnet": {"network_id": net, "cidr": "172.16.1.0/24", "ip_version": 4, "allocation_pools": [{"start": "172.16.1.100", "end": "172.16.1.200"}]}})));
    assert_eq!(s, 201);
    let subnet = sub["subnet"]["id"].as_str().unwrap().to_string();
    let port = |ip: &str, mac: Option<&str>| {
        let mut p = json!({"network_id": net, "fixed_ips": [{"ip_address": ip}]});
        if let Some(m) = mac {
            p["mac_address"] = json!(m);
        }
        let (s, p) = h.http("POST", "/v2.0/ports", Some(&json!({ "port": p })));
        assert_eq!(s, 201, "{p}");
        (
            p["port"]["id"].as_str().unwrap().to_string(),
            p["port"]["mac_address"].as_str().unwrap().to_string(),
        )
    };
    let (id1, mac1) = port("172.16.1.103", None);
    let (_, mac2) = port("172.16.1.104", None);
    // the load generator's first client
    port("172.16.1.105", Some("fa:16:3e:00:00:00"));
    let dir = tempfile::tempdir().unwrap();
    let vm1 = h.vm(&mac1);
    let (ok, _d1) = dhclient_at(dir.path(), &vm1, 20);
    assert!(ok);
    let vm2 = h.vm(&mac2);
    let (ok, d2) = dhclient_at(dir.path(), &vm2, 20);
    assert!(ok);
    d2.release();
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &h.ns,
            qdhcp_bin(),
            "loadgen",
            "--link",
            "qtbr",
            "--mode",
            "discover",
        ])
        .args([
            "--clients",
            "1",
            "--rate",
            "1",
            "--duration",
            "1",
            "--timeout-ms",
            "2000",
            "--json",
        ])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(report["offers"], 1, "{out:?}");

    let (s, v) = h.http("GET", "/v2.0/leases", None);
    assert_eq!(s, 200, "{v}");
    let by_ip = |ip: &str| {
        v["leases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["ip_address"] == ip)
            .cloned()
            .unwrap_or_else(|| panic!("{ip} not listed: {v}"))
    };
    let l1 = by_ip("172.16.1.103");
    assert_eq!(l1["state"], "bound");
    assert_eq!(l1["mac_address"], mac1.as_str());
    assert_eq!(l1["port_id"], id1.as_str());
    assert_eq!(
        (l1["network_id"].as_str(), l1["subnet_id"].as_str()),
        (Some(net.as_str()), Some(subnet.as_str()))
    );
    assert_eq!(l1["host"], "node-e");
    assert_eq!(l1["ip_version"], 4);
    let fmt = |t: &Value| {
        t.as_str()
            .is_some_and(|t| t.len() == 20 && t.ends_with('Z') && t.as_bytes()[10] == b'T')
    };
    assert!(fmt(&l1["granted_at"]) && fmt(&l1["expires_at"]), "{l1}");
    assert!(l1["granted_at"].as_str() < l1["expires_at"].as_str());
    assert_eq!(by_ip("172.16.1.104")["state"], "released");
    assert_eq!(by_ip("172.16.1.105")["state"], "offered");
    let (_, only) = h.http("GET", &format!("/v2.0/leases?mac_address={mac1}"), None);
    assert_eq!(only["leases"].as_array().unwrap().len(), 1, "{only}");

    // the same from the CLI, as a table and as JSON
    let cli = |args: &[&str]| {
        let o = Command::new("ip")
            .args(["netns", "exec", &h.ns, qdhcp_bin(), "leases"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    let table = cli(&["--mac-address", &mac1]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ip_address") && lines[0].contains("expires_at"),
        "{table}"
    );
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[1].starts_with("172.16.1.103")
            && lines[1].contains("bound")
            && lines[1].contains(&mac1),
        "{table}"
    );
    let j: Value =
        serde_json::from_str(&cli(&["--format", "json", "--state", "released"])).unwrap();
    assert_eq!(j["leases"].as_array().unwrap().len(), 1);
    assert_eq!(j["leases"][0]["ip_address"], "172.16.1.104");
}

/// `qdhcp leases --leasefile` reads what a `qdhcp dnsmasq` keeps (IPv4 and DHCPv6 lines), the
/// network from Neutron's directory layout, expired leases said so.
#[test]
fn the_cli_reads_a_dnsmasq_mode_leases_file() {
    let dir = tempfile::tempdir().unwrap();
    let net = "0b4d8f3e-1c2a-4e5f-9a7b-6c5d4e3f2a10";
    let file = dir.path().join(net).join("leases");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(
        &file,
        "1999999999 fa:16:3e:aa:bb:cc 10.0.0.5 host-10-0-0-5 *\n\
         1000 fa:16:3e:aa:bb:cd 10.0.0.6 * *\n\
         duid 00:01:00:01:2c:5e:6f:70:fa:16:3e:00:00:01\n\
         1999999999 305419896 fd00::5 host-fd00--5 00:03:00:01:fa:16:3e:aa:bb:cc\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let o = Command::new(qdhcp_bin())
            .args(["leases", "--leasefile"])
            .arg(&file)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    let j: Value = serde_json::from_str(&run(&["--format", "json"])).unwrap();
    let l = j["leases"].as_array().unwrap();
    assert_eq!(l.len(), 3, "{j}");
    assert_eq!(l[0]["state"], "bound");
    assert_eq!(l[0]["network_id"], net);
    assert_eq!(l[0]["expires_at"], "2033-05-18T03:33:19Z");
    assert_eq!(l[1]["state"], "expired");
    assert_eq!(
        (l[2]["ip_version"].as_u64(), l[2]["iaid"].as_u64()),
        (Some(6), Some(305419896))
    );
    assert_eq!(l[2]["duid"], "00:03:00:01:fa:16:3e:aa:bb:cc");
    let t = run(&["--ip-address", "10.0.0.6"]);
    assert_eq!(t.lines().count(), 2, "{t}");
    assert!(t.lines().nth(1).unwrap().contains("expired"), "{t}");
    let missing = Command::new(qdhcp_bin())
        .args(["leases", "--leasefile", "/nonexistent/leases"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/leases"));
}
