//! What the dataplane counts: packet, lease and drop counters and per-network reply-latency
//! histograms (shown by `exposition`).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use qdhcp_protocol::{ClientMsg, Malformed, ReplyKind};

/// An enum that a counter array is indexed by: each value has its slot and its label, both
/// matched exhaustively, so a value can never be counted in another's slot.
pub trait Kind: Copy + 'static {
    /// Every value, in slot order.
    const ALL: &'static [Self];
    /// The value's slot.
    fn slot(self) -> usize;
    /// Its label value in `/metrics`.
    fn label(self) -> &'static str;
}

/// One counter per value of `K` (`N` is the number of values).
pub struct PerKind<K: Kind, const N: usize> {
    counts: [AtomicU64; N],
    kind: PhantomData<K>,
}

impl<K: Kind, const N: usize> Default for PerKind<K, N> {
    fn default() -> Self {
        debug_assert_eq!(K::ALL.len(), N, "one slot per value");
        PerKind {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            kind: PhantomData,
        }
    }
}

impl<K: Kind + std::fmt::Debug, const N: usize> std::fmt::Debug for PerKind<K, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.snapshot()).finish()
    }
}

impl<K: Kind, const N: usize> PerKind<K, N> {
    /// Counts one `k`.
    pub fn add(&self, k: K) {
        self.counts[k.slot()].fetch_add(1, Ordering::Relaxed);
    }

    /// The count of `k`.
    pub fn get(&self, k: K) -> u64 {
        self.counts[k.slot()].load(Ordering::Relaxed)
    }

    /// Every value with its count, in slot order.
    pub fn snapshot(&self) -> Vec<(K, u64)> {
        K::ALL.iter().map(|k| (*k, self.get(*k))).collect()
    }
}

impl Kind for ClientMsg {
    const ALL: &'static [Self] = &[
        ClientMsg::Discover,
        ClientMsg::Request,
        ClientMsg::Decline,
        ClientMsg::Release,
        ClientMsg::Inform,
    ];
    fn slot(self) -> usize {
        match self {
            ClientMsg::Discover => 0,
            ClientMsg::Request => 1,
            ClientMsg::Decline => 2,
            ClientMsg::Release => 3,
            ClientMsg::Inform => 4,
        }
    }
    fn label(self) -> &'static str {
        match self {
            ClientMsg::Discover => "discover",
            ClientMsg::Request => "request",
            ClientMsg::Decline => "decline",
            ClientMsg::Release => "release",
            ClientMsg::Inform => "inform",
        }
    }
}

impl Kind for ReplyKind {
    const ALL: &'static [Self] = &[ReplyKind::Offer, ReplyKind::Ack, ReplyKind::Nak];
    fn slot(self) -> usize {
        match self {
            ReplyKind::Offer => 0,
            ReplyKind::Ack => 1,
            ReplyKind::Nak => 2,
        }
    }
    fn label(self) -> &'static str {
        match self {
            ReplyKind::Offer => "offer",
            ReplyKind::Ack => "ack",
            ReplyKind::Nak => "nak",
        }
    }
}

impl Kind for Malformed {
    const ALL: &'static [Self] = &[
        Malformed::TooShort,
        Malformed::NotRequest,
        Malformed::BadHardware,
        Malformed::BadCookie,
        Malformed::TooManyHops,
        Malformed::OptionOverrun(0),
        Malformed::BadOptionLength(0),
        Malformed::DuplicateOption(0),
        Malformed::NoMessageType,
        Malformed::UnsupportedType(0),
    ];
    fn slot(self) -> usize {
        match self {
            Malformed::TooShort => 0,
            Malformed::NotRequest => 1,
            Malformed::BadHardware => 2,
            Malformed::BadCookie => 3,
            Malformed::TooManyHops => 4,
            Malformed::OptionOverrun(_) => 5,
            Malformed::BadOptionLength(_) => 6,
            Malformed::DuplicateOption(_) => 7,
            Malformed::NoMessageType => 8,
            Malformed::UnsupportedType(_) => 9,
        }
    }
    fn label(self) -> &'static str {
        Malformed::label(&self)
    }
}

