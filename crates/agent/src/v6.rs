//! The DHCPv6 side of a network served by `qdhcp serve`: its table from the registry
//! (`qdhcp_registry::dhcp6`), its server DUID (a DUID-LL of the DHCP port's MAC: the same on
//! whichever node holds the port, so clients renewing after a failover are answered), and a
//! UDP 547 socket on the DHCP port's interface in the namespace, served by the dataplane's
//! event loops as `qdhcp dnsmasq` serves it.

use qdhcp_dataplane::v6::open_dhcp6_socket;
use qdhcp_plumbing::{netns_path, DhcpPlug};
use qdhcp_protocol::v6::{Duid, Table6};
use qdhcp_registry::dhcp6::{host6_for, table6_for};
use qdhcp_registry::{Port, Registry};

use crate::DhcpSync;

/// The listener name of a network's DHCPv6 socket.
fn key6(net_id: &str) -> String {
    format!("{net_id}/dhcpv6")
}

impl DhcpSync {
    /// The network's DHCPv6 table as the registry has it now.
    pub(crate) fn table6(&self, reg: &Registry, net_id: &str) -> Table6 {
        table6_for(reg, net_id, &self.cfg.dhcp)
    }

    /// Serves `t` on the network's DHCP port (`spec`, already plumbed), or stops serving
    /// DHCPv6 there when `t` serves no subnet.
    pub(crate) fn sync_v6(&self, net_id: &str, t: Table6, port: &Port, spec: &DhcpPlug) {
        if t.is_empty() {
            self.teardown6(net_id);
            return;
        }
        let duid = Duid::ll(port.mac_address);
        let net = match self.dp.network6(net_id) {
            Some(n) if *n.server_id() == duid => {
                n.replace_table(t);
                n
            }
            other => {
                // a new DHCP port here (another MAC): another server identifier
                if other.is_some() {
                    self.teardown6(net_id);
                }
                self.dp.add_network6(net_id, t, duid)
            }
        };
        let key = key6(net_id);
        if self.dp.is_listening(&key) {
            return;
        }
        // inside the namespace: the source takes the interface's index and opens its
        // neighbour-table socket (for the clients' MACs) where it is called
        let ns = netns_path(&spec.netns);
        let listening = qdhcp_plumbing::within_netns(&spec.netns, || -> anyhow::Result<()> {
            let sock = open_dhcp6_socket(&spec.inner)?;
            self.dp.listen6(net, &key, &spec.inner, sock, Some(ns))?;
            Ok(())
        })
        .map_err(anyhow::Error::from)
        .and_then(|r| r);
        match listening {
            Ok(()) => tracing::info!(
                "network {net_id}: DHCPv6 listening on {} in {}",
                spec.inner,
                spec.netns
            ),
            Err(e) => tracing::error!(
                "network {net_id}: cannot serve DHCPv6 on {}: {e:#}",
                spec.inner
            ),
        }
    }

    /// A port added, changed or removed: its host in the network's DHCPv6 table, in place.
    pub(crate) fn apply_port6(&self, reg: &Registry, before: Option<&Port>, after: Option<&Port>) {
        let Some(net_id) = after.or(before).map(|p| p.network_id.as_str()) else {
            return;
        };
        let Some(net) = self.dp.network6(net_id) else {
            return;
        };
        let host = after.and_then(|a| host6_for(reg, a));
        net.update_table(|t| {
            if let Some(b) = before {
                if host.as_ref().is_none_or(|h| h.mac != b.mac_address) {
                    t.remove_mac(b.mac_address);
                }
            }
            match host {
                Some(h) => {
                    t.upsert(h);
                }
                None => {
                    if let Some(a) = after {
                        t.remove_mac(a.mac_address);
                    }
                }
            }
        });
    }

    /// Stops the network's DHCPv6 listener and forgets its DHCPv6 side.
    pub(crate) fn teardown6(&self, net_id: &str) {
        self.dp.unlisten(&key6(net_id));
        self.dp.remove_network6(net_id);
    }
}
