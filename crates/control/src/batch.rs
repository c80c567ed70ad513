//! Group commit for API writes (see docs/ARCHITECTURE.md, "The walk of an API call"): one
//! writer thread takes every write queued while the last batch was being stored, applies them
//! to the registry in turn, stores them all in one transaction (one fsync for the lot), then
//! tells the DHCP side and answers each. A batch the store refuses is put back and its writes
//! run again one by one, so each gets its own answer. The API's async workers only queue and
//! wait: commits and plumbing run on the writer thread.

use std::any::Any;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Weak};

use qdhcp_registry::{Env, Outcome, Registry, RegistryError};
use tokio::sync::oneshot;

use crate::{Control, ControlError, SystemEnv};

/// Most writes stored in one transaction.
const MAX_BATCH: usize = 256;

type Value = Box<dyn Any + Send>;
type Op =
    Box<dyn FnMut(&mut Registry, &mut dyn Env) -> Result<(Value, Outcome), RegistryError> + Send>;

/// One queued write and where its answer goes.
pub(crate) struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Value, ControlError>>,
}

impl Control {
    /// Runs a write through the writer thread, stored with the others queued meanwhile; the
    /// answer comes once it is stored and the DHCP side has it, as with [`Control::mutate`].
    pub async fn submit<T: Send + 'static>(
        self: &Arc<Self>,
        mut f: impl FnMut(&mut Registry, &mut dyn Env) -> Result<(T, Outcome), RegistryError>
            + Send
            + 'static,
    ) -> Result<T, ControlError> {
        let op: Op = Box::new(move |reg, env| f(reg, env).map(|(v, o)| (Box::new(v) as Value, o)));
        let (reply, answer) = oneshot::channel();
        self.writer()
            .send(Job { op, reply })
            .map_err(|_| ControlError::Stopped)?;
        let v = answer.await.map_err(|_| ControlError::Stopped)??;
        v.downcast::<T>()
            .map(|b| *b)
            .map_err(|_| ControlError::Stopped)
    }

    fn writer(self: &Arc<Self>) -> &Sender<Job> {
        self.jobs.get_or_init(|| {
            let (tx, rx) = channel();
            let me = Arc::downgrade(self);
            if let Err(e) = std::thread::Builder::new()
                .name("api-writer".into())
                .spawn(move || write_loop(me, rx))
            {
                tracing::error!("cannot start the API writer thread: {e}");
            }
            tx
        })
    }

    /// Applies, stores and answers one batch.
    fn run_batch(&self, batch: Vec<Job>) {
        if batch.len() == 1 || self.is_stale() {
            for j in batch {
                self.run_alone(j);
            }
            return;
        }
        let turn = self.write_turn();
        let mut reg = self.lock();
        let mut env = SystemEnv;
        let mut done: Vec<(Job, Value)> = Vec::with_capacity(batch.len());
        let mut changes = Vec::new();
        let mut effects = Vec::new();
        reg.begin_undo();
        for mut j in batch {
            match (j.op)(&mut reg, &mut env) {
                Ok((v, out)) => {
                    changes.extend(out.changes);
                    effects.extend(out.effects);
                    done.push((j, v));
                }
                // nothing of a refused operation is in memory
                Err(e) => {
                    let _ = j.reply.send(Err(e.into()));
                }
            }
        }
        let undo = reg.end_undo();
        if !changes.is_empty() {
            let (back, stored) = self.store_unlocked(reg, undo, &changes);
            reg = back;
            if let Err(e) = stored {
                tracing::debug!(
                    "a batch of {} writes was refused ({e}); running each alone",
                    done.len()
                );
                drop(reg);
                drop(turn);
                for (j, _) in done {
                    self.run_alone(j);
                }
                return;
            }
        }
        // the next writer may go on once the DHCP side's ticket is drawn (under `reg`)
        drop(turn);
        self.tell_dhcp(reg, &effects);
        for (j, v) in done {
            let _ = j.reply.send(Ok(v));
        }
    }

    fn run_alone(&self, mut j: Job) {
        let r = self.mutate(|reg, env| (j.op)(reg, env));
        let _ = j.reply.send(r);
    }
}

fn write_loop(me: Weak<Control>, rx: Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let Some(control) = me.upgrade() else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        control.run_batch(batch);
    }
}
