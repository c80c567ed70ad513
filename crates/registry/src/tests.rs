//! Registry behaviour: IPAM, validation, uniqueness, DHCP port lifecycle, DHCP view.

use std::collections::HashSet;

use crate::dhcp::{reservation_for, subnets_for, DhcpSettings};
use crate::requests::*;
use crate::*;

/// Fixed time, counted ids, a simple generator for MACs: every run the same.
pub(crate) struct TestEnv(pub(crate) u32);
impl Env for TestEnv {
    fn now(&mut self) -> Stamp {
        "2026-11-25T15:00:00Z".into()
    }
    fn new_id(&mut self) -> ArcStr {
        self.0 += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.0).into()
    }
    fn random(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(1_103_515_245).wrapping_add(12345);
        self.0
    }
}

pub(crate) fn admin() -> Caller {
    Caller {
        project_id: "p1".into(),
        is_admin: true,
    }
}

pub(crate) fn setup(pool_end: &str) -> (Registry, TestEnv, String, String) {
    let mut r = Registry::default();
    let mut env = TestEnv(0);
    let (n, _) = r
        .create_network(
            NetworkReq {
                name: Some("flat_net".into()),
                network_type: Some("flat".into()),
                physical_network: Some(Some("physnet1".into())),
                ..Default::default()
            },
            &admin(),
            &mut env,
        )
        .unwrap();
    let (s, out) = r
        .create_subnet(
            SubnetReq {
                network_id: Some(n.id.to_string()),
                cidr: Some("172.16.1.0/24".into()),
                gateway_ip: Some(Some("172.16.1.1".into())),
                allocation_pools: Some(vec![PoolReq {
                    start: "172.16.1.100".into(),
                    end: pool_end.into(),
                }]),
                ..Default::default()
            },
            &admin(),
            &mut env,
        )
        .unwrap();
    assert!(out
        .effects
        .iter()
        .any(|e| matches!(e, Effect::PortChanged(None, Some(p)) if p.device_owner == DHCP_OWNER)));
    (r, env, n.id.to_string(), s.id.to_string())
}

pub(crate) fn port(net: &str, ip: Option<&str>, subnet: Option<&str>) -> PortReq {
    PortReq {
        network_id: Some(net.into()),
        fixed_ips: if ip.is_none() && subnet.is_none() {
            None
        } else {
            Some(vec![FixedIpReq {
                subnet_id: subnet.map(Into::into),
                ip_address: ip.map(Into::into),
            }])
        },
        ..Default::default()
    }
}

#[test]
fn first_dhcp_subnet_creates_dhcp_port_with_first_pool_address() {
    let (r, _, net, sub) = setup("172.16.1.200");
    let d = r.dhcp_port_for(&net, "").unwrap();
    assert_eq!(d.fixed_ips[0].ip_address.to_string(), "172.16.1.100");
    assert_eq!(d.fixed_ips[0].subnet_id, sub);
    assert_eq!(&d.mac_address.to_string()[..8], "fa:16:3e");
}

#[test]
fn requested_address_is_reserved_and_cannot_be_taken_twice() {
    let (mut r, mut env, net, sub) = setup("172.16.1.200");
    let (p, _) = r
        .create_port(
            port(&net, Some("172.16.1.103"), Some(&sub)),
            &admin(),
            &mut env,
        )
        .unwrap();
    assert_eq!(p.fixed_ips[0].ip_address.to_string(), "172.16.1.103");
    let e = r
        .create_port(port(&net, Some("172.16.1.103"), None), &admin(), &mut env)
        .unwrap_err();
    assert_eq!(e.kind(), "IpAddressAlreadyAllocated");
    assert_eq!(e.status(), 409);
}

#[test]
fn invalid_addresses_are_refused_with_the_field_named() {
    let (mut r, mut env, net, sub) = setup("172.16.1.200");
    for bad in ["172.16.1.0", "172.16.1.255", "172.16.1.1", "10.0.0.5"] {
        let e = r
            .create_port(port(&net, Some(bad), Some(&sub)), &admin(), &mut env)
            .unwrap_err();
        assert_eq!(e.status(), 400, "{bad}: {e}");
    }
    let e = r
        .create_port(port(&net, Some("nonsense"), None), &admin(), &mut env)
        .unwrap_err();
    assert!(e.to_string().contains("fixed_ips"), "{e}");
    let e = r
        .create_port(
            PortReq {
                network_id: Some(net.clone()),
                mac_address: Some("zz".into()),
                ..Default::default()
            },
            &admin(),
            &mut env,
        )
        .unwrap_err();
    assert!(e.to_string().contains("mac_address"), "{e}");
}

