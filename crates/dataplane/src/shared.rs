//! What every event loop shares with the journal writer: the counters, the serving options
//! and policy, the shutdown flag and the commit queue. A listener holds this, not the
//! dataplane, so serving needs nothing of the type that owns the listeners.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use qdhcp_protocol::Policy;

use crate::commit::CommitQueue;
use crate::metrics::Counters;
use crate::options::ServeOptions;

/// The serving threads' common state.
pub(crate) struct Shared {
    /// Counters for metrics.
    pub(crate) counters: Counters,
    pub(crate) policy: Policy,
    pub(crate) opts: ServeOptions,
    pub(crate) shutdown: AtomicBool,
    /// Batches whose ACKs wait for the journal writer.
    pub(crate) queue: Arc<CommitQueue>,
}

impl Shared {
    /// True once the dataplane is shutting down.
    pub(crate) fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// Writes a dnsmasq-style line for a message or reply (unless quiet).
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
