//! The tables `qdhcp dnsmasq` serves, from the hosts and opts files: built at start (DHCPv4
//! and DHCPv6 from the same texts) and on SIGHUP, when a change of a few DHCPv4 host lines is
//! applied in place and the DHCPv6 table is rebuilt and swapped in.

use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use qdhcp_compat::files::{parse_hosts, parse_opts};
use qdhcp_compat::reload::{Applied, Delta};
use qdhcp_compat::{build_with_context, DnsmasqConfig};
use qdhcp_dataplane::v6::Net6;
use qdhcp_dataplane::{Dataplane, Network, ReloadStats};
use qdhcp_protocol::v6::Table6;
use qdhcp_protocol::NetworkTable;

use crate::dnsmasq_v6::build6;

fn read_optional(p: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
}

/// The hosts and opts files as read: the texts a table is built from and diffed against.
pub(crate) struct Texts {
    hosts: Vec<String>,
    opts: Vec<String>,
}

/// Reads the hosts and opts files; an unreadable file is an error (the caller keeps the
/// previous table on reload).
pub(crate) fn read_texts(cfg: &DnsmasqConfig) -> anyhow::Result<Texts> {
    Ok(Texts {
        hosts: cfg
            .hostsfiles
            .iter()
            .map(|p| read_optional(p))
            .collect::<Result<_, _>>()?,
        opts: cfg
            .optsfiles
            .iter()
            .map(|p| read_optional(p))
            .collect::<Result<_, _>>()?,
    })
}

/// Builds the table from the files' texts, with the warnings and what a later reload needs to
/// apply only what changed.
pub(crate) fn build(cfg: &DnsmasqConfig, texts: Texts) -> (NetworkTable, Vec<String>, Applied) {
    let mut hosts = Vec::new();
    let mut opts = Vec::new();
    let mut warnings = Vec::new();
    for (p, text) in cfg.hostsfiles.iter().zip(&texts.hosts) {
        let (h, errs) = parse_hosts(text);
        hosts.extend(h);
        warnings.extend(errs.iter().map(|e| format!("{}: {e}", p.display())));
    }
    for (p, text) in cfg.optsfiles.iter().zip(&texts.opts) {
        let (o, errs) = parse_opts(text);
        opts.extend(o);
        warnings.extend(errs.iter().map(|e| format!("{}: {e}", p.display())));
    }
    let (built, ctx) = build_with_context(cfg, hosts, &opts);
    warnings.extend(built.warnings);
    let applied = Applied::new(
        texts.hosts,
        texts.opts,
        ctx,
        &built.table,
        !warnings.is_empty(),
    );
    (built.table, warnings, applied)
}

/// What the files say: the DHCPv4 table, the DHCPv6 table, the warnings, and what a reload
/// diffs against.
pub(crate) struct Loaded {
    pub(crate) table: NetworkTable,
    pub(crate) table6: Table6,
    pub(crate) warnings: Vec<String>,
    pub(crate) applied: Applied,
}

/// Reads the files and builds both tables.
pub(crate) fn load_table(cfg: &DnsmasqConfig) -> anyhow::Result<Loaded> {
    let texts = read_texts(cfg)?;
    let (table6, mut warnings) = build6(cfg, &texts.hosts, &texts.opts);
    let (table, w4, applied) = build(cfg, texts);
    warnings.splice(0..0, w4);
    Ok(Loaded {
        table,
        table6,
        warnings,
        applied,
    })
}

/// SIGHUP: re-reads the files; a change of a few host lines is applied in place (a few
/// microseconds of write lock), anything else rebuilds the table beside the served one and
/// swaps it in. Serving never stops.
pub(crate) fn reload(
    cfg: &DnsmasqConfig,
    dp: &Dataplane,
    net: &Network,
    net6: Option<&Net6>,
    applied: &mut Applied,
) {
    let t0 = Instant::now();
    let texts = match read_texts(cfg) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("reload failed, keeping the previous tables: {e:#}");
            return;
        }
    };
    if let Some(n6) = net6 {
        let (t6, warnings) = build6(cfg, &texts.hosts, &texts.opts);
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let hosts = t6.hosts().count();
        n6.replace_table(t6);
        tracing::info!(target: "dhcp", "reload: DHCPv6 table rebuilt, {hosts} host(s)");
    }
    let delta = applied.delta(&texts.hosts, &texts.opts, &net.table());
    let (s, how) = match delta {
        Delta::Changes(c) => {
            let total_before = net.table().reservations().len();
            applied.commit(texts.hosts, &c);
            let s = ReloadStats {
                added: c.upsert.len() - c.changed,
                removed: c.remove.len(),
                changed: c.changed,
                unchanged: total_before - c.remove.len() - c.changed,
                revoked: 0,
            };
            let revoked = dp.apply_changes(net, c.upsert, &c.remove);
            (ReloadStats { revoked, ..s }, "in place")
        }
        Delta::Full(why) => {
            tracing::debug!("reload: full rebuild: {why}");
            let (table, warnings, fresh) = build(cfg, texts);
            for w in &warnings {
                tracing::warn!("{w}");
            }
            *applied = fresh;
            (dp.reload(net, table), "rebuilt")
        }
    };
    let n = net.table().reservations().len();
    for p in &cfg.hostsfiles {
        tracing::info!(target: "dhcp", "read {} - {n} addresses", p.display());
    }
    tracing::info!(
        target: "dhcp",
        "reload: {} added, {} removed, {} changed, {} unchanged, {} lease(s) revoked, {how} in {:.2} ms",
        s.added, s.removed, s.changed, s.unchanged, s.revoked, t0.elapsed().as_secs_f64() * 1000.0
    );
}
