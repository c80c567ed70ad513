//! What the metadata service counts, per network, and those counts for `/metrics`
//! (`qdhcp_metadata_*`), plus the one log line per request in the style of Neutron's
//! metadata proxy.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::answer::Why;
use crate::request::{Bad, Request};
use crate::response::Response;
use crate::serve::{Service, Site};

/// One network's counts.
#[derive(Debug, Default)]
pub struct SiteCounters {
    /// Requests answered, by status.
    pub(crate) by_status: Mutex<BTreeMap<u16, u64>>,
    /// Requests refused before they were read, by reason.
    pub(crate) malformed: Mutex<BTreeMap<&'static str, u64>>,
    /// Connections closed at once: the network had too many open.
    pub(crate) refused: AtomicU64,
    /// Connections cut off: no whole request head in time (slowloris), or idle.
    pub(crate) timed_out: AtomicU64,
}

impl Site {
    /// Counts and logs one answered request.
    pub(crate) fn log_request(
        &self,
        peer: IpAddr,
        req: &Request,
        resp: &Response,
        why: Why,
        took: Duration,
    ) {
        *self
            .counters
            .by_status
            .lock()
            .entry(resp.status)
            .or_default() += 1;
        let mode = self.service.upgrade().map(|s| s.mode()).unwrap_or("-");
        tracing::info!(
            target: "metadata",
            "{peer} \"{} {} HTTP/1.{}\" status: {} len: {} time: {:.4} network: {} mode: {mode} ({})",
            req.method.as_str(),
            req.path,
            if req.http10 { 0 } else { 1 },
            resp.status,
            resp.body.len(),
            took.as_secs_f64(),
            self.network_id,
            why.label(),
        );
    }

    /// Counts a refused request; logs it at a limited rate.
    pub(crate) fn bad_request(&self, peer: IpAddr, bad: Bad) {
        *self
            .counters
            .malformed
            .lock()
            .entry(bad.reason())
            .or_default() += 1;
        *self
            .counters
            .by_status
            .lock()
            .entry(bad.status())
            .or_default() += 1;
        if self.service.upgrade().is_some_and(|s| s.may_log_bad()) {
            tracing::warn!(
                target: "metadata",
                "{peer} malformed request on {} (network {}): {}, answered {}",
                self.iface,
                self.network_id,
                bad.reason(),
                bad.status()
            );
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    network: String,
    status: String,
    mode: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    network: String,
    reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NetworkLabel {
    network: String,
}

/// One network's counts, read at scrape time.
#[derive(Debug)]
struct NetCounts {
    network: String,
    by_status: Vec<(u16, u64)>,
    malformed: Vec<(&'static str, u64)>,
    refused: u64,
    timed_out: u64,
    open: u64,
}

#[derive(Debug)]
struct Snapshot {
    mode: &'static str,
    nets: Vec<NetCounts>,
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut f = e.encode_descriptor(
            "qdhcp_metadata_requests",
            "Metadata requests answered, by network, status and mode",
            None,
            MetricType::Counter,
        )?;
        for n in &self.nets {
            for (status, v) in &n.by_status {
                let l = RequestLabels {
                    network: n.network.clone(),
                    status: status.to_string(),
                    mode: self.mode.to_string(),
                };
                ConstCounter::new(*v).encode(f.encode_family(&l)?)?;
            }
        }
        let mut f = e.encode_descriptor(
            "qdhcp_metadata_malformed",
            "Metadata requests refused before they were read, by reason",
            None,
            MetricType::Counter,
        )?;
        for n in &self.nets {
            for (reason, v) in &n.malformed {
                let l = ReasonLabels {
                    network: n.network.clone(),
                    reason: reason.to_string(),
                };
                ConstCounter::new(*v).encode(f.encode_family(&l)?)?;
            }
        }
        for (name, help, pick) in [
            (
                "qdhcp_metadata_connections_refused",
                "Metadata connections closed at once: the network had too many open",
                (|n: &NetCounts| n.refused) as fn(&NetCounts) -> u64,
            ),
            (
                "qdhcp_metadata_timeouts",
                "Metadata connections cut off: no whole request in time, or idle",
                |n: &NetCounts| n.timed_out,
            ),
        ] {
            let mut f = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for n in &self.nets {
                let l = NetworkLabel {
                    network: n.network.clone(),
                };
                ConstCounter::new(pick(n)).encode(f.encode_family(&l)?)?;
            }
        }
        let mut f = e.encode_descriptor(
            "qdhcp_metadata_connections_open",
            "Metadata connections open",
            None,
            MetricType::Gauge,
        )?;
        for n in &self.nets {
            let l = NetworkLabel {
                network: n.network.clone(),
            };
            ConstGauge::new(n.open as i64).encode(f.encode_family(&l)?)?;
        }
        Ok(())
    }
}

impl Service {
    /// Puts every network's metadata counts, read now, and the latency of Nova's answers into
    /// `registry` (`/metrics`).
    pub fn register_metrics(&self, registry: &mut Registry) {
        let nets = self
            .sites
            .lock()
            .values()
            .map(|s| NetCounts {
                network: s.network_id.clone(),
                by_status: s
                    .counters
                    .by_status
                    .lock()
                    .iter()
                    .map(|(k, v)| (*k, *v))
                    .collect(),
                malformed: s
                    .counters
                    .malformed
                    .lock()
                    .iter()
                    .map(|(k, v)| (*k, *v))
                    .collect(),
                refused: s.counters.refused.load(Ordering::Relaxed),
                timed_out: s.counters.timed_out.load(Ordering::Relaxed),
                open: s.open_connections() as u64,
            })
            .collect();
        registry.register_collector(Box::new(Snapshot {
            mode: self.mode(),
            nets,
        }));
        if self.upstream.is_some() {
            registry.register(
                "qdhcp_metadata_upstream_seconds",
                "Time Nova's metadata API took to answer forwarded requests",
                self.upstream_latency.clone(),
            );
        }
    }
}
