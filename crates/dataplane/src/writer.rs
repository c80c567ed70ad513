//! The journal writer: it takes the held replies of each batch from the commit queue, makes
//! their lease changes durable with one journal commit (fdatasync), and only then sends them;
//! on a storage failure it decides again from the durable leases (see docs/ARCHITECTURE.md,
//! "Durability"). Also the journal's compaction and the periodic lease reaping.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use qdhcp_batchio::Outbox;
use qdhcp_protocol::reply::DEFAULT_MAX;
use qdhcp_protocol::{renew_from_durable, LeaseChange};
use socket2::Socket;

use crate::commit::{Commit, Held, Port, QUEUE_CAP};
use crate::delivery::{Delivery, CLIENT_PORT};
use crate::journal::{JournalError, Record};
use crate::listener::inject_arp;
use crate::server::*;
use crate::serving::RateLimit;

impl Dataplane {
    /// Rewrites the journal to the live leases and quarantines of every network.
    pub fn compact(&self) -> Result<usize, JournalError> {
        let nets: Vec<Arc<Network>> = self.networks().into_iter().collect();
        self.journal.compact(|| {
            let mut out = Vec::new();
            for n in &nets {
                let t = n.leases();
                for l in t.leases() {
                    out.push(Record {
                        network: n.name.clone(),
                        change: LeaseChange::Bind(l.clone()),
                    });
                }
                for (mac, ip, until) in t.quarantines() {
                    out.push(Record {
                        network: n.name.clone(),
                        change: LeaseChange::Decline { mac, ip, until },
                    });
                }
            }
            out
        })
    }

    /// Periodic work: reap expired leases, and compact the journal once it has grown to more
    /// than four times the live records (and at least 100,000 lines). Meant for a thread at
    /// idle priority (see [`crate::priority`]): the sections that hold the serving locks raise
    /// it to normal.
    pub fn housekeeping(&self, now: u64) {
        let mut live = 0;
        crate::priority::at_normal_priority(|| {
            for n in self.networks() {
                let mut t = n.leases();
                t.reap(now);
                live += t.len();
            }
        });
        // Compaction holds the journal while it rewrites it, delaying the ACKs of that moment:
        // do it seldom (the journal at least 100,000 records and four times the live ones).
        self.compact_if_grown(live, 100_000);
    }

    /// Compacts the journal when it holds more than `min_records` records and four times the
    /// `live` ones. A process that gave up root may not create files beside the journal: then
    /// it says so once and leaves compaction to the next start.
    pub fn compact_if_grown(&self, live: usize, min_records: usize) {
        let count = self.journal.record_count() as usize;
        if count > min_records && count > 4 * live {
            self.compact_if_allowed();
        }
    }

    /// [`Dataplane::compact`], unless the journal's directory is not writable to this process.
    pub(crate) fn compact_if_allowed(&self) {
        if self.compaction_denied.load(Ordering::Relaxed) {
            return;
        }
        match self.compact() {
            Ok(_) => {}
            Err(JournalError::Io { path, source })
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                self.compaction_denied.store(true, Ordering::Relaxed);
                tracing::info!(target: "dhcp", "lease journal {}: no write access to its directory after dropping privileges; it is compacted at the next start", path.display());
            }
            Err(e) => tracing::error!(target: "dhcp", "{e}"),
        }
    }

    /// Sends a batch of replies with as few syscalls as the kernel allows (replies to one
    /// relay leave as one segmented send; replies to clients without an address leave as
    /// frames to their MAC, see [`crate::linkout`]), then counts and logs each; `replies`
    /// ends empty.
    pub(crate) fn deliver(
        &self,
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
                self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "dhcp", "send on {iface} to {:?} failed: {e}", h.dest);
                return;
            }
            self.counters.tx[kind_index(h.reply.kind)].fetch_add(1, Ordering::Relaxed);
            net.counters.tx[kind_index(h.reply.kind)].fetch_add(1, Ordering::Relaxed);
            net.counters
                .observe(*latency.get_or_insert_with(|| received_at.elapsed()));
            if let Some(s) = &h.sent {
                self.log(iface, h.reply.xid, s);
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

    /// The journal writer: takes every batch waiting, appends their records, makes them
    /// durable with one fdatasync (group commit across all interfaces), then releases their
    /// ACKs. Receiving and deciding go on meanwhile in the serving threads.
    pub(crate) fn write_journal(&self) {
        let mut persist_log = RateLimit::new();
        let mut records: Vec<Record> = Vec::with_capacity(4096);
        let mut outbox = Outbox::default();
        let mut renewed: Vec<Held> = Vec::new();
        let mut batch: Vec<Commit> = Vec::with_capacity(QUEUE_CAP);
        loop {
            batch.clear();
            if !self.queue.recv(&mut batch) {
                break;
            }
            if batch.is_empty() {
                continue;
            }
            records.clear();
            for c in &mut batch {
                records.append(&mut c.records);
            }
            match self.journal.commit(&records, || ()) {
                Ok(()) => {
                    self.counters.commits.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .records
                        .fetch_add(records.len() as u64, Ordering::Relaxed);
                    for mut c in batch.drain(..) {
                        self.deliver(&c.net, &c.port, &mut outbox, &mut c.held, c.received_at);
                    }
                }
                Err(e) => {
                    if persist_log.allow("lease-storage errors") {
                        tracing::error!(target: "dhcp", "{e}: not acknowledging leases that cannot be stored");
                    }
                    let now = now_secs();
                    for c in batch.drain(..) {
                        for mut h in c.held {
                            // Memory goes back to what is durable.
                            let Some((mac, prev)) = h.before.take() else {
                                continue;
                            };
                            {
                                let mut t = c.net.leases();
                                match &prev {
                                    Some(p) => t.apply(&LeaseChange::Bind(p.clone())),
                                    None => {
                                        t.revoke(mac);
                                    }
                                }
                            }
                            // Decided again by the protocol core: a renewal of a lease that
                            // is still durable keeps its address for the time it has left.
                            let again = renew_from_durable(&h.reply, prev.as_ref(), now);
                            match again {
                                Some(reply) => {
                                    h.reply = reply;
                                    self.counters
                                        .renewed_from_durable
                                        .fetch_add(1, Ordering::Relaxed);
                                    renewed.push(h);
                                }
                                None => {
                                    self.counters
                                        .persist_failures
                                        .fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        self.deliver(&c.net, &c.port, &mut outbox, &mut renewed, c.received_at);
                    }
                }
            }
        }
    }
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
