//! Batches over real sockets on loopback: what goes in one call, what comes out, and from whom.

use super::*;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::time::Duration;

fn bound() -> (Socket, SocketAddrV4) {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.bind(&SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0).into())
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let a = s.local_addr().unwrap().as_socket_ipv4().unwrap();
    (s, a)
}

/// Everything `rx` has queued, as separate datagrams, in arrival order.
fn drain(rx: &Socket) -> Vec<Vec<u8>> {
    let mut bufs = vec![[0u8; 2048]; MAX_BATCH];
    let mut lens = [0usize; MAX_BATCH];
    let mut out = Vec::new();
    let mut wait = true;
    loop {
        let n = recv_batch(rx.as_raw_fd(), &mut bufs, &mut lens, wait).unwrap();
        if n == 0 {
            return out;
        }
        wait = false;
        out.extend((0..n).map(|i| bufs[i][..lens[i]].to_vec()));
    }
}

fn datagram(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| tag.wrapping_add(i as u8)).collect()
}

fn send_all(out: &mut Outbox, tx: &Socket) -> Vec<(usize, bool)> {
    let mut report = Vec::new();
    out.flush(tx.as_raw_fd(), |i, r| report.push((i, r.is_ok())));
    report
}

#[test]
fn a_run_to_one_address_arrives_as_separate_datagrams_in_order() {
    for segmenting in [true, false] {
        let (tx, _) = bound();
        let (rx, to) = bound();
        let mut out = Outbox::new(segmenting);
        let sent: Vec<Vec<u8>> = (0..MAX_BATCH as u8 + 6).map(|t| datagram(t, 300)).collect();
        sent.iter().for_each(|d| out.push(to, d));
        let report = send_all(&mut out, &tx);
        assert_eq!(
            report,
            (0..sent.len()).map(|i| (i, true)).collect::<Vec<_>>()
        );
        assert_eq!(drain(&rx), sent, "segmenting={segmenting}");
        assert!(out.is_empty());
        assert_eq!(out.segmenting(), segmenting);
    }
}

#[test]
fn mixed_sizes_and_addresses_keep_their_order_and_boundaries() {
    let (tx, _) = bound();
    let (rx1, a) = bound();
    let (rx2, b) = bound();
    let mut out = Outbox::default();
    let plan: Vec<(SocketAddrV4, Vec<u8>)> = vec![
        (a, datagram(1, 300)),
        (a, datagram(2, 300)),
        (a, datagram(3, 120)), // a shorter last segment closes the run
        (a, datagram(4, 300)),
        (b, datagram(5, 300)),
        (a, datagram(6, 340)), // larger than the run before it: a new run
        (a, datagram(7, 340)),
        (b, datagram(8, 1)),
    ];
    plan.iter().for_each(|(to, d)| out.push(*to, d));
    let report = send_all(&mut out, &tx);
    assert_eq!(report.len(), plan.len());
    assert!(report.iter().enumerate().all(|(i, r)| *r == (i, true)));
    let for_a: Vec<_> = plan
        .iter()
        .filter(|p| p.0 == a)
        .map(|p| p.1.clone())
        .collect();
    let for_b: Vec<_> = plan
        .iter()
        .filter(|p| p.0 == b)
        .map(|p| p.1.clone())
        .collect();
    assert_eq!(drain(&rx1), for_a);
    assert_eq!(drain(&rx2), for_b);
}

#[test]
fn runs_are_cut_at_the_kernel_limits() {
    let mut out = Outbox::default();
    let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9);
    (0..MAX_BATCH + 3).for_each(|t| out.push(to, &datagram(t as u8, 10)));
    assert_eq!(out.run_at(0), MAX_BATCH);
    assert_eq!(out.run_at(MAX_BATCH), 3);
    let mut big = Outbox::default();
    (0..50).for_each(|t| big.push(to, &datagram(t, 1472)));
    assert_eq!(big.run_at(0), MAX_GSO_BYTES / 1472);
    let mut bcast = Outbox::default();
    (0..4).for_each(|t| bcast.push(SocketAddrV4::new(Ipv4Addr::BROADCAST, 68), &[t; 300]));
    assert_eq!(bcast.run_at(0), 1, "broadcasts are never segmented");
}

#[test]
fn a_failed_datagram_does_not_stop_the_rest() {
    let (tx, _) = bound();
    let (rx, to) = bound();
    let mut out = Outbox::default();
    out.push(to, &datagram(1, 100));
    // Port 0 cannot be sent to: EINVAL for this one only.
    out.push(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), &datagram(2, 100));
    out.push(to, &datagram(3, 100));
    let report = send_all(&mut out, &tx);
    assert_eq!(report, vec![(0, true), (1, false), (2, true)]);
    assert_eq!(drain(&rx), vec![datagram(1, 100), datagram(3, 100)]);
}