/// Packet and lease counters, read by metrics and the SIGUSR1 dump.
#[derive(Default)]
pub struct Counters {
    /// Received, by client message.
    pub rx: PerKind<ClientMsg, 5>,
    /// Sent, by reply.
    pub tx: PerKind<ReplyKind, 3>,
    /// Dropped by the front door, by reason.
    pub malformed: PerKind<Malformed, 10>,
    /// Messages from clients with no reservation.
    pub no_address: AtomicU64,
    /// DECLINEs accepted.
    pub declines: AtomicU64,
    /// ACKs withheld because their lease could not be made durable.
    pub persist_failures: AtomicU64,
    /// Journal commits (fdatasyncs).
    pub commits: AtomicU64,
    /// Lease records made durable.
    pub records: AtomicU64,
    /// Journal commits (write and fdatasync) by duration (`COMMIT_BUCKETS`, then +Inf).
    pub commit_time: [AtomicU64; 12],
    /// Sum of journal commit durations in microseconds.
    pub commit_us_sum: AtomicU64,
    /// Replies the kernel refused to send.
    pub send_errors: AtomicU64,
    /// Messages dropped because one client sent too many.
    pub rate_limited: AtomicU64,
    /// Log lines for unanswered messages left out over the global budget.
    pub log_suppressed: AtomicU64,
    /// Renewals answered from a still-durable lease while lease storage failed.
    pub renewed_from_durable: AtomicU64,
}

/// Upper bounds (seconds) of the reply-latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];

/// Upper bounds (seconds) of the journal-commit histogram buckets: an fdatasync on a good SSD
/// takes well under a millisecond, on a slow or overloaded disk tens to hundreds.
pub const COMMIT_BUCKETS: [f64; 11] = [
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

impl Counters {
    pub(crate) fn commit_took(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = COMMIT_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(COMMIT_BUCKETS.len());
        self.commit_time[i].fetch_add(1, Ordering::Relaxed);
        self.commit_us_sum
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Per-network packet counters and the reply-latency histogram, for metrics.
#[derive(Default)]
pub struct NetCounters {
    /// Received, by client message.
    pub rx: PerKind<ClientMsg, 5>,
    /// Sent, by reply.
    pub tx: PerKind<ReplyKind, 3>,
    /// Replies by latency bucket (`LATENCY_BUCKETS`, then +Inf).
    pub latency: [AtomicU64; 12],
    /// Sum of reply latencies in microseconds.
    pub latency_us_sum: AtomicU64,
}

impl NetCounters {
    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency[i].fetch_add(1, Ordering::Relaxed);
        self.latency_us_sum
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots_cover<K: Kind>() {
        let mut slots: Vec<usize> = K::ALL.iter().map(|k| k.slot()).collect();
        slots.sort_unstable();
        assert_eq!(
            slots,
            (0..K::ALL.len()).collect::<Vec<_>>(),
            "one slot per value, none shared"
        );
        let mut labels: Vec<&str> = K::ALL.iter().map(|k| k.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), K::ALL.len(), "distinct labels");
    }

    #[test]
    fn every_kind_has_a_slot_and_a_label_of_its_own() {
        slots_cover::<ClientMsg>();
        slots_cover::<ReplyKind>();
        slots_cover::<Malformed>();
        slots_cover::<qdhcp_protocol::v6::Msg6>();
        let c = Counters::default();
        c.malformed.add(Malformed::OptionOverrun(53));
        assert_eq!(
            c.malformed.get(Malformed::OptionOverrun(0)),
            1,
            "the payload does not matter"
        );
        assert_eq!(
            c.malformed.snapshot().iter().map(|(_, n)| n).sum::<u64>(),
            1
        );
    }
}
