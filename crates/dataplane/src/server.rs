//! The dataplane: networks (reservation tables updated in place, O(1) per port, under a lock
//! the event loops take for reading once per batch), their leases, the listeners the event
//! loops serve (see [`crate::serving`]), and the journal writer that makes a batch's lease
//! changes durable with one commit before its ACKs leave.

use ahash::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::Ipv4Net;
use qdhcp_batchio::Outbox;
use qdhcp_protocol::{
    parse, renew_from_durable, ClientId, ClientMsg, Context, Lease, LeaseChange, LeaseView, Mac,
    Malformed, NetworkTable, Policy, ReplyKind, Reservation,
};
use socket2::Socket;

use crate::commit::{Commit, CommitQueue, Held, QUEUE_CAP};
use crate::delivery::{Delivery, CLIENT_PORT};
use crate::journal::{replay, Journal, JournalError, Record};
use crate::leases::LeaseTable;
use crate::listener::inject_arp;
use crate::serving::DhcpSource;
use crate::serving::RateLimit;
use qdhcp_reactor::{Reactor, SourceId};

/// Most packets taken from a socket before their lease changes are committed together.
pub const BATCH: usize = 64;
pub(crate) const MAX_PACKET: usize = 1500;

/// Current time in epoch seconds: the one clock read of the serving path.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Packet and lease counters, read by metrics and the SIGUSR1 dump.
#[derive(Default)]
pub struct Counters {
    /// Received, by client message: DISCOVER, REQUEST, DECLINE, RELEASE, INFORM.
    pub rx: [AtomicU64; 5],
    /// Sent: OFFER, ACK, NAK.
    pub tx: [AtomicU64; 3],
    /// Dropped by the front door, by reason (see `MALFORMED_LABELS`).
    pub malformed: [AtomicU64; 10],
    /// Messages from clients with no reservation.
    pub no_address: AtomicU64,
    /// DECLINEs accepted.
    pub declines: AtomicU64,
    /// ACKs withheld because their lease could not be made durable.
    pub persist_failures: AtomicU64,
    /// Journal commits (fdatasyncs).
    pub commits: AtomicU64,
    /// Lease records made durable.
    pub records: AtomicU64,
    /// Replies the kernel refused to send.
    pub send_errors: AtomicU64,
    /// Messages dropped because one client sent too many.
    pub rate_limited: AtomicU64,
    /// Log lines for unanswered messages left out over the global budget.
    pub log_suppressed: AtomicU64,
    /// Renewals answered from a still-durable lease while lease storage failed.
    pub renewed_from_durable: AtomicU64,
}

/// Log lines a second, per interface, for messages that get no answer (unknown clients).
pub const UNANSWERED_LINES_PER_SECOND: u16 = 200;

/// Counter labels for `Counters::malformed`, in index order.
pub const MALFORMED_LABELS: [&str; 10] = [
    "too_short",
    "not_request",
    "bad_hardware",
    "bad_cookie",
    "too_many_hops",
    "option_overrun",
    "bad_option_length",
    "duplicate_option",
    "no_message_type",
    "unsupported_type",
];

pub(crate) fn malformed_index(m: &Malformed) -> usize {
    MALFORMED_LABELS
        .iter()
        .position(|l| *l == m.label())
        .unwrap_or(0)
}

pub(crate) fn msg_index(m: ClientMsg) -> usize {
    match m {
        ClientMsg::Discover => 0,
        ClientMsg::Request => 1,
        ClientMsg::Decline => 2,
        ClientMsg::Release => 3,
        ClientMsg::Inform => 4,
    }
}

pub(crate) fn kind_index(k: ReplyKind) -> usize {
    match k {
        ReplyKind::Offer => 0,
        ReplyKind::Ack => 1,
        ReplyKind::Nak => 2,
    }
}