#[test]
fn exhausted_pool_answers_generation_failure_and_creates_nothing() {
    let (mut r, mut env, net, _) = setup("172.16.1.103");
    // .100 is the DHCP port; .101-.103 remain
    for _ in 0..3 {
        r.create_port(port(&net, None, None), &admin(), &mut env)
            .unwrap();
    }
    let before = r.ports().count();
    let e = r
        .create_port(port(&net, None, None), &admin(), &mut env)
        .unwrap_err();
    assert_eq!(e.kind(), "IpAddressGenerationFailure");
    assert_eq!(r.ports().count(), before, "nothing half-created");
}

#[test]
fn allocations_are_distinct_and_inside_the_pool() {
    let (mut r, mut env, net, _) = setup("172.16.1.200");
    let mut ips = HashSet::new();
    let mut macs = HashSet::new();
    for _ in 0..100 {
        let (p, _) = r
            .create_port(port(&net, None, None), &admin(), &mut env)
            .unwrap();
        let ip = p.fixed_ips[0].ip_address;
        assert!(
            ip >= "172.16.1.101".parse::<std::net::Ipv4Addr>().unwrap()
                && ip <= "172.16.1.200".parse::<std::net::Ipv4Addr>().unwrap()
        );
        assert!(ips.insert(ip));
        assert!(macs.insert(p.mac_address));
    }
}

#[test]
fn duplicate_mac_on_a_network_is_refused() {
    let (mut r, mut env, net, _) = setup("172.16.1.200");
    let req = PortReq {
        network_id: Some(net.clone()),
        mac_address: Some("fa:16:3e:00:00:01".into()),
        ..Default::default()
    };
    r.create_port(req.clone(), &admin(), &mut env).unwrap();
    assert_eq!(
        r.create_port(req, &admin(), &mut env).unwrap_err().kind(),
        "MacAddressInUse"
    );
}

#[test]
fn deleting_a_port_frees_its_address_at_once() {
    let (mut r, mut env, net, sub) = setup("172.16.1.200");
    let (p, _) = r
        .create_port(
            port(&net, Some("172.16.1.150"), Some(&sub)),
            &admin(),
            &mut env,
        )
        .unwrap();
    r.delete_port(&p.id).unwrap();
    r.create_port(
        port(&net, Some("172.16.1.150"), Some(&sub)),
        &admin(),
        &mut env,
    )
    .unwrap();
}

#[test]
fn subnet_and_network_in_use_are_protected() {
    let (mut r, mut env, net, sub) = setup("172.16.1.200");
    let (p, _) = r
        .create_port(port(&net, None, None), &admin(), &mut env)
        .unwrap();
    assert_eq!(
        r.delete_subnet(&sub, &mut env).unwrap_err().kind(),
        "SubnetInUse"
    );
    assert_eq!(r.delete_network(&net).unwrap_err().kind(), "NetworkInUse");
    r.delete_port(&p.id).unwrap();
    let out = r.delete_network(&net).unwrap();
    assert!(out
        .effects
        .contains(&Effect::NetworkDeleted(net.as_str().into())));
    assert_eq!(r.ports().count(), 0, "DHCP port went with the network");
    assert_eq!(r.subnets().count(), 0);
}

#[test]
fn overlapping_subnet_is_refused() {
    let (mut r, mut env, net, _) = setup("172.16.1.200");
    let e = r
        .create_subnet(
            SubnetReq {
                network_id: Some(net),
                cidr: Some("172.16.0.0/16".into()),
                ..Default::default()
            },
            &admin(),
            &mut env,
        )
        .unwrap_err();
    assert_eq!(e.status(), 400);
    assert!(e.to_string().contains("overlaps"));
}

#[test]
fn default_pools_skip_gateway_network_and_broadcast() {
    let mut r = Registry::default();
    let mut env = TestEnv(0);
    let (n, _) = r
        .create_network(NetworkReq::default(), &admin(), &mut env)
        .unwrap();
    let (s, _) = r
        .create_subnet(
            SubnetReq {
                network_id: Some(n.id.to_string()),
                cidr: Some("10.0.0.0/24".into()),
                ..Default::default()
            },
            &admin(),
            &mut env,
        )
        .unwrap();
    assert_eq!(s.gateway_ip.unwrap().to_string(), "10.0.0.1");
    assert_eq!(
        s.allocation_pools,
        vec![Pool {
            start: "10.0.0.2".parse().unwrap(),
            end: "10.0.0.254".parse().unwrap()
        }]
    );
    let e = r
        .create_subnet(
            SubnetReq {
                network_id: Some("nope".into()),
                cidr: Some("10.1.0.0/24".into()),
                ..Default::default()
            },
            &admin(),
            &mut env,
        )
        .unwrap_err();
    assert_eq!(e.kind(), "NetworkNotFound");
    let e = r
        .create_subnet(
            SubnetReq {
                network_id: Some(s.network_id.to_string()),
                cidr: Some("10.1.0.5/24".into()),
                ..Default::default()
            },
            &admin(),
            &mut env,
        )
        .unwrap_err();
    assert!(e.to_string().contains("cidr"), "{e}");
}

