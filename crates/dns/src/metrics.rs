//! What a network's DNS server counts, and those counts for `/metrics` (encoded by
//! `prometheus-client` with typed label enums): questions by type, answers by how they were
//! made, drops by reason, forward round trips.

use std::sync::atomic::{AtomicU64, Ordering};

use std::fmt::Write as _;

use hickory_proto::rr::RecordType;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
    MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::answer::{Answered, Dropped};

/// What the DNS server did, for the stats line and `/metrics`.
#[derive(Default, Debug)]
pub struct DnsCounters {
    /// Answered from the local names.
    pub local: AtomicU64,
    /// NXDOMAIN for names under the domain or the network's reverse space.
    pub nxdomain: AtomicU64,
    /// A local name without records of the type asked.
    pub nodata: AtomicU64,
    /// Refused: nowhere to forward.
    pub refused: AtomicU64,
    /// Malformed queries answered FORMERR.
    pub formerr: AtomicU64,
    /// Opcodes, classes or types not served (ANY among them).
    pub notimp: AtomicU64,
    /// Sent upstream.
    pub forwarded: AtomicU64,
    /// Answered from the cache.
    pub cache_hits: AtomicU64,
    /// Upstream answers relayed.
    pub upstream_answers: AtomicU64,
    /// SERVFAIL: no upstream answered.
    pub servfail: AtomicU64,
    /// Dropped: from outside the network's subnets.
    pub dropped_not_local: AtomicU64,
    /// Dropped: not a DNS message.
    pub dropped_malformed: AtomicU64,
    /// Dropped: a response sent to us.
    pub dropped_not_query: AtomicU64,
    /// Dropped: over the per-source rate.
    pub dropped_rate: AtomicU64,
    /// Sum of forward round trips, microseconds (with `upstream_answers`, the mean).
    pub forward_us: AtomicU64,
    /// Questions by type: A, AAAA, PTR, anything else.
    pub by_type: [AtomicU64; 4],
}

/// The label of a question type in [`DnsCounters::by_type`].
const TYPE_LABELS: [&str; 4] = ["A", "AAAA", "PTR", "other"];

pub(crate) fn type_index(t: RecordType) -> usize {
    match t {
        RecordType::A => 0,
        RecordType::AAAA => 1,
        RecordType::PTR => 2,
        _ => 3,
    }
}

/// A question type, as a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum QType {
    A,
    Aaaa,
    Ptr,
    Other,
}

impl QType {
    /// In [`DnsCounters::by_type`] order.
    const ALL: [QType; 4] = [QType::A, QType::Aaaa, QType::Ptr, QType::Other];
}

impl EncodeLabelValue for QType {
    fn encode(&self, e: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        e.write_str(match self {
            QType::A => TYPE_LABELS[0],
            QType::Aaaa => TYPE_LABELS[1],
            QType::Ptr => TYPE_LABELS[2],
            QType::Other => TYPE_LABELS[3],
        })
    }
}

/// How an answer was made, as a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum How {
    Local,
    NoData,
    NxDomain,
    Refused,
    FormErr,
    NotImp,
    Cached,
    Upstream,
    ServFail,
}

impl EncodeLabelValue for How {
    fn encode(&self, e: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        e.write_str(match self {
            How::Local => "local",
            How::NoData => "nodata",
            How::NxDomain => "nxdomain",
            How::Refused => "refused",
            How::FormErr => "formerr",
            How::NotImp => "notimp",
            How::Cached => "cached",
            How::Upstream => "upstream",
            How::ServFail => "servfail",
        })
    }
}

/// Why a datagram got no answer, as a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Why {
    NotLocal,
    Malformed,
    NotQuery,
    Rate,
}

