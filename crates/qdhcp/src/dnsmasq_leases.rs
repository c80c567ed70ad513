//! dnsmasq's leases file in `qdhcp dnsmasq` mode: read at start, written from a copy of the
//! served lease table (Neutron reads it; the journal is what is durable).

use std::path::PathBuf;

use anyhow::Context as _;
use qdhcp_compat::files::{format_leases, LeaseLine};
use qdhcp_compat::leases6::format_leases6;
use qdhcp_dataplane::leases::Catchup;
use qdhcp_dataplane::v6::Net6;
use qdhcp_dataplane::{priority, Network};
use qdhcp_protocol::Lease;

/// A line of dnsmasq's leases file as a lease of the table.
pub(crate) fn lease_from_line(l: LeaseLine) -> Lease {
    Lease {
        mac: l.mac,
        client_id: l.client_id,
        ip: l.ip,
        expires: (l.expiry != 0).then_some(l.expiry),
        hostname: l.hostname,
    }
}

/// dnsmasq's leases file, written from a copy of the lease table that follows the served one
/// through its change log: the serving lock is held only to take the log (or, when the log
/// outgrew the table, to copy the table), never for the 100,000-lease write.
pub(crate) struct LeaseExport {
    copy: qdhcp_dataplane::leases::LeaseTable,
    /// The DHCPv6 side, when served, and the generation of its leases last written.
    net6: Option<(std::sync::Arc<Net6>, u64)>,
    path: PathBuf,
    /// The file, kept open to be rewritten in place once the process may no longer create
    /// files in its directory (after the privilege drop); `None`: replaced atomically.
    in_place: Option<std::fs::File>,
}

impl LeaseExport {
    /// Follows `net`'s leases; `wake` is sent to when a lease is released, declined or
    /// revoked, so that the file shows it gone before Neutron re-reads it after a
    /// `dhcp_release` (0.3 s later) instead of at the next once-a-second export.
    pub(crate) fn new(
        net: &Network,
        net6: Option<std::sync::Arc<Net6>>,
        path: PathBuf,
        wake: std::sync::mpsc::SyncSender<()>,
    ) -> Self {
        LeaseExport {
            net6: net6.map(|n| (n, u64::MAX)),
            copy: net.leases().follow_waking(wake),
            path,
            in_place: None,
        }
    }

    /// Opens the file to be rewritten in place from now on.
    pub(crate) fn keep_open(&mut self) -> anyhow::Result<()> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .with_context(|| format!("cannot open leases file {}", self.path.display()))?;
        self.in_place = Some(f);
        Ok(())
    }

    /// Catches up with the served table and rewrites the file if anything changed.
    pub(crate) fn update(&mut self, net: &Network, now: u64, force: bool) {
        // This thread runs at idle priority: it holds the serving lock at normal priority.
        let caught_up = priority::at_normal_priority(|| net.leases().take_log());
        let changed = match caught_up {
            Catchup::Changes(log) => {
                for (i, c) in log.iter().enumerate() {
                    self.copy.apply(c);
                    if i % 1024 == 1023 {
                        priority::yield_to_serving();
                    }
                }
                !log.is_empty()
            }
            Catchup::Copy(fresh) => {
                self.copy = fresh;
                true
            }
        };
        let reaped = self.copy.reap(now) > 0;
        let mut changed6 = false;
        if let Some((n6, written)) = &mut self.net6 {
            let g = priority::at_normal_priority(|| n6.leases().generation());
            changed6 = g != *written;
            *written = g;
        }
        if changed || reaped || changed6 || force {
            self.write();
        }
    }

    /// Writes dnsmasq's leases file (a view for Neutron; the journal is what is durable).
    pub(crate) fn write(&self) {
        let mut lines: Vec<LeaseLine> = self
            .copy
            .leases()
            .map(|l| LeaseLine {
                expiry: l.expires.unwrap_or(0),
                mac: l.mac,
                ip: l.ip,
                hostname: l.hostname.clone(),
                client_id: l.client_id.clone(),
            })
            .collect();
        priority::yield_to_serving();
        lines.sort_by_key(|l| l.ip);
        priority::yield_to_serving();
        let mut text = format_leases(&lines);
        if let Some((n6, _)) = &self.net6 {
            format_leases6(
                &mut text,
                n6.server_id(),
                &crate::dnsmasq_v6::lease_lines6(n6),
            );
        }
        priority::yield_to_serving();
        let res = match &self.in_place {
            // as dnsmasq does: over the old text, then cut to length (a reader never sees an
            // empty file, which Neutron would take for "no leases")
            Some(f) => {
                use std::os::unix::fs::FileExt;
                f.write_all_at(text.as_bytes(), 0)
                    .and_then(|_| f.set_len(text.len() as u64))
            }
            None => {
                let tmp = self.path.with_extension("qdhcp-tmp");
                std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &self.path))
            }
        };
        if let Err(e) = res {
            tracing::warn!("cannot write leases file {}: {e}", self.path.display());
        }
    }
}