#[test]
fn dhcp_view_has_router_dns_mtu_and_metadata_route_via_dhcp_port() {
    let (mut r, mut env, net, sub) = setup("172.16.1.200");
    r.update_subnet(
        &sub,
        SubnetReq {
            dns_nameservers: Some(vec!["8.8.8.8".into()]),
            ..Default::default()
        },
        &mut env,
    )
    .unwrap();
    let (p, _) = r
        .create_port(
            port(&net, Some("172.16.1.103"), Some(&sub)),
            &admin(),
            &mut env,
        )
        .unwrap();
    let (subnets, global) = subnets_for(&r, &net, &DhcpSettings::default());
    assert_eq!(subnets.len(), 1);
    let o = &subnets[0].options;
    assert_eq!(o.get(3).unwrap().tlv, vec![3, 4, 172, 16, 1, 1]);
    assert_eq!(o.get(6).unwrap().tlv, vec![6, 4, 8, 8, 8, 8]);
    let routes = &o.get(121).unwrap().tlv;
    assert_eq!(
        &routes[2..11],
        &[32, 169, 254, 169, 254, 172, 16, 1, 100],
        "metadata via the DHCP port"
    );
    assert!(global.get(26).unwrap().force);
    let res = reservation_for(&r, &p).unwrap();
    assert_eq!(res.ip.to_string(), "172.16.1.103");
    assert_eq!(res.hostname.as_deref(), Some("host-172-16-1-103"));
    assert!(reservation_for(&r, r.dhcp_port_for(&net, "").unwrap()).is_none());
}

#[test]
fn members_cannot_create_in_other_projects() {
    let mut r = Registry::default();
    let mut env = TestEnv(0);
    let member = Caller {
        project_id: "p1".into(),
        is_admin: false,
    };
    let e = r
        .create_network(
            NetworkReq {
                project_id: Some("p2".into()),
                ..Default::default()
            },
            &member,
            &mut env,
        )
        .unwrap_err();
    assert_eq!(e.status(), 400);
}

#[test]
fn second_flat_network_on_a_physical_network_is_flat_network_in_use() {
    let (mut r, mut env, _, _) = setup("172.16.1.200");
    let flat_on = |pn: &str| NetworkReq {
        network_type: Some("flat".into()),
        physical_network: Some(Some(pn.into())),
        ..Default::default()
    };
    let e = r
        .create_network(flat_on("physnet1"), &admin(), &mut env)
        .unwrap_err();
    assert_eq!((e.status(), e.kind()), (409, "FlatNetworkInUse"));
    assert_eq!(
        e.to_string(),
        "Unable to create the flat network. Physical network physnet1 is in use."
    );
    // another physical network, or a local network, is fine
    r.create_network(flat_on("physnet2"), &admin(), &mut env)
        .unwrap();
    r.create_network(
        NetworkReq {
            network_type: Some("local".into()),
            ..Default::default()
        },
        &admin(),
        &mut env,
    )
    .unwrap();
}

#[test]
fn gateway_inside_a_pool_is_gateway_conflict_with_allocation_pools() {
    let (mut r, mut env, net, sub) = setup("172.16.1.200");
    let e = r
        .create_subnet(
            SubnetReq {
                network_id: Some(net.clone()),
                cidr: Some("172.16.2.0/24".into()),
                gateway_ip: Some(Some("172.16.2.10".into())),
                allocation_pools: Some(vec![PoolReq {
                    start: "172.16.2.2".into(),
                    end: "172.16.2.100".into(),
                }]),
                ..Default::default()
            },
            &admin(),
            &mut env,
        )
        .unwrap_err();
    assert_eq!(
        (e.status(), e.kind()),
        (409, "GatewayConflictWithAllocationPools")
    );
    assert_eq!(
        e.to_string(),
        "Gateway ip 172.16.2.10 conflicts with allocation pool 172.16.2.2-172.16.2.100."
    );
    // and moving an existing subnet's gateway into its pool, likewise
    let e = r
        .update_subnet(
            &sub,
            SubnetReq {
                gateway_ip: Some(Some("172.16.1.150".into())),
                ..Default::default()
            },
            &mut env,
        )
        .unwrap_err();
    assert_eq!(e.kind(), "GatewayConflictWithAllocationPools");
}

