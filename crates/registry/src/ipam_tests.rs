//! IPAM's first-free search with its hint: whatever the order of creates, deletes, explicit
//! addresses and pool changes, a port without an address gets exactly the lowest free pool
//! address a full walk finds.

use std::net::{IpAddr, Ipv4Addr};

use crate::requests::*;
use crate::tests::{admin, TestEnv};
use crate::*;

/// The lowest free address of `subnet`'s pools, in pool order, by walking them all.
fn lowest_free(r: &Registry, subnet: &str) -> Option<IpAddr> {
    lowest_free_of_share(r, subnet, 0, 1)
}

/// [`lowest_free`] among the addresses of the share `rank` of `nodes` (address mod nodes).
fn lowest_free_of_share(r: &Registry, subnet: &str, rank: u32, nodes: u32) -> Option<IpAddr> {
    let used: Vec<IpAddr> = r
        .ports()
        .flat_map(|p| p.fixed_ips.iter())
        .filter(|f| f.subnet_id == subnet)
        .map(|f| f.ip_address)
        .collect();
    let s = r.subnet(subnet).unwrap();
    s.allocation_pools
        .iter()
        .flat_map(|p| p.v4_range().map(|(a, b)| a..=b).into_iter().flatten())
        .filter(|a| a % nodes == rank)
        .map(|a| IpAddr::V4(Ipv4Addr::from(a)))
        .find(|ip| !used.contains(ip))
}

fn pools(list: &[(&str, &str)]) -> Vec<PoolReq> {
    list.iter()
        .map(|(a, b)| PoolReq {
            start: a.to_string(),
            end: b.to_string(),
        })
        .collect()
}

#[test]
fn a_port_gets_the_lowest_free_address_whatever_happened_before() {
    random_histories(None);
}

/// The same with two live nodes: a node takes the lowest free address of its own share
/// (address mod 2 = its rank), and the lowest free of any once its share is full.
#[test]
fn a_node_sharing_the_pool_gets_the_lowest_free_address_of_its_share() {
    random_histories(Some("node-a"));
    random_histories(Some("node-b"));
}

/// Random creates (without an address, with only a subnet, with an explicit address),
/// deletes and pool changes; every address given is checked against a full walk.
fn random_histories(me: Option<&str>) {
    for (case, first) in [
        (0, pools(&[("10.9.0.10", "10.9.0.90")])),
        (
            1,
            pools(&[("10.9.0.10", "10.9.0.40"), ("10.9.0.60", "10.9.0.90")]),
        ),
        // out of order: searched in the order given
        (
            2,
            pools(&[("10.9.0.60", "10.9.0.90"), ("10.9.0.10", "10.9.0.40")]),
        ),
    ] {
        let mut r = Registry::default();
        let mut env = TestEnv(case);
        let (n, _) = r
            .create_network(NetworkReq::default(), &admin(), &mut env)
            .unwrap();
        let (s, _) = r
            .create_subnet(
                SubnetReq {
                    network_id: Some(n.id.to_string()),
                    cidr: Some("10.9.0.0/24".into()),
                    allocation_pools: Some(first),
                    enable_dhcp: Some(false),
                    ..Default::default()
                },
                &admin(),
                &mut env,
            )
            .unwrap();
        let mut share = (0, 1);
        if let Some(me) = me {
            r.set_scheduling(Scheduling {
                per_network: 2,
                live: vec!["node-a".into(), "node-b".into()],
                me: me.into(),
            });
            share = r.scheduling().rank();
        }
        let mut ports: Vec<String> = Vec::new();
        let mut rnd = 12345u32 + case;
        for step in 0..1500 {
            rnd = rnd.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let pick = (rnd >> 8) as usize;
            if step % 300 == 150 {
                // the pools grow downwards: lower addresses become free
                let lo = 9 - (step / 300) as u32;
                r.update_subnet(
                    &s.id,
                    SubnetReq {
                        allocation_pools: Some(pools(&[(&format!("10.9.0.{lo}"), "10.9.0.90")])),
                        ..Default::default()
                    },
                    &mut env,
                )
                .unwrap();
            }
            match pick % 10 {
                0..=4 | 9 => {
                    // 9: only the subnet named, which takes the lowest free of any share
                    let only_subnet = pick % 10 == 9;
                    let want = match only_subnet {
                        false => lowest_free_of_share(&r, &s.id, share.0, share.1)
                            .or_else(|| lowest_free(&r, &s.id)),
                        true => lowest_free(&r, &s.id),
                    };
                    let got = r.create_port(
                        PortReq {
                            network_id: Some(n.id.to_string()),
                            fixed_ips: only_subnet.then(|| {
                                vec![FixedIpReq {
                                    subnet_id: Some(s.id.to_string()),
                                    ip_address: None,
                                }]
                            }),
                            ..Default::default()
                        },
                        &admin(),
                        &mut env,
                    );
                    match (want, got) {
                        (Some(w), Ok((p, _))) => {
                            assert_eq!(p.fixed_ips[0].ip_address, w, "case {case} step {step}");
                            ports.push(p.id.to_string());
                        }
                        (None, Err(e)) => assert_eq!(e.kind(), "IpAddressGenerationFailure"),
                        (w, g) => panic!("case {case} step {step}: want {w:?}, got {g:?}"),
                    }
                }
                5..=7 if !ports.is_empty() => {
                    let id = ports.swap_remove(pick % ports.len());
                    r.delete_port(&id).unwrap();
                }
                8 => {
                    // an explicit address, wherever it falls
                    let ip = format!("10.9.0.{}", 10 + pick % 81);
                    if let Ok((p, _)) = r.create_port(
                        PortReq {
                            network_id: Some(n.id.to_string()),
                            fixed_ips: Some(vec![FixedIpReq {
                                subnet_id: Some(s.id.to_string()),
                                ip_address: Some(ip),
                            }]),
                            ..Default::default()
                        },
                        &admin(),
                        &mut env,
                    ) {
                        ports.push(p.id.to_string());
                    }
                }
                _ => {}
            }
        }
    }
}

