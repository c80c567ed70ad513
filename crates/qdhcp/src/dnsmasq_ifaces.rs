//! Which interfaces `qdhcp dnsmasq` serves (`--interface`, `--except-interface`,
//! `--bind-dynamic`) and their DHCP sockets.

use std::collections::HashSet;
use std::sync::Arc;

use qdhcp_compat::DnsmasqConfig;
use qdhcp_dataplane::listener::{iface_addrs, iface_names, open_dhcp_socket};
use qdhcp_dataplane::{Dataplane, Network};

/// Interfaces to serve now: `--interface` ones that exist, else every one but lo and
/// `--except-interface` ones.
pub(crate) fn wanted_ifaces(cfg: &DnsmasqConfig) -> Vec<String> {
    let present = iface_names();
    present
        .into_iter()
        .filter(|i| {
            if cfg.interfaces.is_empty() {
                i != "lo" && !cfg.except_interfaces.contains(i)
            } else {
                cfg.interfaces
                    .iter()
                    .any(|w| w == i || (w.ends_with('*') && i.starts_with(w.trim_end_matches('*'))))
                    && !cfg.except_interfaces.contains(i)
            }
        })
        .filter(|i| {
            !iface_addrs(i).is_empty()
                || (!cfg.ranges6.is_empty() && !qdhcp_dataplane::v6::iface_addrs6(i).is_empty())
        })
        .collect()
}

/// Opens the DHCP sockets of the wanted interfaces not served yet (before the privilege drop,
/// as dnsmasq opens its sockets as root).
pub(crate) fn open_sockets(
    cfg: &DnsmasqConfig,
    serving: &HashSet<String>,
) -> anyhow::Result<Vec<(String, socket2::Socket)>> {
    let mut out = Vec::new();
    for iface in wanted_ifaces(cfg) {
        if !serving.contains(&iface) {
            let sock = open_dhcp_socket(&iface)?;
            out.push((iface, sock));
        }
    }
    Ok(out)
}

/// Serves `net` on each opened socket.
pub(crate) fn listen_on(
    dp: &Arc<Dataplane>,
    net: &Arc<Network>,
    sockets: Vec<(String, socket2::Socket)>,
    serving: &mut HashSet<String>,
) -> anyhow::Result<()> {
    for (iface, sock) in sockets {
        dp.listen(net.clone(), &iface, &iface, sock, None)?;
        tracing::info!("DHCP listening on {iface}");
        serving.insert(iface);
    }
    Ok(())
}

/// Starts serving interfaces that appeared since the last look (`--bind-dynamic`).
pub(crate) fn start_listeners(
    cfg: &DnsmasqConfig,
    dp: &Arc<Dataplane>,
    net: &Arc<Network>,
    serving: &mut HashSet<String>,
) -> anyhow::Result<()> {
    let sockets = open_sockets(cfg, serving)?;
    listen_on(dp, net, sockets, serving)
}
