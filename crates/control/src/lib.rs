//! qdhcp's control plane (see docs/ARCHITECTURE.md, "The walk of an API call", "Snapshots"
//! and "Nodes"). One writer owns the registry: every change, from the API, the change feed,
//! node liveness or the reconcile passes, is a job for the writer thread (`writer.rs`), which
//! takes the published registry, applies a batch of writes to a clone of it, stores what
//! changed in one transaction and then publishes the clone or drops it. Readers take the
//! published registry and never wait. The DHCP side hears every published change in order on
//! a thread of its own (`dhcp_side.rs`), and a write is answered only once it has, so a port
//! exists for DHCP by the time its create returns. No HTTP here: the API crate calls it; no
//! netlink: the `DhcpSink` does.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod dhcp_side;
pub mod nodes;
mod writer;

use parking_lot::Mutex;
use std::sync::mpsc::{channel, sync_channel, Sender};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::oneshot;

use qdhcp_registry::segments::SegmentConfig;
use qdhcp_registry::NodeName;
use qdhcp_registry::{Effect, Env, Outcome, Registry, RegistryError};
use qdhcp_store::{Store, StoreError};

use writer::{Job, Pending, Reply};

/// Receives DHCP-relevant changes; the serve wiring implements it.
pub trait DhcpSink: Send + Sync {
    /// Called, in the order the registry changed, with the registry as published by the
    /// change and what the change means for DHCP.
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
    /// The write hit a bug (it panicked); nothing of it was kept.
    #[error("the write failed on an internal error; nothing was changed")]
    Failed,
    /// The writer thread is gone (the process is stopping); nothing was changed.
    #[error("the control plane is stopping")]
    Stopped,
    /// The writer's threads could not be started.
    #[error("cannot start the control plane's threads: {0}")]
    Start(#[from] std::io::Error),
}

/// Real time and randomness for the registry.
pub struct SystemEnv;

impl Env for SystemEnv {
    fn now(&mut self) -> qdhcp_registry::Stamp {
        // one copy of the text per second, shared by everything written in it
        static LAST: Mutex<Option<(i64, qdhcp_registry::Stamp)>> = Mutex::new(None);
        let t = chrono::Utc::now();
        let mut last = LAST.lock();
        match &*last {
            Some((secs, text)) if *secs == t.timestamp() => text.clone(),
            _ => {
                let text: qdhcp_registry::Stamp = t.format("%Y-%m-%dT%H:%M:%SZ").to_string().into();
                *last = Some((t.timestamp(), text.clone()));
                text
            }
        }
    }
    fn new_id(&mut self) -> qdhcp_registry::ArcStr {
        uuid::Uuid::new_v4().to_string().into()
    }
    fn random(&mut self) -> u32 {
        let b = *uuid::Uuid::new_v4().as_bytes();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
}

/// What a stored write answers: its value and the registry as the write published it (for
/// rendering the objects as stored, off the writer).
#[derive(Debug)]
pub struct Written<T> {
    /// What the write returned.
    pub value: T,
    /// The registry the write was published in.
    pub registry: Arc<Registry>,
}

/// The control plane: the published registry, the writer's queue and the store.
pub struct Control {
    /// What readers read: the registry as last published by the writer.
    published: Arc<ArcSwap<Registry>>,
    /// The writer thread's queue (`writer.rs`).
    jobs: Sender<Job>,
    store: Arc<Store>,
    /// The live nodes this node last rescheduled for as the leader (see
    /// [`Control::live_nodes`]); only the heartbeat thread uses it.
    scheduled_for: Mutex<Option<Vec<NodeName>>>,
    /// The database revision the published registry holds (the writer keeps it).
    revision: Arc<std::sync::atomic::AtomicI64>,
}

impl Control {
    /// Loads the registry from the store and starts the writer.
    pub fn open(store: Store, dhcp: Arc<dyn DhcpSink>) -> Result<Control, ControlError> {
        Self::open_with(store, dhcp, SegmentConfig::default())
    }

    /// [`Control::open`] with ML2's segment settings (VLAN and VNI ranges, tenant types).
    pub fn open_with(
        store: Store,
        dhcp: Arc<dyn DhcpSink>,
        segments: SegmentConfig,
    ) -> Result<Control, ControlError> {
        let revision = store.revision()?;
        let mut reg = store.load()?;
        reg.set_segments(segments.clone());
        let published = Arc::new(ArcSwap::from_pointee(reg));
        let store = Arc::new(store);
        let told = dhcp_side::start(dhcp)?;
        let shown = Arc::new(std::sync::atomic::AtomicI64::new(revision));
        let jobs = writer::start(writer::Writer::new(
            published.clone(),
            store.clone(),
            told,
            segments,
            (revision, shown.clone()),
        ))?;
        Ok(Control {
            published,
            jobs,
            store,
            scheduled_for: Mutex::new(None),
            revision: shown,
        })
    }

    /// The database revision the published registry holds.
    pub fn revision(&self) -> i64 {
        self.revision.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The database's own revision now (ahead of [`Control::revision`] while the change feed
    /// has writes of other nodes still to apply).
    pub fn database_revision(&self) -> Result<i64, StoreError> {
        self.store.revision()
    }

    /// Read access: the registry as last published (every write answered before is in it).
    /// Holds no lock; later writes do not change it.
    pub fn read(&self) -> Arc<Registry> {
        self.published.load_full()
    }

    /// Runs a write through the writer, stored with the others queued meanwhile (one
    /// transaction for the lot); the answer comes once it is stored and the DHCP side has it.
    /// A write another node's allocation refused runs again on the caught-up registry, as
    /// Neutron retries its DB conflicts: a port that asked for no address gets the next one;
    /// one that named the taken address gets 409.
    pub async fn submit<T: Send + 'static>(
        &self,
        op: impl FnMut(&mut Registry, &mut dyn Env) -> Result<(T, Outcome), RegistryError>
            + Send
            + 'static,
    ) -> Result<Written<T>, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.queue(Job::Write(Box::new(Pending::new(op, Reply::Async(reply)))))?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }

    /// [`Control::submit`] for threads that are not async: waits for the answer.
    pub fn mutate<T: Send + 'static>(
        &self,
        op: impl FnMut(&mut Registry, &mut dyn Env) -> Result<(T, Outcome), RegistryError>
            + Send
            + 'static,
    ) -> Result<T, ControlError> {
        let (reply, answer) = sync_channel(1);
        self.queue(Job::Write(Box::new(Pending::new(
            op,
            Reply::Blocking(reply),
        ))))?;
        Ok(answer.recv().map_err(|_| ControlError::Stopped)??.value)
    }

    fn queue(&self, job: Job) -> Result<(), ControlError> {
        self.jobs.send(job).map_err(|_| ControlError::Stopped)
    }

    /// Sets how many nodes serve each network (Neutron's `dhcp_agents_per_network`).
    pub fn set_nodes_per_network(&self, n: usize) -> Result<(), ControlError> {
        self.mutate(move |reg, _| {
            let mut s = reg.scheduling().clone();
            s.per_network = n;
            reg.set_scheduling(s);
            Ok(((), Outcome::default()))
        })
    }

    /// Takes the live nodes (from the heartbeats). The first live node is the leader: when
    /// the live nodes differ from those it last scheduled for, it schedules every network
    /// again (ports of nodes that are down move to live ones, networks short of nodes get
    /// more) and stores the moves, which reach the other nodes through the change feed.
    /// Returns how many ports it changed.
    pub fn live_nodes(&self, live: Vec<String>, me: &str) -> Result<usize, ControlError> {
        let mut live: Vec<NodeName> = live.into_iter().map(NodeName::from).collect();
        live.sort();
        live.dedup();
        let again = self.scheduled_for.lock().as_ref() != Some(&live);
        let leader = live.first().map(NodeName::as_str) == Some(me);
        {
            // the usual heartbeat changes nothing: no write, no new registry published
            let reg = self.read();
            let s = reg.scheduling();
            if s.live == live && s.me == me && !(leader && again) {
                if !leader {
                    *self.scheduled_for.lock() = None;
                }
                return Ok(0);
            }
        }
        let (nodes, me) = (live.clone(), NodeName::from(me));
        let moved = self.mutate(move |reg, env| {
            let mut s = reg.scheduling().clone();
            s.live = nodes.clone();
            s.me = me.clone();
            if reg.scheduling() != &s {
                reg.set_scheduling(s.clone());
            }
            if s.leader() != Some(me.as_str()) {
                return Ok((None, Outcome::default()));
            }
            if !again {
                return Ok((Some(0), Outcome::default()));
            }
            let out = reg.reschedule_dhcp(env);
            Ok((Some(out.changes.len()), out))
        })?;
        let mut scheduled_for = self.scheduled_for.lock();
        let Some(moved) = moved else {
            *scheduled_for = None;
            return Ok(0);
        };
        *scheduled_for = Some(live.clone());
        if moved > 0 {
            tracing::info!(
                "DHCP scheduler: {moved} DHCP ports placed on the live nodes {}",
                live.iter()
                    .map(NodeName::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(moved)
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
    /// revision): when the database is ahead of memory, the writer reads the objects written
    /// or deleted since memory's revision (one snapshot), applies them to a clone, publishes
    /// it and tells the DHCP side. Returns how many changes it applied (0 when a read fails:
    /// the next call tries again).
    pub fn follow(&self, revision: i64) -> usize {
        let (done, applied) = channel();
        if self.queue(Job::Follow(revision, done)).is_err() {
            return 0;
        }
        applied.recv().unwrap_or(0)
    }

    /// Tells the DHCP side about each of `ids` that exists, one network at a time, in order
    /// with the writes around them (the reconcile pass after a fast start): API writes go on
    /// meanwhile. Returns how many networks were told.
    pub fn sync_each(&self, ids: impl IntoIterator<Item = String>) -> usize {
        let mut n = 0;
        for id in ids {
            let (done, told) = channel();
            if self.queue(Job::Tell(id.into(), done)).is_err() {
                break;
            }
            if told.recv().unwrap_or(false) {
                n += 1;
            }
        }
        n
    }

    /// Runs `f` on the DHCP side's thread, in order with what it is told: with the registry
    /// as last published, after every change published before it reached the DHCP side and
    /// before any later one does. For work that must not interleave with plumbing (removing
    /// what no network holds). `None` when the control plane is stopping.
    pub fn on_dhcp_side<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Registry) -> T + Send + 'static,
    ) -> Option<T> {
        let (done, result) = channel();
        self.queue(Job::Aside(Box::new(move |reg: &Arc<Registry>| {
            let _ = done.send(f(reg));
        })))
        .ok()?;
        result.recv().ok()
    }

    /// Records this node's heartbeat.
    pub fn heartbeat(&self, n: &qdhcp_store::NodeRow) -> Result<(), StoreError> {
        self.store.heartbeat(n)
    }

    /// Every node known to the database, with its last heartbeat.
    pub fn nodes(&self) -> Result<Vec<qdhcp_store::NodeRow>, StoreError> {
        self.store.nodes()
    }
}
