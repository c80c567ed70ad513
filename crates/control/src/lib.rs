//! qdhcp's control plane (see docs/ARCHITECTURE.md, "The walk of an API call", "Snapshots"
//! and "Nodes"): the registry under one lock that writers take one at a time and no one holds
//! across a database commit, readers served from snapshots of what is committed, every
//! operation written through to the store (API writes batched into one transaction by the
//! writer thread, `batch.rs`), other nodes' writes followed through the change feed, the DHCP
//! scheduler's live nodes, and the DHCP side told of each change before the operation is
//! acknowledged (so a port exists for DHCP by the time its create returns). No HTTP here: the
//! API crate calls it; no netlink: the `DhcpSink` does.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod batch;
mod locked;

pub use locked::Locked;

use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use qdhcp_registry::segments::SegmentConfig;
use qdhcp_registry::{Effect, Env, Outcome, Registry, RegistryError, Scheduling};
use qdhcp_store::{Store, StoreError};

/// Receives DHCP-relevant changes; the serve wiring implements it.
pub trait DhcpSink: Send + Sync {
    /// Called with the registry as it is after the operation: the registry itself under its
    /// lock, or a snapshot of it taken under the lock when plumbing is to run.
    fn apply(&self, reg: &Registry, effects: &[Effect]);
}

/// A sink that ignores everything (API-only runs and tests).
pub struct NoDhcp;

impl DhcpSink for NoDhcp {
    fn apply(&self, _: &Registry, _: &[Effect]) {}
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request broke a rule.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The change could not be stored; nothing was changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The writer thread is gone (the process is stopping); nothing was changed.
    #[error("the control plane is stopping")]
    Stopped,
}

/// Real time and randomness for the registry.
pub struct SystemEnv;

impl Env for SystemEnv {
    fn now(&mut self) -> qdhcp_registry::Stamp {
        // one copy of the text per second, shared by everything written in it
        static LAST: Mutex<Option<(i64, qdhcp_registry::Stamp)>> = Mutex::new(None);
        let t = chrono::Utc::now();
        let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        match &*last {
            Some((secs, text)) if *secs == t.timestamp() => text.clone(),
            _ => {
                let text: qdhcp_registry::Stamp = t.format("%Y-%m-%dT%H:%M:%SZ").to_string().into();
                *last = Some((t.timestamp(), text.clone()));
                text
            }
        }
    }
    fn new_id(&mut self) -> qdhcp_registry::Id {
        uuid::Uuid::new_v4().to_string().into()
    }
    fn random(&mut self) -> u32 {
        let b = *uuid::Uuid::new_v4().as_bytes();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
}

/// Registry + store + DHCP sink.
pub struct Control {
    /// Set when a commit failed and the registry could not be read back: memory may hold a
    /// change the database lacks, so no write goes on until it is read back.
    stale: std::sync::atomic::AtomicBool,
    /// The registry writers change; as committed whenever its lock is free (see
    /// [`Control::store_unlocked`]).
    reg: Mutex<Registry>,
    /// What readers read: a snapshot of `reg` taken each time a writer lets it go after a
    /// change ([`Locked`]), so readers take no lock and never wait for a writer.
    published: ArcSwap<Registry>,
    /// Held by whoever changes the registry (a write through its commit, the change feed),
    /// one at a time.
    writing: Mutex<()>,
    store: Store,
    dhcp: Arc<dyn DhcpSink>,
    segments: SegmentConfig,
    /// The database revision memory holds (see [`Control::follow`]).
    revision: std::sync::atomic::AtomicI64,
    /// The DHCP scheduler's settings and live nodes, kept across reloads.
    scheduling: Mutex<Scheduling>,
    /// The live nodes this node last rescheduled for as the leader (see
    /// [`Control::live_nodes`]).
    scheduled_for: Mutex<Option<Vec<String>>>,
    /// The queue of the API writer thread (see `batch.rs`), made on the first write.
    pub(crate) jobs: std::sync::OnceLock<std::sync::mpsc::Sender<crate::batch::Job>>,
    /// The DHCP side hears changes in the order the registry made them, also when plumbing
    /// runs after the registry lock is released (see [`Control::tell_dhcp`]): each telling
    /// draws a ticket under the registry lock and waits for its turn.
    dhcp_order: DhcpOrder,
}

/// Tickets and turns for telling the DHCP side in order.
#[derive(Default)]
struct DhcpOrder {
    /// The next ticket to hand out (drawn under the registry lock).
    tickets: std::sync::atomic::AtomicU64,
    /// The ticket whose turn it is.
    turn: Mutex<u64>,
    done: std::sync::Condvar,
}

impl DhcpOrder {
    fn draw(&self) -> u64 {
        self.tickets
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    }