#[test]
fn tagged_ipxe_extra_dhcp_opt_is_served_only_to_ipxe_clients() {
    let (mut r, mut env, net, _) = setup("172.16.1.200");
    let opt = |name: &str, value: &str| ExtraDhcpOptReq {
        opt_name: name.into(),
        opt_value: Some(value.into()),
        ip_version: None,
    };
    let (p, _) = r
        .create_port(
            PortReq {
                extra_dhcp_opts: Some(vec![
                    opt("bootfile-name", "pxelinux.0"),
                    opt("tag:ipxe,bootfile-name", "http://172.16.1.9/boot.ipxe"),
                ]),
                ..port(&net, None, None)
            },
            &admin(),
            &mut env,
        )
        .unwrap();
    let res = reservation_for(&r, &p).unwrap();
    assert!(res.options.contains(67));
    assert_eq!(res.conditional.len(), 1);
    assert_eq!(
        res.conditional[0].when,
        vec![qdhcp_protocol::ClientMatch::SentOption(175)]
    );
    assert!(res.conditional[0].options.contains(67));
}

fn ml2() -> crate::segments::SegmentConfig {
    crate::segments::SegmentConfig {
        vlan_ranges: crate::segments::SegmentConfig::parse_vlan_ranges("physnet1:100:101,physnet2")
            .unwrap(),
        vni_ranges: crate::segments::SegmentConfig::parse_vni_ranges("1000:1001").unwrap(),
        tenant_types: crate::segments::SegmentConfig::parse_tenant_types("vxlan,vlan").unwrap(),
    }
}

fn member() -> Caller {
    Caller {
        project_id: "p2".into(),
        is_admin: false,
    }
}

fn net_req(t: Option<&str>, physnet: Option<&str>, seg: Option<u32>) -> NetworkReq {
    NetworkReq {
        network_type: t.map(Into::into),
        physical_network: physnet.map(|p| Some(p.to_string())),
        segmentation_id: seg.map(Some),
        ..Default::default()
    }
}

#[test]
fn tenant_networks_get_free_segments_in_type_order_until_exhausted() {
    let mut r = Registry::default();
    r.set_segments(ml2());
    let mut env = TestEnv(0);
    let mut got = Vec::new();
    for _ in 0..4 {
        let (n, _) = r
            .create_network(NetworkReq::default(), &member(), &mut env)
            .unwrap();
        got.push((n.network_type, n.physical_network, n.segmentation_id));
    }
    assert_eq!(
        got,
        vec![
            (NetworkType::Vxlan, None, Some(1000)),
            (NetworkType::Vxlan, None, Some(1001)),
            (NetworkType::Vlan, Some("physnet1".into()), Some(100)),
            (NetworkType::Vlan, Some("physnet1".into()), Some(101)),
        ]
    );
    let e = r
        .create_network(NetworkReq::default(), &member(), &mut env)
        .unwrap_err();
    assert_eq!((e.status(), e.kind()), (503, "NoNetworkAvailable"));
    // a delete releases its segment
    let first = r
        .networks()
        .find(|n| n.segmentation_id == Some(1000))
        .unwrap()
        .id
        .clone();
    r.delete_network(&first).unwrap();
    let (n, _) = r
        .create_network(NetworkReq::default(), &member(), &mut env)
        .unwrap();
    assert_eq!(n.segmentation_id, Some(1000));
}

/// The segments in use as a scan of every network finds them.
fn in_use_by_scan(r: &Registry) -> crate::segments::InUse {
    let mut u = crate::segments::InUse::default();
    for n in r.networks() {
        u.add(n);
    }
    u
}

#[test]
fn segments_in_use_follow_dropped_writes_and_changes_from_the_store() {
    let mut r = Registry::default();
    r.set_segments(ml2());
    let mut env = TestEnv(0);
    let tenant = |r: &mut Registry, env: &mut TestEnv| {
        r.create_network(NetworkReq::default(), &member(), env)
            .unwrap()
            .0
    };
    let a = tenant(&mut r, &mut env);
    let b = tenant(&mut r, &mut env);
    assert_eq!(
        (a.segmentation_id, b.segmentation_id),
        (Some(1000), Some(1001))
    );
    // a write that is dropped (not stored): A's VNI released and taken again by a new network
    // in a clone, which goes; the registry still holds both as committed
    let mut w = r.clone();
    w.delete_network(&a.id).unwrap();
    assert_eq!(tenant(&mut w, &mut env).segmentation_id, Some(1000));
    drop(w);
    assert_eq!(r.in_use, in_use_by_scan(&r));
    // A holds 1000 again: the next tenant network is the first VLAN
    let c = tenant(&mut r, &mut env);
    assert_eq!(
        (c.network_type.as_str(), c.segmentation_id),
        ("vlan", Some(100))
    );
    // another node deleted B and created a provider VXLAN network with VNI 7: B's VNI is free
    // here too, and 7 is refused
    let mut seven = a.clone();
    seven.id = "00000000-0000-4000-8000-0000000000ff".into();
    seven.segmentation_id = Some(7);
    r.apply_stored(vec![
        crate::Stored::Gone(ObjectId::Network(b.id.to_string().into())),
        crate::Stored::Network(seven),
    ]);
    assert_eq!(r.in_use, in_use_by_scan(&r));
    assert_eq!(tenant(&mut r, &mut env).segmentation_id, Some(1001));
    let e = r
        .create_network(net_req(Some("vxlan"), None, Some(7)), &admin(), &mut env)
        .unwrap_err();
    assert_eq!((e.status(), e.kind()), (409, "TunnelIdInUse"));
    // read back at start: the same index
    let fresh = Registry::from_parts(r.networks().cloned().collect(), vec![], vec![]);
    assert_eq!(fresh.in_use, r.in_use);
}