/// How replies are sent and logged.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Broadcast every reply (dnsmasq `--dhcp-broadcast`).
    pub always_broadcast: bool,
    /// Prefix lines with the transaction id (dnsmasq `--log-dhcp`).
    pub log_xid: bool,
    /// No per-message lines (dnsmasq `--quiet-dhcp`).
    pub quiet: bool,
    /// Messages one client (MAC) may send per second; 0 = no limit.
    pub client_rate: u16,
    /// Listeners and the journal writer at real-time priority (SCHED_FIFO), so that no other
    /// thread on their core delays a reply (see [`crate::priority`]).
    pub realtime: bool,
    /// Event-loop threads that serve every listener (default: one per core).
    pub loops: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            always_broadcast: false,
            log_xid: false,
            quiet: false,
            client_rate: MacLimiter::PER_SECOND,
            realtime: false,
            loops: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// Upper bounds (seconds) of the reply-latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];

/// Per-network packet counters and the reply-latency histogram, for metrics.
#[derive(Default)]
pub struct NetCounters {
    /// Received, by client message (same order as `Counters::rx`).
    pub rx: [AtomicU64; 5],
    /// Sent: OFFER, ACK, NAK.
    pub tx: [AtomicU64; 3],
    /// Replies by latency bucket (`LATENCY_BUCKETS`, then +Inf).
    pub latency: [AtomicU64; 12],
    /// Sum of reply latencies in microseconds.
    pub latency_us_sum: AtomicU64,
}

impl NetCounters {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency[i].fetch_add(1, Ordering::Relaxed);
        self.latency_us_sum
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

/// One network: its reservation table and its leases.
pub struct Network {
    /// Name used in the journal and logs.
    pub name: String,
    /// Packet counters of this network.
    pub counters: NetCounters,
    table: RwLock<NetworkTable>,
    leases: Mutex<LeaseTable>,
}

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadStats {
    /// Reservations that are new.
    pub added: usize,
    /// Reservations that are gone.
    pub removed: usize,
    /// Reservations whose address, name or options changed.
    pub changed: usize,
    /// Reservations left as they were.
    pub unchanged: usize,
    /// Leases revoked because their reservation went away or moved.
    pub revoked: usize,
}

impl Network {
    /// The table being served now.
    pub fn table(&self) -> RwLockReadGuard<'_, NetworkTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn table_mut(&self) -> RwLockWriteGuard<'_, NetworkTable> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Locks the lease table (poisoning is survived: the table stays consistent per change).
    pub fn leases(&self) -> MutexGuard<'_, LeaseTable> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Everything the serving threads share.
pub struct Dataplane {
    journal: Journal,
    /// Counters for metrics.
    pub counters: Counters,
    pub(crate) policy: Policy,
    pub(crate) opts: ServeOptions,
    shutdown: AtomicBool,
    /// A compaction was refused for want of write access (after a privilege drop).
    compaction_denied: AtomicBool,
    networks: Mutex<HashMap<String, Arc<Network>>>,
    recovered: Mutex<HashMap<String, LeaseTable>>,
    /// The event loops serving every listener (from [`Dataplane::start`] on).
    reactor: OnceLock<Reactor>,
    listeners: Mutex<HashMap<String, SourceId>>,
    pub(crate) queue: Arc<CommitQueue>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
}

/// Per-client message budget: a client (MAC) may send `PER_SECOND` messages a second; more
/// are dropped before any work is done, so one misbehaving or spoofed client cannot make the
/// server commit leases in a loop. Memory is bounded: the map is cleared each second.
pub struct MacLimiter {
    second: u64,
    per_second: u16,
    counts: HashMap<Mac, u16>,
}

impl MacLimiter {
    /// Default budget: a real client retries about once a second, so 30 is generous.
    pub const PER_SECOND: u16 = 30;

    /// A limiter allowing `per_second` messages per client (0 = no limit).
    pub fn new(per_second: u16) -> Self {
        MacLimiter {
            second: 0,
            per_second,
            counts: HashMap::default(),
        }
    }

