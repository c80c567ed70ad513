//! The DNS side of `qdhcp dnsmasq`, as Neutron's dnsmasq serves it: names from `--addn-hosts`
//! (and /etc/hosts unless `--no-hosts`), other names forwarded to `--server`s (and
//! /etc/resolv.conf's unless `--no-resolv`), on port 53 (`--port`; 0 turns DNS off) of each
//! served interface. Wiring only: answering is `qdhcp_dns`.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;

use hickory_proto::rr::Name;
use qdhcp_compat::DnsmasqConfig;
use qdhcp_dns::server::{open_sockets, DnsServer, Settings};
use qdhcp_dns::Zone;
use qdhcp_reactor::Reactor;

/// Sockets opened for one interface (before the privilege drop).
pub type Opened = Vec<(String, Family, UdpSocket, TcpListener)>;

/// Which family a pair of DNS sockets serves (IPv6 beside IPv4 on a dual-stack network, where
/// DHCPv6 announces the server's own IPv6 address as DNS server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// The running DNS server and the interfaces it serves.
pub struct DnsSide {
    /// The server.
    pub server: Arc<DnsServer>,
    port: u16,
    /// Also on IPv6 (the configuration has a DHCPv6 range).
    v6: bool,
    serving: HashSet<String>,
    /// The event loop serving its sockets: started with the first of them, after the
    /// privilege drop (threads inherit the credentials).
    loops: Option<Arc<Reactor>>,
}

/// Nameservers of /etc/resolv.conf (`dnsmasq_local_resolv`), other than our own addresses.
fn resolv_conf_servers(own: &[IpAddr]) -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .filter(|ip| !own.contains(ip))
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The names to answer: /etc/hosts unless `--no-hosts`, then each `--addn-hosts` file.
pub fn load_zone(cfg: &DnsmasqConfig) -> (Zone, Vec<String>) {
    let mut z = Zone::default();
    let mut warnings = Vec::new();
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    if !cfg.no_hosts {
        files.push("/etc/hosts".into());
    }
    files.extend(cfg.addn_hosts.iter().cloned());
    for t in &cfg.txt_records {
        if let Err(e) = z.add_txt(t) {
            warnings.push(e.why);
        }
    }
    for f in files {
        match std::fs::read_to_string(&f) {
            Ok(text) => {
                for e in z.add_hosts(&text) {
                    warnings.push(format!("{}: {e}", f.display()));
                }
                tracing::info!(target: "dns", "read {} - {} names", f.display(), z.len());
            }
            Err(e) => warnings.push(format!("cannot read {}: {e}", f.display())),
        }
    }
    (z, warnings)
}

/// DNS as configured, with the sockets of the interfaces to serve now; `None` with `--port=0`.
pub fn open(
    cfg: &DnsmasqConfig,
    ifaces: &[String],
    own: &[IpAddr],
) -> anyhow::Result<Option<(DnsSide, Opened)>> {
    let port = cfg.dns_port.unwrap_or(53);
    if port == 0 {
        return Ok(None);
    }
    let mut upstreams: Vec<SocketAddr> = cfg.servers.iter().flatten().copied().collect();
    if !cfg.no_resolv {
        upstreams.extend(resolv_conf_servers(own));
    }
    // never ourselves: that would be a forwarding loop
    upstreams.retain(|s| !(own.contains(&s.ip()) && s.port() == port));
    let domain = cfg
        .domain
        .as_deref()
        .and_then(|d| Name::from_ascii(d).ok())
        .map(|mut n| {
            n.set_fqdn(true);
            n
        });
    let settings = Settings {
        domain,
        upstreams,
        cache_size: cfg.cache_size.unwrap_or(150),
        log_queries: cfg.log_queries,
        local_only: cfg.local_service,
        per_source_rate: cfg
            .dns_rate
            .unwrap_or(qdhcp_dns::server::PER_SOURCE_PER_SECOND),
    };
    let server = DnsServer::new(settings)?;
    let (zone, warnings) = load_zone(cfg);
    for w in warnings {
        tracing::warn!(target: "dns", "{w}");
    }
    server.set_zone(zone);
    server.set_nets(
        cfg.ranges
            .iter()
            .map(|r| ipnet::IpNet::V4(r.net.trunc()))
            .chain(cfg.ranges6.iter().map(|r| ipnet::IpNet::V6(r.net.trunc())))
            .collect(),
    );
    let mut side = DnsSide {
        server,
        port,
        v6: !cfg.ranges6.is_empty(),
        serving: HashSet::new(),
        loops: None,
    };
    let opened = side.open_new(ifaces)?;
    Ok(Some((side, opened)))
}

impl DnsSide {
    /// Opens sockets on the interfaces in `ifaces` not served yet.
    pub fn open_new(&mut self, ifaces: &[String]) -> anyhow::Result<Opened> {
        let mut out = Vec::new();
        for i in ifaces {
            if !self.serving.contains(i) {
                let (u, t) = open_sockets(i, self.port)?;
                out.push((i.clone(), Family::V4, u, t));
                if self.v6 {
                    // an interface without IPv6 keeps its IPv4 DNS
                    match qdhcp_dns::server::open_sockets6(i, self.port) {
                        Ok((u, t)) => out.push((i.clone(), Family::V6, u, t)),
                        Err(e) => tracing::warn!(target: "dns", "{i}: no DNS on IPv6: {e}"),
                    }
                }
            }
        }
        Ok(out)
    }

    /// Serves the opened sockets (and starts the forwarder the first time).
    pub fn serve(&mut self, opened: Opened) -> anyhow::Result<()> {
        let loops = match &self.loops {
            Some(l) => l.clone(),
            None => {
                // one network: one loop (DHCP has its own)
                let l = Arc::new(Reactor::new("dns", 1, Arc::new(|| ()))?);
                self.loops = Some(l.clone());
                l
            }
        };
        self.server.start_forwarder(&loops)?;
        for (iface, family, u, t) in opened {
            match family {
                Family::V4 => self.server.serve_udp(&loops, u)?,
                Family::V6 => self.server.serve_udp6(&loops, u)?,
            }
            self.server.serve_tcp(&loops, t)?;
            let on = if family == Family::V6 { " (IPv6)" } else { "" };
            tracing::info!("DNS listening on {iface} port {}{on}", self.port);
            self.serving.insert(iface);
        }
        Ok(())
    }

    /// SIGHUP: the hosts files read again.
    pub fn reload(&self, cfg: &DnsmasqConfig) {
        let (zone, warnings) = load_zone(cfg);
        for w in warnings {
            tracing::warn!(target: "dns", "{w}");
        }
        self.server.set_zone(zone);
    }
}
