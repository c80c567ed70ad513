//! One interface's DHCPv6 socket as an event-loop source: a batch of datagrams received, each
//! validated and decided by the protocol core; what promises nothing durable leaves at once,
//! the batch's lease changes go to the journal writer with the REPLYs that wait for them (a
//! REPLY that binds leaves only after its lease is on disk). A message from the link whose source has no neighbour entry yet waits, while
//! the neighbour is probed, up to five tries 100 ms apart (as dnsmasq does), on the loop's timer.

use std::cell::RefCell;
use std::fs::File;
use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use qdhcp_batchio::{recv_batch_from, Addr, Outbox};
use qdhcp_protocol::v6::{decide6, parse6, Change6, Context6, Lease6, Msg6, Outcome6};
use qdhcp_protocol::Mac;
use qdhcp_reactor::{Source, Turn};

use super::neigh::{MacCache, Neighbour, Neighbours};
use super::{iface_addrs6, Net6, CLIENT_PORT6, SERVER_PORT6};
use crate::clock::now_secs;
use crate::journal::Record;
use crate::limits::{MacLimiter, RateLimit};
use crate::linkout::{datagram6, LinkOut};
use crate::options::BATCH;
use crate::shared::Shared;

/// Largest datagram read (a relayed message with options fits many times over).
const MAX6: usize = 4096;
/// Neighbour probes before a message is decided without a MAC.
const PROBES: u8 = 5;
/// Between probes.
const PROBE_GAP: Duration = Duration::from_millis(100);
/// Messages waiting for a neighbour entry at most: a flood from random link-locals cannot grow
/// this, and clients the kernel already knows never wait behind it.
const MAX_PENDING: usize = 256;
/// Interface addresses are read again at most this often.
const ADDRS_TTL: Duration = Duration::from_secs(2);

/// One loop thread's receive batch and outbox, shared by every interface it serves (a batch is
/// done before the next interface's turn), so ten thousand networks do not each hold them.
struct Batch6 {
    bufs: Vec<[u8; MAX6]>,
    lens: [usize; BATCH],
    froms: [SocketAddrV6; BATCH],
}

thread_local! {
    static BATCH6: RefCell<Batch6> = RefCell::new(Batch6 {
        bufs: Vec::new(),
        lens: [0; BATCH],
        froms: [SocketAddrV6::unspecified(); BATCH],
    });
    /// Replies of a batch, sent with as few syscalls as the kernel allows (`sendmmsg`, and one
    /// segmented send for a run to one relay).
    static OUT6: RefCell<Outbox<SocketAddrV6>> = RefCell::new(Outbox::new(true));
    /// The IPv6 datagrams of a batch's replies to clients on the link, buffers kept for reuse.
    static FRAMES6: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    /// The replies of the batch being served, buffers kept for reuse.
    static REPLIES6: RefCell<Replies6> = const { RefCell::new(Replies6 {
        out: Vec::new(),
        now: Vec::new(),
        spare: Vec::new(),
    }) };
}

/// A batch's replies: decided, then those that leave at once; and the buffers of replies
/// sent, for the next ones (a reply costs no allocation of its own unless it waits for the
/// journal).
struct Replies6 {
    out: Vec<Out>,
    now: Vec<Out>,
    spare: Vec<Vec<u8>>,
}

/// A message waiting for its sender's neighbour entry.
struct Pending {
    bytes: Vec<u8>,
    from: SocketAddrV6,
    tries: u8,
    due: Instant,
}

/// A reply decided, waiting for the batch's commit.
struct Out {
    bytes: Vec<u8>,
    to: SocketAddrV6,
    /// For a client on the link whose neighbour entry the kernel holds confirmed: our
    /// link-local address and its MAC, to send the reply as a frame (see `crate::linkout`);
    /// else through the UDP socket.
    frame: Option<(Ipv6Addr, Mac)>,
    binds: bool,
    sent: Option<qdhcp_protocol::v6::Log6>,
    advertise: bool,
}

