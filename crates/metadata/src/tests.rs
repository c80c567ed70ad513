//! The decision and the built-in answers, on a registry made through its own API.

use std::net::IpAddr;

use qdhcp_registry::requests::*;
use qdhcp_registry::{ArcStr, Caller, Env, Registry, Stamp};
use serde_json::{json, Value};

use crate::answer::{decide, Asked, Decision, Mode, Why};
use crate::request::{parse, Parsed, Request};
use crate::sign::sign_instance_id;

struct TestEnv(u32, u32);
impl Env for TestEnv {
    fn now(&mut self) -> Stamp {
        "2026-12-07T00:00:00Z".into()
    }
    fn new_id(&mut self) -> ArcStr {
        self.1 += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.1).into()
    }
    fn random(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(1_103_515_245).wrapping_add(12345);
        self.0
    }
}

fn admin() -> Caller {
    Caller {
        project_id: "p1".into(),
        is_admin: true,
    }
}

/// Two networks: `net` (a DHCP subnet) with VM `vm-1` at 10.0.0.10 and a port without an
/// instance at 10.0.0.11; `other` (a static subnet, DNS, a host route) where `vm-1` also has
/// a port. Returns the registry and the two network ids.
fn world() -> (Registry, String, String) {
    let mut r = Registry::default();
    let mut env = TestEnv(0, 0);
    let net = |r: &mut Registry, env: &mut TestEnv, name: &str| {
        r.create_network(
            NetworkReq {
                name: Some(name.into()),
                ..Default::default()
            },
            &admin(),
            env,
        )
        .unwrap()
        .0
        .id
        .to_string()
    };
    let a = net(&mut r, &mut env, "a");
    let b = net(&mut r, &mut env, "b");
    let sa = r
        .create_subnet(
            SubnetReq {
                network_id: Some(a.clone()),
                cidr: Some("10.0.0.0/24".into()),
                dns_nameservers: Some(vec!["10.0.0.53".into()]),
                ..Default::default()
            },
            &admin(),
            &mut env,
        )
        .unwrap()
        .0;
    let sb = r
        .create_subnet(
            SubnetReq {
                network_id: Some(b.clone()),
                cidr: Some("192.168.5.0/24".into()),
                enable_dhcp: Some(false),
                dns_nameservers: Some(vec!["192.168.5.53".into()]),
                host_routes: Some(vec![RouteReq {
                    destination: "172.16.0.0/16".into(),
                    nexthop: "192.168.5.254".into(),
                }]),
                ..Default::default()
            },
            &admin(),
            &mut env,
        )
        .unwrap()
        .0;
    let port = |r: &mut Registry, env: &mut TestEnv, net: &str, sub: &str, ip: &str, dev: &str| {
        r.create_port(
            PortReq {
                network_id: Some(net.into()),
                fixed_ips: Some(vec![FixedIpReq {
                    subnet_id: Some(sub.into()),
                    ip_address: Some(ip.into()),
                }]),
                device_id: Some(dev.into()),
                device_owner: Some("compute:nova".into()),
                dns_name: Some(if dev.is_empty() { "" } else { "web-1" }.into()),
                project_id: Some("proj-9".into()),
                ..Default::default()
            },
            &admin(),
            env,
        )
        .unwrap();
    };
    port(&mut r, &mut env, &a, sa.id.as_str(), "10.0.0.10", "vm-1");
    port(&mut r, &mut env, &a, sa.id.as_str(), "10.0.0.11", "");
    port(&mut r, &mut env, &b, sb.id.as_str(), "192.168.5.20", "vm-1");
    (r, a, b)
}

fn get(path: &str) -> Request {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n");
    match parse(raw.as_bytes()) {
        Parsed::Done(r, _) => r,
        other => panic!("{other:?}"),
    }
}

/// A request from `src` reaching network `net`'s namespace.
fn asked<'a>(reg: &'a Registry, net: &'a str, src: &str) -> Asked<'a> {
    Asked {
        reg,
        network_id: net,
        source: src.parse::<IpAddr>().unwrap(),
        domain: Some("openstacklocal"),
    }
}

fn ask(reg: &Registry, net: &str, src: &str, path: &str, mode: &Mode) -> (Decision, Why) {
    decide(&get(path), &asked(reg, net, src), mode)
}

fn body(d: &Decision) -> (u16, String) {
    match d {
        Decision::Respond(r) => (r.status, String::from_utf8(r.body.clone()).unwrap()),
        Decision::Forward(f) => panic!("forwarded: {f:?}"),
    }
}

