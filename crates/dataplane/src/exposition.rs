//! How the dataplane's counters are shown: `/metrics`, encoded by `prometheus-client` (a
//! snapshot of the counters is taken at scrape time, the serving path only bumps atomics, and
//! handed to the crate as a collector, with typed label sets whose values are enums matched
//! exhaustively), and the SIGUSR1 line.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
    MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use qdhcp_protocol::{ClientMsg, Malformed, ReplyKind};

use crate::metrics::{Kind, COMMIT_BUCKETS, LATENCY_BUCKETS};
use crate::server::Dataplane;

/// A counted kind (message type, reply type, front-door reason) as a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Label<K>(pub K);

impl<K: Kind + std::fmt::Debug> EncodeLabelValue for Label<K> {
    fn encode(&self, e: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        e.write_str(self.0.label())
    }
}

/// Why a packet was dropped or not answered, as a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Refused by the front door.
    Malformed(Malformed),
    /// No reservation for the client.
    NoAddress,
    /// Its lease could not be made durable.
    LeaseNotDurable,
    /// The kernel refused the reply.
    SendError,
    /// The client sent more than its budget.
    RateLimited,
}

impl EncodeLabelValue for DropReason {
    fn encode(&self, e: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        e.write_str(match self {
            DropReason::Malformed(m) => m.label(),
            DropReason::NoAddress => "no_address",
            DropReason::LeaseNotDurable => "lease_not_durable",
            DropReason::SendError => "send_error",
            DropReason::RateLimited => "rate_limited",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct InLabels {
    network: String,
    r#type: Label<ClientMsg>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutLabels {
    network: String,
    r#type: Label<ReplyKind>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DropLabels {
    reason: DropReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LeaseLabels {
    network: String,
    subnet: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NetworkLabel {
    network: String,
}

/// One network's counters at scrape time.
#[derive(Debug, Default)]
pub(crate) struct NetSnapshot {
    pub(crate) name: String,
    pub(crate) rx: Vec<(ClientMsg, u64)>,
    pub(crate) tx: Vec<(ReplyKind, u64)>,
    /// Leases held, by subnet.
    pub(crate) leases: Vec<(String, u64)>,
    /// Replies per latency bucket (`LATENCY_BUCKETS`, then +Inf), not cumulated.
    pub(crate) latency: Vec<u64>,
    pub(crate) latency_sum_secs: f64,
}

/// The dataplane's counters at scrape time.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) nets: Vec<NetSnapshot>,
    pub(crate) dropped: Vec<(DropReason, u64)>,
    pub(crate) renewed_from_durable: u64,
    pub(crate) log_suppressed: u64,
    pub(crate) commits: u64,
    /// Batches that waited for room in the journal's queue.
    pub(crate) queue_full: u64,
    pub(crate) records: u64,
    /// Journal commits per duration bucket (`COMMIT_BUCKETS`, then +Inf), not cumulated.
    pub(crate) commit_time: Vec<u64>,
    pub(crate) commit_sum_secs: f64,
}

/// A histogram already counted (the serving path keeps atomics per bucket).
#[derive(Debug)]
struct Counted<'a> {
    sum: f64,
    count: u64,
    buckets: &'a [(f64, u64)],
}

impl EncodeMetric for Counted<'_> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, self.buckets, None)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = MetricType::Counter;
        let mut f = e.encode_descriptor(
            "qdhcp_dhcp_packets_in",
            "DHCP messages received, by network and type",
            None,
            counter,
        )?;
        for n in &self.nets {
            for (t, v) in &n.rx {
                let l = InLabels {
                    network: n.name.clone(),
                    r#type: Label(*t),
                };
                ConstCounter::new(*v).encode(f.encode_family(&l)?)?;
            }
        }
        let mut f = e.encode_descriptor(
            "qdhcp_dhcp_packets_out",
            "DHCP replies sent, by network and type",
            None,
            counter,
        )?;
        for n in &self.nets {
            for (t, v) in &n.tx {
                let l = OutLabels {
                    network: n.name.clone(),
                    r#type: Label(*t),
                };
                ConstCounter::new(*v).encode(f.encode_family(&l)?)?;
            }
        }
        let mut f = e.encode_descriptor(
            "qdhcp_dhcp_dropped",
            "Packets dropped or not answered, by reason",
            None,
            counter,
        )?;
        for (reason, v) in &self.dropped {
            ConstCounter::new(*v).encode(f.encode_family(&DropLabels { reason: *reason })?)?;
        }
        for (name, help, v) in [
            (
                "qdhcp_renewals_from_durable_lease",
                "Renewals answered from a still-durable lease while lease storage failed",
                self.renewed_from_durable,
            ),
            (
                "qdhcp_log_lines_suppressed",
                "Lines for unanswered messages over the per-second budget",
                self.log_suppressed,
            ),
            (
                "qdhcp_journal_commits",
                "Lease journal commits (each one fdatasync)",
                self.commits,
            ),
            (
                "qdhcp_journal_records",
                "Lease records made durable",
                self.records,
            ),
            (
                "qdhcp_journal_queue_full",
                "Batches that waited for room in the journal's queue (receiving held back by the disk)",
                self.queue_full,
            ),
        ] {
            let f = e.encode_descriptor(name, help, None, counter)?;
            ConstCounter::new(v).encode(f)?;
        }
        let mut f = e.encode_descriptor(
            "qdhcp_leases_active",
            "Leases held, by network and subnet",
            None,
            MetricType::Gauge,
        )?;
        for n in &self.nets {
            for (subnet, count) in &n.leases {
                let l = LeaseLabels {
                    network: n.name.clone(),
                    subnet: subnet.clone(),
                };
                ConstGauge::new(*count as i64).encode(f.encode_family(&l)?)?;
            }
        }
        let f = e.encode_descriptor(
            "qdhcp_journal_commit_seconds",
            "Time a lease journal commit (write and fdatasync) took",
            None,
            MetricType::Histogram,
        )?;
        let buckets: Vec<(f64, u64)> = COMMIT_BUCKETS
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(self.commit_time.iter().copied())
            .collect();
        Counted {
            sum: self.commit_sum_secs,
            count: self.commit_time.iter().sum(),
            buckets: &buckets,
        }
        .encode(f)?;
        let mut f = e.encode_descriptor(
            "qdhcp_dhcp_reply_latency_seconds",
            "Time from receipt to reply",
            None,
            MetricType::Histogram,
        )?;
        for n in &self.nets {
            let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
                .iter()
                .copied()
                .chain([f64::MAX])
                .zip(n.latency.iter().copied())
                .collect();
            let h = Counted {
                sum: n.latency_sum_secs,
                count: n.latency.iter().sum(),
                buckets: &buckets,
            };
            h.encode(f.encode_family(&NetworkLabel {
                network: n.name.clone(),
            })?)?;
        }
        Ok(())
    }
}

/// The snapshots in the Prometheus text format, as the crate encodes them (without its closing
/// `# EOF`), for the tests: the API registers them with its own and encodes once.
#[cfg(test)]
pub(crate) fn encode(snapshot: Snapshot, v6: crate::v6::exposition::Snapshot6) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    registry.register_collector(Box::new(v6));
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        return String::new();
    }
    if let Some(body) = out.strip_suffix("# EOF\n") {
        out.truncate(body.len());
    }
    out
}