#[test]
fn a_released_vni_is_given_again_before_higher_ones() {
    let mut r = Registry::default();
    r.set_segments(crate::segments::SegmentConfig {
        vni_ranges: crate::segments::SegmentConfig::parse_vni_ranges("1:3,10:11").unwrap(),
        tenant_types: vec![NetworkType::Vxlan],
        ..Default::default()
    });
    let mut env = TestEnv(0);
    let mut tenant = |r: &mut Registry| {
        r.create_network(NetworkReq::default(), &member(), &mut env)
            .map(|(n, _)| (n.id, n.segmentation_id))
    };
    let ids: Vec<_> = (0..4).map(|_| tenant(&mut r).unwrap()).collect();
    let vnis: Vec<_> = ids.iter().map(|(_, v)| *v).collect();
    assert_eq!(vnis, [Some(1), Some(2), Some(3), Some(10)]);
    r.delete_network(&ids[1].0).unwrap();
    assert_eq!(r.in_use, in_use_by_scan(&r));
    assert_eq!(tenant(&mut r).unwrap().1, Some(2));
    assert_eq!(tenant(&mut r).unwrap().1, Some(11));
    assert_eq!(tenant(&mut r).unwrap_err().kind(), "NoNetworkAvailable");
    r.delete_network(&ids[3].0).unwrap();
    assert_eq!(r.in_use, in_use_by_scan(&r));
    assert_eq!(tenant(&mut r).unwrap().1, Some(10));
}

#[test]
fn provider_segments_are_validated_as_ml2_type_drivers_do() {
    let mut r = Registry::default();
    r.set_segments(ml2());
    let mut env = TestEnv(0);
    // an admin may take any VLAN of a known physical network, once
    let (n, _) = r
        .create_network(
            net_req(Some("vlan"), Some("physnet2"), Some(42)),
            &admin(),
            &mut env,
        )
        .unwrap();
    assert_eq!(n.segmentation_id, Some(42));
    let e = r
        .create_network(
            net_req(Some("vlan"), Some("physnet2"), Some(42)),
            &admin(),
            &mut env,
        )
        .unwrap_err();
    assert_eq!((e.status(), e.kind()), (409, "VlanIdInUse"));
    assert_eq!(
        e.to_string(),
        "Unable to create the network. The VLAN 42 on physical network physnet2 is in use."
    );
    // the same VLAN on another physical network is another segment
    r.create_network(
        net_req(Some("vlan"), Some("physnet1"), Some(42)),
        &admin(),
        &mut env,
    )
    .unwrap();
    let (v, _) = r
        .create_network(net_req(Some("vxlan"), None, Some(5000)), &admin(), &mut env)
        .unwrap();
    assert_eq!(v.segmentation_id, Some(5000));
    let e = r
        .create_network(net_req(Some("vxlan"), None, Some(5000)), &admin(), &mut env)
        .unwrap_err();
    assert_eq!((e.status(), e.kind()), (409, "TunnelIdInUse"));
    // a member may name only a segment inside the ranges
    let e = r
        .create_network(
            net_req(Some("vxlan"), None, Some(5001)),
            &member(),
            &mut env,
        )
        .unwrap_err();
    assert_eq!(e.status(), 400, "{e}");
    r.create_network(
        net_req(Some("vxlan"), None, Some(1001)),
        &member(),
        &mut env,
    )
    .unwrap();
    for (bad, field) in [
        (
            net_req(Some("vlan"), Some("physnet1"), Some(4095)),
            "segmentation_id",
        ),
        (
            net_req(Some("vlan"), Some("nope"), Some(7)),
            "physical_network",
        ),
        (
            net_req(Some("vxlan"), Some("physnet1"), None),
            "physical_network",
        ),
        (
            net_req(Some("vxlan"), None, Some(1 << 24)),
            "segmentation_id",
        ),
        (
            net_req(Some("flat"), Some("physnet9"), Some(3)),
            "segmentation_id",
        ),
        (
            net_req(Some("local"), Some("physnet1"), None),
            "physical_network",
        ),
        (net_req(Some("gre"), None, None), "network_type"),
    ] {
        let e = r.create_network(bad, &admin(), &mut env).unwrap_err();
        assert_eq!(e.status(), 400, "{e}");
        assert!(e.to_string().contains(field), "{e}");
    }
    // a VLAN network without an id gets a free one of its physical network's ranges
    let (a, _) = r
        .create_network(
            net_req(Some("vlan"), Some("physnet1"), None),
            &admin(),
            &mut env,
        )
        .unwrap();
    assert_eq!(a.segmentation_id, Some(100));
}

