//! The dataplane: networks (reservation tables updated in place, O(1) per port, under a lock
//! the event loops take for reading once per batch), their leases, the listeners the event
//! loops serve (see [`crate::serving`]), and the journal writer that makes a batch's lease
//! changes durable with one commit before its ACKs leave.

use ahash::{HashMap, HashSet};
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::Ipv4Net;
use qdhcp_protocol::{
    ClientId, Lease, LeaseChange, LeaseView, Mac, NetworkTable, Policy, Reservation,
};
use socket2::Socket;

use crate::commit::CommitQueue;
use crate::journal::{replay, Journal, JournalError, Record};
use crate::leases::LeaseTable;
pub use crate::metrics::*;
use crate::serving::DhcpSource;
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

/// One network: its reservation table and its leases.
pub struct Network {
    /// Name used in the journal and logs.
    pub name: String,
    /// Packet counters of this network.
    pub counters: NetCounters,
    table: RwLock<NetworkTable>,
    leases: Mutex<LeaseTable>,
    /// The addresses its DHCP interface was given, when whoever plumbed it says so
    /// ([`Dataplane::set_addrs`]): the server identifier comes from them, and the serving loop
    /// never enters the namespace to read them (see docs/ARCHITECTURE.md, "Event loops").
    addrs: RwLock<Option<Vec<Ipv4Net>>>,
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

    /// The interface addresses set by [`Dataplane::set_addrs`], if any.
    pub(crate) fn known_addrs(&self) -> RwLockReadGuard<'_, Option<Vec<Ipv4Net>>> {
        self.addrs.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Locks the lease table (poisoning is survived: the table stays consistent per change).
    pub fn leases(&self) -> MutexGuard<'_, LeaseTable> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Everything the serving threads share.
pub struct Dataplane {
    pub(crate) journal: Journal,
    /// Counters for metrics.
    pub counters: Counters,
    pub(crate) policy: Policy,
    pub(crate) opts: ServeOptions,
    shutdown: AtomicBool,
    /// A compaction was refused for want of write access (after a privilege drop).
    pub(crate) compaction_denied: AtomicBool,
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
    pub fn add_network(&self, name: &str, mut table: NetworkTable) -> Arc<Network> {
        table.shrink_options();
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
            addrs: RwLock::new(None),
        });
        self.networks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), n.clone());
        n
    }

    /// Says which addresses the network's DHCP interface has (serve mode plumbs them itself):
    /// the listener takes its server identifier from these instead of reading the interface
    /// in its namespace every few seconds on the packet path.
    pub fn set_addrs(&self, net: &Network, mut addrs: Vec<Ipv4Net>) {
        addrs.shrink_to_fit();
        *net.addrs.write().unwrap_or_else(|p| p.into_inner()) = Some(addrs);
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
        t.shrink_options();
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

    /// Every network served.
    pub fn networks(&self) -> Vec<Arc<Network>> {
        self.networks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
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
}

/// Our address on the interface: one inside a served subnet if there is one.
pub(crate) fn pick_server_id(addrs: &[Ipv4Net], table: &NetworkTable) -> Option<Ipv4Addr> {
    addrs
        .iter()
        .find(|a| table.subnets.iter().any(|s| s.net.contains(&a.addr())))
        .or(addrs.first())
        .map(|a| a.addr())
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
