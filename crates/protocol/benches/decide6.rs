//! Micro-benchmarks of the DHCPv6 packet path as the relay bench drives it: front door
//! (validate + decode), the decision and the reply's encoding, for a relayed SOLICIT and
//! REQUEST, with 10,000 reservations and 10,000 leases.
// criterion's macros make the undocumented `main` and group functions
#![allow(missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;
use std::net::Ipv6Addr;

use criterion::{criterion_group, criterion_main, Criterion};
use qdhcp_protocol::v6::*;
use qdhcp_protocol::Mac;

struct Leases(HashMap<Ipv6Addr, Lease6>);
impl LeaseView6 for Leases {
    fn by_addr(&self, addr: Ipv6Addr) -> Option<&Lease6> {
        self.0.get(&addr)
    }
}

const N: u32 = 10_000;

fn mac(i: u32) -> Mac {
    Mac([0xfa, 0x16, 0x3e, (i >> 16) as u8, (i >> 8) as u8, i as u8])
}

fn addr(i: u32) -> Ipv6Addr {
    Ipv6Addr::from(0x2001_0db8_0001_0000_0000_0000_0001_0000u128 + u128::from(i))
}

fn duid(m: Mac) -> Vec<u8> {
    let mut d = vec![0, 3, 0, 1];
    d.extend_from_slice(&m.0);
    d
}

fn opt(out: &mut Vec<u8>, code: u16, data: &[u8]) {
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

/// A client message in a RELAY-FORW with option 79 and an interface-id, as `qdhcp loadgen
/// --mode dhcpv6` sends it.
fn relayed(kind: u8, m: Mac, request: Option<(&[u8], Ipv6Addr)>) -> Vec<u8> {
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

fn table() -> Table6 {
    let mut o = Options6::default();
    o.set_text(23, "2001:db8:1::53").unwrap();
    let s = Subnet6 {
        net: "2001:db8:1::/64".parse().unwrap(),
        lease_secs: 86_400,
        options: o,
    };
    let hosts = (0..N).map(|i| Host6 {
        mac: mac(i),
        addrs: vec![addr(i)],
        hostname: Some(format!("host-2001-db8-1--1-{i:x}.openstacklocal")),
        options: Options6::default(),
    });
    let mut t = Table6::new(vec![s], hosts);
    t.domain = Some("openstacklocal".into());
    t
}

fn bench(c: &mut Criterion) {
    let t = table();
    let server_id = Duid::ll(Mac([0xfa, 0x16, 0x3e, 0xff, 0, 1]));
    let own = ["2001:db8:1::2".parse().unwrap()];
    let now = 1_700_000_000;
    let leases = Leases(
        (0..N)
            .map(|i| {
                let l = Lease6 {
                    duid: Duid(duid(mac(i))),
                    iaid: 1,
                    addr: addr(i),
                    mac: mac(i),
                    expires: Some(now + 86_400),
                    hostname: Some(format!("host-{i}")),
                };
                (l.addr, l)
            })
            .collect(),
    );
    let who = 4_321;
    let ctx = Context6 {
        table: &t,
        server_id: &server_id,
        mac: Some(mac(who)),
        source: "2001:db8:1::1".parse().unwrap(),
        own_addrs: &own,
        now,
    };
    let solicit = relayed(1, mac(who), None);
    let request = relayed(3, mac(who), Some((&server_id.0, addr(who))));
    let mut out = Vec::with_capacity(512);

    c.bench_function("v6 front door: parse relayed SOLICIT", |b| {
        b.iter(|| parse6(black_box(&solicit)).unwrap())
    });
    let s = parse6(&solicit).unwrap();
    c.bench_function("v6 decide SOLICIT -> ADVERTISE (10k hosts)", |b| {
        b.iter(|| decide6(black_box(&s), &ctx, &leases))
    });
    let r = parse6(&request).unwrap();
    c.bench_function("v6 decide REQUEST -> REPLY (10k hosts)", |b| {
        b.iter(|| decide6(black_box(&r), &ctx, &leases))
    });
    let reply = decide6(&s, &ctx, &leases).reply.unwrap();
    c.bench_function("v6 encode ADVERTISE in RELAY-REPL", |b| {
        b.iter(|| {
            black_box(&reply).encode_into(&mut out);
            out.len()
        })
    });
    for (name, bytes) in [("SOLICIT", &solicit), ("REQUEST", &request)] {
        c.bench_function(
            &format!("v6 parse + decide + encode, relayed {name}"),
            |b| {
                b.iter(|| {
                    let m = parse6(black_box(bytes)).unwrap();
                    let d = decide6(&m, &ctx, &leases);
                    d.reply.unwrap().encode_into(&mut out);
                    (out.len(), d.changes.len())
                })
            },
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
