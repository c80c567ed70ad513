//! `qdhcp dnsmasq`'s DHCPv6 wiring: the table from the same hosts and opts files as DHCPv4,
//! the server DUID kept in the leases file's `duid` line, one socket per served interface, and
//! the v6 lines of the leases file. Serving is in `qdhcp_dataplane::v6`, the decision in
//! `qdhcp_protocol::v6`.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use qdhcp_compat::build_table6;
use qdhcp_compat::files::{parse_hosts6, parse_opts6};
use qdhcp_compat::leases6::{parse_leases6, LeaseLine6};
use qdhcp_compat::DnsmasqConfig;
use qdhcp_dataplane::v6::{iface_addrs6, open_dhcp6_socket, Net6};
use qdhcp_dataplane::Dataplane;
use qdhcp_protocol::v6::{Duid, Lease6, Table6};
use qdhcp_protocol::Mac;

/// Seconds from the Unix epoch to 2000-01-01, where DUID-LLT time starts (RFC 8415 §11.2).
const DUID_EPOCH: u64 = 946_684_800;

/// Builds the DHCPv6 table from the files' texts; warnings name the file.
pub(crate) fn build6(
    cfg: &DnsmasqConfig,
    hosts: &[String],
    opts: &[String],
) -> (Table6, Vec<String>) {
    let mut h6 = Vec::new();
    let mut o6 = Vec::new();
    let mut warnings = Vec::new();
    for (p, text) in cfg.hostsfiles.iter().zip(hosts) {
        let (h, errs) = parse_hosts6(text);
        h6.extend(h);
        warnings.extend(errs.iter().map(|e| format!("{}: {e}", p.display())));
    }
    for (p, text) in cfg.optsfiles.iter().zip(opts) {
        let (o, errs) = parse_opts6(text);
        o6.extend(o);
        warnings.extend(errs.iter().map(|e| format!("{}: {e}", p.display())));
    }
    let (t, w) = build_table6(cfg, h6, &o6);
    warnings.extend(w);
    (t, warnings)
}

/// The MAC of an interface in the calling thread's namespace.
fn iface_mac(iface: &str) -> Option<Mac> {
    nix::ifaddrs::getifaddrs()
        .ok()?
        .filter(|a| a.interface_name == iface)
        .find_map(|a| a.address?.as_link_addr()?.addr())
        .map(Mac)
}

/// Our DUID: the leases file's `duid` line when there is one (Neutron keeps it across
/// `restart()`, so clients renew with the identifier they know), else a DUID-LLT made now from
/// the MAC of the first served interface, as dnsmasq makes it.
pub(crate) fn server_duid(leasefile: &Path, ifaces: &[String], now: u64) -> Duid {
    if let Some(d) = std::fs::read_to_string(leasefile)
        .ok()
        .and_then(|t| parse_leases6(&t).server_duid)
    {
        return d;
    }
    let mac = ifaces
        .iter()
        .find_map(|i| iface_mac(i))
        .unwrap_or(Mac([0x02, 0, 0, 0, 0, 1]));
    Duid::llt(now.saturating_sub(DUID_EPOCH) as u32, mac)
}

/// Takes the DHCPv6 leases of the leases file that the journal lacks (dnsmasq's file, when
/// qdhcp replaces it on a running network): each for the host that reserves its address;
/// lines for addresses no host reserves are left out.
pub(crate) fn seed_from_leasefile(net: &Net6, leasefile: &Path) -> usize {
    let Ok(text) = std::fs::read_to_string(leasefile) else {
        return 0;
    };
    let table = net.table();
    let leases: Vec<Lease6> = parse_leases6(&text)
        .leases
        .into_iter()
        .filter_map(|l| {
            let host = table.hosts().find(|h| h.addrs.contains(&l.addr))?;
            Some(Lease6 {
                duid: l.duid,
                iaid: l.iaid,
                addr: l.addr,
                mac: host.mac,
                expires: (l.expiry != 0).then_some(l.expiry),
                hostname: l.hostname,
            })
        })
        .collect();
    drop(table);
    net.seed(leases)
}

/// Opens the DHCPv6 sockets of the wanted interfaces not served yet (before the privilege
/// drop, as dnsmasq opens its sockets as root).
pub(crate) fn open_sockets6(
    ifaces: &[String],
    serving: &HashSet<String>,
) -> anyhow::Result<Vec<(String, socket2::Socket)>> {
    let mut out = Vec::new();
    for iface in ifaces {
        if !serving.contains(iface) && !iface_addrs6(iface).is_empty() {
            out.push((iface.clone(), open_dhcp6_socket(iface)?));
        }
    }
    Ok(out)
}

/// Serves `net` on each opened DHCPv6 socket.
pub(crate) fn listen_on6(
    dp: &Arc<Dataplane>,
    net: &Arc<Net6>,
    sockets: Vec<(String, socket2::Socket)>,
    serving: &mut HashSet<String>,
) -> anyhow::Result<()> {
    for (iface, sock) in sockets {
        dp.listen6(net.clone(), &format!("{iface}/dhcpv6"), &iface, sock, None)?;
        tracing::info!("DHCPv6 listening on {iface}");
        serving.insert(iface);
    }
    Ok(())
}

/// The v6 lines of the leases file, in address order. Called from the leases-file thread at
/// idle priority: the serving loop waits for the lock the copy holds, so it is taken for a
/// chunk of leases at a time (`Net6::copy_leases`), and the lines are sorted after.
pub(crate) fn lease_lines6(net: &Net6) -> Vec<LeaseLine6> {
    let mut v = net.copy_leases(
        |l| LeaseLine6 {
            expiry: l.expires.unwrap_or(0),
            iaid: l.iaid,
            addr: l.addr,
            hostname: l.hostname.clone(),
            duid: l.duid.clone(),
        },
        qdhcp_dataplane::priority::yield_to_serving,
    );
    qdhcp_dataplane::priority::yield_to_serving();
    v.sort_by_key(|l| l.addr);
    v
}

/// Logs what is served, as dnsmasq does at start.
pub(crate) fn log_ranges(t: &Table6) {
    for s in &t.subnets {
        let lease = if s.lease_secs == u32::MAX {
            "infinite".to_string()
        } else {
            format!("{}s", s.lease_secs)
        };
        tracing::info!(target: "dhcp", "DHCPv6, static leases only on {}, lease time {lease}", s.net.network());
    }
}
