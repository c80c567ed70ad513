//! The dataplane: the networks served (their reservation tables changed in place, O(1) per
//! port, and leases revoked through the journal), the listeners the event loops serve (see
//! [`crate::serving`]), and the journal writer thread (`writer`) that makes a batch's lease
//! changes durable with one commit before its ACKs leave.

use parking_lot::{Mutex, RwLock};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use ahash::{HashMap, HashSet};
use ipnet::Ipv4Net;
use qdhcp_protocol::{
    ClientId, Lease, LeaseChange, LeaseView, Mac, NetworkTable, Policy, Reservation,
};
use qdhcp_reactor::{Reactor, SourceId};
use socket2::Socket;

use crate::clock::now_secs;
use crate::commit::CommitQueue;
use crate::journal::{replay, Journal, JournalError, Record};
use crate::leases::LeaseTable;
use crate::metrics::{Counters, NetCounters};
use crate::network::{Network, ReloadStats};
use crate::options::ServeOptions;
use crate::serving::DhcpSource;
use crate::shared::Shared;
use crate::v6::{replay6, Dhcp6Source, Leases6, Net6};

/// The dataplane: its networks, the listeners the event loops serve, the journal and its
/// writer thread.
pub struct Dataplane {
    /// What the event loops share with the journal writer (counters, options, the commit
    /// queue): all a listener holds, so the listeners need nothing of this type.
    pub(crate) shared: Arc<Shared>,
    pub(crate) journal: Arc<Journal>,
    /// A compaction was refused for want of write access (after a privilege drop).
    pub(crate) compaction_denied: AtomicBool,
    networks: Mutex<HashMap<String, Arc<Network>>>,
    recovered: Mutex<HashMap<String, LeaseTable>>,
    /// The DHCPv6 side of networks that have IPv6 subnets.
    nets6: Mutex<HashMap<String, Arc<Net6>>>,
    recovered6: Mutex<HashMap<String, Leases6>>,
    /// The event loops serving every listener (from [`Dataplane::start`] on).
    reactor: OnceLock<Reactor>,
    listeners: Mutex<HashMap<String, SourceId>>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
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
        let j = j.paced(crate::priority::ThreadPriority);
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
        let recovered6 = replay6(&loaded.records, now_secs());
        let queue_cap = crate::commit::queue_cap(opts.commit_interval);
        let dp = Arc::new(Dataplane {
            shared: Arc::new(Shared {
                counters: Counters::default(),
                policy,
                opts,
                shutdown: AtomicBool::new(false),
                queue: Arc::new(CommitQueue::new(queue_cap)),
            }),
            journal: Arc::new(j),
            networks: Mutex::new(HashMap::default()),
            recovered: Mutex::new(recovered),
            nets6: Mutex::new(HashMap::default()),
            recovered6: Mutex::new(recovered6),
            reactor: OnceLock::new(),
            listeners: Mutex::new(HashMap::default()),
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
        *self.writer_thread.lock() = Some(h);
        let me = Arc::downgrade(self);
        let r = Reactor::new(
            "dhcp",
            self.shared.opts.loops,
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
        let leases = self.recovered.lock().remove(name).unwrap_or_default();
        let n = Arc::new(Network {
            name: Arc::from(name),
            table: RwLock::new(table),
            counters: NetCounters::default(),
            leases: Mutex::new(leases),
            addrs: RwLock::new(None),
            recent: Mutex::new(Default::default()),
        });
        self.networks.lock().insert(name.to_string(), n.clone());
        n
    }

    /// Says which addresses the network's DHCP interface has (serve mode plumbs them itself):
    /// the listener takes its server identifier from these instead of reading the interface
    /// in its namespace every few seconds on the packet path.
    pub fn set_addrs(&self, net: &Network, mut addrs: Vec<Ipv4Net>) {
        addrs.shrink_to_fit();
        *net.addrs.write() = Some(addrs);
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
                        change: LeaseChange::Release { mac: m, ip: l.ip }.into(),
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
        self.networks.lock().remove(name);
    }

    /// The network called `name`, if served.
    pub fn network(&self, name: &str) -> Option<Arc<Network>> {
        self.networks.lock().get(name).cloned()
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
        let src = DhcpSource::new(self.shared.clone(), net, iface, sock, netns);
        let id = reactor.add(Box::new(src));
        let old = self.listeners.lock().insert(key.to_string(), id);
        if let Some(old) = old {
            reactor.remove(old);
        }
        Ok(())
    }

    /// Adds the DHCPv6 side of a network, with the leases recovered for it; `server_id` is
    /// our DUID there (kept across restarts by the caller).
    pub fn add_network6(
        &self,
        name: &str,
        table: qdhcp_protocol::v6::Table6,
        server_id: qdhcp_protocol::v6::Duid,
    ) -> Arc<Net6> {
        let leases = self.recovered6.lock().remove(name).unwrap_or_default();
        let n = Arc::new(Net6::new(name, table, server_id, leases));
        self.nets6.lock().insert(name.to_string(), n.clone());
        n
    }

    /// The DHCPv6 side of the network called `name`, if it has one.
    pub fn network6(&self, name: &str) -> Option<Arc<Net6>> {
        self.nets6.lock().get(name).cloned()
    }

    /// Forgets the DHCPv6 side of a network (its leases go with it, as with
    /// [`Dataplane::remove_network`]); stop its listener first.
    pub fn remove_network6(&self, name: &str) {
        self.nets6.lock().remove(name);
    }

    /// The DHCPv6 side of every network that has one.
    pub fn networks6(&self) -> Vec<Arc<Net6>> {
        self.nets6.lock().values().cloned().collect()
    }

    /// Serves `net`'s DHCPv6 on `sock` (see [`crate::v6::open_dhcp6_socket`]), opened on
    /// `iface` in the calling thread's namespace, under the listener name `key`.
    pub fn listen6(
        self: &Arc<Self>,
        net: Arc<Net6>,
        key: &str,
        iface: &str,
        sock: Socket,
        netns: Option<std::path::PathBuf>,
    ) -> io::Result<()> {
        let Some(reactor) = self.reactor.get() else {
            return Err(io::Error::other("the dataplane is not started"));
        };
        let src = Dhcp6Source::new(self.shared.clone(), net, iface, sock, netns)?;
        let id = reactor.add(Box::new(src));
        let old = self.listeners.lock().insert(key.to_string(), id);
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
        if let Err(e) = crate::priority::serving(self.shared.opts.realtime) {
            if !WARNED.swap(true, Ordering::Relaxed) {
                let me = std::thread::current();
                let thread = me.name().unwrap_or("serving thread");
                tracing::warn!(target: "dhcp", "{thread}: no real-time priority ({e}); serving at normal priority");
            }
        }
    }

    /// Stops the listener called `key`; once this returns its socket is closed.
    pub fn unlisten(&self, key: &str) {
        let id = self.listeners.lock().remove(key);
        if let (Some(id), Some(r)) = (id, self.reactor.get()) {
            r.remove(id);
        }
    }

    /// Whether a listener called `key` runs (without listing them all).
    pub fn is_listening(&self, key: &str) -> bool {
        self.listeners.lock().contains_key(key)
    }

    /// Names of the running listeners.
    pub fn listeners(&self) -> Vec<String> {
        self.listeners.lock().keys().cloned().collect()
    }

    /// Asks every serving thread to stop, waits for them, and compacts the journal.
    pub fn shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.listeners.lock().clear();
        if let Some(r) = self.reactor.get() {
            r.shutdown();
        }
        // The listeners are gone; the writer drains what they queued and ends.
        self.shared.queue.close();
        if let Some(h) = self.writer_thread.lock().take() {
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
        self.shared.stopping()
    }

    /// Packet and lease counters.
    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Every network served.
    pub fn networks(&self) -> Vec<Arc<Network>> {
        self.networks.lock().values().cloned().collect()
    }
}