/// The per-network index answers what a scan of every subnet and port answers, through
/// creates, deletes and a reload from stored parts.
#[test]
fn a_networks_members_are_those_a_full_scan_finds() {
    let mut r = Registry::default();
    let mut env = TestEnv(0);
    let mut nets = Vec::new();
    for i in 0..4 {
        let (n, _) = r
            .create_network(
                NetworkReq {
                    name: Some(format!("n{i}")),
                    network_type: Some("local".into()),
                    ..Default::default()
                },
                &admin(),
                &mut env,
            )
            .unwrap();
        let (s, _) = r
            .create_subnet(
                SubnetReq {
                    network_id: Some(n.id.to_string()),
                    cidr: Some(format!("10.{i}.0.0/24")),
                    ..Default::default()
                },
                &admin(),
                &mut env,
            )
            .unwrap();
        for _ in 0..3 {
            r.create_port(port(&n.id, None, Some(&s.id)), &admin(), &mut env)
                .unwrap();
        }
        nets.push((n.id.clone(), s.id.clone()));
    }
    // one port gone, one subnet gone (with its DHCP port), one network gone
    let victim = r
        .ports_of(&nets[0].0)
        .find(|p| p.device_owner != DHCP_OWNER)
        .unwrap()
        .id
        .clone();
    r.delete_port(&victim).unwrap();
    let p1: Vec<PortId> = r
        .ports_of(&nets[1].0)
        .filter(|p| p.device_owner != DHCP_OWNER)
        .map(|p| p.id.clone())
        .collect();
    for p in p1 {
        r.delete_port(&p).unwrap();
    }
    r.delete_subnet(&nets[1].1, &mut env).unwrap();
    let p2: Vec<PortId> = r
        .ports_of(&nets[2].0)
        .filter(|p| p.device_owner != DHCP_OWNER)
        .map(|p| p.id.clone())
        .collect();
    for p in p2 {
        r.delete_port(&p).unwrap();
    }
    r.delete_network(&nets[2].0).unwrap();
    let check = |r: &Registry| {
        for (n, _) in &nets {
            let scan_ports: Vec<&str> = r
                .ports()
                .filter(|p| &p.network_id == n)
                .map(|p| p.id.as_str())
                .collect();
            let index_ports: Vec<&str> = r.ports_of(n).map(|p| p.id.as_str()).collect();
            assert_eq!(index_ports, scan_ports, "ports of {n}");
            let scan_subnets: Vec<&str> = r
                .subnets()
                .filter(|s| &s.network_id == n)
                .map(|s| s.id.as_str())
                .collect();
            let index_subnets: Vec<&str> = r.subnets_of(n).map(|s| s.id.as_str()).collect();
            assert_eq!(index_subnets, scan_subnets, "subnets of {n}");
            assert_eq!(
                r.dhcp_port_for(n, "").map(|p| p.id.as_str()),
                r.ports()
                    .find(|p| &p.network_id == n && p.device_owner == DHCP_OWNER)
                    .map(|p| p.id.as_str())
            );
        }
    };
    check(&r);
    assert_eq!(
        r.ports_of(&nets[0].0).count(),
        3,
        "DHCP port and two others"
    );
    assert_eq!(r.ports_of(&nets[1].0).count(), 0);
    assert_eq!(r.subnets_of(&nets[2].0).count(), 0);
    let reloaded = Registry::from_parts(
        r.networks().cloned().collect(),
        r.subnets().cloned().collect(),
        r.ports().cloned().collect(),
    );
    check(&reloaded);
}

