//! The services each DHCP port carries besides DHCP: its DNS server (names from the registry)
//! and its metadata listener on 169.254.169.254:80, both on the shared event loops.

use std::sync::Arc;

use hickory_proto::rr::Name;
use qdhcp_dns::server::{open_sockets as open_dns_sockets, DnsServer, Settings};
use qdhcp_dns::Zone;
use qdhcp_plumbing::{netns_path, DhcpPlug};
use qdhcp_reactor::Reactor;
use qdhcp_registry::dhcp::{names_for, port_names};
use qdhcp_registry::{Port, Registry};

use crate::plan::PortPair;
use crate::DhcpSync;

impl DhcpSync {
    /// Starts the network's metadata listener on 169.254.169.254:80 if it has none.
    pub(crate) fn sync_metadata(&self, net_id: &str, spec: &DhcpPlug) {
        let Some(service) = self.metadata.get() else {
            return;
        };
        let v6 = spec.addrs.contains(&qdhcp_metadata::metadata_v6_net());
        let wanted = [
            Some(std::net::SocketAddr::from((
                qdhcp_metadata::METADATA_V4,
                80,
            ))),
            v6.then(|| std::net::SocketAddr::from((qdhcp_metadata::METADATA_V6, 80))),
        ];
        for addr in wanted.into_iter().flatten() {
            if service.listens_on(net_id, &addr) {
                continue;
            }
            let opened = qdhcp_plumbing::within_netns(&spec.netns, || {
                qdhcp_metadata::open_listener(addr, &spec.inner)
            });
            let served = match opened {
                Ok(Ok(listener)) if service.serves(net_id) => {
                    service.also_serve(net_id, listener).map(|_| ())
                }
                Ok(Ok(listener)) => service.serve(net_id, &spec.inner, listener).map(|_| ()),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            match served {
                Ok(()) => tracing::info!(
                    "network {net_id}: metadata ({}) listening on {addr} in {}",
                    service.mode(),
                    spec.netns
                ),
                Err(e) => tracing::error!("network {net_id}: metadata not served on {addr}: {e}"),
            }
        }
    }

    /// Starts the network's DNS server on its DHCP port if it has none, and gives it the
    /// network's subnets and names.
    pub(crate) fn sync_dns(&self, reg: &Registry, net_id: &str, spec: &DhcpPlug) {
        let Some(dns) = &self.cfg.dns else { return };
        let existing = self.dns.lock().get(net_id).cloned();
        let server = match existing {
            Some(s) => s,
            None => {
                let settings = Settings {
                    domain: self.cfg.dhcp.domain.as_deref().and_then(|d| {
                        let mut n = Name::from_ascii(d).ok()?;
                        n.set_fqdn(true);
                        Some(n)
                    }),
                    upstreams: dns.upstreams.clone(),
                    cache_size: 150,
                    log_queries: false,
                    local_only: true,
                    per_source_rate: qdhcp_dns::server::PER_SOURCE_PER_SECOND,
                };
                let started = dns_in(&spec.netns, &spec.inner, settings).and_then(|(srv, u, t)| {
                    let loops = self.dns_loops()?;
                    srv.set_netns(netns_path(&spec.netns));
                    srv.serve_udp(&loops, u)?;
                    srv.serve_tcp(&loops, t)?;
                    srv.start_forwarder(&loops)?;
                    Ok(srv)
                });
                match started {
                    Ok(srv) => {
                        tracing::info!(
                            "network {net_id}: DNS listening on {} in {}",
                            spec.inner,
                            spec.netns
                        );
                        self.dns.lock().insert(net_id.into(), srv.clone());
                        srv
                    }
                    Err(e) => {
                        tracing::error!("network {net_id}: DNS not served: {e:#}");
                        return;
                    }
                }
            }
        };
        server.set_nets(reg.subnets_of(net_id).map(|s| s.cidr).collect());
        // on IPv6 too once the network has an IPv6 subnet: DHCPv6 announces the DHCP port's
        // IPv6 addresses as DNS servers
        let v6 = reg.subnets_of(net_id).any(|s| s.ip_version() == 6);
        if v6 && !self.dns6.lock().contains(net_id) {
            let opened = qdhcp_plumbing::within_netns(&spec.netns, || {
                qdhcp_dns::server::open_sockets6(&spec.inner, 53)
            });
            let served = match opened {
                Ok(Ok((u, t))) => self.dns_loops().and_then(|loops| {
                    server.serve_udp6(&loops, u)?;
                    server.serve_tcp(&loops, t)?;
                    Ok(())
                }),
                Ok(Err(e)) => Err(e.into()),
                Err(e) => Err(e.into()),
            };
            match served {
                Ok(()) => {
                    self.dns6.lock().insert(net_id.to_string());
                    tracing::info!("network {net_id}: DNS listening on IPv6 on {}", spec.inner);
                }
                Err(e) => tracing::error!("network {net_id}: DNS not served on IPv6: {e:#}"),
            }
        }
        self.refresh_names(reg, net_id);
    }

    /// The DNS event loops, started on first use: one per core, at normal priority (DHCP's
    /// loops may run at real-time priority; a DNS flood must not take their cores).
    pub(crate) fn dns_loops(&self) -> anyhow::Result<Arc<Reactor>> {
        if let Some(l) = self.dns_loops.get() {
            return Ok(l.clone());
        }
        let l = Arc::new(Reactor::new("dns", self.cfg.loops, Arc::new(|| ()))?);
        Ok(self.dns_loops.get_or_init(|| l).clone())
    }

    /// Gives the network's DNS server the names of its ports as they are now.
    pub(crate) fn refresh_names(&self, reg: &Registry, net_id: &str) {
        let server = self.dns.lock().get(net_id).cloned();
        let Some(server) = server else { return };
        let mut zone = Zone::default();
        for (ip, fqdn, name) in names_for(reg, net_id, self.cfg.dhcp.domain.as_deref()) {
            zone.insert(ip, &zone_names(&fqdn, &name));
        }
        server.set_zone(zone);
        // the network's own dns_domain is answered with authority too
        let own = reg
            .network(net_id)
            .map(|n| n.dns_domain.trim_end_matches('.').to_string())
            .filter(|d| !d.is_empty())
            .and_then(|d| {
                let mut n = Name::from_ascii(&d).ok()?;
                n.set_fqdn(true);
                Some(n)
            });
        server.set_network_domain(own);
    }

    /// Moves the names of the network's changed ports in its DNS server: all the old ones
    /// out, then the new ones in, in one update (a port change costs its own names, not the
    /// network's).
    pub(crate) fn move_names(&self, reg: &Registry, net_id: &str, ports: &[PortPair<'_>]) {
        let server = self.dns.lock().get(net_id).cloned();
        let Some(server) = server else { return };
        let domain = self.cfg.dhcp.domain.as_deref();
        let net_domain = reg.network(net_id).map(|n| n.dns_domain.as_str());
        let names = |p: Option<&Port>| {
            p.map(|p| port_names(p, net_domain, domain))
                .unwrap_or_default()
        };
        server.update_zone(|z| {
            for (before, _) in ports {
                for (ip, fqdn, name) in names(*before) {
                    z.remove(ip, &zone_names(&fqdn, &name));
                }
            }
            for (_, after) in ports {
                for (ip, fqdn, name) in names(*after) {
                    z.insert(ip, &zone_names(&fqdn, &name));
                }
            }
        });
    }
}

/// The names a `names_for` row is answered by: its FQDN (the PTR target) and the bare name.
fn zone_names(fqdn: &str, name: &str) -> Vec<Name> {
    [fqdn.to_string(), format!("{name}.")]
        .iter()
        .filter_map(|n| Name::from_ascii(n).ok())
        .collect()
}

/// A DNS server whose sockets (port 53 on `iface`, and the one it forwards from) live in
/// namespace `ns`.
fn dns_in(
    ns: &str,
    iface: &str,
    settings: Settings,
) -> anyhow::Result<(Arc<DnsServer>, std::net::UdpSocket, std::net::TcpListener)> {
    qdhcp_plumbing::within_netns(ns, || -> anyhow::Result<_> {
        let srv = DnsServer::new(settings)?;
        let (u, t) = open_dns_sockets(iface, 53)?;
        Ok((srv, u, t))
    })?
}