/// One interface served for DHCPv6.
pub(crate) struct Dhcp6Source {
    shared: Arc<Shared>,
    net: Arc<Net6>,
    sock: Arc<UdpSocket>,
    link: Arc<LinkOut>,
    iface: Arc<str>,
    ifindex: u32,
    netns: Option<PathBuf>,
    neigh: Option<Neighbours>,
    macs: MacCache,
    pending: Vec<Pending>,
    own: Vec<Ipv6Addr>,
    own_read: Option<Instant>,
    limiter: MacLimiter,
    bad_log: RateLimit,
    records: Vec<Record>,
    undo: Vec<(Ipv6Addr, Option<Lease6>)>,
}

impl Dhcp6Source {
    /// Serves `net` on `sock` (opened on `iface` in the calling thread's namespace, where the
    /// neighbour socket is opened too).
    pub(crate) fn new(
        shared: Arc<Shared>,
        net: Arc<Net6>,
        iface: &str,
        sock: socket2::Socket,
        netns: Option<PathBuf>,
    ) -> std::io::Result<Self> {
        let ifindex = nix::net::if_::if_nametoindex(iface).map_err(std::io::Error::from)?;
        sock.set_nonblocking(true)?;
        let neigh = match Neighbours::open() {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(target: "dhcp", "{iface}: no neighbour table ({e}): DHCPv6 clients are matched only through relays");
                None
            }
        };
        let client_rate = shared.opts.client_rate;
        Ok(Dhcp6Source {
            shared,
            net,
            sock: Arc::new(sock.into()),
            link: Arc::new(LinkOut::new(netns.clone(), Arc::from(iface))),
            iface: Arc::from(iface),
            ifindex,
            netns,
            neigh,
            macs: MacCache::default(),
            pending: Vec::new(),
            own: Vec::new(),
            own_read: None,
            limiter: MacLimiter::new(client_rate),
            bad_log: RateLimit::new(),
            records: Vec::new(),
            undo: Vec::new(),
        })
    }

    fn own_addrs(&mut self) -> &[Ipv6Addr] {
        if self.own_read.is_none_or(|t| t.elapsed() >= ADDRS_TTL) {
            self.own_read = Some(Instant::now());
            let iface = self.iface.clone();
            self.own = match &self.netns {
                None => iface_addrs6(&iface),
                Some(ns) => File::open(ns)
                    .and_then(|f| qdhcp_netns::visit(&f, || iface_addrs6(&iface)))
                    .unwrap_or_default(),
            };
        }
        &self.own
    }

    /// The neighbour entry of a message from the link: `Err` when it should wait for a probe.
    fn neighbour_of(&mut self, from: &SocketAddrV6, tries: u8) -> Result<Option<Neighbour>, ()> {
        let Some(n) = &mut self.neigh else {
            return Ok(None);
        };
        let now = Instant::now();
        if let Some(e) = self.macs.get(*from.ip(), now) {
            return Ok(Some(e));
        }
        match n.lookup(self.ifindex, *from.ip()) {
            Ok(Some(e)) => {
                self.macs.put(*from.ip(), e, now);
                Ok(Some(e))
            }
            Ok(None) if tries < PROBES => {
                n.probe(self.ifindex, *from.ip());
                Err(())
            }
            Ok(None) => Ok(None),
            Err(e) => {
                if self.bad_log.allow("neighbour lookup errors") {
                    tracing::warn!(target: "dhcp", "{}: neighbour lookup failed: {e}", self.iface);
                }
                Ok(None)
            }
        }
    }

    /// Validates and decides one datagram; its reply and lease changes join the batch.
    fn handle(&mut self, bytes: &[u8], from: SocketAddrV6, tries: u8) {
        let net = self.net.clone();
        let c = &net.counters;
        let m = match parse6(bytes) {
            Ok(m) => m,
            Err(why) => {
                c.malformed(why);
                if self.bad_log.allow("malformed DHCPv6 lines") {
                    tracing::warn!(target: "dhcp", "{}: dropped a DHCPv6 datagram from {}: {why}", self.iface, from.ip());
                }
                return;
            }
        };
        if tries == 0 {
            c.rx.add(m.kind);
        }
        let relayed = !m.relays.is_empty();
        // A RELEASE, DECLINE or CONFIRM needs no host: no waiting for a neighbour entry (a
        // RELEASE from dhcp_release6 comes from the server's own address).
        let needs_mac = !matches!(m.kind, Msg6::Release | Msg6::Decline | Msg6::Confirm);
        let mut on_link = None;
        let mac = if relayed {
            m.relayed_mac()
        } else if needs_mac {
            match self.neighbour_of(&from, tries) {
                Ok(e) => {
                    on_link = e;
                    e.map(|e| e.mac)
                }
                Err(()) => {
                    if self.pending.len() < MAX_PENDING {
                        self.pending.push(Pending {
                            bytes: bytes.to_vec(),
                            from,
                            tries: tries + 1,
                            due: Instant::now() + PROBE_GAP,
                        });
                    } else {
                        // the client sends again; known clients are not held up meanwhile
                        c.neighbour_backlog.fetch_add(1, Ordering::Relaxed);
                        if self.bad_log.allow("neighbour backlog lines") {
                            tracing::warn!(target: "dhcp", "{}: dropped a DHCPv6 message from {}: {MAX_PENDING} messages already wait for their senders' neighbour entries", self.iface, from.ip());
                        }
                    }
                    return;
                }
            }
        } else {
            None
        };
        if mac.is_none() && needs_mac {
            c.no_mac.fetch_add(1, Ordering::Relaxed);
        }
        let now = now_secs();
        if let Some(mac) = mac {
            if !self.limiter.allow(mac, now) {
                c.ignored.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        // the interface's addresses, refreshed at most every ADDRS_TTL, lent to the decision
        self.own_addrs();
        let own = std::mem::take(&mut self.own);
        let mut d = {
            let table = net.table();
            let ctx = Context6 {
                table: &table,
                server_id: net.server_id(),
                mac,
                source: *from.ip(),
                own_addrs: &own,
                now,
                log: !self.shared.opts.quiet,
            };
            let leases = net.leases();
            decide6(&m, &ctx, &*leases)
        };
        self.own = own;
        if let Outcome6::Ignored(_) = d.outcome {
            c.ignored.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Some(l) = &d.received {
            self.log(l);
        }
        let binds = d.changes.iter().any(|c| matches!(c, Change6::Bind(_)));
        if !d.changes.is_empty() {
            let mut leases = net.leases();
            for ch in std::mem::take(&mut d.changes) {
                let before = leases.apply(&ch);
                if let Change6::Bind(l) = &ch {
                    self.undo.push((l.addr, before));
                }
                self.records.push(Record {
                    network: net.name.clone(),
                    change: ch.into(),
                });
            }
        }
        let Some(reply) = d.reply else { return };
        let to = if relayed {
            // back to the relay that sent it
            SocketAddrV6::new(*from.ip(), SERVER_PORT6, 0, from.scope_id())
        } else {
            SocketAddrV6::new(*from.ip(), CLIENT_PORT6, 0, self.ifindex)
        };
        // a client on the link whose entry the kernel holds confirmed: as a frame from our
        // link-local address (a stale one through the socket, see `Neighbour::confirmed`)
        let frame = match on_link {
            Some(e) if e.confirmed => self
                .own
                .iter()
                .find(|a| a.is_unicast_link_local())
                .map(|ll| (*ll, e.mac)),
            _ => None,
        };
        REPLIES6.with(|r| {
            let r = &mut *r.borrow_mut();
            let mut bytes = r.spare.pop().unwrap_or_else(|| Vec::with_capacity(256));
            reply.encode_into(&mut bytes);
            r.out.push(Out {
                bytes,
                to,
                frame,
                binds,
                sent: d.sent,
                advertise: reply.msg.msg_type() == dhcproto::v6::MessageType::Advertise,
            });
        });
    }

    fn log(&self, l: &qdhcp_protocol::v6::Log6) {
        if !self.shared.opts.quiet {
            tracing::info!(target: "dhcp", "{}", l.render(&self.iface));
        }
    }

    /// Sends what promises nothing durable (ADVERTISEs, REPLYs to RELEASE, CONFIRM,
    /// INFORMATION-REQUEST…) at once, and hands the batch's lease records with the REPLYs that
    /// wait for them to the journal writer, which sends those after the batch's fdatasync
    /// (group commit with every other interface, DHCPv4 and DHCPv6 alike).
    fn finish_batch(&mut self) {
        let sender = Sender {
            net: self.net.clone(),
            sock: self.sock.clone(),
            link: self.link.clone(),
            iface: self.iface.clone(),
            quiet: self.shared.opts.quiet,
        };
        let waits = !self.records.is_empty();
        let held = REPLIES6.with(|r| {
            let r = &mut *r.borrow_mut();
            let mut held = Vec::new();
            for o in r.out.drain(..) {
                if waits && o.binds {
                    held.push(o);
                } else {
                    r.now.push(o);
                }
            }
            sender.send_all(&r.now);
            for o in r.now.drain(..) {
                if r.spare.len() < BATCH {
                    r.spare.push(o.bytes);
                }
            }
            held
        });
        if !waits {
            return;
        }
        let c = Commit6 {
            sender,
            records: std::mem::take(&mut self.records),
            undo: std::mem::take(&mut self.undo),
            held,
        };
        if let Err(crate::commit::Batch::V6(c)) =
            self.shared.queue.send(crate::commit::Batch::V6(c))
        {
            // shutting down: nothing is promised that the journal does not hold
            c.deliver(false);
        }
    }
}

/// What sends a batch's replies: the interface's socket, its name and counters.
pub(crate) struct Sender {
    net: Arc<Net6>,
    sock: Arc<UdpSocket>,
    link: Arc<LinkOut>,
    iface: Arc<str>,
    quiet: bool,
}

impl Sender {
    fn send_all(&self, out: &[Out]) {
        if out.is_empty() {
            return;
        }
        // Replies to clients on the link as frames first; what cannot leave that way (no
        // packet socket, a send refused) goes through the UDP socket with the rest. A batch
        // with no frame (every relayed one) goes to the socket as it is.
        let left = out
            .iter()
            .any(|o| o.frame.is_some())
            .then(|| self.send_frames(out));
        let at = |k: usize| left.as_ref().map_or(k, |l| l[k]);
        let n = left.as_ref().map_or(out.len(), Vec::len);
        if n == 0 {
            return;
        }
        OUT6.with(|box6| {
            let box6 = &mut *box6.borrow_mut();
            for k in 0..n {
                box6.push(out[at(k)].to, &out[at(k)].bytes);
            }
            box6.flush(self.sock.as_raw_fd(), |k, r| self.sent(&out[at(k)], r));
        });
    }

    /// Sends the replies that have a frame as frames; returns the indices of the rest.
    fn send_frames(&self, out: &[Out]) -> Vec<usize> {
        let mut by_socket = Vec::new();
        FRAMES6.with(|frames| {
            let frames = &mut *frames.borrow_mut();
            let mut framed: Vec<(usize, Mac)> = Vec::new();
            for (i, o) in out.iter().enumerate() {
                let Some((src, mac)) = o.frame else {
                    by_socket.push(i);
                    continue;
                };
                if frames.len() <= framed.len() {
                    frames.push(Vec::with_capacity(512));
                }
                let ports = (SERVER_PORT6, CLIENT_PORT6);
                datagram6(src, *o.to.ip(), ports, &o.bytes, &mut frames[framed.len()]);
                framed.push((i, mac));
            }
            let batch: Vec<(&[u8], Mac)> = framed
                .iter()
                .zip(frames.iter())
                .map(|((_, mac), f)| (f.as_slice(), *mac))
                .collect();
            let sent = self
                .link
                .send_batch(qdhcp_batchio::packet::ETH_P_IPV6, &batch)
                .unwrap_or(0);
            let c = &self.net.counters;
            c.frames.fetch_add(sent as u64, Ordering::Relaxed);
            for (k, (i, _)) in framed.iter().enumerate() {
                if k < sent {
                    self.sent(&out[*i], Ok(()));
                } else {
                    by_socket.push(*i);
                }
            }
        });
        by_socket
    }

    /// Counts and logs one reply sent (or not).
    fn sent(&self, o: &Out, r: std::io::Result<()>) {
        let c = &self.net.counters;
        match r {
            Ok(()) => {
                if o.advertise {
                    c.advertise.fetch_add(1, Ordering::Relaxed);
                } else {
                    c.reply.fetch_add(1, Ordering::Relaxed);
                }
                if let (Some(l), false) = (&o.sent, self.quiet) {
                    tracing::info!(target: "dhcp", "{}", l.render(&self.iface));
                }
            }
            Err(e) => {
                if c.send_errors
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(1000)
                {
                    tracing::warn!(target: "dhcp", "{}: DHCPv6 reply to {} failed: {e}", self.iface, o.to);
                }
            }
        }
    }
}

/// A DHCPv6 batch handed to the journal writer: its lease records, how to undo them in memory,
/// and the REPLYs that wait for them.
pub(crate) struct Commit6 {
    sender: Sender,
    pub(crate) records: Vec<Record>,
    undo: Vec<(Ipv6Addr, Option<Lease6>)>,
    held: Vec<Out>,
}

impl Commit6 {
    /// After the journal commit: sends the held REPLYs, or (`committed` false) puts memory back
    /// to what is durable and sends none of them (the clients retry).
    pub(crate) fn deliver(self, committed: bool) {
        if committed {
            self.sender.send_all(&self.held);
            return;
        }
        let n = self.held.len() as u64;
        self.sender
            .net
            .counters
            .persist_failures
            .fetch_add(n, Ordering::Relaxed);
        let mut leases = self.sender.net.leases();
        for (addr, before) in self.undo.into_iter().rev() {
            leases.undo(addr, before);
        }
    }
}

impl Source for Dhcp6Source {
    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn ready(&mut self) -> Turn {
        if self.shared.stopping() {
            return Turn::Drained;
        }
        // one recvmmsg for the batch, the replies out together (see `Sender::send_all`)
        let fd = self.sock.as_raw_fd();
        let n = BATCH6.with(|b| {
            let b = &mut *b.borrow_mut();
            if b.bufs.is_empty() {
                b.bufs = vec![[0u8; MAX6]; BATCH];
            }
            let n = match recv_batch_from(fd, &mut b.bufs, &mut b.lens, &mut b.froms) {
                Ok(n) => n,
                Err(e) => {
                    if self.bad_log.allow("DHCPv6 receive errors") {
                        tracing::warn!(target: "dhcp", "{}: DHCPv6 receive failed: {e}", self.iface);
                    }
                    0
                }
            };
            for i in 0..n {
                let from = b.froms[i];
                if from.ip().is_unspecified() {
                    continue;
                }
                self.handle(&b.bufs[i][..b.lens[i]], from, 0);
            }
            n
        });
        self.finish_batch();
        // fewer than asked for: the queue was empty (a new datagram makes a new event)
        if n < BATCH {
            Turn::Drained
        } else {
            Turn::More
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.due).min()
    }

    fn timer(&mut self) -> Turn {
        let now = Instant::now();
        let (due, wait): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.due <= now);
        self.pending = wait;
        for p in due {
            self.handle(&p.bytes, p.from, p.tries);
        }
        self.finish_batch();
        Turn::Drained
    }
}