impl EncodeLabelValue for Why {
    fn encode(&self, e: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        e.write_str(match self {
            Why::NotLocal => "not_local",
            Why::Malformed => "malformed",
            Why::NotQuery => "not_query",
            Why::Rate => "rate",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QueryLabels {
    network: String,
    qtype: QType,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AnswerLabels {
    network: String,
    answer: How,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DropLabels {
    network: String,
    reason: Why,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NetworkLabel {
    network: String,
}

/// One network's DNS counts at scrape time.
#[derive(Debug)]
struct NetCounts {
    network: String,
    by_type: [u64; 4],
    answers: Vec<(How, u64)>,
    dropped: Vec<(Why, u64)>,
    forward_secs: f64,
    forwards: u64,
    names: u64,
}

/// A round-trip total as a histogram of one bucket (sum and count, as a summary would give).
#[derive(Debug)]
struct RoundTrips {
    sum: f64,
    count: u64,
}

impl EncodeMetric for RoundTrips {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(
            self.sum,
            self.count,
            &[(f64::MAX, self.count)],
            None,
        )
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Every network's DNS counts, handed to `prometheus-client` as a collector.
#[derive(Debug)]
struct Snapshot(Vec<NetCounts>);

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut f = e.encode_descriptor(
            "qdhcp_dns_queries",
            "DNS questions by type",
            None,
            MetricType::Counter,
        )?;
        for n in &self.0 {
            for (t, v) in QType::ALL.iter().zip(n.by_type) {
                let l = QueryLabels {
                    network: n.network.clone(),
                    qtype: *t,
                };
                ConstCounter::new(v).encode(f.encode_family(&l)?)?;
            }
        }
        let mut f = e.encode_descriptor(
            "qdhcp_dns_answers",
            "DNS answers by how they were made",
            None,
            MetricType::Counter,
        )?;
        for n in &self.0 {
            for (how, v) in &n.answers {
                let l = AnswerLabels {
                    network: n.network.clone(),
                    answer: *how,
                };
                ConstCounter::new(*v).encode(f.encode_family(&l)?)?;
            }
        }
        let mut f = e.encode_descriptor(
            "qdhcp_dns_dropped",
            "DNS datagrams not answered, by reason",
            None,
            MetricType::Counter,
        )?;
        for n in &self.0 {
            for (why, v) in &n.dropped {
                let l = DropLabels {
                    network: n.network.clone(),
                    reason: *why,
                };
                ConstCounter::new(*v).encode(f.encode_family(&l)?)?;
            }
        }
        let mut f = e.encode_descriptor(
            "qdhcp_dns_forward_seconds",
            "Round trips of forwarded queries",
            None,
            MetricType::Histogram,
        )?;
        for n in &self.0 {
            let l = NetworkLabel {
                network: n.network.clone(),
            };
            RoundTrips {
                sum: n.forward_secs,
                count: n.forwards,
            }
            .encode(f.encode_family(&l)?)?;
        }
        let mut f = e.encode_descriptor(
            "qdhcp_dns_names",
            "Local names a network's DNS server answers",
            None,
            MetricType::Gauge,
        )?;
        for n in &self.0 {
            let l = NetworkLabel {
                network: n.network.clone(),
            };
            ConstGauge::new(n.names as i64).encode(f.encode_family(&l)?)?;
        }
        Ok(())
    }
}

/// Puts the DNS servers' counters of several networks (`qdhcp serve`'s `/metrics`), read now,
/// into `registry`: each network's name, counters and how many names it answers (the API
/// encodes one registry, once).
pub fn register<'a>(
    servers: impl IntoIterator<Item = (&'a str, &'a DnsCounters, usize)>,
    registry: &mut Registry,
) {
    registry.register_collector(Box::new(snapshot(servers)));
}

/// The counters of several networks' DNS servers, read now.
fn snapshot<'a>(servers: impl IntoIterator<Item = (&'a str, &'a DnsCounters, usize)>) -> Snapshot {
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let nets = servers
        .into_iter()
        .map(|(net, c, names)| NetCounts {
            network: net.to_string(),
            by_type: std::array::from_fn(|i| l(&c.by_type[i])),
            answers: vec![
                (How::Local, l(&c.local)),
                (How::NoData, l(&c.nodata)),
                (How::NxDomain, l(&c.nxdomain)),
                (How::Refused, l(&c.refused)),
                (How::FormErr, l(&c.formerr)),
                (How::NotImp, l(&c.notimp)),
                (How::Cached, l(&c.cache_hits)),
                (How::Upstream, l(&c.upstream_answers)),
                (How::ServFail, l(&c.servfail)),
            ],
            dropped: vec![
                (Why::NotLocal, l(&c.dropped_not_local)),
                (Why::Malformed, l(&c.dropped_malformed)),
                (Why::NotQuery, l(&c.dropped_not_query)),
                (Why::Rate, l(&c.dropped_rate)),
            ],
            forward_secs: l(&c.forward_us) as f64 / 1e6,
            forwards: l(&c.upstream_answers),
            names: names as u64,
        })
        .collect();
    Snapshot(nets)
}

impl DnsCounters {
    pub(crate) fn answered(&self, how: Answered) {
        let c = match how {
            Answered::Local => &self.local,
            Answered::NoData => &self.nodata,
            Answered::NxDomain => &self.nxdomain,
            Answered::Refused => &self.refused,
            Answered::FormErr => &self.formerr,
            Answered::NotImp => &self.notimp,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dropped(&self, why: Dropped) {
        let c = match why {
            Dropped::NotLocal => &self.dropped_not_local,
            Dropped::Unparseable => &self.dropped_malformed,
            Dropped::NotAQuery => &self.dropped_not_query,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}
