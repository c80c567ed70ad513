//! The one writer (see docs/ARCHITECTURE.md, "The walk of an API call"): a thread that owns
//! every change to the registry. It takes each write queued while the last batch was being
//! stored, applies them in turn to a clone of the published registry (each to a clone of
//! its own, so a write that fails or panics leaves nothing), stores what the batch changed in
//! one transaction (one fsync for the lot), and then publishes the clone and hands it to the
//! DHCP side, which answers the writes once told; or it drops the clone. The published
//! registry is never touched by a write that is not stored: no undo, no second apply.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::oneshot;

use qdhcp_registry::segments::SegmentConfig;
use qdhcp_registry::{Effect, Env, NetworkId, Outcome, Registry, RegistryError};
use qdhcp_store::{Store, StoreError};

use crate::dhcp_side::{Telling, Then};
use crate::{ControlError, SystemEnv, Written};

/// Most writes stored in one transaction.
const MAX_BATCH: usize = 256;

/// Longest a batch waits for more writes while the DHCP side is busy (see `Writer::gather`).
const GATHER_MAX: Duration = Duration::from_millis(100);

/// How often the writer looks whether the DHCP side is done while it gathers: short, since
/// a quick telling (a reservation upserted) is done in microseconds.
const GATHER_SLICE: Duration = Duration::from_micros(100);

/// How often a write another node's allocation refused runs again on the caught-up registry.
const CONFLICT_TRIES: u32 = 4;

/// What the writer is asked to do.
pub(crate) enum Job {
    /// A registry write, answered once stored and told (or refused).
    Write(Box<dyn Write>),
    /// Catch up with the database's change feed up to at least this revision; answers how
    /// many changes were applied.
    Follow(i64, Sender<usize>),
    /// Tell the DHCP side about one network again; answers whether it exists.
    Tell(NetworkId, Sender<bool>),
    /// Run on the DHCP side's thread, in order with what it is told.
    Aside(Then),
}

/// One queued registry write, its value kept for its answer.
pub(crate) trait Write: Send {
    /// Applies the write to a registry (a clone the writer publishes or drops).
    fn apply(&mut self, reg: &mut Registry, env: &mut dyn Env) -> Result<Outcome, RegistryError>;
    /// Answers the caller: the registry the write was published in, or why it failed.
    fn answer(self: Box<Self>, result: Result<Arc<Registry>, ControlError>);
}

/// Where a write's typed answer goes.
pub(crate) enum Reply<T> {
    /// An async caller ([`crate::Control::submit`]).
    Async(oneshot::Sender<Result<Written<T>, ControlError>>),
    /// A thread waiting ([`crate::Control::mutate`]).
    Blocking(mpsc::SyncSender<Result<Written<T>, ControlError>>),
}

/// A write with a typed value: the operation, its last value, and its reply.
pub(crate) struct Pending<T, F> {
    op: F,
    value: Option<T>,
    reply: Reply<T>,
}

impl<T, F> Pending<T, F> {
    pub(crate) fn new(op: F, reply: Reply<T>) -> Self {
        Pending {
            op,
            value: None,
            reply,
        }
    }
}

impl<T, F> Write for Pending<T, F>
where
    T: Send,
    F: FnMut(&mut Registry, &mut dyn Env) -> Result<(T, Outcome), RegistryError> + Send,
{
    fn apply(&mut self, reg: &mut Registry, env: &mut dyn Env) -> Result<Outcome, RegistryError> {
        let (value, out) = (self.op)(reg, env)?;
        self.value = Some(value);
        Ok(out)
    }

    fn answer(self: Box<Self>, result: Result<Arc<Registry>, ControlError>) {
        let Pending { value, reply, .. } = *self;
        let answer = result.and_then(|registry| {
            value
                .map(|value| Written { value, registry })
                .ok_or(ControlError::Failed)
        });
        match reply {
            Reply::Async(tx) => drop(tx.send(answer)),
            Reply::Blocking(tx) => drop(tx.send(answer)),
        }
    }
}

