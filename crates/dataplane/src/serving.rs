//! One network's DHCP socket as the event loops serve it (see docs/ARCHITECTURE.md, "Event
//! loops"): receive a batch, let the protocol core decide each message, hand the batch's lease
//! changes to the journal writer (its ACKs leave once they are durable), send the rest.

use std::cell::RefCell;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use qdhcp_batchio::{recv_batch, Outbox};
use qdhcp_protocol::{decide, parse, Context, Ignored, LeaseChange, LeaseView, Mac, Outcome};
use qdhcp_reactor::{Source, Turn};
use socket2::Socket;

use crate::clock::now_secs;
use crate::commit::{Commit, Held, Port};
use crate::delivery::destination;
use crate::journal::Record;
use crate::limits::{MacLimiter, RateLimit, UNANSWERED_LINES_PER_SECOND};
use crate::linkout::LinkOut;
use crate::listener::iface_addrs;
use crate::network::{pick_server_id, Network, RecentKind};
use crate::options::{BATCH, MAX_PACKET};
use crate::send::deliver;
use crate::shared::Shared;

thread_local! {
    /// The receive buffers of the loop running on this thread: shared by every network it
    /// serves, so a quiet network costs no buffer of its own.
    static BUFS: RefCell<(Vec<[u8; MAX_PACKET]>, [usize; BATCH])> =
        RefCell::new((vec![[0u8; MAX_PACKET]; BATCH], [0; BATCH]));
}

/// One listening interface of one network, served by an event loop.
pub(crate) struct DhcpSource {
    pub(crate) shared: Arc<Shared>,
    pub(crate) net: Arc<Network>,
    pub(crate) port: Arc<Port>,
    /// The namespace the interface lives in (its path), to read its addresses there: opened
    /// only for that, since ten thousand networks must not hold ten thousand descriptors more.
    pub(crate) netns: Option<PathBuf>,
    addrs: Vec<Ipv4Net>,
    addrs_checked: Option<Instant>,
    /// Made when first needed: most networks never see bad input.
    quiet: Option<Box<LogLimits>>,
    limiter: MacLimiter,
    outbox: Outbox,
    replies: Vec<Held>,
}

/// The budgets of a listener's log lines about bad input, rate limits and failures.
struct LogLimits {
    bad_input: RateLimit,
    no_addr: RateLimit,
    limit: RateLimit,
    recv: RateLimit,
    /// Lines about clients we hold nothing for.
    unknown: MacLimiter,
}

/// A listener's log budgets, made on first use.
fn logs(quiet: &mut Option<Box<LogLimits>>) -> &mut LogLimits {
    quiet.get_or_insert_with(LogLimits::new)
}

impl LogLimits {
    fn new() -> Box<Self> {
        Box::new(LogLimits {
            bad_input: RateLimit::new(),
            no_addr: RateLimit::new(),
            limit: RateLimit::new(),
            recv: RateLimit::new(),
            unknown: MacLimiter::new(UNANSWERED_LINES_PER_SECOND),
        })
    }
}

impl DhcpSource {
    pub(crate) fn new(
        shared: Arc<Shared>,
        net: Arc<Network>,
        iface: &str,
        sock: Socket,
        netns: Option<PathBuf>,
    ) -> Self {
        let client_rate = shared.opts.client_rate;
        DhcpSource {
            shared,
            net,
            port: Arc::new(Port {
                sock,
                iface: Arc::from(iface),
                link: LinkOut::new(netns.clone(), Arc::from(iface)),
            }),
            netns,
            addrs: Vec::new(),
            addrs_checked: None,
            quiet: None,
            limiter: MacLimiter::new(client_rate),
            outbox: Outbox::default(),
            replies: Vec::new(),
        }
    }

    /// Re-reads the interface's addresses (in its namespace): the server identifier comes
    /// from them, and Neutron adds one when a subnet is added.
    fn refresh_addrs(&mut self) {
        self.addrs_checked = Some(Instant::now());
        let iface = self.port.iface.clone();
        self.addrs = match &self.netns {
            None => iface_addrs(&iface),
            Some(ns) => {
                match File::open(ns).and_then(|f| qdhcp_netns::visit(&f, || iface_addrs(&iface))) {
                    Ok(a) => a,
                    Err(e) => {
                        if logs(&mut self.quiet).recv.allow("namespace lines") {
                            tracing::warn!(target: "dhcp", "cannot read the addresses of {iface} in its namespace: {e}");
                        }
                        return;
                    }
                }
            }
        };
    }