/// Two nodes allocating from one subnet at once each take their own share of the addresses
/// (address mod 2 = rank), so neither reaches for the address the other is taking; a node whose
/// share is used up takes any free address.
#[test]
fn nodes_allocating_at_once_prefer_their_own_share_of_the_pool() {
    let mut a = Registry::default();
    let mut env = TestEnv(0);
    let (n, _) = a
        .create_network(NetworkReq::default(), &admin(), &mut env)
        .unwrap();
    a.create_subnet(
        SubnetReq {
            network_id: Some(n.id.to_string()),
            cidr: Some("10.9.0.0/24".into()),
            allocation_pools: Some(pools(&[("10.9.0.10", "10.9.0.17")])),
            enable_dhcp: Some(false),
            ..Default::default()
        },
        &admin(),
        &mut env,
    )
    .unwrap();
    let mut b = a.clone();
    let live: Vec<NodeName> = vec!["node-a".into(), "node-b".into()];
    for (r, me) in [(&mut a, "node-a"), (&mut b, "node-b")] {
        r.set_scheduling(Scheduling {
            per_network: 2,
            live: live.clone(),
            me: me.into(),
        });
    }
    let port = || PortReq {
        network_id: Some(n.id.to_string()),
        ..Default::default()
    };
    let mut got_a = vec![];
    let mut got_b = vec![];
    for _ in 0..4 {
        got_a.push(
            a.create_port(port(), &admin(), &mut env)
                .unwrap()
                .0
                .fixed_ips[0]
                .ip_address,
        );
        got_b.push(
            b.create_port(port(), &admin(), &mut env)
                .unwrap()
                .0
                .fixed_ips[0]
                .ip_address,
        );
    }
    let last = |v: &[IpAddr]| v.iter().map(|i| last_octet(*i)).collect::<Vec<_>>();
    assert_eq!(last(&got_a), [10, 12, 14, 16], "node-a: even addresses");
    assert_eq!(last(&got_b), [11, 13, 15, 17], "node-b: odd addresses");
    // node a's share is full: it takes what is left (b's, as it knows it)
    let next = a.create_port(port(), &admin(), &mut env).unwrap().0;
    assert_eq!(last_octet(next.fixed_ips[0].ip_address), 11);
}

fn last_octet(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(a) => a.octets()[3],
        IpAddr::V6(a) => panic!("an IPv4 address was expected, not {a}"),
    }
}

#[test]
fn only_a_routers_port_may_take_the_gateway_address() {
    use crate::tests::{port, setup};
    let (mut r, mut env, net, sub) = setup("172.16.1.200");
    let gw = Some("172.16.1.1");
    let err = r
        .create_port(port(&net, gw, Some(&sub)), &admin(), &mut env)
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::InvalidIpForSubnet { .. }),
        "{err:?}"
    );
    for owner in [
        "network:router_interface",
        "network:ha_router_replicated_interface",
    ] {
        let mut req = port(&net, gw, Some(&sub));
        req.device_owner = Some(owner.into());
        let (p, _) = r.create_port(req, &admin(), &mut env).unwrap();
        assert_eq!(p.owner_kind(), OwnerKind::Router);
        r.delete_port(&p.id).unwrap();
    }
    assert_eq!(OwnerKind::of("network:dhcp"), OwnerKind::Dhcp);
    assert_eq!(OwnerKind::of("compute:nova"), OwnerKind::Other);
}