/// The writer's state: it alone changes the published registry and the revision.
pub(crate) struct Writer {
    published: Arc<ArcSwap<Registry>>,
    store: Arc<Store>,
    /// The DHCP side's queue.
    told: Sender<Telling>,
    /// Tellings the DHCP side has not finished yet.
    untold: Arc<AtomicUsize>,
    /// ML2's segment settings, given to a registry read back whole.
    segments: SegmentConfig,
    /// The database revision the published registry holds.
    revision: i64,
    /// The same, for `/metrics` (how far the change feed is behind the database).
    shown: Arc<std::sync::atomic::AtomicI64>,
}

/// Starts the writer thread; its queue goes away with the last sender (the `Control`).
pub(crate) fn start(w: Writer) -> std::io::Result<Sender<Job>> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("control-writer".into())
        .spawn(move || w.run(rx))?;
    Ok(tx)
}

impl Writer {
    pub(crate) fn new(
        published: Arc<ArcSwap<Registry>>,
        store: Arc<Store>,
        (told, untold): (Sender<Telling>, Arc<AtomicUsize>),
        segments: SegmentConfig,
        (revision, shown): (i64, Arc<std::sync::atomic::AtomicI64>),
    ) -> Self {
        shown.store(revision, std::sync::atomic::Ordering::Relaxed);
        Writer {
            published,
            store,
            told,
            untold,
            segments,
            revision,
            shown,
        }
    }