#[test]
fn a_networks_dns_domain_is_validated_stored_and_cleared() {
    let (mut r, mut env, net, _) = setup("172.16.1.200");
    let put = |r: &mut Registry, env: &mut TestEnv, d: &str| {
        r.update_network(
            &net,
            NetworkReq {
                dns_domain: Some(d.into()),
                ..Default::default()
            },
            env,
        )
    };
    let (n, _) = put(&mut r, &mut env, "example.org.").unwrap();
    assert_eq!(n.dns_domain, "example.org.");
    for bad in [
        "-x.org",
        "a..org",
        "host",
        "ex_ample.org",
        &format!("{}.org", "a".repeat(64)),
    ] {
        let e = put(&mut r, &mut env, bad).unwrap_err();
        assert!(
            matches!(e, RegistryError::BadRequest(ref m) if m.starts_with("Invalid input for dns_domain.")),
            "{bad}: {e:?}"
        );
    }
    assert_eq!(
        r.network(&net).unwrap().dns_domain,
        "example.org.",
        "a refused update changes nothing"
    );
    let (n, _) = put(&mut r, &mut env, "").unwrap();
    assert_eq!(n.dns_domain, "");
    // names are answered under it as well as under the server's domain
    put(&mut r, &mut env, "example.org").unwrap();
    let names = crate::dhcp::names_for(&r, &net, Some("openstacklocal"));
    let fqdns: Vec<&str> = names.iter().map(|(_, f, _)| f.as_str()).collect();
    assert!(
        fqdns.contains(&"host-172-16-1-100.openstacklocal."),
        "{fqdns:?}"
    );
    assert!(
        fqdns.contains(&"host-172-16-1-100.example.org."),
        "{fqdns:?}"
    );
}

#[test]
fn effects_between_two_registries_name_every_change() {
    let (old, mut env, net, sub) = setup("172.16.1.200");
    let mut new = old.clone();
    let (p, _) = new
        .create_port(
            port(&net, Some("172.16.1.150"), Some(&sub)),
            &admin(),
            &mut env,
        )
        .unwrap();
    let e = crate::effects_between(&old, &new);
    assert!(
        matches!(e.as_slice(), [Effect::PortChanged(None, Some(x))] if x.id == p.id),
        "{e:?}"
    );
    assert!(crate::effects_between(&new, &new).is_empty());
    let mut gone = new.clone();
    gone.delete_port(&p.id).unwrap();
    let (n2, _) = gone
        .create_network(
            NetworkReq {
                name: Some("second".into()),
                network_type: Some("local".into()),
                ..Default::default()
            },
            &admin(),
            &mut env,
        )
        .unwrap();
    let e = crate::effects_between(&new, &gone);
    assert!(
        e.iter()
            .any(|x| matches!(x, Effect::PortChanged(Some(a), None) if a.id == p.id)),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|x| matches!(x, Effect::NetworkChanged(id) if *id == n2.id)),
        "{e:?}"
    );
    let e = crate::effects_between(&gone, &new);
    assert!(
        e.iter()
            .any(|x| matches!(x, Effect::NetworkDeleted(id) if *id == n2.id)),
        "{e:?}"
    );
}

/// Every copy of an id points at the one text its object holds (see docs/ARCHITECTURE.md,
/// "Memory"), both for objects made by the operations and for objects read back from the
/// store, where each field arrives as its own copy.
#[test]
fn ids_and_stamps_are_shared_not_copied() {
    fn check(r: &Registry, net: &str, sub: &str) {
        let n = r.network(net).unwrap();
        let s = r.subnet(sub).unwrap();
        assert!(NetworkId::ptr_eq(&s.network_id, &n.id));
        assert!(ArcStr::ptr_eq(&s.updated_at, &s.created_at));
        let p = r.dhcp_ports(net).next().expect("a DHCP port");
        assert!(NetworkId::ptr_eq(&p.network_id, &n.id));
        assert!(SubnetId::ptr_eq(&p.fixed_ips[0].subnet_id, &s.id));
        assert!(ProjectId::ptr_eq(&p.project_id, &n.project_id));
        for ((key_net, _), port) in &r.macs {
            assert!(NetworkId::ptr_eq(key_net, &n.id));
            assert!(PortId::ptr_eq(port, &r.port(port).unwrap().id));
        }
        let (key, _) = r.networks.get_key_value(net).unwrap();
        assert!(NetworkId::ptr_eq(key, &n.id));
    }
    let (r, _, net, sub) = setup("172.16.1.200");
    check(&r, &net, &sub);
    // as the store gives them back: every field a separate copy
    fn copy<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> T {
        serde_json::from_str(&serde_json::to_string(v).unwrap()).unwrap()
    }
    let back = Registry::from_parts(
        r.networks().map(copy).collect(),
        r.subnets().map(copy).collect(),
        r.ports().map(copy).collect(),
    );
    let p = back.dhcp_ports(&net).next().unwrap();
    assert!(!PortId::ptr_eq(
        &p.id,
        &r.dhcp_ports(&net).next().unwrap().id
    ));
    check(&back, &net, &sub);
}

