//! Micro-benchmarks of the DHCPv6 packet path as the relay bench drives it: front door
//! (validate + decode), the decision and the reply's encoding, for a relayed SOLICIT and
//! REQUEST, with 10,000 reservations and 10,000 leases.
// criterion's macros make the undocumented `main` and group functions
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use qdhcp_protocol::v6::*;
use qdhcp_protocol::Mac;

#[path = "../tests/common/relay6.rs"]
mod relay6;
use relay6::{addr, duid, mac, relayed, table, Leases};

const N: u32 = 10_000;

fn bench(c: &mut Criterion) {
    let t = table(N);
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
        log: true,
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
    // with log lines, and without them as a server with `--quiet-dhcp` (the relay bench) decides
    let quiet = Context6 { log: false, ..ctx };
    for (ctx, lines) in [(&ctx, ""), (&quiet, ", no log lines")] {
        for (name, bytes) in [("SOLICIT", &solicit), ("REQUEST", &request)] {
            c.bench_function(
                &format!("v6 parse + decide + encode, relayed {name}{lines}"),
                |b| {
                    b.iter(|| {
                        let m = parse6(black_box(bytes)).unwrap();
                        let d = decide6(&m, ctx, &leases);
                        d.reply.unwrap().encode_into(&mut out);
                        (out.len(), d.changes.len())
                    })
                },
            );
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
