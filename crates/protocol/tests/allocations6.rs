//! Heap allocations of the DHCPv6 packet path, counted: each one is work the serving loop does
//! per message (malloc and free were a tenth of the serving core at 40,000 exchanges/s,
//! bench/DHCPV6.md), so a change that adds some fails here, not only in a benchmark.
// A counting global allocator needs `unsafe impl GlobalAlloc`; it only forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;

use qdhcp_protocol::v6::*;
use qdhcp_protocol::Mac;

mod common;
use common::relay6::{addr, mac, relayed, table, Leases};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call goes to the system allocator unchanged; the thread-local counter is a
// const-initialised `Cell` (no allocation of its own, `try_with` during thread teardown).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `System` through this allocator, with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: as for `dealloc`; `n` is the caller's new size.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Allocations (and reallocations) made on this thread while `f` runs.
fn count<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = ALLOCS.with(Cell::get);
    let t = f();
    (t, ALLOCS.with(Cell::get) - before)
}

/// Allocations to validate, decide and encode one relayed message.
fn per_message(bytes: &[u8], ctx: &Context6<'_>, leases: &Leases) -> (u64, u64, u64) {
    let mut out = Vec::with_capacity(512);
    let (m, parse) = count(|| parse6(bytes).unwrap());
    let (d, decide) = count(|| decide6(&m, ctx, leases));
    assert!(d.reply.is_some());
    let (_, encode) = count(|| d.reply.as_ref().unwrap().encode_into(&mut out));
    (parse, decide, encode)
}

/// What each step allocates now; a change that makes one allocate more fails here (and should
/// say in bench/MICRO.md what it buys). Encoding is `dhcproto`'s (an IA_NA and each address
/// in it are encoded into vectors of their own first).
const SOLICIT: (u64, u64, u64) = (6, 9, 7);
const REQUEST: (u64, u64, u64) = (9, 12, 7);
/// The log lines' share of the decision: both lines' DUIDs, and the host name on the reply's.
const LOG_LINES: (u64, u64) = (3, 3);

#[test]
fn a_relayed_exchange_allocates_no_more_than_it_did() {
    let t = table(100);
    let server_id = Duid::ll(Mac([0xfa, 0x16, 0x3e, 0xff, 0, 1]));
    let own = ["2001:db8:1::2".parse().unwrap()];
    let leases = Leases(HashMap::new());
    let who = 42;
    let mut ctx = Context6 {
        table: &t,
        server_id: &server_id,
        mac: Some(mac(who)),
        source: "2001:db8:1::1".parse().unwrap(),
        own_addrs: &own,
        now: 1_700_000_000,
        log: true,
    };
    let solicit = relayed(1, mac(who), None);
    let request = relayed(3, mac(who), Some((&server_id.0, addr(who))));
    // once first: whatever the crates below allocate once (lazy tables) is not per message
    per_message(&solicit, &ctx, &leases);
    let s = per_message(&solicit, &ctx, &leases);
    let r = per_message(&request, &ctx, &leases);
    eprintln!("parse, decide, encode: SOLICIT {s:?}, REQUEST {r:?}");
    assert!(
        s.0 <= SOLICIT.0 && s.1 <= SOLICIT.1 && s.2 <= SOLICIT.2,
        "SOLICIT {s:?}"
    );
    assert!(
        r.0 <= REQUEST.0 && r.1 <= REQUEST.1 && r.2 <= REQUEST.2,
        "REQUEST {r:?}"
    );

    // a server that logs no DHCP lines makes none
    ctx.log = false;
    let m = parse6(&request).unwrap();
    let d = decide6(&m, &ctx, &leases);
    assert!(d.received.is_none() && d.sent.is_none());
    let quiet_s = per_message(&solicit, &ctx, &leases);
    let quiet_r = per_message(&request, &ctx, &leases);
    assert_eq!(
        quiet_s.1 + LOG_LINES.0,
        s.1,
        "SOLICIT decided quietly: {quiet_s:?}"
    );
    assert_eq!(
        quiet_r.1 + LOG_LINES.1,
        r.1,
        "REQUEST decided quietly: {quiet_r:?}"
    );
}
