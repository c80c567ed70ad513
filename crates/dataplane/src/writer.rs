//! The journal writer: it takes the held replies of each batch from the commit queue, makes
//! their lease changes durable with one journal commit (fdatasync), and only then sends them
//! (`send`);
//! on a storage failure it decides again from the durable leases (see docs/ARCHITECTURE.md,
//! "Durability"). Also the journal's compaction and the periodic lease reaping.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use qdhcp_batchio::Outbox;
use qdhcp_protocol::{renew_from_durable, LeaseChange};

use crate::clock::now_secs;
use crate::commit::{Batch, Held, QUEUE_CAP};
use crate::journal::{JournalError, Record};
use crate::limits::RateLimit;
use crate::network::Network;
use crate::send::deliver;
use crate::server::Dataplane;

impl Dataplane {
    /// Rewrites the journal to the live leases and quarantines of every network.
    pub fn compact(&self) -> Result<usize, JournalError> {
        let nets: Vec<Arc<Network>> = self.networks().into_iter().collect();
        let nets6 = self.networks6();
        self.journal.compact(|| {
            let mut out = Vec::new();
            for n in &nets6 {
                for l in n.leases().iter() {
                    out.push(Record {
                        network: n.name.clone(),
                        change: qdhcp_protocol::v6::Change6::Bind(l.clone()).into(),
                    });
                }
            }
            for n in &nets {
                let t = n.leases();
                for l in t.leases() {
                    out.push(Record {
                        network: n.name.clone(),
                        change: LeaseChange::Bind(l.clone()).into(),
                    });
                }
                for (mac, ip, until) in t.quarantines() {
                    out.push(Record {
                        network: n.name.clone(),
                        change: LeaseChange::Decline { mac, ip, until }.into(),
                    });
                }
            }
            out
        })
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
            for n in self.networks6() {
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
    pub(crate) fn compact_if_allowed(&self) {
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

    /// The journal writer: takes every batch waiting, appends their records, makes them
    /// durable with one fdatasync (group commit across all interfaces), then releases their
    /// ACKs. Receiving and deciding go on meanwhile in the serving threads.
    pub(crate) fn write_journal(&self) {
        let mut persist_log = RateLimit::new();
        let mut records: Vec<Record> = Vec::with_capacity(4096);
        let mut outbox = Outbox::default();
        let mut renewed: Vec<Held> = Vec::new();
        let mut batch: Vec<Batch> = Vec::with_capacity(QUEUE_CAP);
        loop {
            batch.clear();
            if !self.shared.queue.recv(&mut batch) {
                break;
            }
            if batch.is_empty() {
                continue;
            }
            records.clear();
            for c in &mut batch {
                records.append(c.records_mut());
            }
            let t0 = std::time::Instant::now();
            let committed = self.journal.commit(&records, || ());
            if committed.is_ok() && !records.is_empty() {
                self.shared.counters.commit_took(t0.elapsed());
            }
            // batches that come meanwhile wait in the queue and go into the next commit
            let rest = (!records.is_empty())
                .then(|| self.shared.opts.commit_interval.checked_sub(t0.elapsed()))
                .flatten();
            match committed {
                Ok(()) => {
                    self.shared.counters.commits.fetch_add(1, Ordering::Relaxed);
                    self.shared
                        .counters
                        .records
                        .fetch_add(records.len() as u64, Ordering::Relaxed);
                    for c in batch.drain(..) {
                        match c {
                            Batch::V4(mut c) => deliver(
                                &self.shared,
                                &c.net,
                                &c.port,
                                &mut outbox,
                                &mut c.held,
                                c.received_at,
                            ),
                            Batch::V6(c) => c.deliver(true),
                        }
                    }
                }
                Err(e) => {
                    if persist_log.allow("lease-storage errors") {
                        tracing::error!(target: "dhcp", "{e}: not acknowledging leases that cannot be stored");
                    }
                    let now = now_secs();
                    for c in batch.drain(..) {
                        let c = match c {
                            Batch::V4(c) => c,
                            // memory goes back to what is durable; no REPLY that promised a lease
                            Batch::V6(c) => {
                                c.deliver(false);
                                continue;
                            }
                        };
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
                            let again = renew_from_durable(&h.reply, prev.as_ref(), now);
                            match again {
                                Some(reply) => {
                                    h.reply = reply;
                                    self.shared
                                        .counters
                                        .renewed_from_durable
                                        .fetch_add(1, Ordering::Relaxed);
                                    renewed.push(h);
                                }
                                None => {
                                    self.shared
                                        .counters
                                        .persist_failures
                                        .fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        deliver(
                            &self.shared,
                            &c.net,
                            &c.port,
                            &mut outbox,
                            &mut renewed,
                            c.received_at,
                        );
                    }
                }
            }
            if let Some(rest) = rest {
                std::thread::sleep(rest);
            }
        }
    }
}
