//! How the dataplane serves: the options a mode sets (delivery, logging, limits, threads) and
//! the size of a batch.

use crate::limits::MacLimiter;

/// Most packets taken from a socket before their lease changes are committed together.
pub const BATCH: usize = 64;
pub(crate) const MAX_PACKET: usize = 1500;

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
    /// Least time from the start of one journal commit to the start of the next: on a disk
    /// whose every flush takes time from the whole machine (a VM's), fewer and larger
    /// fdatasyncs keep that time from the replies of other clients; zero commits again as soon
    /// as the last commit ends.
    pub commit_interval: std::time::Duration,
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
            commit_interval: std::time::Duration::ZERO,
        }
    }
}