#[test]
fn one_call_takes_every_queued_datagram_up_to_the_buffers() {
    let (tx, _) = bound();
    let (rx, to) = bound();
    let mut out = Outbox::new(false);
    (0..40u8).for_each(|t| out.push(to, &datagram(t, 50)));
    send_all(&mut out, &tx);
    let mut bufs = vec![[0u8; 128]; MAX_BATCH];
    let mut lens = [0usize; MAX_BATCH];
    assert_eq!(
        recv_batch(rx.as_raw_fd(), &mut bufs, &mut lens, true).unwrap(),
        40
    );
    assert!((0..40).all(|i| bufs[i][..lens[i]] == datagram(i as u8, 50)[..]));
    (0..70u8).for_each(|t| out.push(to, &datagram(t, 50)));
    send_all(&mut out, &tx);
    assert_eq!(
        recv_batch(rx.as_raw_fd(), &mut bufs, &mut lens, true).unwrap(),
        MAX_BATCH
    );
    assert_eq!(
        recv_batch(rx.as_raw_fd(), &mut bufs, &mut lens, false).unwrap(),
        6
    );
}

#[test]
fn recv_without_waiting_returns_at_once_when_nothing_is_queued() {
    let (rx, _) = bound();
    // No receive timeout: a call that waited would never return.
    rx.set_read_timeout(None).unwrap();
    let mut bufs = vec![[0u8; 64]; 4];
    let mut lens = [0usize; 4];
    assert_eq!(
        recv_batch(rx.as_raw_fd(), &mut bufs, &mut lens, false).unwrap(),
        0
    );
}

#[test]
fn a_batch_received_names_each_datagrams_source() {
    let (rx, to) = bound();
    let (a, from_a) = bound();
    let (b, from_b) = bound();
    a.send_to(b"one", &to.into()).unwrap();
    b.send_to(b"two", &to.into()).unwrap();
    a.send_to(b"three", &to.into()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let mut bufs = vec![[0u8; 64]; 8];
    let mut lens = [0usize; 8];
    let mut froms = [SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0); 8];
    let n = recv_batch_from(rx.as_raw_fd(), &mut bufs, &mut lens, &mut froms).unwrap();
    assert_eq!(n, 3);
    assert_eq!(&bufs[1][..lens[1]], b"two");
    assert_eq!(&froms[..3], &[from_a, from_b, from_a]);
    // nothing queued: no wait, nothing received
    assert_eq!(
        recv_batch_from(rx.as_raw_fd(), &mut bufs, &mut lens, &mut froms).unwrap(),
        0
    );
}

#[test]
fn ipv6_batches_go_out_segmented_and_come_in_with_their_sources() {
    use std::net::{Ipv6Addr, SocketAddrV6};
    let bound6 = || {
        let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_only_v6(true).unwrap();
        s.bind(&SocketAddrV6::new(Ipv6Addr::LOCALHOST, 0, 0, 0).into())
            .unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let a = s.local_addr().unwrap().as_socket_ipv6().unwrap();
        (s, a)
    };
    for segmenting in [true, false] {
        let (tx, from) = bound6();
        let (rx, to) = bound6();
        let mut out: Outbox<SocketAddrV6> = Outbox::new(segmenting);
        let sent: Vec<Vec<u8>> = (0..40u8).map(|t| datagram(t, 200)).collect();
        sent.iter().for_each(|d| out.push(to, d));
        let report = send_all6(&mut out, &tx);
        assert_eq!(report, (0..40).map(|i| (i, true)).collect::<Vec<_>>());
        // they are queued now: take them with their sources, without blocking
        std::thread::sleep(Duration::from_millis(50));
        let mut bufs = vec![[0u8; 2048]; MAX_BATCH];
        let mut lens = [0usize; MAX_BATCH];
        let mut froms = [SocketAddrV6::unspecified(); MAX_BATCH];
        let n = recv_batch_from(rx.as_raw_fd(), &mut bufs, &mut lens, &mut froms).unwrap();
        assert_eq!(n, 40, "segmenting={segmenting}");
        for i in 0..n {
            assert_eq!(&bufs[i][..lens[i]], &sent[i][..]);
            assert_eq!(froms[i].ip(), from.ip());
            assert_eq!(froms[i].port(), from.port());
        }
    }
}

fn send_all6(out: &mut Outbox<std::net::SocketAddrV6>, tx: &Socket) -> Vec<(usize, bool)> {
    let mut report = Vec::new();
    out.flush(tx.as_raw_fd(), |i, r| report.push((i, r.is_ok())));
    report
}
