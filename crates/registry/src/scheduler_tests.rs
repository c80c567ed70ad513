//! The DHCP scheduler: DHCP ports per node, least loaded first, failover that moves a dead
//! node's port (address and MAC) to a live node, and option 6 with every DHCP port.

use crate::dhcp::{subnets_for, DhcpSettings};
use crate::requests::*;
use crate::tests::{admin, TestEnv};
use crate::*;

fn live(r: &mut Registry, per_network: usize, nodes: &[&str]) {
    r.set_scheduling(Scheduling {
        per_network,
        live: nodes.iter().map(|n| NodeName::from(*n)).collect(),
        ..Default::default()
    });
}

/// A flat network with one DHCP-enabled subnet 10.0.<k>.0/24; returns (network, subnet).
fn net(r: &mut Registry, env: &mut TestEnv, k: u8) -> (String, String) {
    let (n, _) = r
        .create_network(
            NetworkReq {
                name: Some(format!("n{k}")),
                network_type: Some("local".into()),
                ..Default::default()
            },
            &admin(),
            env,
        )
        .unwrap();
    let (s, _) = r
        .create_subnet(
            SubnetReq {
                network_id: Some(n.id.to_string()),
                cidr: Some(format!("10.0.{k}.0/24")),
                ..Default::default()
            },
            &admin(),
            env,
        )
        .unwrap();
    (n.id.to_string(), s.id.to_string())
}