    /// One batch: at most `BATCH` datagrams, the budget of one turn.
    fn serve_batch(&mut self, bufs: &mut [[u8; MAX_PACKET]], lens: &mut [usize; BATCH]) -> Turn {
        let dp = self.shared.clone();
        let net = self.net.clone();
        if dp.stopping() {
            return Turn::Drained;
        }
        let n = match recv_batch(self.port.sock.as_raw_fd(), bufs, lens, false) {
            Ok(n) => n,
            Err(e) => {
                if logs(&mut self.quiet).recv.allow("receive-error lines") {
                    tracing::warn!(target: "dhcp", "receive on {} failed: {e}", self.port.iface);
                }
                // An error is reported once per socket error; the next readiness tells.
                return Turn::Drained;
            }
        };
        if n == 0 {
            return Turn::Drained;
        }
        let received_at = Instant::now();
        // set by the plumbing (serve mode), or read from the interface here every 2 s
        let known = net.known_addrs();
        if known.is_none()
            && self
                .addrs_checked
                .is_none_or(|t| t.elapsed() > Duration::from_secs(2))
        {
            self.refresh_addrs();
        }
        let now = now_secs();
        let mut records = Vec::new();
        let mut held = Vec::new();
        let mut recent: Vec<(Mac, RecentKind, std::net::Ipv4Addr)> = Vec::new();
        {
            // The table is read-locked only while deciding, never across the fsync.
            let table = net.table();
            let iface: &str = &self.port.iface;
            let server_id = match &*known {
                Some(known) => pick_server_id(known, &table),
                None => pick_server_id(&self.addrs, &table),
            };
            drop(known);
            let Some(server_id) = server_id else {
                if logs(&mut self.quiet).no_addr.allow("no-address lines") {
                    tracing::warn!(target: "dhcp", "no address on {iface}: cannot serve DHCP there");
                }
                return Turn::Drained;
            };
            let ctx = Context {
                iface,
                server_id,
                table: &table,
                policy: &dp.policy,
            };
            let mut leases = net.leases();
            for i in 0..n {
                let m = match parse(&bufs[i][..lens[i]]) {
                    Ok(m) => m,
                    Err(e) => {
                        dp.counters.malformed.add(e);
                        if logs(&mut self.quiet)
                            .bad_input
                            .allow("malformed-packet lines")
                        {
                            tracing::warn!(target: "dhcp", "dropped packet on {iface}: {e} ({} bytes)", lens[i]);
                        }
                        continue;
                    }
                };
                dp.counters.rx.add(m.msg);
                net.counters.rx.add(m.msg);
                if !self.limiter.allow(m.chaddr, now) {
                    dp.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                    if logs(&mut self.quiet).limit.allow("rate-limit lines") {
                        tracing::warn!(target: "dhcp", "{} from {} on {iface}: over {} messages/s, dropped", m.msg.name(), m.chaddr, dp.opts.client_rate);
                    }
                    continue;
                }
                let d = decide(&m, &ctx, &*leases, now);
                match (&d.outcome, &d.reply, &d.lease) {
                    (Outcome::Offered, Some(r), _) => {
                        recent.push((m.chaddr, RecentKind::Offered, r.yiaddr));
                    }
                    (Outcome::Released, _, Some(LeaseChange::Release { mac, ip })) => {
                        recent.push((*mac, RecentKind::Released, *ip));
                    }
                    _ => {}
                }
                if matches!(
                    d.outcome,
                    Outcome::Ignored(Ignored::NoAddress | Ignored::LeaseLimit)
                ) {
                    dp.counters.no_address.fetch_add(1, Ordering::Relaxed);
                }
                // Clients we hold nothing for are the flood case: their lines share one
                // global budget a second, so a flood cannot flood the log as well.
                let unknown = matches!(d.outcome, Outcome::Ignored(_));
                if !unknown || logs(&mut self.quiet).unknown.allow(Mac::default(), now) {
                    dp.log(iface, m.xid, &d.received);
                } else {
                    dp.counters.log_suppressed.fetch_add(1, Ordering::Relaxed);
                }
                let mut before = None;
                if let Some(c) = &d.lease {
                    if let LeaseChange::Bind(l) = c {
                        before = Some((l.mac, leases.lease(l.mac).cloned()));
                    }
                    // Applied now so the rest of the batch sees it; made durable below
                    // before any reply that depends on it leaves.
                    leases.apply(c);
                    if matches!(c, LeaseChange::Decline { .. }) {
                        dp.counters.declines.fetch_add(1, Ordering::Relaxed);
                    }
                    records.push(Record {
                        network: net.name.clone(),
                        change: c.clone().into(),
                    });
                }
                let Some(reply) = d.reply else { continue };
                let dest = destination(&m, reply.kind, reply.yiaddr, dp.opts.always_broadcast);
                let h = Held {
                    dest,
                    reply,
                    sent: d.sent,
                    before,
                };
                if d.lease.is_some() {
                    held.push(h);
                } else {
                    // OFFERs, NAKs and INFORM ACKs promise nothing durable: they leave
                    // with this batch, once the locks are released.
                    self.replies.push(h);
                }
            }
        }
        if !recent.is_empty() {
            let mut r = net.recent.lock();
            for (mac, kind, ip) in recent {
                r.note(mac, kind, ip, now);
            }
        }
        if !records.is_empty() {
            let c = Commit {
                net: net.clone(),
                port: self.port.clone(),
                records,
                held,
                received_at,
            };
            if dp.queue.send(crate::commit::Batch::V4(c)).is_err() {
                return Turn::Drained;
            }
        }
        deliver(
            &dp,
            &net,
            &self.port,
            &mut self.outbox,
            &mut self.replies,
            received_at,
        );
        if n == BATCH {
            Turn::More
        } else {
            Turn::Drained
        }
    }
}

impl Source for DhcpSource {
    fn fd(&self) -> RawFd {
        self.port.sock.as_raw_fd()
    }

    fn ready(&mut self) -> Turn {
        BUFS.with(|b| {
            let mut b = b.borrow_mut();
            let (bufs, lens) = &mut *b;
            self.serve_batch(bufs, lens)
        })
    }
}