fn json_of(d: &Decision) -> Value {
    let (status, b) = body(d);
    assert_eq!(status, 200, "{b}");
    serde_json::from_str(&b).unwrap()
}

#[test]
fn meta_data_names_the_instance_of_the_source_port() {
    let (reg, a, _) = world();
    let (d, why) = ask(
        &reg,
        &a,
        "10.0.0.10",
        "/openstack/latest/meta_data.json",
        &Mode::Builtin,
    );
    assert_eq!(why, Why::Served);
    let m = json_of(&d);
    assert_eq!(m["uuid"], "vm-1");
    assert_eq!(m["name"], "web-1");
    assert_eq!(m["hostname"], "web-1.openstacklocal");
    assert_eq!(m["project_id"], "proj-9");
    assert_eq!(m["availability_zone"], "nova");
    assert_eq!(m["launch_index"], 0);
    assert_eq!(m["devices"], json!([]));
    let old = json_of(
        &ask(
            &reg,
            &a,
            "10.0.0.10",
            "/openstack/2013-04-04/meta_data.json",
            &Mode::Builtin,
        )
        .0,
    );
    assert!(old.get("devices").is_none(), "devices came with 2016-06-30");
}

#[test]
fn every_listed_version_and_file_is_served() {
    let (reg, a, _) = world();
    let (_, versions) = body(&ask(&reg, &a, "10.0.0.10", "/openstack", &Mode::Builtin).0);
    let versions: Vec<&str> = versions.lines().collect();
    assert_eq!(versions.first(), Some(&"2012-08-10"));
    assert_eq!(&versions[versions.len() - 2..], ["2018-08-27", "latest"]);
    for v in versions {
        let (status, files) = body(
            &ask(
                &reg,
                &a,
                "10.0.0.10",
                &format!("/openstack/{v}/"),
                &Mode::Builtin,
            )
            .0,
        );
        assert_eq!(status, 200, "{v}");
        assert!(files.lines().any(|f| f == "meta_data.json"), "{v}");
        assert!(
            !files.lines().any(|f| f == "user_data"),
            "{v}: no user data is held"
        );
        for f in files.lines() {
            let (status, _) = body(
                &ask(
                    &reg,
                    &a,
                    "10.0.0.10",
                    &format!("/openstack/{v}/{f}"),
                    &Mode::Builtin,
                )
                .0,
            );
            assert_eq!(status, 200, "{v}/{f}");
        }
    }
    let (s, _) = body(
        &ask(
            &reg,
            &a,
            "10.0.0.10",
            "/openstack/2012-08-10/network_data.json",
            &Mode::Builtin,
        )
        .0,
    );
    assert_eq!(s, 404, "network data came with 2015-10-15");
    let (s, _) = body(
        &ask(
            &reg,
            &a,
            "10.0.0.10",
            "/openstack/latest/user_data",
            &Mode::Builtin,
        )
        .0,
    );
    assert_eq!(s, 404);
    let (s, _) = body(
        &ask(
            &reg,
            &a,
            "10.0.0.10",
            "/openstack/2099-01-01/meta_data.json",
            &Mode::Builtin,
        )
        .0,
    );
    assert_eq!(s, 404);
}

