//! DHCPv6 counters in `/metrics`: messages in by type, replies out by type, what was dropped or
//! not answered by reason, and leases held, per network; encoded by `prometheus-client` beside
//! the DHCPv4 families (see `crate::exposition`).

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use qdhcp_protocol::v6::Msg6;

use super::Net6;
use crate::metrics::Kind;

/// A DHCPv6 client message type, as a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct MsgLabel(Msg6);

impl EncodeLabelValue for MsgLabel {
    fn encode(&self, e: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(e, Kind::label(self.0))
    }
}

/// A DHCPv6 reply type, as a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ReplyLabel {
    Advertise,
    Reply,
}

impl EncodeLabelValue for ReplyLabel {
    fn encode(&self, e: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(
            e,
            match self {
                ReplyLabel::Advertise => "advertise",
                ReplyLabel::Reply => "reply",
            },
        )
    }
}

/// Why a DHCPv6 message got no answer (or one without its MAC), as a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum DropLabel {
    /// Refused by the front door.
    Malformed,
    /// Not ours to answer (another server's id, no client id…) or over the client's budget.
    Ignored,
    /// Its lease could not be made durable.
    LeaseNotDurable,
    /// The kernel refused the reply.
    SendError,
    /// Answered without a MAC: no neighbour entry after every probe.
    NoMac,
    /// Dropped: too many messages already wait for their senders' neighbour entries.
    NeighbourBacklog,
}

impl EncodeLabelValue for DropLabel {
    fn encode(&self, e: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(
            e,
            match self {
                DropLabel::Malformed => "malformed",
                DropLabel::Ignored => "ignored",
                DropLabel::LeaseNotDurable => "lease_not_durable",
                DropLabel::SendError => "send_error",
                DropLabel::NoMac => "no_mac",
                DropLabel::NeighbourBacklog => "neighbour_backlog",
            },
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct InLabels {
    network: String,
    r#type: MsgLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutLabels {
    network: String,
    r#type: ReplyLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DropLabels {
    network: String,
    reason: DropLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NetworkLabel {
    network: String,
}

/// One network's DHCPv6 counters at scrape time.
#[derive(Debug, Default)]
pub(crate) struct Net6Snapshot {
    name: String,
    rx: Vec<(Msg6, u64)>,
    advertise: u64,
    reply: u64,
    /// Replies sent as frames to clients on the link.
    frames: u64,
    /// Malformed, ignored, not durable, send errors, without a MAC, neighbour backlog.
    dropped: [(u64, u64, u64, u64, u64, u64); 1],
    leases: u64,
}

/// Every network's DHCPv6 counters at scrape time.
#[derive(Debug, Default)]
pub(crate) struct Snapshot6 {
    pub(crate) nets: Vec<Net6Snapshot>,
}

impl Snapshot6 {
    /// Reads the counters of `nets`.
    pub(crate) fn of(nets: &[std::sync::Arc<Net6>]) -> Snapshot6 {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut nets: Vec<Net6Snapshot> = nets
            .iter()
            .map(|n| {
                let c = &n.counters;
                Net6Snapshot {
                    name: n.name.to_string(),
                    rx: c.rx.snapshot(),
                    advertise: g(&c.advertise),
                    reply: g(&c.reply),
                    frames: g(&c.frames),
                    dropped: [(
                        g(&c.malformed),
                        g(&c.ignored),
                        g(&c.persist_failures),
                        g(&c.send_errors),
                        g(&c.no_mac),
                        g(&c.neighbour_backlog),
                    )],
                    leases: n.leases().len() as u64,
                }
            })
            .collect();
        nets.sort_by(|a, b| a.name.cmp(&b.name));
        Snapshot6 { nets }
    }
}

impl Collector for Snapshot6 {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if self.nets.is_empty() {
            return Ok(());
        }
        let counter = MetricType::Counter;
        let mut f = e.encode_descriptor(
            "qdhcp_dhcpv6_packets_in",
            "DHCPv6 messages received, by network and type",
            None,
            counter,
        )?;
        for n in &self.nets {
            for (t, v) in &n.rx {
                let l = InLabels {
                    network: n.name.clone(),
                    r#type: MsgLabel(*t),
                };
                let v = *v;
                ConstCounter::new(v).encode(f.encode_family(&l)?)?;
            }
        }
        let mut f = e.encode_descriptor(
            "qdhcp_dhcpv6_packets_out",
            "DHCPv6 replies sent, by network and type",
            None,
            counter,
        )?;
        for n in &self.nets {
            for (t, v) in [
                (ReplyLabel::Advertise, n.advertise),
                (ReplyLabel::Reply, n.reply),
            ] {
                let l = OutLabels {
                    network: n.name.clone(),
                    r#type: t,
                };
                ConstCounter::new(v).encode(f.encode_family(&l)?)?;
            }
        }
        let mut f = e.encode_descriptor(
            "qdhcp_dhcpv6_frames_out",
            "DHCPv6 replies sent as frames to the MAC of a client on the link, by network (the others left through the UDP socket)",
            None,
            counter,
        )?;
        for n in &self.nets {
            let l = NetworkLabel {
                network: n.name.clone(),
            };
            ConstCounter::new(n.frames).encode(f.encode_family(&l)?)?;
        }
        let mut f = e.encode_descriptor(
            "qdhcp_dhcpv6_dropped",
            "DHCPv6 messages dropped, not answered, or answered without a MAC, by network and reason",
            None,
            counter,
        )?;
        for n in &self.nets {
            let (m, i, p, s, x, b) = n.dropped[0];
            for (reason, v) in [
                (DropLabel::Malformed, m),
                (DropLabel::Ignored, i),
                (DropLabel::LeaseNotDurable, p),
                (DropLabel::SendError, s),
                (DropLabel::NoMac, x),
                (DropLabel::NeighbourBacklog, b),
            ] {
                let l = DropLabels {
                    network: n.name.clone(),
                    reason,
                };
                ConstCounter::new(v).encode(f.encode_family(&l)?)?;
            }
        }
        let mut f = e.encode_descriptor(
            "qdhcp_dhcpv6_leases_active",
            "DHCPv6 leases held, by network",
            None,
            MetricType::Gauge,
        )?;
        for n in &self.nets {
            let l = NetworkLabel {
                network: n.name.clone(),
            };
            ConstGauge::new(n.leases as i64).encode(f.encode_family(&l)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dhcpv6_families_carry_network_and_type_labels() {
        let rx = vec![(Msg6::Solicit, 2), (Msg6::Request, 0)];
        let s = Snapshot6 {
            nets: vec![Net6Snapshot {
                name: "n1".into(),
                rx,
                advertise: 2,
                reply: 1,
                frames: 2,
                dropped: [(1, 0, 0, 0, 3, 4)],
                leases: 1,
            }],
        };
        let text = crate::exposition::encode(Default::default(), s);
        for line in [
            "qdhcp_dhcpv6_packets_in_total{network=\"n1\",type=\"solicit\"} 2",
            "qdhcp_dhcpv6_packets_out_total{network=\"n1\",type=\"advertise\"} 2",
            "qdhcp_dhcpv6_frames_out_total{network=\"n1\"} 2",
            "qdhcp_dhcpv6_dropped_total{network=\"n1\",reason=\"malformed\"} 1",
            "qdhcp_dhcpv6_dropped_total{network=\"n1\",reason=\"no_mac\"} 3",
            "qdhcp_dhcpv6_dropped_total{network=\"n1\",reason=\"neighbour_backlog\"} 4",
            "qdhcp_dhcpv6_leases_active{network=\"n1\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