/// (host, first address, MAC) of each DHCP port of `net`, by host.
fn placed(r: &Registry, net: &str) -> Vec<(String, std::net::IpAddr, String)> {
    let mut v: Vec<_> = r
        .dhcp_ports(net)
        .map(|p| {
            (
                p.binding_host_id.to_string(),
                p.fixed_ips[0].ip_address,
                p.mac_address.to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn hosts(r: &Registry, net: &str) -> Vec<String> {
    placed(r, net).into_iter().map(|p| p.0).collect()
}

#[test]
fn each_network_gets_ports_on_the_least_loaded_live_nodes() {
    let mut r = Registry::default();
    let mut env = TestEnv(0);
    live(&mut r, 2, &["node-a", "node-b", "node-c"]);
    let (n1, _) = net(&mut r, &mut env, 1);
    assert_eq!(hosts(&r, &n1), ["node-a", "node-b"]);
    let (n2, _) = net(&mut r, &mut env, 2);
    // c has none, then a and b have one each: a by name
    assert_eq!(hosts(&r, &n2), ["node-a", "node-c"]);
    let (n3, _) = net(&mut r, &mut env, 3);
    assert_eq!(hosts(&r, &n3), ["node-b", "node-c"]);
    for n in [&n1, &n2, &n3] {
        let p = placed(&r, n);
        assert_ne!(p[0].1, p[1].1, "one address per DHCP port");
        assert_ne!(p[0].2, p[1].2, "one MAC per DHCP port");
        for d in r.dhcp_ports(n) {
            assert_eq!(d.device_owner, DHCP_OWNER);
            assert_eq!(d.device_id, format!("dhcp{}-{n}", d.binding_host_id));
        }
    }
    assert_eq!(
        [
            r.dhcp_load("node-a"),
            r.dhcp_load("node-b"),
            r.dhcp_load("node-c")
        ],
        [2, 2, 2]
    );
    // more nodes than wanted per network: never more ports than asked for
    live(&mut r, 1, &["node-a", "node-b", "node-c"]);
    let (n4, _) = net(&mut r, &mut env, 4);
    assert_eq!(r.dhcp_ports(&n4).count(), 1);
}

#[test]
fn a_dead_nodes_port_moves_with_its_address_and_mac_to_a_spare_live_node() {
    let mut r = Registry::default();
    let mut env = TestEnv(0);
    live(&mut r, 2, &["node-a", "node-b", "node-c"]);
    let (n1, _) = net(&mut r, &mut env, 1);
    let before = placed(&r, &n1);
    let a_port = r.dhcp_port_for(&n1, "node-a").unwrap().id.clone();
    live(&mut r, 2, &["node-b", "node-c"]);
    let out = r.reschedule_dhcp(&mut env);
    assert_eq!(
        out.changes,
        vec![Change::Put(ObjectId::Port(a_port.clone()))],
        "only the dead node's port changes"
    );
    assert!(out
        .effects
        .contains(&Effect::NetworkChanged(n1.as_str().into())));
    let after = placed(&r, &n1);
    assert_eq!(hosts(&r, &n1), ["node-b", "node-c"]);
    let moved = r.dhcp_port_for(&n1, "node-c").unwrap();
    assert_eq!(moved.id, a_port, "the same port, not a new one");
    assert_eq!((after[1].1, &after[1].2), (before[0].1, &before[0].2));
    assert_eq!(r.dhcp_load("node-a"), 0);
    // nothing left to do: a second pass changes nothing
    assert!(r.reschedule_dhcp(&mut env).changes.is_empty());
}

#[test]
fn without_a_spare_node_the_dead_nodes_port_stays_reserved() {
    let mut r = Registry::default();
    let mut env = TestEnv(0);
    live(&mut r, 2, &["node-a", "node-b"]);
    let (n1, s1) = net(&mut r, &mut env, 1);
    let before = placed(&r, &n1);
    live(&mut r, 2, &["node-b"]);
    assert!(r.reschedule_dhcp(&mut env).changes.is_empty());
    assert_eq!(placed(&r, &n1), before);
    // node b serves with its own port as server; option 6 names every DHCP port, its own first
    let cfg = DhcpSettings {
        node: "node-b".into(),
        ..Default::default()
    };
    let (subnets, _) = subnets_for(&r, &n1, &cfg);
    let b_ip = r.dhcp_port_for(&n1, "node-b").unwrap().fixed_ips[0].ip_address;
    let a_ip = r.dhcp_port_for(&n1, "node-a").unwrap().fixed_ips[0].ip_address;
    let mut want = vec![6, 8];
    want.extend(octets(b_ip));
    want.extend(octets(a_ip));
    assert_eq!(subnets[0].options.get(6).unwrap().tlv, want);
    let routes = &subnets[0].options.get(121).unwrap().tlv;
    assert_eq!(
        &routes[7..11],
        &octets(b_ip),
        "metadata via this node's port"
    );
    // ... and when node a is back, it is served by a again, untouched
    live(&mut r, 2, &["node-a", "node-b"]);
    assert!(r.reschedule_dhcp(&mut env).changes.is_empty());
    let _ = s1;
}

#[test]
fn a_port_made_before_nodes_were_known_is_adopted_and_a_new_node_tops_networks_up() {
    let mut r = Registry::default();
    let mut env = TestEnv(0);
    let (n1, _) = net(&mut r, &mut env, 1);
    assert_eq!(hosts(&r, &n1), [""], "unbound: any node serves it");
    let unbound = placed(&r, &n1);
    assert!(r.dhcp_port_for(&n1, "anyone").is_some());
    live(&mut r, 2, &["node-a"]);
    r.reschedule_dhcp(&mut env);
    assert_eq!(hosts(&r, &n1), ["node-a"]);
    assert_eq!(
        placed(&r, &n1)[0].1,
        unbound[0].1,
        "adopted with its address"
    );
    assert!(r.dhcp_port_for(&n1, "node-b").is_none());
    live(&mut r, 2, &["node-a", "node-b"]);
    let out = r.reschedule_dhcp(&mut env);
    assert_eq!(out.changes.len(), 1, "one new port, for node b");
    assert_eq!(hosts(&r, &n1), ["node-a", "node-b"]);
}

#[test]
fn a_network_without_dhcp_subnets_has_no_dhcp_ports_and_frees_the_load() {
    let mut r = Registry::default();
    let mut env = TestEnv(0);
    live(&mut r, 2, &["node-a", "node-b"]);
    let (n1, s1) = net(&mut r, &mut env, 1);
    assert_eq!(r.dhcp_load("node-a"), 1);
    r.delete_subnet(&s1, &mut env).unwrap();
    assert_eq!(r.dhcp_ports(&n1).count(), 0);
    assert_eq!((r.dhcp_load("node-a"), r.dhcp_load("node-b")), (0, 0));
}

#[test]
fn only_admins_bind_a_port_to_a_host() {
    let mut r = Registry::default();
    let mut env = TestEnv(0);
    let (n1, _) = net(&mut r, &mut env, 1);
    let member = Caller {
        project_id: "p1".into(),
        is_admin: false,
    };
    let req = PortReq {
        network_id: Some(n1.clone()),
        binding_host_id: Some("compute-1".into()),
        ..Default::default()
    };
    let e = r.create_port(req.clone(), &member, &mut env).unwrap_err();
    assert_eq!((e.status(), e.kind()), (403, "PolicyNotAuthorized"));
    let (p, _) = r.create_port(req, &admin(), &mut env).unwrap();
    assert_eq!(p.binding_host_id, "compute-1");
}

fn octets(ip: std::net::IpAddr) -> [u8; 4] {
    match ip {
        std::net::IpAddr::V4(a) => a.octets(),
        std::net::IpAddr::V6(a) => panic!("an IPv4 address was expected, not {a}"),
    }
}