#[test]
fn network_data_is_novas_shape_for_dhcp_and_static_subnets() {
    let (reg, a, b) = world();
    let n = json_of(
        &ask(
            &reg,
            &a,
            "10.0.0.10",
            "/openstack/latest/network_data.json",
            &Mode::Builtin,
        )
        .0,
    );
    let links = n["links"].as_array().unwrap();
    assert_eq!(links.len(), 2, "one link per port of the instance: {n}");
    assert_eq!(links[0]["type"], "bridge");
    assert_eq!(links[0]["mtu"], 1500);
    assert!(links[0]["ethernet_mac_address"]
        .as_str()
        .unwrap()
        .starts_with("fa:16:3e:"));
    let nets = n["networks"].as_array().unwrap();
    assert_eq!(
        nets[0],
        json!({"id": "network0", "type": "ipv4_dhcp", "link": links[0]["id"], "network_id": a})
    );
    assert_eq!(nets[1]["type"], "ipv4");
    assert_eq!(nets[1]["ip_address"], "192.168.5.20");
    assert_eq!(nets[1]["netmask"], "255.255.255.0");
    assert_eq!(nets[1]["network_id"], b.as_str());
    assert_eq!(nets[1]["link"], links[1]["id"]);
    assert_eq!(
        nets[1]["routes"],
        json!([
            {"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "192.168.5.1"},
            {"network": "172.16.0.0", "netmask": "255.255.0.0", "gateway": "192.168.5.254"}
        ])
    );
    assert_eq!(
        nets[1]["services"],
        json!([{"type": "dns", "address": "192.168.5.53"}])
    );
    assert_eq!(
        n["services"],
        json!([{"type": "dns", "address": "10.0.0.53"}, {"type": "dns", "address": "192.168.5.53"}])
    );
}

#[test]
fn the_ec2_tree_answers_the_instance_keys() {
    let (reg, a, _) = world();
    let val = |p: &str| body(&ask(&reg, &a, "10.0.0.10", p, &Mode::Builtin).0);
    assert_eq!(val("/latest/meta-data/instance-id"), (200, "vm-1".into()));
    assert_eq!(
        val("/2009-04-04/meta-data/local-ipv4"),
        (200, "10.0.0.10".into())
    );
    assert_eq!(val("/latest/meta-data/hostname").1, "web-1.openstacklocal");
    assert_eq!(
        val("/latest/meta-data/local-hostname").1,
        "web-1.openstacklocal"
    );
    assert!(val("/latest/meta-data/mac").1.starts_with("fa:16:3e:"));
    assert_eq!(
        val("/latest/meta-data/placement/availability-zone").1,
        "nova"
    );
    assert!(val("/latest/meta-data/")
        .1
        .lines()
        .any(|k| k == "instance-id"));
    assert_eq!(val("/latest/meta-data/nothing").0, 404);
    assert_eq!(val("/latest/user-data").0, 404);
    assert!(val("/").1.ends_with("2009-04-04\nlatest"));
}

#[test]
fn sources_without_a_port_or_an_instance_get_404_and_nothing_is_forwarded() {
    let (reg, a, b) = world();
    let proxy = Mode::Proxy {
        secret: b"s3cret".to_vec().into(),
    };
    for mode in [Mode::Builtin, proxy] {
        let (d, why) = ask(&reg, &a, "10.0.0.99", "/openstack", &mode);
        assert_eq!((body(&d).0, why), (404, Why::NoPort));
        let (d, why) = ask(&reg, &a, "10.0.0.11", "/openstack", &mode);
        assert_eq!((body(&d).0, why), (404, Why::NoInstance));
        // the VM's address on the other network does not count here
        let (d, why) = ask(&reg, &b, "10.0.0.10", "/openstack", &mode);
        assert_eq!((body(&d).0, why), (404, Why::NoPort));
    }
}

#[test]
fn a_renamed_port_is_seen_by_the_next_request() {
    let (mut reg, a, _) = world();
    let id = reg
        .ports_of(&a)
        .find(|p| p.device_id == "vm-1")
        .unwrap()
        .id
        .to_string();
    reg.update_port(
        &id,
        PortReq {
            dns_name: Some("db-2".into()),
            ..Default::default()
        },
        &mut TestEnv(100, 100),
    )
    .unwrap();
    let m = json_of(
        &ask(
            &reg,
            &a,
            "10.0.0.10",
            "/openstack/latest/meta_data.json",
            &Mode::Builtin,
        )
        .0,
    );
    assert_eq!(m["name"], "db-2");
}

#[test]
fn proxy_mode_forwards_path_query_and_body_with_a_fresh_signed_header_set() {
    let (reg, a, _) = world();
    let mode = Mode::Proxy {
        secret: b"s3cret".to_vec().into(),
    };
    // the VM tries to speak for another instance and to switch Nova to the provider check
    let raw = "POST /openstack/latest/password?x=1 HTTP/1.1\r\nX-Instance-ID: vm-2\r\nX-Instance-ID-Signature: beef\r\nX-Tenant-ID: evil\r\nX-Forwarded-For: 10.0.0.77\r\nX-Metadata-Provider: p\r\nX-Metadata-Provider-Signature: q\r\nContent-Length: 3\r\n\r\npw!";
    let Parsed::Done(req, _) = parse(raw.as_bytes()) else {
        panic!()
    };
    let asked = asked(&reg, &a, "10.0.0.10");
    let (d, why) = decide(&req, &asked, &mode);
    assert_eq!(why, Why::Forwarded);
    let Decision::Forward(f) = d else { panic!() };
    assert_eq!(f.path_and_query, "/openstack/latest/password?x=1");
    assert_eq!(f.body, b"pw!");
    assert_eq!(
        f.headers,
        vec![
            ("X-Forwarded-For", "10.0.0.10".to_string()),
            ("X-Instance-ID", "vm-1".to_string()),
            ("X-Tenant-ID", "proj-9".to_string()),
            (
                "X-Instance-ID-Signature",
                sign_instance_id(b"s3cret", "vm-1")
            ),
        ]
    );
}

#[test]
fn methods_not_taken_get_405_with_allow() {
    let (reg, a, _) = world();
    let raw = b"DELETE /openstack HTTP/1.1\r\n\r\n";
    let Parsed::Done(req, _) = parse(raw) else {
        panic!()
    };
    let asked = asked(&reg, &a, "10.0.0.10");
    let (d, why) = decide(&req, &asked, &Mode::Builtin);
    assert_eq!(why, Why::Method);
    let Decision::Respond(r) = d else { panic!() };
    assert_eq!((r.status, r.allow), (405, Some("GET, HEAD")));
}

proptest::proptest! {
    #[test]
    fn any_bytes_are_read_without_panicking(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
        let _ = parse(&raw);
    }

    #[test]
    fn any_path_is_answered_without_panicking(path in "/[a-z0-9_./%-]{0,80}") {
        let (reg, a, _) = world();
        let (d, _) = ask(&reg, &a, "10.0.0.10", &path, &Mode::Builtin);
        let _ = body(&d);
    }
}

/// A dhcpv6-stateful subnet added to network `a`: `vm-1` gets an IPv6 address there.
#[test]
fn ipv6_addresses_are_novas_ipv6_networks_and_a_link_local_source_finds_its_port() {
    let (mut reg, a, _) = world();
    let mut env = TestEnv(7, 100);
    let s6 = reg
        .create_subnet(
            SubnetReq {
                network_id: Some(a.clone()),
                cidr: Some("2001:db8:16::/64".into()),
                ip_version: Some(6),
                ipv6_address_mode: Some(Some("dhcpv6-stateful".into())),
                ipv6_ra_mode: Some(Some("dhcpv6-stateful".into())),
                ..Default::default()
            },
            &admin(),
            &mut env,
        )
        .unwrap()
        .0;
    let vm = reg
        .ports_of(&a)
        .find(|p| p.device_id == "vm-1")
        .unwrap()
        .clone();
    let mut fixed: Vec<FixedIpReq> = vm
        .fixed_ips
        .iter()
        .map(|f| FixedIpReq {
            subnet_id: Some(f.subnet_id.to_string()),
            ip_address: Some(f.ip_address.to_string()),
        })
        .collect();
    fixed.push(FixedIpReq {
        subnet_id: Some(s6.id.to_string()),
        ip_address: Some("2001:db8:16::10".into()),
    });
    reg.update_port(
        &vm.id,
        PortReq {
            fixed_ips: Some(fixed),
            ..Default::default()
        },
        &mut env,
    )
    .unwrap();
    let n = json_of(
        &ask(
            &reg,
            &a,
            "10.0.0.10",
            "/openstack/latest/network_data.json",
            &Mode::Builtin,
        )
        .0,
    );
    let v6 = n["networks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["type"] == "ipv6_dhcpv6-stateful")
        .unwrap_or_else(|| panic!("no ipv6 network: {n}"))
        .clone();
    assert_eq!(v6["ip_address"], "2001:db8:16::10");
    assert_eq!(v6["netmask"], "ffff:ffff:ffff:ffff::");
    assert_eq!(
        v6["routes"],
        json!([{"network": "::", "netmask": "::", "gateway": "2001:db8:16::1"}])
    );
    // the VM's global IPv6 address, and its EUI-64 link-local, both find its port
    let mac = vm.mac_address.0;
    let ll = format!(
        "fe80::{:02x}{:02x}:{:02x}ff:fe{:02x}:{:02x}{:02x}",
        mac[0] ^ 2,
        mac[1],
        mac[2],
        mac[3],
        mac[4],
        mac[5]
    );
    for src in ["2001:db8:16::10", ll.as_str()] {
        let m = json_of(
            &ask(
                &reg,
                &a,
                src,
                "/openstack/latest/meta_data.json",
                &Mode::Builtin,
            )
            .0,
        );
        assert_eq!(m["uuid"], "vm-1", "from {src}");
    }
    // a link-local that is no EUI-64 (a privacy address) finds nothing
    let (d, why) = ask(
        &reg,
        &a,
        "fe80::1234:5678:9abc:def0",
        "/openstack/latest/meta_data.json",
        &Mode::Builtin,
    );
    assert_eq!((body(&d).0, why), (404, Why::NoPort));
    assert_eq!(
        crate::answer::mac_of_link_local("fe80::f816:3eff:fe7a:603".parse().unwrap()),
        Some([0xfa, 0x16, 0x3e, 0x7a, 0x06, 0x03])
    );
}
