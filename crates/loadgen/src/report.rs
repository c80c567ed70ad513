//! What a run saw: counts, rates and latency percentiles, as text for people and JSON for
//! the benchmark scripts.

use std::time::Duration;

use crate::Mode;

/// Latency samples in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Latencies(Vec<u32>);

impl Latencies {
    pub(crate) fn push(&mut self, d: Duration) {
        self.0.push(d.as_micros().min(u32::MAX as u128) as u32);
    }
    /// The p-th percentile (0–100) in microseconds.
    pub fn percentile(&self, p: f64) -> Option<u32> {
        if self.0.is_empty() {
            return None;
        }
        let mut v = self.0.clone();
        v.sort_unstable();
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        Some(v[i.min(v.len() - 1)])
    }
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True with no samples.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a run saw.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Exchanges started (DISCOVERs, or REQUESTs in renew mode).
    pub started: u64,
    /// OFFERs received.
    pub offers: u64,
    /// ACKs received.
    pub acks: u64,
    /// NAKs received.
    pub naks: u64,
    /// Exchanges with no reply in time.
    pub drops: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Time spent starting exchanges (the configured duration, or less if all ended).
    pub window: Duration,
    /// DISCOVER→OFFER.
    pub offer_latency: Latencies,
    /// REQUEST→ACK.
    pub ack_latency: Latencies,
    /// DHCPv6 through a relay: SOLICIT→ADVERTISE up to the reply's arrival in the generator's
    /// socket (the kernel's time stamp), leaving out how long it then waited for the generator
    /// to read it, as a capture on the client's side would see it.
    pub offer_arrival: Latencies,
    /// The same for REQUEST→REPLY.
    pub ack_arrival: Latencies,
    /// Datagrams sent and received (for the generator's own ceiling).
    pub sent: u64,
    /// Datagrams received.
    pub received: u64,
    /// CPU seconds the generator itself used (user + system), to show it is not the limit.
    pub cpu_s: f64,
    /// Whether the batches went out with UDP segmentation offload to the end.
    pub gso: bool,
    /// Time spent waiting for something to do (in poll, or spinning), to show how much of its
    /// core the generator needed when it busy-polls.
    pub idle_s: f64,
    /// On the link: replies that came in on another link than their client's (a leak between
    /// networks); they complete nothing.
    pub wrong_link: u64,
    /// On the link: the server's ARP requests (DHCPv4) or neighbour solicitations (DHCPv6)
    /// answered by the clients.
    pub arp_replies: u64,
}

impl Report {
    /// Completed exchanges per second (ACKs, or OFFERs in discover mode).
    pub fn rate(&self, mode: Mode) -> f64 {
        let done = if mode == Mode::Discover {
            self.offers
        } else {
            self.acks
        };
        // per second of sending time, as perfdhcp reports it: exchanges started in the
        // window count however late they end
        done as f64 / self.window.as_secs_f64().max(1e-9)
    }
    /// Share of started exchanges that got no reply, in percent.
    pub fn drop_pct(&self) -> f64 {
        if self.started == 0 {
            0.0
        } else {
            100.0 * self.drops as f64 / self.started as f64
        }
    }
    /// One JSON object, for scripts.
    pub fn json(&self, mode: Mode, offered_rate: u32) -> String {
        let p = |l: &Latencies, q| {
            l.percentile(q)
                .map(|v| v.to_string())
                .unwrap_or_else(|| "null".into())
        };
        format!(
            "{{\"offered_rate\":{offered_rate},\"started\":{},\"offers\":{},\"acks\":{},\"naks\":{},\"drops\":{},\"drop_pct\":{:.3},\"elapsed_s\":{:.3},\"rate\":{:.1},\"offer_p50_us\":{},\"offer_p99_us\":{},\"ack_p50_us\":{},\"ack_p99_us\":{},\"sent\":{},\"received\":{},\"loadgen_cpu_pct\":{:.1},\"loadgen_busy_pct\":{:.1},\"gso\":{},\"wrong_link\":{},\"arp_replies\":{},\"offer_arrival_p50_us\":{},\"offer_arrival_p99_us\":{},\"ack_arrival_p50_us\":{},\"ack_arrival_p99_us\":{}}}",
            self.started, self.offers, self.acks, self.naks, self.drops, self.drop_pct(), self.elapsed.as_secs_f64(),
            self.rate(mode), p(&self.offer_latency, 50.0), p(&self.offer_latency, 99.0), p(&self.ack_latency, 50.0), p(&self.ack_latency, 99.0),
            self.sent, self.received, 100.0 * self.cpu_s / self.elapsed.as_secs_f64().max(1e-9),
            100.0 * (1.0 - self.idle_s / self.elapsed.as_secs_f64().max(1e-9)).max(0.0),
            self.gso, self.wrong_link, self.arp_replies,
            p(&self.offer_arrival, 50.0), p(&self.offer_arrival, 99.0), p(&self.ack_arrival, 50.0), p(&self.ack_arrival, 99.0)
        )
    }
}
