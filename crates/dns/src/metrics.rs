//! What a network's DNS server counts, and those counts as Prometheus text for `/metrics`:
//! questions by type, answers by how they were made, drops by reason, forward round trips.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hickory_proto::rr::RecordType;

use crate::answer::{Answered, Dropped};
use crate::server::DnsServer;

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

/// Prometheus text for the DNS servers of several networks (`qdhcp serve`'s `/metrics`).
pub fn prometheus(servers: &[(String, Arc<DnsServer>)]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let _ = writeln!(out, "# HELP qdhcp_dns_queries_total DNS questions by type.\n# TYPE qdhcp_dns_queries_total counter");
    for (net, srv) in servers {
        for (i, t) in TYPE_LABELS.iter().enumerate() {
            let _ = writeln!(
                out,
                "qdhcp_dns_queries_total{{network=\"{net}\",qtype=\"{t}\"}} {}",
                l(&srv.counters.by_type[i])
            );
        }
    }
    let _ = writeln!(out, "# HELP qdhcp_dns_answers_total DNS answers by how they were made.\n# TYPE qdhcp_dns_answers_total counter");
    for (net, srv) in servers {
        let c = &srv.counters;
        for (how, v) in [
            ("local", &c.local),
            ("nodata", &c.nodata),
            ("nxdomain", &c.nxdomain),
            ("refused", &c.refused),
            ("formerr", &c.formerr),
            ("notimp", &c.notimp),
            ("cached", &c.cache_hits),
            ("upstream", &c.upstream_answers),
            ("servfail", &c.servfail),
        ] {
            let _ = writeln!(
                out,
                "qdhcp_dns_answers_total{{network=\"{net}\",answer=\"{how}\"}} {}",
                l(v)
            );
        }
    }
    let _ = writeln!(out, "# HELP qdhcp_dns_dropped_total DNS datagrams not answered, by reason.\n# TYPE qdhcp_dns_dropped_total counter");
    for (net, srv) in servers {
        let c = &srv.counters;
        for (why, v) in [
            ("not_local", &c.dropped_not_local),
            ("malformed", &c.dropped_malformed),
            ("not_query", &c.dropped_not_query),
            ("rate", &c.dropped_rate),
        ] {
            let _ = writeln!(
                out,
                "qdhcp_dns_dropped_total{{network=\"{net}\",reason=\"{why}\"}} {}",
                l(v)
            );
        }
    }
    let _ = writeln!(out, "# HELP qdhcp_dns_forward_seconds Round trips of forwarded queries.\n# TYPE qdhcp_dns_forward_seconds summary");
    for (net, srv) in servers {
        let c = &srv.counters;
        let _ = writeln!(
            out,
            "qdhcp_dns_forward_seconds_sum{{network=\"{net}\"}} {}",
            l(&c.forward_us) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "qdhcp_dns_forward_seconds_count{{network=\"{net}\"}} {}",
            l(&c.upstream_answers)
        );
    }
    let _ = writeln!(out, "# HELP qdhcp_dns_names Local names a network's DNS server answers.\n# TYPE qdhcp_dns_names gauge");
    for (net, srv) in servers {
        let _ = writeln!(out, "qdhcp_dns_names{{network=\"{net}\"}} {}", srv.names());
    }
    out
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