/// A write works on a clone that is published or dropped whole: a dropped one leaves every
/// object, index and free-address hint of the registry as it was (the next port gets the
/// address it would have got before).
#[test]
fn a_dropped_write_leaves_every_object_and_index_as_it_was() {
    let (mut r, mut env, net, _) = setup("172.16.1.200");
    let port = |r: &mut Registry, env: &mut TestEnv, name: &str| {
        r.create_port(
            PortReq {
                name: Some(name.into()),
                network_id: Some(net.clone()),
                ..Default::default()
            },
            &admin(),
            env,
        )
        .unwrap()
        .0
    };
    let a = port(&mut r, &mut env, "a");
    let b = port(&mut r, &mut env, "b");
    let snapshot = |r: &Registry| {
        (
            r.networks().cloned().collect::<Vec<_>>(),
            r.subnets().cloned().collect::<Vec<_>>(),
            r.ports().cloned().collect::<Vec<_>>(),
        )
    };
    let before = snapshot(&r);
    let mut w = r.clone();
    let (n2, _) = w
        .create_network(
            NetworkReq {
                name: Some("two".into()),
                ..Default::default()
            },
            &admin(),
            &mut env,
        )
        .unwrap();
    w.create_subnet(
        SubnetReq {
            network_id: Some(n2.id.to_string()),
            cidr: Some("10.9.0.0/24".into()),
            ..Default::default()
        },
        &admin(),
        &mut env,
    )
    .unwrap();
    w.update_network(
        &net,
        NetworkReq {
            name: Some("renamed".into()),
            ..Default::default()
        },
        &mut env,
    )
    .unwrap();
    w.update_port(
        &a.id,
        PortReq {
            name: Some("a2".into()),
            ..Default::default()
        },
        &mut env,
    )
    .unwrap();
    w.delete_port(&b.id).unwrap();
    let c = port(&mut w, &mut env, "c");
    assert_eq!(c.fixed_ips, b.fixed_ips, "b's address is free again");
    // a port past the free addresses moves the dropped write's hint beyond what it leaves free
    let e = port(&mut w, &mut env, "e");
    assert_ne!(snapshot(&w), before);
    drop(w);
    assert_eq!(snapshot(&r), before);
    assert!(r.port(&c.id).is_none());
    let d = port(&mut r, &mut env, "d");
    assert_ne!(d.fixed_ips, b.fixed_ips, "b holds its address again");
    assert_ne!(d.fixed_ips, a.fixed_ips);
    assert_eq!(
        d.fixed_ips, e.fixed_ips,
        "the address the dropped write took is free"
    );
    // and no free-address hint of the dropped write: the same port in a registry without
    // hints (a full walk) gets the same address
    let mut walked = Registry::from_parts(
        r.networks().cloned().collect(),
        r.subnets().cloned().collect(),
        r.ports().filter(|p| p.id != d.id).cloned().collect(),
    );
    assert_eq!(port(&mut walked, &mut env, "d").fixed_ips, d.fixed_ips);
    assert_eq!(r.subnets_of(&net).count(), 1);
}

#[test]
fn a_snapshot_keeps_what_it_saw_while_the_registry_changes() {
    let (mut r, mut env, net, sub) = setup("172.16.1.200");
    let (p1, _) = r
        .create_port(port(&net, Some("172.16.1.150"), None), &admin(), &mut env)
        .unwrap();
    let snap = r.clone();
    let seen = |reg: &Registry| {
        let mut ports: Vec<String> = reg
            .ports_of(&net)
            .map(|p| format!("{} {}", p.id, p.fixed_ips[0].ip_address))
            .collect();
        ports.sort();
        (ports, reg.used_in(&sub), reg.subnets_of(&net).count())
    };
    let before = seen(&r);
    // the writer goes on: a port renamed, one deleted, one created, a subnet gone
    let rename = PortReq {
        name: Some("renamed".into()),
        ..Default::default()
    };
    r.update_port(&p1.id, rename, &mut env).unwrap();
    let (p2, _) = r
        .create_port(port(&net, None, None), &admin(), &mut env)
        .unwrap();
    r.delete_port(&p1.id).unwrap();
    r.delete_port(&p2.id).unwrap();
    r.delete_subnet(&sub, &mut env).unwrap();
    assert_eq!(
        seen(&snap),
        before,
        "the snapshot changed with the registry"
    );
    assert_eq!(snap.port(&p1.id).map(|p| p.name.as_str()), Some(""));
    assert_eq!(before.1, 2, "the DHCP port and p1");
    assert_eq!(seen(&r), (vec![], 0, 0));
    // and the snapshot's indexes still answer as the registry did then
    let ip = "172.16.1.150".parse().unwrap();
    assert_eq!(
        snap.ips.port_at(&SubnetId::from(sub.as_str()), ip),
        Some(&p1.id)
    );
    assert_eq!(r.ips.port_at(&SubnetId::from(sub.as_str()), ip), None);
    let mac = (NetworkId::from(net.as_str()), p1.mac_address);
    assert!(snap.macs.contains_key(&mac) && !r.macs.contains_key(&mac));
}
