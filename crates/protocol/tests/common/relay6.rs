//! The relayed DHCPv6 messages `qdhcp loadgen --mode dhcpv6` sends, and a link with hosts
//! for them, shared by the `decide6` benchmark and the allocation count test (one copy of how
//! the bench's traffic looks).
// Each includer uses its own part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::Ipv6Addr;

use qdhcp_protocol::v6::*;
use qdhcp_protocol::Mac;

/// The leases, by address, as the dataplane's table lends them to the decision.
pub struct Leases(pub HashMap<Ipv6Addr, Lease6>);
impl LeaseView6 for Leases {
    fn by_addr(&self, addr: Ipv6Addr) -> Option<&Lease6> {
        self.0.get(&addr)
    }
}

/// Host `i`'s MAC, in OpenStack's fa:16:3e range.
pub fn mac(i: u32) -> Mac {
    Mac([0xfa, 0x16, 0x3e, (i >> 16) as u8, (i >> 8) as u8, i as u8])
}

/// Host `i`'s fixed address in 2001:db8:1::/64.
pub fn addr(i: u32) -> Ipv6Addr {
    Ipv6Addr::from(0x2001_0db8_0001_0000_0000_0000_0001_0000u128 + u128::from(i))
}

/// A DUID-LL from a MAC, as the generator's clients send.
pub fn duid(m: Mac) -> Vec<u8> {
    let mut d = vec![0, 3, 0, 1];
    d.extend_from_slice(&m.0);
    d
}

/// Appends one option TLV.
pub fn opt(out: &mut Vec<u8>, code: u16, data: &[u8]) {
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

/// A client message in a RELAY-FORW with option 79 and an interface-id, as `qdhcp loadgen
/// --mode dhcpv6` sends it.
pub fn relayed(kind: u8, m: Mac, request: Option<(&[u8], Ipv6Addr)>) -> Vec<u8> {
    let mut c = vec![kind, 0x12, 0x34, 0x56];
    opt(&mut c, 1, &duid(m));
    if let Some((sid, _)) = request {
        opt(&mut c, 2, sid);
    }
    opt(&mut c, 8, &[0, 0]);
    opt(&mut c, 6, &[0, 23, 0, 24]);
    let mut ia = vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
    if let Some((_, a)) = request {
        let mut ad = a.octets().to_vec();
        ad.extend_from_slice(&[0; 8]);
        opt(&mut ia, 5, &ad);
    }
    opt(&mut c, 3, &ia);
    let mut r = vec![12, 0];
    r.extend_from_slice(&"2001:db8:1::1".parse::<Ipv6Addr>().unwrap().octets());
    r.extend_from_slice(
        &"fe80::f816:3eff:fe00:1"
            .parse::<Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    let mut ll = vec![0, 1];
    ll.extend_from_slice(&m.0);
    opt(&mut r, 79, &ll);
    opt(&mut r, 18, b"lg0");
    opt(&mut r, 9, &c);
    r
}

/// A link with one stateful subnet (DNS server configured, `--domain` set) and `n` hosts.
pub fn table(n: u32) -> Table6 {
    let mut o = Options6::default();
    o.set_text(23, "2001:db8:1::53").unwrap();
    let s = Subnet6 {
        net: "2001:db8:1::/64".parse().unwrap(),
        lease_secs: 86_400,
        options: o,
    };
    let hosts = (0..n).map(|i| Host6 {
        mac: mac(i),
        addrs: vec![addr(i)],
        hostname: Some(format!("host-2001-db8-1--1-{i:x}.openstacklocal")),
        options: Options6::default(),
    });
    let mut t = Table6::new(vec![s], hosts);
    t.set_domain(Some("openstacklocal"));
    t
}
