//! IPv6 subnets as Neutron's API has them: modes and their validation, default gateway and
//! pool, IPAM from stateful pools, EUI-64 on auto-address subnets, the DHCP port's v6
//! address, and what DHCPv6 serves for the network.

use std::net::IpAddr;

use crate::dhcp::DhcpSettings;
use crate::dhcp6::table6_for;
use crate::requests::*;
use crate::tests::{admin, port, setup, TestEnv};
use crate::*;

fn v6_subnet(
    r: &mut Registry,
    env: &mut TestEnv,
    net: &str,
    cidr: &str,
    mode: Option<&str>,
) -> Result<Subnet, RegistryError> {
    r.create_subnet(
        SubnetReq {
            network_id: Some(net.into()),
            cidr: Some(cidr.into()),
            ip_version: Some(6),
            ipv6_address_mode: Some(mode.map(Into::into)),
            ipv6_ra_mode: Some(mode.map(Into::into)),
            ..Default::default()
        },
        &admin(),
        env,
    )
    .map(|(s, _)| s)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn a_stateful_subnet_gets_gateway_1_pool_2_to_the_end_and_hands_out_from_the_pool() {
    let (mut r, mut env, net, _) = setup("172.16.1.200");
    let s = v6_subnet(
        &mut r,
        &mut env,
        &net,
        "2001:db8:6::/64",
        Some("dhcpv6-stateful"),
    )
    .unwrap();
    assert_eq!(s.ip_version(), 6);
    assert_eq!(s.gateway_ip, Some(ip("2001:db8:6::1")));
    assert_eq!(s.allocation_pools.len(), 1);
    assert_eq!(s.allocation_pools[0].start, ip("2001:db8:6::2"));
    assert_eq!(
        s.allocation_pools[0].end,
        ip("2001:db8:6::ffff:ffff:ffff:ffff")
    );
    assert!(s.serves_dhcp6() && s.is_stateful6());
    // the DHCP port took the first pool address of the new subnet
    let dhcp = r.dhcp_ports(&net).next().unwrap().clone();
    assert!(dhcp
        .fixed_ips
        .iter()
        .any(|f| f.subnet_id == s.id && f.ip_address == ip("2001:db8:6::2")));
    // a port without fixed_ips: one IPv4 and one IPv6 address, as Neutron's IPAM gives
    let (p, _) = r
        .create_port(port(&net, None, None), &admin(), &mut env)
        .unwrap();
    let v6: Vec<IpAddr> = p
        .fixed_ips
        .iter()
        .map(|f| f.ip_address)
        .filter(IpAddr::is_ipv6)
        .collect();
    assert_eq!(v6, [ip("2001:db8:6::3")]);
    assert_eq!(
        p.fixed_ips
            .iter()
            .filter(|f| f.ip_address.is_ipv4())
            .count(),
        1
    );
    // an explicit address, then the next free one steps over it
    let (q, _) = r
        .create_port(port(&net, Some("2001:db8:6::4"), None), &admin(), &mut env)
        .unwrap();
    assert_eq!(q.fixed_ips[0].ip_address, ip("2001:db8:6::4"));
    let (t, _) = r
        .create_port(port(&net, None, Some(&s.id)), &admin(), &mut env)
        .unwrap();
    assert_eq!(t.fixed_ips[0].ip_address, ip("2001:db8:6::5"));
    // taken, and the subnet-router anycast address
    let e = r
        .create_port(port(&net, Some("2001:db8:6::4"), None), &admin(), &mut env)
        .unwrap_err();
    assert_eq!(e.kind(), "IpAddressAlreadyAllocated");
    let e = r
        .create_port(port(&net, Some("2001:db8:6::"), None), &admin(), &mut env)
        .unwrap_err();
    assert_eq!(e.kind(), "InvalidIpForSubnet");
    // a freed address is given again first
    r.delete_port(&p.id).unwrap();
    let (u, _) = r
        .create_port(port(&net, None, Some(&s.id)), &admin(), &mut env)
        .unwrap();
    assert_eq!(u.fixed_ips[0].ip_address, ip("2001:db8:6::3"));
}

#[test]
fn auto_address_subnets_give_eui64_and_refuse_a_fixed_address() {
    let (mut r, mut env, net, _) = setup("172.16.1.200");
    let (p, _) = r
        .create_port(port(&net, None, None), &admin(), &mut env)
        .unwrap();
    // a stateless subnet added later: the existing port gets its EUI-64 address at once
    let s = v6_subnet(
        &mut r,
        &mut env,
        &net,
        "2001:db8:7::/64",
        Some("dhcpv6-stateless"),
    )
    .unwrap();
    let eui = |mac: qdhcp_protocol::Mac| {
        IpAddr::V6(crate::ipv6::eui64("2001:db8:7::/64".parse().unwrap(), mac))
    };
    let p = r.port(&p.id).unwrap().clone();
    assert!(p
        .fixed_ips
        .iter()
        .any(|f| f.subnet_id == s.id && f.ip_address == eui(p.mac_address)));
    let dhcp = r.dhcp_ports(&net).next().unwrap().clone();
    assert!(dhcp
        .fixed_ips
        .iter()
        .any(|f| f.subnet_id == s.id && f.ip_address == eui(dhcp.mac_address)));
    // a new port gets it without asking; asking for an address there is refused
    let (q, _) = r
        .create_port(port(&net, None, None), &admin(), &mut env)
        .unwrap();
    assert!(q
        .fixed_ips
        .iter()
        .any(|f| f.ip_address == eui(q.mac_address)));
    let e = r
        .create_port(port(&net, Some("2001:db8:7::99"), None), &admin(), &mut env)
        .unwrap_err();
    assert_eq!(e.kind(), "AllocationOnAutoAddressSubnet");
    assert_eq!(e.status(), 400);
    // a new MAC makes a new EUI-64 address
    let (q2, _) = r
        .update_port(
            &q.id,
            PortReq {
                mac_address: Some("fa:16:3e:00:00:42".into()),
                ..Default::default()
            },
            &mut env,
        )
        .unwrap();
    assert!(q2
        .fixed_ips
        .iter()
        .any(|f| f.ip_address == ip("2001:db8:7::f816:3eff:fe00:42")));
    // the subnet can go while ports hold their automatic addresses: they lose them
    r.delete_subnet(&s.id, &mut env).unwrap();
    let q3 = r.port(&q.id).unwrap();
    assert!(q3.fixed_ips.iter().all(|f| f.subnet_id != s.id));
    assert!(q3.fixed_ips.iter().any(|f| f.ip_address.is_ipv4()));
}

#[test]
fn neutrons_ipv6_validation_answers_400_with_its_messages() {
    let (mut r, mut env, net, _) = setup("172.16.1.200");
    let bad = |r: &mut Registry, env: &mut TestEnv, req: SubnetReq| {
        let e = r.create_subnet(req, &admin(), env).unwrap_err();
        assert_eq!(e.status(), 400, "{e}");
        // what Neutron's plugin refuses is its InvalidInput
        assert_eq!(e.kind(), "InvalidInput", "{e}");
        e.to_string()
    };
    let base = SubnetReq {
        network_id: Some(net.clone()),
        cidr: Some("2001:db8:9::/64".into()),
        ip_version: Some(6),
        ..Default::default()
    };
    let e = bad(
        &mut r,
        &mut env,
        SubnetReq {
            ipv6_address_mode: Some(Some("slaac".into())),
            ipv6_ra_mode: Some(Some("dhcpv6-stateful".into())),
            ..base.clone()
        },
    );
    assert!(e.contains("must be the same value"), "{e}");
    let e = bad(
        &mut r,
        &mut env,
        SubnetReq {
            ipv6_address_mode: Some(Some("dhcpv6-stateful".into())),
            enable_dhcp: Some(false),
            ..base.clone()
        },
    );
    assert!(
        e.contains("cannot be set when enable_dhcp is set to False"),
        "{e}"
    );
    let e = bad(
        &mut r,
        &mut env,
        SubnetReq {
            cidr: Some("2001:db8:9::/80".into()),
            ipv6_address_mode: Some(Some("slaac".into())),
            ..base.clone()
        },
    );
    assert!(e.contains("requires the prefix to be /64"), "{e}");
    let e = bad(
        &mut r,
        &mut env,
        SubnetReq {
            ip_version: Some(4),
            ..base.clone()
        },
    );
    assert!(e.contains("does not match the ip_version"), "{e}");
    let e = bad(
        &mut r,
        &mut env,
        SubnetReq {
            cidr: Some("10.7.0.0/24".into()),
            ip_version: Some(4),
            ipv6_address_mode: Some(Some("slaac".into())),
            ..base.clone()
        },
    );
    assert!(e.contains("ip_version is 4"), "{e}");
    let e = bad(
        &mut r,
        &mut env,
        SubnetReq {
            dns_nameservers: Some(vec!["10.0.0.53".into()]),
            ..base.clone()
        },
    );
    assert!(e.contains("does not match the ip_version"), "{e}");
    // a link-local gateway is allowed, as in Neutron
    let (s, _) = r
        .create_subnet(
            SubnetReq {
                gateway_ip: Some(Some("fe80::1".into())),
                ipv6_address_mode: Some(Some("dhcpv6-stateful".into())),
                ..base.clone()
            },
            &admin(),
            &mut env,
        )
        .unwrap();
    assert_eq!(s.gateway_ip, Some(ip("fe80::1")));
    assert_eq!(s.allocation_pools[0].start, ip("2001:db8:9::1"));
    // modes cannot change, nor DHCP go off under them
    let e = r
        .update_subnet(
            &s.id,
            SubnetReq {
                enable_dhcp: Some(false),
                ..Default::default()
            },
            &mut env,
        )
        .unwrap_err();
    assert!(e.to_string().contains("Cannot disable enable_dhcp"), "{e}");
}

#[test]
fn dhcpv6_serves_stateful_addresses_options_and_stateless_hosts() {
    let (mut r, mut env, net, _) = setup("172.16.1.200");
    let full = v6_subnet(
        &mut r,
        &mut env,
        &net,
        "2001:db8:6::/64",
        Some("dhcpv6-stateful"),
    )
    .unwrap();
    let less = v6_subnet(
        &mut r,
        &mut env,
        &net,
        "2001:db8:7::/64",
        Some("dhcpv6-stateless"),
    )
    .unwrap();
    // slaac: no DHCPv6 range, as Neutron's dnsmasq driver
    v6_subnet(&mut r, &mut env, &net, "2001:db8:8::/64", Some("slaac")).unwrap();
    let mut req = port(&net, None, None);
    req.extra_dhcp_opts = Some(vec![ExtraDhcpOptReq {
        opt_name: "bootfile-url".into(),
        opt_value: Some("http://[2001:db8:6::1]/boot.ipxe".into()),
        ip_version: Some(serde_json::json!(6)),
    }]);
    let (p, _) = r.create_port(req, &admin(), &mut env).unwrap();
    let t = table6_for(&r, &net, &DhcpSettings::default());
    let nets: Vec<String> = t.subnets.iter().map(|s| s.net.to_string()).collect();
    assert_eq!(nets, ["2001:db8:6::/64", "2001:db8:7::/64"]);
    let h = t.host(p.mac_address).expect("the port's host");
    let mine: Vec<IpAddr> = p
        .fixed_ips
        .iter()
        .filter(|f| f.subnet_id == full.id)
        .map(|f| f.ip_address)
        .collect();
    assert_eq!(
        h.addrs.iter().map(|a| IpAddr::V6(*a)).collect::<Vec<_>>(),
        mine,
        "stateful addresses only"
    );
    assert_eq!(
        h.hostname.as_deref(),
        Some(crate::dhcp::host_name_of(mine[0]).as_str())
    );
    assert!(h.options.get(59).is_some(), "bootfile-url for the port");
    // option 23: the DHCP port's address in each subnet
    let dhcp = r.dhcp_ports(&net).next().unwrap().clone();
    for (s, sub) in [(&full, &t.subnets[0]), (&less, &t.subnets[1])] {
        let own = dhcp
            .fixed_ips
            .iter()
            .find(|f| f.subnet_id == s.id)
            .unwrap()
            .ip_address;
        let want = qdhcp_protocol::v6::options::parse_value(23, &format!("[{own}]")).unwrap();
        assert_eq!(sub.options.get(23), Some(want.as_ref()), "{}", s.cidr);
    }
    // a bad IPv6 option is refused at the API
    let mut req = port(&net, None, None);
    req.extra_dhcp_opts = Some(vec![ExtraDhcpOptReq {
        opt_name: "dns-server".into(),
        opt_value: Some("not-an-address".into()),
        ip_version: Some(serde_json::json!(6)),
    }]);
    assert_eq!(
        r.create_port(req, &admin(), &mut env).unwrap_err().status(),
        400
    );
    // no DHCPv6 subnet: an empty table
    let (n2, _) = r
        .create_network(NetworkReq::default(), &admin(), &mut env)
        .unwrap();
    assert!(table6_for(&r, &n2.id, &DhcpSettings::default()).is_empty());
}