    /// Whether `mac` may send one more message in second `now`.
    pub fn allow(&mut self, mac: Mac, now: u64) -> bool {
        if self.per_second == 0 {
            return true;
        }
        if now != self.second {
            self.second = now;
            self.counts.clear();
        }
        let c = self.counts.entry(mac).or_insert(0);
        *c = c.saturating_add(1);
        *c <= self.per_second
    }
}

impl Default for MacLimiter {
    fn default() -> Self {
        Self::new(Self::PER_SECOND)
    }
}

impl Dataplane {
    /// Opens the lease journal and recovers every intact lease from it.
    pub fn open(
        journal: &Path,
        policy: Policy,
        opts: ServeOptions,
    ) -> Result<Arc<Self>, JournalError> {
        let dp = Self::open_unstarted(journal, policy, opts)?;
        dp.start().map_err(|source| JournalError::Io {
            path: journal.to_path_buf(),
            source,
        })?;
        Ok(dp)
    }

    /// [`Dataplane::open`] without starting the journal writer thread: the process stays
    /// single-threaded until [`Dataplane::start`], so that privileges can be dropped between
    /// the two (see [`crate::privileges`]).
    pub fn open_unstarted(
        journal: &Path,
        policy: Policy,
        opts: ServeOptions,
    ) -> Result<Arc<Self>, JournalError> {
        let (j, loaded) = Journal::open(journal)?;
        if !loaded.damaged.is_empty() {
            tracing::warn!(
                target: "dhcp",
                "lease journal {}: {} damaged record(s) skipped (lines {:?}); every intact record was recovered",
                journal.display(),
                loaded.damaged.len(),
                &loaded.damaged[..loaded.damaged.len().min(10)]
            );
        }
        let recovered = replay(&loaded.records, now_secs());
        let dp = Arc::new(Dataplane {
            journal: j,
            counters: Counters::default(),
            policy,
            opts,
            shutdown: AtomicBool::new(false),
            networks: Mutex::new(HashMap::default()),
            recovered: Mutex::new(recovered),
            reactor: OnceLock::new(),
            listeners: Mutex::new(HashMap::default()),
            queue: Arc::new(CommitQueue::default()),
            writer_thread: Mutex::new(None),
            compaction_denied: AtomicBool::new(false),
        });
        Ok(dp)
    }

    /// Starts the journal writer thread (ACKs wait for it) and the event loops.
    pub fn start(self: &Arc<Self>) -> io::Result<()> {
        let w = self.clone();
        let h = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || {
                w.take_serving_priority();
                w.write_journal();
            })?;
        *self.writer_thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(h);
        let me = Arc::downgrade(self);
        let r = Reactor::new(
            "dhcp",
            self.opts.loops,
            Arc::new(move || {
                if let Some(dp) = me.upgrade() {
                    dp.take_serving_priority();
                }
            }),
        )?;
        let _ = self.reactor.set(r);
        Ok(())
    }

