//! What the dataplane counts: packet, lease and drop counters and per-network reply-latency
//! histograms (shown by `exposition`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use qdhcp_protocol::{ClientMsg, Malformed, ReplyKind};

/// Packet and lease counters, read by metrics and the SIGUSR1 dump.
#[derive(Default)]
pub struct Counters {
    /// Received, by client message: DISCOVER, REQUEST, DECLINE, RELEASE, INFORM.
    pub rx: [AtomicU64; 5],
    /// Sent: OFFER, ACK, NAK.
    pub tx: [AtomicU64; 3],
    /// Dropped by the front door, by reason (see `MALFORMED_LABELS`).
    pub malformed: [AtomicU64; 10],
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
    /// Replies the kernel refused to send.
    pub send_errors: AtomicU64,
    /// Messages dropped because one client sent too many.
    pub rate_limited: AtomicU64,
    /// Log lines for unanswered messages left out over the global budget.
    pub log_suppressed: AtomicU64,
    /// Renewals answered from a still-durable lease while lease storage failed.
    pub renewed_from_durable: AtomicU64,
}

/// Counter labels for `Counters::malformed`, in index order.
pub const MALFORMED_LABELS: [&str; 10] = [
    "too_short",
    "not_request",
    "bad_hardware",
    "bad_cookie",
    "too_many_hops",
    "option_overrun",
    "bad_option_length",
    "duplicate_option",
    "no_message_type",
    "unsupported_type",
];

pub(crate) fn malformed_index(m: &Malformed) -> usize {
    MALFORMED_LABELS
        .iter()
        .position(|l| *l == m.label())
        .unwrap_or(0)
}

pub(crate) fn msg_index(m: ClientMsg) -> usize {
    match m {
        ClientMsg::Discover => 0,
        ClientMsg::Request => 1,
        ClientMsg::Decline => 2,
        ClientMsg::Release => 3,
        ClientMsg::Inform => 4,
    }
}

pub(crate) fn kind_index(k: ReplyKind) -> usize {
    match k {
        ReplyKind::Offer => 0,
        ReplyKind::Ack => 1,
        ReplyKind::Nak => 2,
    }
}

/// Upper bounds (seconds) of the reply-latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];

/// Per-network packet counters and the reply-latency histogram, for metrics.
#[derive(Default)]
pub struct NetCounters {
    /// Received, by client message (same order as `Counters::rx`).
    pub rx: [AtomicU64; 5],
    /// Sent: OFFER, ACK, NAK.
    pub tx: [AtomicU64; 3],
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
