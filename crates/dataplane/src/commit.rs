//! The hand-over from the event loops to the journal writer (see docs/ARCHITECTURE.md,
//! "Durability"): a batch's lease records and the replies that must wait until they are on
//! disk.

use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use qdhcp_protocol::{Lease, Mac, Reply};
use socket2::Socket;

use crate::delivery::Delivery;
use crate::journal::Record;
use crate::linkout::LinkOut;
use crate::network::Network;

/// A reply waiting for its lease to be durable.
pub(crate) struct Held {
    pub(crate) dest: Delivery,
    /// The reply as decided; encoded only when it is sent.
    pub(crate) reply: Reply,
    pub(crate) sent: Option<qdhcp_protocol::LogLine>,
    /// For a lease change: the client's MAC and the lease it held before (what is durable),
    /// from which the core decides again if the change cannot be stored.
    pub(crate) before: Option<(Mac, Option<Lease>)>,
}

/// One served interface as the senders see it: its UDP socket, its name, and the packet
/// socket for clients without an address (opened on first use).
pub(crate) struct Port {
    pub(crate) sock: Socket,
    pub(crate) iface: Arc<str>,
    pub(crate) link: LinkOut,
}

/// One batch handed to the journal writer: lease records, and the replies that wait for them.
pub(crate) struct Commit {
    pub(crate) net: Arc<Network>,
    pub(crate) port: Arc<Port>,
    pub(crate) records: Vec<Record>,
    pub(crate) held: Vec<Held>,
    pub(crate) received_at: Instant,
}

/// What the journal writer takes: a DHCPv4 batch, or a DHCPv6 one (its replies go out on the
/// interface's DHCPv6 socket).
pub(crate) enum Batch {
    /// DHCPv4.
    V4(Commit),
    /// DHCPv6.
    V6(crate::v6::Commit6),
}

impl Batch {
    /// The lease records that must be durable before the batch's held replies leave.
    pub(crate) fn records_mut(&mut self) -> &mut Vec<Record> {
        match self {
            Batch::V4(c) => &mut c.records,
            Batch::V6(c) => &mut c.records,
        }
    }
}

/// Batches waiting for the journal writer at most, without a commit interval: when the disk
/// is slower than the clients, receiving slows down too.
pub(crate) const QUEUE_CAP: usize = 256;

/// The queue's room for a commit interval: [`QUEUE_CAP`] and an interval's worth of batches
/// at 100,000 a second (a batch per loop wake-up), so that the batches a spaced commit lets
/// wait do not fill it and hold the loops, ADVERTISEs and OFFERs behind them included.
pub(crate) fn queue_cap(commit_interval: std::time::Duration) -> usize {
    QUEUE_CAP + (commit_interval.as_micros() / 10).min(100_000) as usize
}

/// The bounded queue from the serving threads to the journal writer: a mutex and two condition
/// variables. Not std's channel: its receiver spins while a sender that claimed a slot finishes
/// writing it, and with the writer at real-time priority on the sender's core the sender never
/// ran again (a livelock, seen with both at SCHED_FIFO). Here a waiter sleeps.
pub(crate) struct CommitQueue<T = Batch> {
    state: Mutex<QueueState<T>>,
    not_empty: Condvar,
    not_full: Condvar,
    /// Batches it holds at most.
    cap: usize,
    /// Sends that waited for room: the journal behind the clients.
    pub(crate) full_waits: AtomicU64,
}

struct QueueState<T> {
    items: VecDeque<T>,
    closed: bool,
    /// The writer waits for a batch: a send wakes it. Otherwise no wake-up is made, since each
    /// costs a futex syscall and a send happens once per received batch.
    writer_waiting: bool,
    /// Senders waiting for room.
    senders_waiting: usize,
}

impl<T> CommitQueue<T> {
    /// An empty queue of `cap` batches.
    pub(crate) fn new(cap: usize) -> CommitQueue<T> {
        CommitQueue {
            state: Mutex::new(QueueState {
                items: VecDeque::new(),
                closed: false,
                writer_waiting: false,
                senders_waiting: 0,
            }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            cap: cap.max(1),
            full_waits: AtomicU64::new(0),
        }
    }

    fn state(&self) -> parking_lot::MutexGuard<'_, QueueState<T>> {
        self.state.lock()
    }

    /// Queues `c`, waiting while the queue is full; gives it back once the queue is closed.
    pub(crate) fn send(&self, c: T) -> Result<(), T> {
        let mut s = self.state();
        if s.items.len() >= self.cap && !s.closed {
            self.full_waits.fetch_add(1, Ordering::Relaxed);
        }
        while s.items.len() >= self.cap && !s.closed {
            s.senders_waiting += 1;
            self.not_full.wait(&mut s);
            s.senders_waiting -= 1;
        }
        if s.closed {
            return Err(c);
        }
        s.items.push_back(c);
        let wake = std::mem::take(&mut s.writer_waiting);
        drop(s);
        if wake {
            self.not_empty.notify_one();
        }
        Ok(())
    }

    /// Waits for batches (without waking while none comes) and moves all that are queued
    /// into `out`; false once the queue is closed and drained.
    pub(crate) fn recv(&self, out: &mut Vec<T>) -> bool {
        let mut s = self.state();
        while s.items.is_empty() && !s.closed {
            s.writer_waiting = true;
            self.not_empty.wait(&mut s);
            s.writer_waiting = false;
        }
        if s.items.is_empty() {
            return !s.closed;
        }
        out.extend(s.items.drain(..));
        let wake = s.senders_waiting > 0;
        drop(s);
        if wake {
            self.not_full.notify_all();
        }
        true
    }

    /// No more batches: senders get theirs back, the writer ends once the queue is drained.
    pub(crate) fn close(&self) {
        self.state().closed = true;
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_send_to_a_full_queue_waits_for_the_writer_and_is_counted() {
        let q = Arc::new(CommitQueue::<u32>::new(2));
        assert!(q.send(1).is_ok() && q.send(2).is_ok());
        assert_eq!(q.full_waits.load(Ordering::Relaxed), 0);
        let q2 = q.clone();
        let sender = std::thread::spawn(move || q2.send(3).is_ok());
        while q.full_waits.load(Ordering::Relaxed) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!sender.is_finished(), "the third send waits for room");
        let mut out = Vec::new();
        assert!(q.recv(&mut out));
        assert_eq!(out, [1, 2]);
        assert!(sender.join().unwrap());
        out.clear();
        assert!(q.recv(&mut out));
        assert_eq!(out, [3]);
        assert_eq!(q.full_waits.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_commit_interval_gets_room_for_the_batches_it_lets_wait() {
        assert_eq!(queue_cap(Duration::ZERO), QUEUE_CAP);
        assert_eq!(queue_cap(Duration::from_millis(5)), QUEUE_CAP + 500);
        assert_eq!(queue_cap(Duration::from_millis(20)), QUEUE_CAP + 2_000);
        assert_eq!(queue_cap(Duration::from_secs(1)), QUEUE_CAP + 100_000);
    }
}