    /// Adds a network to serve, with the leases recovered for it.
    pub fn add_network(&self, name: &str, table: NetworkTable) -> Arc<Network> {
        let leases = self
            .recovered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .unwrap_or_default();
        let n = Arc::new(Network {
            name: name.to_string(),
            table: RwLock::new(table),
            counters: NetCounters::default(),
            leases: Mutex::new(leases),
        });
        self.networks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), n.clone());
        n
    }

    /// Adds leases known from elsewhere (dnsmasq's leases file) that the journal lacks.
    pub fn seed_leases(&self, net: &Network, leases: Vec<Lease>) -> usize {
        let mut t = net.leases();
        let mut n = 0;
        for l in leases {
            if t.lease(l.mac).is_none() {
                t.apply(&LeaseChange::Bind(l));
                n += 1;
            }
        }
        n
    }

    /// Swaps in a new table; leases whose reservation vanished or moved are revoked at once.
    pub fn reload(&self, net: &Network, new: NetworkTable) -> ReloadStats {
        let mut stats = ReloadStats::default();
        let mut revoke: Vec<Mac> = Vec::new();
        {
            let old = net.table();
            let key = |r: &Reservation| (r.mac, r.client_id.clone());
            let old_by: HashMap<(Option<Mac>, Option<ClientId>), &Reservation> =
                old.reservations().iter().map(|r| (key(r), r)).collect();
            let mut seen = HashSet::default();
            for r in new.reservations() {
                seen.insert(key(r));
                match old_by.get(&key(r)) {
                    None => stats.added += 1,
                    Some(o) if *o == r => stats.unchanged += 1,
                    Some(o) => {
                        stats.changed += 1;
                        if o.ip != r.ip {
                            revoke.extend(o.mac);
                        }
                    }
                }
            }
            for (k, o) in &old_by {
                if !seen.contains(k) {
                    stats.removed += 1;
                    revoke.extend(o.mac);
                }
            }
        }
        // the old table is dropped after the write lock is released: freeing 100,000
        // reservations must not hold up the listeners
        let old = std::mem::replace(&mut *net.table_mut(), new);
        drop(old);
        stats.revoked = self.revoke(net, &revoke);
        stats
    }

    /// Adds or replaces one reservation in place; a client moved to another address loses its
    /// old lease at once (its next renewal is NAKed).
    pub fn upsert_reservation(&self, net: &Network, r: Reservation) {
        self.apply_changes(net, vec![r], &[]);
    }

    /// Applies changes in place under one write lock, so that no client sees half of them (two
    /// hosts swapping addresses); leases of removed or moved hosts are revoked.
    /// Returns how many leases were revoked.
    pub fn apply_changes(&self, net: &Network, upsert: Vec<Reservation>, remove: &[Mac]) -> usize {
        let mut revoke: Vec<Mac> = Vec::new();
        {
            let mut t = net.table_mut();
            for &m in remove {
                t.remove_mac(m);
                revoke.push(m);
            }
            for r in upsert {
                if let Some(m) = r.mac {
                    if t.lookup(m, None)
                        .is_some_and(|o| o.mac == Some(m) && o.ip != r.ip)
                    {
                        revoke.push(m);
                    }
                }
                t.upsert(r);
            }
        }
        self.revoke(net, &revoke)
    }

    /// Removes the reservation of `mac` in place and revokes its lease.
    pub fn remove_reservation(&self, net: &Network, mac: Mac) {
        self.apply_changes(net, Vec::new(), &[mac]);
    }

    /// Replaces a network's subnets and network-wide settings, keeping its reservations.
    pub fn set_subnets(
        &self,
        net: &Network,
        subnets: Vec<qdhcp_protocol::Subnet>,
        global: qdhcp_protocol::OptionSet,
        domain: Option<String>,
    ) {
        let mut t = net.table_mut();
        t.subnets = subnets;
        t.global_options = global;
        t.domain = domain;
    }

    fn revoke(&self, net: &Network, macs: &[Mac]) -> usize {
        if macs.is_empty() {
            return 0;
        }
        let mut records = Vec::new();
        {
            let mut t = net.leases();
            for &m in macs {
                if let Some(l) = t.revoke(m) {
                    records.push(Record {
                        network: net.name.clone(),
                        change: LeaseChange::Release { mac: m, ip: l.ip },
                    });
                }
            }
        }
        if let Err(e) = self.journal.commit(&records, || ()) {
            tracing::error!(target: "dhcp", "{e}: revoked leases not recorded; they are revoked in memory");
        }
        records.len()
    }

    /// Stops serving a network and forgets it (its leases go with it).
    pub fn remove_network(&self, name: &str) {
        self.networks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// The network called `name`, if served.
    pub fn network(&self, name: &str) -> Option<Arc<Network>> {
        self.networks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Serves `net` on `iface` from a socket opened by `open_dhcp_socket` in the namespace
    /// at path `netns` (the interface's addresses are read there). `key` names the listener for `unlisten`; a
    /// listener already under that key is replaced.
    pub fn listen(
        self: &Arc<Self>,
        net: Arc<Network>,
        key: &str,
        iface: &str,
        sock: Socket,
        netns: Option<std::path::PathBuf>,
    ) -> io::Result<()> {
        let Some(reactor) = self.reactor.get() else {
            return Err(io::Error::other("the dataplane is not started"));
        };
        sock.set_nonblocking(false)?;
        let src = DhcpSource::new(self.clone(), net, iface, sock, netns);
        let id = reactor.add(Box::new(src));
        let old = self
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string(), id);
        if let Some(old) = old {
            reactor.remove(old);
        }
        Ok(())
    }

    /// Event-loop threads serving the listeners.
    pub fn loop_threads(&self) -> usize {
        self.reactor.get().map_or(0, |r| r.threads())
    }

    /// Puts the calling serving thread at its priority (see [`crate::priority::serving`]);
    /// a refusal of real-time priority is logged once and the thread runs at normal priority.
    fn take_serving_priority(&self) {
        static WARNED: AtomicBool = AtomicBool::new(false);
        if let Err(e) = crate::priority::serving(self.opts.realtime) {
            if !WARNED.swap(true, Ordering::Relaxed) {
                let me = std::thread::current();
                let thread = me.name().unwrap_or("serving thread");
                tracing::warn!(target: "dhcp", "{thread}: no real-time priority ({e}); serving at normal priority");
            }
        }
    }

    /// Stops the listener called `key`; once this returns its socket is closed.
    pub fn unlisten(&self, key: &str) {
        let id = self
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        if let (Some(id), Some(r)) = (id, self.reactor.get()) {
            r.remove(id);
        }
    }

    /// Whether a listener called `key` runs (without listing them all).
    pub fn is_listening(&self, key: &str) -> bool {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(key)
    }

    /// Names of the running listeners.
    pub fn listeners(&self) -> Vec<String> {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Asks every serving thread to stop, waits for them, and compacts the journal.
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        if let Some(r) = self.reactor.get() {
            r.shutdown();
        }
        // The listeners are gone; the writer drains what they queued and ends.
        self.queue.close();
        if let Some(h) = self
            .writer_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = h.join();
        }
    }

    /// [`Dataplane::shutdown`], then the journal rewritten to the live leases, so that the next
    /// start reads no more than it must. Only for an instance that still owns its files.
    pub fn shutdown_and_compact(&self) {
        self.shutdown();
        self.compact_if_allowed();
    }

    /// True once `shutdown` was called.
    pub fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

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

    /// Every network served.
    pub fn networks(&self) -> Vec<Arc<Network>> {
        self.networks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
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
    fn compact_if_allowed(&self) {
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
    /// relay leave as one segmented send), then counts and logs each; `replies` ends empty.
    pub(crate) fn deliver(
        &self,
        net: &Network,
        sock: &Socket,
        iface: &str,
        outbox: &mut Outbox,
        replies: &mut Vec<Held>,
        received_at: Instant,
    ) {
        if replies.is_empty() {
            return;
        }
        for h in replies.iter() {
            outbox.push(address(sock, iface, h.dest), &h.bytes);
        }
        // The replies of a batch leave together: one clock read gives their latency.
        let mut latency = None;
        outbox.flush(sock.as_raw_fd(), |i, sent| {
            let h = &replies[i];
            if let Err(e) = sent {
                self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "dhcp", "send on {iface} to {:?} failed: {e}", h.dest);
                return;
            }
            self.counters.tx[kind_index(h.kind)].fetch_add(1, Ordering::Relaxed);
            net.counters.tx[kind_index(h.kind)].fetch_add(1, Ordering::Relaxed);
            net.counters
                .observe(*latency.get_or_insert_with(|| received_at.elapsed()));
            if let Some(s) = &h.sent {
                self.log(iface, h.xid, s);
            }
        });
        replies.clear();
    }

    /// The journal writer: takes every batch waiting, appends their records, makes them
    /// durable with one fdatasync (group commit across all interfaces), then releases their
    /// ACKs. Receiving and deciding go on meanwhile in the serving threads.
    fn write_journal(&self) {
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
                        self.deliver(
                            &c.net,
                            &c.sock,
                            &c.iface,
                            &mut outbox,
                            &mut c.held,
                            c.received_at,
                        );
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
                            let again = parse(&h.request).ok().and_then(|m| {
                                let table = c.net.table();
                                let ctx = Context {
                                    iface: &c.iface,
                                    server_id: h.server_id,
                                    table: &table,
                                    policy: &self.policy,
                                };
                                renew_from_durable(&m, &ctx, prev.as_ref(), now)
                            });
                            match again {
                                Some(reply) => {
                                    h.bytes = reply.bytes;
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
                        self.deliver(
                            &c.net,
                            &c.sock,
                            &c.iface,
                            &mut outbox,
                            &mut renewed,
                            c.received_at,
                        );
                    }
                }
            }
        }
    }

    pub(crate) fn log(&self, iface: &str, xid: u32, line: &qdhcp_protocol::LogLine) {
        if self.opts.quiet {
            return;
        }
        if self.opts.log_xid {
            tracing::info!(target: "dhcp", mac = %line.mac, xid, "{} {}", xid, line.render(iface));
        } else {
            tracing::info!(target: "dhcp", mac = %line.mac, xid, "{}", line.render(iface));
        }
    }

    /// Counters in Prometheus text format.
    pub fn prometheus(&self) -> String {
        use std::fmt::Write as _;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let msgs = ["discover", "request", "decline", "release", "inform"];
        let replies = ["offer", "ack", "nak"];
        let mut o = String::new();
        let mut nets = self.networks();
        nets.sort_by(|a, b| a.name.cmp(&b.name));
        o.push_str("# HELP qdhcp_dhcp_packets_in_total DHCP messages received, by network and type.\n# TYPE qdhcp_dhcp_packets_in_total counter\n");
        for n in &nets {
            for (i, m) in msgs.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "qdhcp_dhcp_packets_in_total{{network=\"{}\",type=\"{m}\"}} {}",
                    n.name,
                    g(&n.counters.rx[i])
                );
            }
        }
        o.push_str("# HELP qdhcp_dhcp_packets_out_total DHCP replies sent, by network and type.\n# TYPE qdhcp_dhcp_packets_out_total counter\n");
        for n in &nets {
            for (i, m) in replies.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "qdhcp_dhcp_packets_out_total{{network=\"{}\",type=\"{m}\"}} {}",
                    n.name,
                    g(&n.counters.tx[i])
                );
            }
        }
        o.push_str("# HELP qdhcp_dhcp_dropped_total Packets dropped or not answered, by reason.\n# TYPE qdhcp_dhcp_dropped_total counter\n");
        for (i, l) in MALFORMED_LABELS.iter().enumerate() {
            let _ = writeln!(
                o,
                "qdhcp_dhcp_dropped_total{{reason=\"{l}\"}} {}",
                g(&self.counters.malformed[i])
            );
        }
        let c = &self.counters;
        for (l, v) in [
            ("no_address", &c.no_address),
            ("lease_not_durable", &c.persist_failures),
            ("send_error", &c.send_errors),
            ("rate_limited", &c.rate_limited),
        ] {
            let _ = writeln!(o, "qdhcp_dhcp_dropped_total{{reason=\"{l}\"}} {}", g(v));
        }
        let _ = writeln!(o, "# HELP qdhcp_renewals_from_durable_lease_total Renewals answered from a still-durable lease while lease storage failed.\n# TYPE qdhcp_renewals_from_durable_lease_total counter\nqdhcp_renewals_from_durable_lease_total {}", g(&c.renewed_from_durable));
        let _ = writeln!(o, "# HELP qdhcp_log_lines_suppressed_total Lines for unanswered messages over the per-second budget.\n# TYPE qdhcp_log_lines_suppressed_total counter\nqdhcp_log_lines_suppressed_total {}", g(&c.log_suppressed));
        o.push_str("# HELP qdhcp_leases_active Leases held, by network and subnet.\n# TYPE qdhcp_leases_active gauge\n");
        for n in &nets {
            let subnets: Vec<ipnet::Ipv4Net> = n.table().subnets.iter().map(|s| s.net).collect();
            let leases = n.leases();
            for s in subnets {
                let count = leases.leases().filter(|l| s.contains(&l.ip)).count();
                let _ = writeln!(
                    o,
                    "qdhcp_leases_active{{network=\"{}\",subnet=\"{s}\"}} {count}",
                    n.name
                );
            }
        }
        o.push_str("# HELP qdhcp_dhcp_reply_latency_seconds Time from receipt to reply.\n# TYPE qdhcp_dhcp_reply_latency_seconds histogram\n");
        for n in &nets {
            let mut cum = 0;
            for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
                cum += g(&n.counters.latency[i]);
                let _ = writeln!(
                    o,
                    "qdhcp_dhcp_reply_latency_seconds_bucket{{network=\"{}\",le=\"{b}\"}} {cum}",
                    n.name
                );
            }
            cum += g(&n.counters.latency[LATENCY_BUCKETS.len()]);
            let _ = writeln!(
                o,
                "qdhcp_dhcp_reply_latency_seconds_bucket{{network=\"{}\",le=\"+Inf\"}} {cum}",
                n.name
            );
            let _ = writeln!(
                o,
                "qdhcp_dhcp_reply_latency_seconds_sum{{network=\"{}\"}} {}",
                n.name,
                g(&n.counters.latency_us_sum) as f64 / 1e6
            );
            let _ = writeln!(
                o,
                "qdhcp_dhcp_reply_latency_seconds_count{{network=\"{}\"}} {cum}",
                n.name
            );
        }
        let _ = writeln!(
            o,
            "# TYPE qdhcp_journal_commits_total counter\nqdhcp_journal_commits_total {}",
            g(&c.commits)
        );
        let _ = writeln!(
            o,
            "# TYPE qdhcp_journal_records_total counter\nqdhcp_journal_records_total {}",
            g(&c.records)
        );
        o
    }

    /// A one-line summary of the counters (dnsmasq dumps its statistics on SIGUSR1).
    pub fn stats_line(&self) -> String {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let malformed: u64 = c.malformed.iter().map(g).sum();
        format!(
            "DHCP statistics: discover {} request {} decline {} release {} inform {}; offer {} ack {} nak {}; \
             no-address {} malformed {} persist-failures {} journal commits {} records {}",
            g(&c.rx[0]), g(&c.rx[1]), g(&c.rx[2]), g(&c.rx[3]), g(&c.rx[4]),
            g(&c.tx[0]), g(&c.tx[1]), g(&c.tx[2]),
            g(&c.no_address), malformed, g(&c.persist_failures), g(&c.commits), g(&c.records)
        )
    }
}

/// Our address on the interface: one inside a served subnet if there is one.
pub(crate) fn pick_server_id(addrs: &[Ipv4Net], table: &NetworkTable) -> Option<Ipv4Addr> {
    addrs
        .iter()
        .find(|a| table.subnets.iter().any(|s| s.net.contains(&a.addr())))
        .or(addrs.first())
        .map(|a| a.addr())
}

/// Where a reply's datagram goes. A client without an address gets it unicast to yiaddr after
/// its MAC is put in the ARP cache, or broadcast if that cannot be done.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_over_budget_is_limited_others_are_not() {
        let mut l = MacLimiter::default();
        let a = Mac([0xfa, 0x16, 0x3e, 0, 0, 1]);
        let b = Mac([0xfa, 0x16, 0x3e, 0, 0, 2]);
        for _ in 0..MacLimiter::PER_SECOND {
            assert!(l.allow(a, 100));
        }
        assert!(!l.allow(a, 100), "over budget in the same second");
        assert!(l.allow(b, 100), "another client is unaffected");
        assert!(l.allow(a, 101), "a new second, a new budget");
    }
}