    /// The turn lock, if it is `ticket`'s turn now.
    fn now(&self, ticket: u64) -> Option<MutexGuard<'_, u64>> {
        let turn = self.turn.lock().unwrap_or_else(|p| p.into_inner());
        (*turn == ticket).then_some(turn)
    }

    /// Waits for `ticket`'s turn.
    fn wait(&self, ticket: u64) -> MutexGuard<'_, u64> {
        let mut turn = self.turn.lock().unwrap_or_else(|p| p.into_inner());
        while *turn != ticket {
            turn = self.done.wait(turn).unwrap_or_else(|p| p.into_inner());
        }
        turn
    }

    /// Ends a turn: the next ticket's comes.
    fn next(&self, mut turn: MutexGuard<'_, u64>) {
        *turn += 1;
        drop(turn);
        self.done.notify_all();
    }
}

impl Control {
    /// Loads the registry from the store.
    pub fn open(store: Store, dhcp: Arc<dyn DhcpSink>) -> Result<Control, StoreError> {
        Self::open_with(store, dhcp, SegmentConfig::default())
    }

    /// [`Control::open`] with ML2's segment settings (VLAN and VNI ranges, tenant types).
    pub fn open_with(
        store: Store,
        dhcp: Arc<dyn DhcpSink>,
        segments: SegmentConfig,
    ) -> Result<Control, StoreError> {
        let revision = store.revision()?;
        let mut reg = store.load()?;
        reg.set_segments(segments.clone());
        Ok(Control {
            scheduling: Mutex::new(Scheduling::default()),
            scheduled_for: Mutex::new(None),
            jobs: std::sync::OnceLock::new(),
            dhcp_order: DhcpOrder::default(),
            revision: std::sync::atomic::AtomicI64::new(revision),
            stale: std::sync::atomic::AtomicBool::new(false),
            published: ArcSwap::from_pointee(reg.snapshot()),
            reg: Mutex::new(reg),
            writing: Mutex::new(()),
            store,
            dhcp,
            segments,
        })
    }

    /// What every registry read back from the store is given: segment ranges and scheduling.
    fn configure(&self, reg: &mut Registry) {
        reg.set_segments(self.segments.clone());
        reg.set_scheduling(
            self.scheduling
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        );
    }

    /// Sets how many nodes serve each network (Neutron's `dhcp_agents_per_network`).
    pub fn set_nodes_per_network(&self, n: usize) {
        let s = {
            let mut s = self.scheduling.lock().unwrap_or_else(|p| p.into_inner());
            s.per_network = n;
            s.clone()
        };
        self.lock().set_scheduling(s);
    }

    /// Takes the live nodes (from the heartbeats, sorted). The first live node is the leader:
    /// when the live nodes differ from those it last scheduled for, it schedules every network
    /// again (ports of nodes that are down move to live ones, networks short of nodes get
    /// more) and stores the moves, which reach the other nodes through the change feed.
    /// Returns how many ports it changed.
    pub fn live_nodes(&self, mut live: Vec<String>, me: &str) -> Result<usize, ControlError> {
        live.sort();
        live.dedup();
        let s = {
            let mut s = self.scheduling.lock().unwrap_or_else(|p| p.into_inner());
            s.live = live.clone();
            s.me = me.to_string();
            s.clone()
        };
        {
            let mut reg = self.lock();
            if reg.scheduling() != &s {
                reg.set_scheduling(s.clone());
            }
        }
        if s.leader() != Some(me) {
            *self.scheduled_for.lock().unwrap_or_else(|p| p.into_inner()) = None;
            return Ok(0);
        }
        if self
            .scheduled_for
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            == Some(&live)
        {
            return Ok(0);
        }
        let moved = self.mutate(|reg, env| {
            let out = reg.reschedule_dhcp(env);
            Ok((out.changes.len(), out))
        })?;
        *self.scheduled_for.lock().unwrap_or_else(|p| p.into_inner()) = Some(live.clone());
        if moved > 0 {
            tracing::info!(
                "DHCP scheduler: {moved} DHCP ports placed on the live nodes {}",
                live.join(", ")
            );
        }
        Ok(moved)
    }

