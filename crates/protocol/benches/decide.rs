//! Micro-benchmarks of the packet path: front door (validate + decode), the decision, and
//! reply encoding, with a table of 100,000 reservations.
// criterion's macros make the undocumented `main` and group functions
#![allow(missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, Criterion};
use qdhcp_protocol::*;

struct NoLeases(HashMap<Mac, Lease>);
impl LeaseView for NoLeases {
    fn lease(&self, mac: Mac) -> Option<&Lease> {
        self.0.get(&mac)
    }
    fn declined(&self, _: Mac, _: Ipv4Addr, _: u64) -> bool {
        false
    }
    fn count(&self) -> usize {
        self.0.len()
    }
}

fn mac(i: u32) -> Mac {
    Mac([0xfa, 0x16, 0x3e, (i >> 16) as u8, (i >> 8) as u8, i as u8])
}

fn packet(msg_type: u8, m: Mac, extra: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 240];
    b[0] = 1;
    b[1] = 1;
    b[2] = 6;
    b[4..8].copy_from_slice(&0xdead_beefu32.to_be_bytes());
    b[28..34].copy_from_slice(&m.0);
    b[236..240].copy_from_slice(&[99, 130, 83, 99]);
    b.extend_from_slice(&[53, 1, msg_type, 55, 9, 1, 3, 6, 12, 15, 26, 28, 51, 121]);
    b.extend_from_slice(extra);
    b.push(255);
    b
}

fn table(n: u32) -> NetworkTable {
    let mut o = OptionSet::default();
    o.set_text(3, "10.0.0.1", false).unwrap();
    o.set_text(6, "10.0.0.2", false).unwrap();
    o.set_text(26, "1450", true).unwrap();
    o.set_text(121, "169.254.169.254/32,10.0.0.2,0.0.0.0/0,10.0.0.1", false)
        .unwrap();
    let s = Subnet {
        net: "10.0.0.0/8".parse().unwrap(),
        lease_secs: Some(86400),
        options: o,
    };
    let res = (0..n)
        .map(|i| Reservation {
            mac: Some(mac(i)),
            client_id: None,
            ip: Ipv4Addr::from(0x0a00_0000 + 256 + i),
            hostname: Some(format!("host-{i}")),
            options: OptionSet::default(),
            conditional: Vec::new(),
        })
        .collect();
    let mut t = NetworkTable::new(vec![s], res);
    t.domain = Some("openstacklocal".into());
    t
}

fn bench(c: &mut Criterion) {
    let t = table(100_000);
    let policy = Policy::default();
    let ctx = Context {
        iface: "ns-bench",
        server_id: Ipv4Addr::new(10, 0, 0, 2),
        table: &t,
        policy: &policy,
    };
    let leases = NoLeases(HashMap::new());
    let discover = packet(1, mac(54_321), &[]);
    let ip = Ipv4Addr::from(0x0a00_0000 + 256 + 54_321).octets();
    let mut req_opts = vec![50, 4];
    req_opts.extend_from_slice(&ip);
    req_opts.extend_from_slice(&[54, 4, 10, 0, 0, 2]);
    let request = packet(3, mac(54_321), &req_opts);

    c.bench_function("front door: parse DISCOVER", |b| {
        b.iter(|| parse(black_box(&discover)).unwrap())
    });
    let d = parse(&discover).unwrap();
    c.bench_function("decide DISCOVER -> OFFER (100k reservations)", |b| {
        b.iter(|| decide(black_box(&d), &ctx, &leases, 1_700_000_000))
    });
    let r = parse(&request).unwrap();
    c.bench_function("decide REQUEST -> ACK (100k reservations)", |b| {
        b.iter(|| decide(black_box(&r), &ctx, &leases, 1_700_000_000))
    });
    c.bench_function("parse + decide + encode, DISCOVER", |b| {
        b.iter(|| {
            let m = parse(black_box(&discover)).unwrap();
            decide(&m, &ctx, &leases, 1_700_000_000)
                .reply
                .map(|r| r.encode().len())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
