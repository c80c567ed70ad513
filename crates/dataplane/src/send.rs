//! Sending a batch of decided replies, encoded here at the edge just before they leave (see
//! docs/ARCHITECTURE.md, "Delivery"): frames to clients on the link, datagrams to relays and
//! broadcasts in as few syscalls as the kernel allows; each counted and logged.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Instant;

use qdhcp_batchio::Outbox;
use qdhcp_protocol::reply::DEFAULT_MAX;
use socket2::Socket;

use crate::commit::{Held, Port};
use crate::delivery::{Delivery, CLIENT_PORT};
use crate::listener::inject_arp;
use crate::network::Network;
use crate::shared::Shared;

/// Sends a batch of replies with as few syscalls as the kernel allows (replies to one
/// relay leave as one segmented send; replies to clients without an address leave as
/// frames to their MAC, see [`crate::linkout`]), then counts and logs each; `replies`
/// ends empty.
pub(crate) fn deliver(
    shared: &Shared,
    net: &Network,
    port: &Port,
    outbox: &mut Outbox,
    replies: &mut Vec<Held>,
    received_at: Instant,
) {
    if replies.is_empty() {
        return;
    }
    let iface: &str = &port.iface;
    // The replies of a batch leave together: one clock read gives their latency.
    let mut latency = None;
    let mut done = |h: &Held, sent: io::Result<()>| {
        if let Err(e) = sent {
            shared.counters.send_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(target: "dhcp", "send on {iface} to {:?} failed: {e}", h.dest);
            return;
        }
        shared.counters.tx.add(h.reply.kind);
        net.counters.tx.add(h.reply.kind);
        net.counters
            .observe(*latency.get_or_insert_with(|| received_at.elapsed()));
        if let Some(s) = &h.sent {
            shared.log(iface, h.reply.xid, s);
        }
    };
    // Encoded here, at the edge, just before they leave.
    let mut wire = Vec::with_capacity(DEFAULT_MAX);
    let mut frame = Vec::new();
    let mut queued = Vec::with_capacity(replies.len());
    for (i, h) in replies.iter().enumerate() {
        h.reply.encode_into(&mut wire);
        // A client on the link, with an address or not, gets a frame to its hardware
        // address: neither a boot storm nor thousands of renewals at once may need a
        // neighbour entry each (see crate::linkout).
        let direct = match h.dest {
            Delivery::UnicastNoArp(ip, mac) => Some((ip, mac)),
            Delivery::Unicast(a) if h.reply.giaddr.is_unspecified() => {
                Some((*a.ip(), h.reply.chaddr))
            }
            _ => None,
        };
        if let Some((ip, mac)) = direct {
            if port
                .link
                .send(h.reply.server_id, ip, mac, &wire, &mut frame)
                .is_ok()
            {
                done(h, Ok(()));
                continue;
            }
        }
        outbox.push(address(&port.sock, iface, h.dest), &wire);
        queued.push(i);
    }
    outbox.flush(port.sock.as_raw_fd(), |k, sent| {
        done(&replies[queued[k]], sent)
    });
    replies.clear();
}

/// Where a reply's datagram goes through the UDP socket. For a client without an address
/// this is the fallback when no frame could be sent (see crate::linkout): unicast to yiaddr
/// after its MAC is put in the ARP cache, or broadcast if that cannot be done either.
fn address(sock: &Socket, iface: &str, dest: Delivery) -> SocketAddrV4 {
    match dest {
        Delivery::Relay(a) | Delivery::Unicast(a) => a,
        Delivery::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT),
        Delivery::UnicastNoArp(ip, mac) => {
            if inject_arp(sock, iface, ip, mac).is_err() {
                // Without the ARP entry the unicast would stall: broadcast instead.
                SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)
            } else {
                SocketAddrV4::new(ip, CLIENT_PORT)
            }
        }
    }
}