    /// Read access: a snapshot of the registry as last committed (a write being stored is
    /// not in it yet). Holds no lock; later writes do not change it.
    pub fn read(&self) -> Arc<Registry> {
        self.published.load_full()
    }

    /// The registry itself, locked: for work that must not interleave with writes (a
    /// writer, or removing what no network holds). Letting it go after a change publishes
    /// a new snapshot for [`Control::read`].
    pub fn lock(&self) -> Locked<'_> {
        Locked::new(
            self.reg.lock().unwrap_or_else(|p| p.into_inner()),
            &self.published,
            &self.stale,
        )
    }

    /// The writers' turn (see `writing`).
    pub(crate) fn write_turn(&self) -> MutexGuard<'_, ()> {
        self.writing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores the changes of writes that `reg` holds, without holding the registry across
    /// the commit: memory goes back to what it was before them (`undo`, from
    /// [`Registry::end_undo`]) while the database commits, so readers see only what is
    /// committed and never wait for a commit; once stored, memory takes the writes again.
    /// When storing fails, memory stays as the database has it (with what other nodes wrote
    /// meanwhile, see [`Control::put_back`]). The caller holds the writers' turn. Returns the
    /// registry, locked again.
    pub(crate) fn store_unlocked<'a>(
        &'a self,
        mut reg: Locked<'a>,
        undo: Vec<qdhcp_registry::Stored>,
        changes: &[qdhcp_registry::Change],
    ) -> (Locked<'a>, Result<(), StoreError>) {
        use std::sync::atomic::Ordering;
        let after = reg.stored(changes);
        reg.apply_stored(undo);
        drop(reg);
        let staged = Registry::from_stored(&after);
        let stored = self.store.apply(&staged, changes);
        let mut reg = self.lock();
        match &stored {
            Ok(()) => {
                reg.apply_stored(after);
                // our own write: memory holds it, unless another node wrote in between
                if let Some(n) = self.store.last_written() {
                    let _ = self.revision.compare_exchange(
                        n - 1,
                        n,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                }
            }
            Err(_) => self.put_back(&mut reg, changes),
        }
        (reg, stored)
    }

    /// Runs one mutation: apply in memory, persist, then tell DHCP. If persisting fails,
    /// memory is put back as the database has it, so it never runs ahead of the database.
    /// When another node took the address or MAC meanwhile (a unique constraint refused the
    /// write), the operation runs again on the caught-up registry, as Neutron retries its DB
    /// conflicts: a port that asked for no address gets the next one; one that named the
    /// taken address gets 409.
    pub fn mutate<T>(
        &self,
        mut f: impl FnMut(&mut Registry, &mut dyn Env) -> Result<(T, Outcome), RegistryError>,
    ) -> Result<T, ControlError> {
        let mut tries = 0;
        loop {
            match self.mutate_once(&mut f) {
                Err(ControlError::Store(StoreError::Conflict { what, value })) if tries < 4 => {
                    tries += 1;
                    tracing::debug!(
                        "{what} {value} was taken by another node meanwhile; trying again ({tries})"
                    );
                }
                r => return r,
            }
        }
    }

    fn mutate_once<T>(
        &self,
        f: &mut impl FnMut(&mut Registry, &mut dyn Env) -> Result<(T, Outcome), RegistryError>,
    ) -> Result<T, ControlError> {
        use std::sync::atomic::Ordering;
        let turn = self.write_turn();
        let mut reg = self.lock();
        if self.stale.load(Ordering::SeqCst) {
            // the database again (it may be back): what it holds is the truth
            let at = self.store.revision()?;
            let mut fresh = self.store.load()?;
            self.configure(&mut fresh);
            *reg = fresh;
            self.revision.store(at, Ordering::SeqCst);
            self.stale.store(false, Ordering::SeqCst);
            let all: Vec<Effect> = reg
                .networks()
                .map(|n| Effect::NetworkChanged(n.id.clone()))
                .collect();
            self.dhcp_locked(&reg, &all);
        }
        let mut env = SystemEnv;
        reg.begin_undo();
        let done = f(&mut reg, &mut env);
        let undo = reg.end_undo();
        let (value, out) = match done {
            Ok(d) => d,
            Err(e) => {
                // a refused operation leaves nothing; should one have, it goes
                reg.apply_stored(undo);
                return Err(e.into());
            }
        };
        if out.changes.is_empty() {
            drop(turn);
            self.tell_dhcp(reg, &out.effects);
            return Ok(value);
        }
        let (reg, stored) = self.store_unlocked(reg, undo, &out.changes);
        stored?;
        // the next writer may go on once the DHCP side's ticket is drawn (under `reg`): it
        // does not wait for this write's plumbing
        drop(turn);
        self.tell_dhcp(reg, &out.effects);
        Ok(value)
    }

    /// Whether memory must be read back before the next write.
    pub(crate) fn is_stale(&self) -> bool {
        self.stale.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Tells the DHCP side while the caller keeps holding the registry lock (it must wait
    /// for its turn then, which comes once tellings before it have finished; those hold no
    /// registry lock).
    fn dhcp_locked(&self, reg: &Registry, effects: &[Effect]) {
        let ticket = self.dhcp_order.draw();
        let turn = self.dhcp_order.wait(ticket);
        self.dhcp.apply(reg, effects);
        self.dhcp_order.next(turn);
    }

    /// Tells the DHCP side and lets the registry go. Changes to reservations are quick and
    /// are applied under the lock; when a network is to be plumbed or torn down (namespaces,
    /// links, sockets: milliseconds each), or when such work is still going on before it, it
    /// is told from a snapshot and the registry is released first, so that
    /// reads and the next writes do not wait for the plumbing. The ticket drawn under the
    /// registry lock keeps what the DHCP side hears in the order the registry changed.
    pub(crate) fn tell_dhcp(&self, reg: Locked<'_>, effects: &[Effect]) {
        let ticket = self.dhcp_order.draw();
        let plumbs = effects
            .iter()
            .any(|e| matches!(e, Effect::NetworkChanged(_) | Effect::NetworkDeleted(_)));
        if !plumbs {
            // quick, and nobody is before it: from the registry itself
            if let Some(turn) = self.dhcp_order.now(ticket) {
                self.dhcp.apply(&reg, effects);
                drop(reg);
                self.dhcp_order.next(turn);
                return;
            }
        }
        let copy = reg.snapshot();
        drop(reg);
        let turn = self.dhcp_order.wait(ticket);
        self.dhcp.apply(&copy, effects);
        self.dhcp_order.next(turn);
    }

    /// After a write that was not stored: the objects it touched as the database holds them,
    /// and what other nodes wrote meanwhile, applied to memory and the DHCP side (PostgreSQL);
    /// on SQLite, or when that cannot be read, everything is read back (now or before the
    /// next write).
    fn put_back(&self, reg: &mut Registry, changes: &[qdhcp_registry::Change]) {
        use qdhcp_registry::Change;
        use std::sync::atomic::Ordering;
        let keys: Vec<(qdhcp_registry::Kind, String)> = changes
            .iter()
            .map(|c| match c {
                Change::Put(k, id) | Change::Delete(k, id) => (*k, id.to_string()),
            })
            .collect();
        let since = self.revision.load(Ordering::SeqCst);
        match (self.store.objects(&keys), self.store.changes_since(since)) {
            (Ok(Some(objects)), Ok(Some((at, others)))) => {
                let mut effects = reg.apply_stored(objects);
                effects.extend(reg.apply_stored(others));
                self.revision.fetch_max(at, Ordering::SeqCst);
                self.dhcp_locked(reg, &effects);
            }
            (Ok(None), _) => {
                let at = self.store.revision();
                match self.store.load() {
                    Ok(mut fresh) => {
                        self.configure(&mut fresh);
                        // read back: what other nodes wrote meanwhile reaches DHCP too
                        let effects = qdhcp_registry::effects_between(reg, &fresh);
                        *reg = fresh;
                        if let Ok(at) = at {
                            self.revision.store(at, Ordering::SeqCst);
                        }
                        self.dhcp_locked(reg, &effects);
                    }
                    Err(_) => self.stale.store(true, Ordering::SeqCst),
                }
            }
            _ => self.stale.store(true, Ordering::SeqCst),
        }
    }

    /// Follows the database's change feed (PostgreSQL): every write another node commits is
    /// applied here through [`Control::follow`]. Nothing to follow on SQLite.
    pub fn watch(self: &Arc<Self>) -> std::io::Result<()> {
        let me = Arc::downgrade(self);
        self.store.watch(move |rev| {
            if let Some(c) = me.upgrade() {
                c.follow(rev);
            }
        })
    }

    /// Catches up with writes other nodes made (the change feed calls it with the database's
    /// revision): when the database is ahead of memory, the objects written or deleted since
    /// memory's revision are read (one snapshot) and applied in place under the lock, what
    /// changed goes to the DHCP side, and memory is at that revision. Everything is read back
    /// only from a store that cannot say what changed. A read that fails leaves memory as it
    /// was, for the next call to try again.
    pub fn follow(&self, revision: i64) -> usize {
        use std::sync::atomic::Ordering;
        if revision <= self.revision.load(Ordering::SeqCst) {
            return 0;
        }
        let turn = self.write_turn();
        let mut reg = self.lock();
        let since = self.revision.load(Ordering::SeqCst);
        // what changed since memory's revision, in one snapshot of the database
        let (at, effects) = match self.store.changes_since(since) {
            Ok(Some((at, changes))) if at > since => (at, reg.apply_stored(changes)),
            Ok(Some(_)) => return 0,
            Ok(None) => match self.read_back(&mut reg) {
                Some(r) => r,
                None => return 0,
            },
            Err(e) => {
                tracing::warn!("change feed: {e}");
                return 0;
            }
        };
        self.revision.store(at, Ordering::SeqCst);
        drop(turn);
        self.tell_dhcp(reg, &effects);
        if !effects.is_empty() {
            tracing::info!(
                "change feed: at revision {at}, {} changes from other nodes applied",
                effects.len()
            );
        }
        effects.len()
    }

    /// Reads the whole registry back (a store that cannot say what changed): the revision it
    /// is at and what changed, or `None` when it cannot be read.
    fn read_back(&self, reg: &mut Registry) -> Option<(i64, Vec<Effect>)> {
        // the revision read first: a write after it shows up as a newer revision later
        let at = match self.store.revision() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("change feed: {e}");
                return None;
            }
        };
        let mut fresh = match self.store.load() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("change feed: {e}");
                return None;
            }
        };
        self.configure(&mut fresh);
        let effects = qdhcp_registry::effects_between(reg, &fresh);
        *reg = fresh;
        Some((at, effects))
    }

    /// Tells the DHCP side about each of `ids`, taking the lock for one network at a time so
    /// that API requests go on meanwhile (the reconcile pass after a fast start).
    pub fn sync_each(&self, ids: impl IntoIterator<Item = String>) -> usize {
        let mut n = 0;
        for id in ids {
            let reg = self.lock();
            if reg.network(&id).is_some() {
                self.tell_dhcp(reg, &[Effect::NetworkChanged(id.into())]);
                n += 1;
            }
        }
        n
    }

    /// Records this node's heartbeat.
    pub fn heartbeat(&self, n: &qdhcp_store::NodeRow) -> Result<(), StoreError> {
        self.store.heartbeat(n)
    }

    /// Every node known to the database, with its last heartbeat.
    pub fn nodes(&self) -> Result<Vec<qdhcp_store::NodeRow>, StoreError> {
        self.store.nodes()
    }

    /// Tells the DHCP side about every network (at start).
    pub fn sync_all(&self) {
        let reg = self.lock();
        let effects: Vec<Effect> = reg
            .networks()
            .map(|n| Effect::NetworkChanged(n.id.clone()))
            .collect();
        self.dhcp_locked(&reg, &effects);
    }
}