    /// Takes jobs until the queue goes away: the writes queued together are one batch; any
    /// other job ends the batch before it, so everything keeps the order it was queued in.
    fn run(mut self, rx: Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let started = Instant::now();
            let mut batch = Vec::new();
            let mut next = Some(first);
            while let Some(j) = next.take() {
                match j {
                    Job::Write(w) => batch.push(w),
                    other => {
                        self.commit(std::mem::take(&mut batch), 0);
                        self.other(other);
                    }
                }
                if batch.len() >= MAX_BATCH {
                    break;
                }
                next = self.gather(&rx, !batch.is_empty(), started);
            }
            self.commit(batch, 0);
        }
    }

    /// The next job queued. While the DHCP side is still busy with changes published before
    /// (plumbing a network takes milliseconds), the writes of this batch could not be
    /// answered before it is done anyway: the writer waits a little for more writes, so that
    /// they go in one transaction (group commit), as they did when plumbing ran on the writer.
    fn gather(&self, rx: &Receiver<Job>, have_writes: bool, started: Instant) -> Option<Job> {
        loop {
            match rx.try_recv() {
                Ok(j) => return Some(j),
                Err(mpsc::TryRecvError::Disconnected) => return None,
                Err(mpsc::TryRecvError::Empty) => {}
            }
            let busy = self.untold.load(Ordering::Acquire) > 0;
            if !have_writes || !busy || started.elapsed() >= GATHER_MAX {
                return None;
            }
            match rx.recv_timeout(GATHER_SLICE) {
                Ok(j) => return Some(j),
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    fn other(&mut self, job: Job) {
        match job {
            Job::Write(w) => self.commit(vec![w], 0),
            Job::Follow(revision, done) => {
                let n = if revision > self.revision {
                    self.catch_up()
                } else {
                    0
                };
                let _ = done.send(n);
            }
            Job::Tell(id, done) => {
                let reg = self.published.load_full();
                if reg.network(&id).is_some() {
                    let then: Then = Box::new(move |_| {
                        let _ = done.send(true);
                    });
                    self.tell(reg, vec![Effect::NetworkChanged(id)], vec![then]);
                } else {
                    let _ = done.send(false);
                }
            }
            Job::Aside(f) => self.tell(self.published.load_full(), Vec::new(), vec![f]),
        }
    }

    /// Applies a batch of writes to a clone of the published registry, stores what they
    /// changed in one transaction, then publishes the clone (the DHCP side answers the
    /// writes once told) or drops it. A batch the store refuses runs again one write at a
    /// time, so each gets its own answer; a write another node's allocation refused runs
    /// again on the caught-up registry.
    fn commit(&mut self, writes: Vec<Box<dyn Write>>, tries: u32) {
        if writes.is_empty() {
            return;
        }
        let mut next = Registry::clone(&self.published.load());
        let mut env = SystemEnv;
        let (mut done, mut changes, mut effects) = (Vec::new(), Vec::new(), Vec::new());
        for mut w in writes {
            let mut trial = next.clone();
            match catch_unwind(AssertUnwindSafe(|| w.apply(&mut trial, &mut env))) {
                Ok(Ok(out)) => {
                    next = trial;
                    changes.extend(out.changes);
                    effects.extend(out.effects);
                    done.push(w);
                }
                Ok(Err(e)) => w.answer(Err(e.into())),
                Err(_) => {
                    tracing::error!("a write panicked; nothing of it was kept");
                    w.answer(Err(ControlError::Failed));
                }
            }
        }
        if done.is_empty() {
            return;
        }
        if !changes.is_empty() {
            if let Err(e) = self.store.apply(&next.stored(&changes)) {
                drop(next);
                self.refused(done, e, tries);
                return;
            }
            // our own write: the published registry holds it, unless another node wrote in
            // between (the change feed brings that, and ours again with it)
            if self.store.last_written() == Some(self.revision + 1) {
                self.revision += 1;
                self.shown
                    .store(self.revision, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let then = done
            .into_iter()
            .map(|w| -> Then { Box::new(move |reg| w.answer(Ok(reg.clone()))) })
            .collect();
        self.publish(next, effects, then);
    }

    /// A batch the store refused: nothing of it is published.
    fn refused(&mut self, mut done: Vec<Box<dyn Write>>, e: StoreError, tries: u32) {
        if done.len() > 1 {
            tracing::debug!(
                "a batch of {} writes was refused ({e}); running each alone",
                done.len()
            );
            for w in done {
                self.commit(vec![w], 0);
            }
            return;
        }
        let Some(w) = done.pop() else { return };
        if let StoreError::Conflict { what, value } = &e {
            if tries < CONFLICT_TRIES {
                tracing::debug!(
                    "{what} {value} was taken by another node meanwhile; trying again ({})",
                    tries + 1
                );
                self.catch_up();
                self.commit(vec![w], tries + 1);
                return;
            }
        }
        w.answer(Err(e.into()));
    }

    /// Applies what other nodes wrote since the published registry's revision (one read of
    /// the database), publishes it and tells the DHCP side; everything is read back only from
    /// a store that cannot say what changed. A read that fails leaves the registry as it was.
    /// Returns how many changes were applied.
    fn catch_up(&mut self) -> usize {
        let base = self.published.load_full();
        let since = self.revision;
        let (at, next, effects) = match self.store.changes_since(since) {
            Ok(Some((at, changes))) if at > since => {
                let mut next = Registry::clone(&base);
                let effects = next.apply_stored(changes);
                (at, next, effects)
            }
            Ok(Some(_)) => return 0,
            Ok(None) => match self.read_back(&base) {
                Some(r) => r,
                None => return 0,
            },
            Err(e) => {
                tracing::warn!("change feed: {e}");
                return 0;
            }
        };
        self.revision = at;
        self.shown.store(at, std::sync::atomic::Ordering::Relaxed);
        let n = effects.len();
        self.publish(next, effects, Vec::new());
        if n > 0 {
            tracing::info!("change feed: at revision {at}, {n} changes from other nodes applied");
        }
        n
    }

    /// The whole registry read back, with the revision it is at and what changed from `base`.
    fn read_back(&self, base: &Registry) -> Option<(i64, Registry, Vec<Effect>)> {
        // the revision read first: a write after it shows up as a newer revision later
        let read = self
            .store
            .revision()
            .and_then(|at| Ok((at, self.store.load()?)));
        let (at, mut fresh) = match read {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("change feed: {e}");
                return None;
            }
        };
        fresh.set_segments(self.segments.clone());
        fresh.set_scheduling(base.scheduling().clone());
        let effects = qdhcp_registry::effects_between(base, &fresh);
        Some((at, fresh, effects))
    }

    /// Makes `next` what readers read, then hands it to the DHCP side.
    fn publish(&mut self, next: Registry, effects: Vec<Effect>, then: Vec<Then>) {
        let reg = Arc::new(next);
        self.published.store(reg.clone());
        self.tell(reg, effects, then);
    }

    fn tell(&self, reg: Arc<Registry>, effects: Vec<Effect>, then: Vec<Then>) {
        self.untold.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::SendError(t)) = self.told.send(Telling { reg, effects, then }) {
            self.untold.fetch_sub(1, Ordering::AcqRel);
            // the DHCP side is gone (stopping): the answers still go
            for f in t.then {
                f(&t.reg);
            }
        }
    }
}