impl Dataplane {
    /// Puts the counters, as read now, into `registry` (the API encodes `/metrics` from one
    /// registry, once).
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.snapshot()));
        registry.register_collector(Box::new(crate::v6::exposition::Snapshot6::of(
            &self.networks6(),
        )));
    }

    /// The counters as read now.
    fn snapshot(&self) -> Snapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut nets = self.networks();
        nets.sort_by(|a, b| a.name.cmp(&b.name));
        let c = &self.shared.counters;
        let mut dropped: Vec<(DropReason, u64)> = c
            .malformed
            .snapshot()
            .into_iter()
            .map(|(m, n)| (DropReason::Malformed(m), n))
            .collect();
        dropped.extend([
            (DropReason::NoAddress, g(&c.no_address)),
            (DropReason::LeaseNotDurable, g(&c.persist_failures)),
            (DropReason::SendError, g(&c.send_errors)),
            (DropReason::RateLimited, g(&c.rate_limited)),
        ]);
        Snapshot {
            nets: nets
                .iter()
                .map(|n| {
                    let subnets: Vec<ipnet::Ipv4Net> =
                        n.table().subnets.iter().map(|s| s.net).collect();
                    let leases = n.leases();
                    NetSnapshot {
                        name: n.name.to_string(),
                        rx: n.counters.rx.snapshot(),
                        tx: n.counters.tx.snapshot(),
                        leases: subnets
                            .iter()
                            .map(|s| {
                                let count = leases.leases().filter(|l| s.contains(&l.ip)).count();
                                (s.to_string(), count as u64)
                            })
                            .collect(),
                        latency: n.counters.latency.iter().map(g).collect(),
                        latency_sum_secs: g(&n.counters.latency_us_sum) as f64 / 1e6,
                    }
                })
                .collect(),
            dropped,
            renewed_from_durable: g(&c.renewed_from_durable),
            log_suppressed: g(&c.log_suppressed),
            commits: g(&c.commits),
            queue_full: g(&self.shared.queue.full_waits),
            records: g(&c.records),
            commit_time: c.commit_time.iter().map(g).collect(),
            commit_sum_secs: g(&c.commit_us_sum) as f64 / 1e6,
        }
    }

    /// A one-line summary of the counters (dnsmasq dumps its statistics on SIGUSR1).
    pub fn stats_line(&self) -> String {
        let c = &self.shared.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let malformed: u64 = c.malformed.snapshot().iter().map(|(_, n)| n).sum();
        let (rx, tx) = (|m| c.rx.get(m), |k| c.tx.get(k));
        format!(
            "DHCP statistics: discover {} request {} decline {} release {} inform {}; offer {} ack {} nak {}; \
             no-address {} malformed {} persist-failures {} journal commits {} records {} queue-full {}",
            rx(ClientMsg::Discover), rx(ClientMsg::Request), rx(ClientMsg::Decline), rx(ClientMsg::Release), rx(ClientMsg::Inform),
            tx(ReplyKind::Offer), tx(ReplyKind::Ack), tx(ReplyKind::Nak),
            g(&c.no_address), malformed, g(&c.persist_failures), g(&c.commits), g(&c.records),
            g(&self.shared.queue.full_waits)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_is_exposed_with_typed_labels_and_cumulative_buckets() {
        let mut latency = vec![0; LATENCY_BUCKETS.len() + 1];
        latency[0] = 2;
        latency[3] = 1;
        latency[LATENCY_BUCKETS.len()] = 1;
        let text = encode(
            Snapshot {
                nets: vec![NetSnapshot {
                    name: "n1".into(),
                    rx: vec![(ClientMsg::Discover, 3), (ClientMsg::Request, 1)],
                    tx: vec![(ReplyKind::Offer, 3), (ReplyKind::Ack, 1)],
                    leases: vec![("10.0.0.0/24".into(), 2)],
                    latency,
                    latency_sum_secs: 0.5,
                }],
                dropped: vec![
                    (DropReason::Malformed(Malformed::TooShort), 1),
                    (DropReason::NoAddress, 4),
                ],
                commits: 7,
                queue_full: 3,
                ..Default::default()
            },
            Default::default(),
        );
        eprintln!("{text}");
        for line in [
            "# TYPE qdhcp_dhcp_packets_in counter",
            "qdhcp_dhcp_packets_in_total{network=\"n1\",type=\"discover\"} 3",
            "qdhcp_dhcp_packets_out_total{network=\"n1\",type=\"ack\"} 1",
            "qdhcp_dhcp_dropped_total{reason=\"too_short\"} 1",
            "qdhcp_dhcp_dropped_total{reason=\"no_address\"} 4",
            "qdhcp_journal_commits_total 7",
            "qdhcp_journal_queue_full_total 3",
            "qdhcp_leases_active{network=\"n1\",subnet=\"10.0.0.0/24\"} 2",
            "qdhcp_dhcp_reply_latency_seconds_count{network=\"n1\"} 4",
            "qdhcp_dhcp_reply_latency_seconds_bucket{le=\"+Inf\",network=\"n1\"} 4",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("# EOF"));
    }
}
