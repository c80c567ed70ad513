//! `qdhcp serve`: the whole system in one process. The Neutron-compatible API and registry
//! (SQLite under the state directory), and the DHCP dataplane for every network with a
//! DHCP-enabled subnet, each in its own namespace `qdhcp-<network>` on `ns-<port>`, whose
//! `tap<port>` peer is on the bridge that `bridge_mappings` names. A port change reaches that
//! network's reservation table in place, before the API call returns.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use hickory_proto::rr::Name;
use ipnet::Ipv4Net;
use qdhcp_api::auth::{Auth, Tokens};
use qdhcp_api::control::{Control, DhcpSink};
use qdhcp_api::{router, ApiState};
use qdhcp_dataplane::listener::open_dhcp_socket;
use qdhcp_dataplane::{now_secs, Dataplane, ServeOptions};
use qdhcp_dns::server::{open_sockets as open_dns_sockets, DnsServer, Settings};
use qdhcp_dns::Zone;
use qdhcp_plumbing::{
    delete_link, delete_netns, ensure_vxlan, open_netns, plug, DhcpPlug, VxlanSegment,
};
use qdhcp_protocol::{NetworkTable, Policy};
use qdhcp_registry::dhcp::{names_for, reservation_for, subnets_for, DhcpSettings};
use qdhcp_registry::segments::SegmentConfig;
use qdhcp_registry::{Effect, Port, Registry, DHCP_OWNER};
use qdhcp_store::Store;
use serde::Deserialize;

use crate::logging;

/// `qdhcp serve` flags; each is also a key of the `--config` TOML file (flags win).
#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML file with any of the keys below (same names, `_` for `-`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory for the registry database (qdhcp.sqlite) and the lease journal
    /// [default: ./qdhcp-state].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Address of the Neutron API [default: 127.0.0.1:9696]. Off loopback, --tokens-file is
    /// required.
    #[arg(long)]
    pub listen: Option<String>,
    /// Neutron's bridge_mappings: PHYSNET:BRIDGE[,PHYSNET:BRIDGE…]; a mapped bridge that does
    /// not exist is created [default: physnet1:br-flat].
    #[arg(long)]
    pub bridge_mappings: Option<String>,
    /// Prefix of the DHCP namespaces [default: qdhcp-].
    #[arg(long)]
    pub namespace_prefix: Option<String>,
    /// Characters of the network id used in namespace names [default: 36, the whole id].
    #[arg(long)]
    pub namespace_id_chars: Option<usize>,
    /// Tokens file: `TOKEN PROJECT_ID admin|member` per line; X-Auth-Token is then required.
    #[arg(long)]
    pub tokens_file: Option<PathBuf>,
    /// DHCP lease time in seconds (Neutron's dhcp_lease_duration) [default: 86400].
    #[arg(long)]
    pub lease_duration: Option<u32>,
    /// Domain sent to instances as option 15 (Neutron's dns_domain) [default: openstacklocal].
    #[arg(long)]
    pub dns_domain: Option<String>,
    /// Run in this named network namespace, as `ip netns exec NAME` would (the host side of
    /// the plumbing lives there).
    #[arg(long)]
    pub netns: Option<String>,
    /// Log file [default: standard error].
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Messages one client (MAC) may send per second; more are dropped and counted
    /// [default: 30; 0 = no limit].
    #[arg(long)]
    pub client_rate: Option<u16>,
    /// No line per DHCP message (dnsmasq's --quiet-dhcp); errors and summaries still logged.
    #[arg(long)]
    pub quiet_dhcp: bool,
    /// Serve at real-time priority (SCHED_FIFO; needs CAP_SYS_NICE): no other thread on the
    /// core delays a reply.
    #[arg(long)]
    pub realtime: bool,
    /// Upstream DNS servers for names that are not the network's own, `IP[,IP…]` (Neutron's
    /// `dnsmasq_dns_servers`).
    #[arg(long)]
    pub dns_servers: Option<String>,
    /// Also forward to the nameservers of this host's /etc/resolv.conf (Neutron's
    /// `dnsmasq_local_resolv`).
    #[arg(long)]
    pub dns_local_resolv: bool,
    /// No DNS service on the DHCP ports (then a subnet without `dns_nameservers` announces none).
    #[arg(long)]
    pub no_dns: bool,
    /// Physical networks for VLAN networks with the ranges tenant networks get ids from,
    /// `PHYSNET[:MIN:MAX][,…]` (Neutron's `network_vlan_ranges`).
    #[arg(long)]
    pub network_vlan_ranges: Option<String>,
    /// VNI ranges tenant VXLAN networks get ids from, `MIN:MAX[,…]` (Neutron's `vni_ranges`).
    #[arg(long)]
    pub vni_ranges: Option<String>,
    /// Types a network created without provider attributes gets, in order (Neutron's
    /// `tenant_network_types`) [default: vxlan when --vni-ranges is set].
    #[arg(long)]
    pub tenant_network_types: Option<String>,
    /// The registry database: a path or `sqlite://PATH` (default: qdhcp.sqlite in the state
    /// directory), or `postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?host=SOCKETDIR]`.
    #[arg(long)]
    pub database: Option<String>,
    /// This host's VXLAN tunnel endpoint address (Neutron's `local_ip`); VXLAN networks are
    /// plumbed over the interface that holds it.
    #[arg(long)]
    pub local_ip: Option<std::net::Ipv4Addr>,
    /// Multicast group of VXLAN segments [default: 224.0.0.1, Neutron's `vxlan_group`].
    #[arg(long)]
    pub vxlan_group: Option<std::net::Ipv4Addr>,
    /// VXLAN UDP port [default: 0, the kernel's 8472, as the linuxbridge agent].
    #[arg(long)]
    pub vxlan_port: Option<u16>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    state_dir: Option<PathBuf>,
    listen: Option<String>,
    bridge_mappings: Option<toml::Value>,
    namespace_prefix: Option<String>,
    namespace_id_chars: Option<usize>,
    tokens_file: Option<PathBuf>,
    lease_duration: Option<u32>,
    dns_domain: Option<String>,
    netns: Option<String>,
    log_file: Option<PathBuf>,
    client_rate: Option<u16>,
    quiet_dhcp: Option<bool>,
    realtime: Option<bool>,
    dns_servers: Option<toml::Value>,
    dns_local_resolv: Option<bool>,
    dns: Option<bool>,
    network_vlan_ranges: Option<String>,
    vni_ranges: Option<String>,
    tenant_network_types: Option<String>,
    local_ip: Option<std::net::Ipv4Addr>,
    vxlan_group: Option<std::net::Ipv4Addr>,
    vxlan_port: Option<u16>,
    database: Option<String>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// State directory.
    pub state_dir: PathBuf,
    /// API address.
    pub listen: SocketAddr,
    /// physnet → bridge.
    pub bridge_mappings: HashMap<String, String>,
    /// Namespace prefix.
    pub namespace_prefix: String,
    /// Characters of the network id in namespace names.
    pub namespace_id_chars: usize,
    /// Tokens file.
    pub tokens_file: Option<PathBuf>,
    /// DHCP settings from configuration.
    pub dhcp: DhcpSettings,
    /// Namespace to run in.
    pub netns: Option<String>,
    /// Log file.
    pub log_file: Option<PathBuf>,
    /// Per-client message budget per second.
    pub client_rate: u16,
    /// No per-message DHCP lines.
    pub quiet_dhcp: bool,
    /// Serving threads at real-time priority.
    pub realtime: bool,
    /// The DNS service of the DHCP ports; `None` when off.
    pub dns: Option<DnsConfig>,
    /// ML2's segment settings.
    pub segments: SegmentConfig,
    /// VXLAN tunnel endpoint, group and port.
    pub vxlan: VxlanConfig,
    /// The registry database URL; `None`: SQLite in the state directory.
    pub database: Option<String>,
}

/// How VXLAN segments are plumbed on this host.
#[derive(Debug, Clone)]
pub struct VxlanConfig {
    /// Tunnel endpoint address; `None`: VXLAN networks are not plumbed (said in the log).
    pub local_ip: Option<std::net::Ipv4Addr>,
    /// Multicast group.
    pub group: std::net::Ipv4Addr,
    /// UDP port (0: the kernel's default).
    pub port: u16,
}

/// How the DHCP ports answer DNS.
#[derive(Debug, Clone, Default)]
pub struct DnsConfig {
    /// Where names that are not the network's own go.
    pub upstreams: Vec<SocketAddr>,
}

fn parse_dns_servers(list: &[&str]) -> anyhow::Result<Vec<SocketAddr>> {
    list.iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
                .or_else(|_| s.parse::<SocketAddr>())
                .with_context(|| format!("DNS server {s:?} is not IP or IP:PORT"))
        })
        .collect()
}

fn parse_mappings(s: &str) -> anyhow::Result<HashMap<String, String>> {
    let mut m = HashMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (p, b) = pair
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("bridge mapping {pair:?} is not PHYSNET:BRIDGE"))?;
        anyhow::ensure!(
            !b.is_empty() && b.len() <= 15,
            "bridge name {b:?} must be 1-15 characters"
        );
        m.insert(p.to_string(), b.to_string());
    }
    Ok(m)
}

/// Merges flags over the TOML file over defaults.
pub fn resolve(a: &ServeArgs) -> anyhow::Result<ServeConfig> {
    let file: FileConfig = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read config {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("config {}", p.display()))?
        }
        None => FileConfig::default(),
    };
    let mappings = match (&a.bridge_mappings, &file.bridge_mappings) {
        (Some(s), _) => parse_mappings(s)?,
        (None, Some(toml::Value::String(s))) => parse_mappings(s)?,
        (None, Some(toml::Value::Table(t))) => t
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    v.as_str()
                        .ok_or_else(|| anyhow::anyhow!("bridge_mappings.{k} must be a string"))?
                        .to_string(),
                ))
            })
            .collect::<anyhow::Result<_>>()?,
        (None, Some(_)) => anyhow::bail!("bridge_mappings must be \"physnet:bridge,…\" or a table"),
        (None, None) => parse_mappings("physnet1:br-flat")?,
    };
    let dns_on = !a.no_dns && file.dns.unwrap_or(true);
    let mut upstreams = match (&a.dns_servers, &file.dns_servers) {
        (Some(s), _) => parse_dns_servers(&s.split(',').collect::<Vec<_>>())?,
        (None, Some(toml::Value::String(s))) => {
            parse_dns_servers(&s.split(',').collect::<Vec<_>>())?
        }
        (None, Some(toml::Value::Array(v))) => parse_dns_servers(
            &v.iter()
                .map(|x| {
                    x.as_str()
                        .ok_or_else(|| anyhow::anyhow!("dns_servers must be strings"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
        )?,
        (None, Some(_)) => anyhow::bail!("dns_servers must be \"IP,…\" or a list"),
        (None, None) => Vec::new(),
    };
    if a.dns_local_resolv || file.dns_local_resolv.unwrap_or(false) {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let found: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .collect();
        upstreams.extend(parse_dns_servers(&found)?);
    }
    let vlan = a.network_vlan_ranges.clone().or(file.network_vlan_ranges);
    let vni = a.vni_ranges.clone().or(file.vni_ranges);
    let tenant = a.tenant_network_types.clone().or(file.tenant_network_types);
    let mut segments = SegmentConfig {
        vlan_ranges: SegmentConfig::parse_vlan_ranges(vlan.as_deref().unwrap_or(""))
            .map_err(|e| anyhow::anyhow!("--network-vlan-ranges: {e}"))?,
        vni_ranges: SegmentConfig::parse_vni_ranges(vni.as_deref().unwrap_or(""))
            .map_err(|e| anyhow::anyhow!("--vni-ranges: {e}"))?,
        tenant_types: SegmentConfig::parse_tenant_types(tenant.as_deref().unwrap_or(""))
            .map_err(|e| anyhow::anyhow!("--tenant-network-types: {e}"))?,
    };
    if tenant.is_none() && !segments.vni_ranges.is_empty() {
        segments.tenant_types = vec!["vxlan".into()];
    }
    let listen = a
        .listen
        .clone()
        .or(file.listen)
        .unwrap_or_else(|| "127.0.0.1:9696".into());
    let listen: SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen {listen:?} is not ADDR:PORT"))?;
    Ok(ServeConfig {
        state_dir: a
            .state_dir
            .clone()
            .or(file.state_dir)
            .unwrap_or_else(|| PathBuf::from("qdhcp-state")),
        listen,
        bridge_mappings: mappings,
        namespace_prefix: a
            .namespace_prefix
            .clone()
            .or(file.namespace_prefix)
            .unwrap_or_else(|| "qdhcp-".into()),
        namespace_id_chars: a
            .namespace_id_chars
            .or(file.namespace_id_chars)
            .unwrap_or(36),
        tokens_file: a.tokens_file.clone().or(file.tokens_file),
        dhcp: DhcpSettings {
            lease_secs: Some(a.lease_duration.or(file.lease_duration).unwrap_or(86400)),
            domain: Some(
                a.dns_domain
                    .clone()
                    .or(file.dns_domain)
                    .unwrap_or_else(|| "openstacklocal".into()),
            ),
            metadata_route: true,
            dns_self: dns_on,
        },
        netns: a.netns.clone().or(file.netns),
        log_file: a.log_file.clone().or(file.log_file),
        client_rate: a
            .client_rate
            .or(file.client_rate)
            .unwrap_or(qdhcp_dataplane::server::MacLimiter::PER_SECOND),
        quiet_dhcp: a.quiet_dhcp || file.quiet_dhcp.unwrap_or(false),
        realtime: a.realtime || file.realtime.unwrap_or(false),
        dns: dns_on.then_some(DnsConfig { upstreams }),
        segments,
        database: a.database.clone().or(file.database),
        vxlan: VxlanConfig {
            local_ip: a.local_ip.or(file.local_ip),
            group: a
                .vxlan_group
                .or(file.vxlan_group)
                .unwrap_or(std::net::Ipv4Addr::new(224, 0, 0, 1)),
            port: a.vxlan_port.or(file.vxlan_port).unwrap_or(0),
        },
    })
}

/// How the dataplane serves, from the configuration.
pub fn serve_options(cfg: &ServeConfig) -> ServeOptions {
    ServeOptions {
        client_rate: cfg.client_rate,
        quiet: cfg.quiet_dhcp,
        realtime: cfg.realtime,
        ..ServeOptions::default()
    }
}

/// The bridge of a network's segment, `brq<network-id[:11]>` (Neutron's linuxbridge agent).
fn segment_bridge(net_id: &str) -> String {
    format!("brq{}", net_id.chars().take(11).collect::<String>())
}

/// Names derived from a network and its DHCP port, as Neutron's agent names them.
fn plug_for(cfg: &ServeConfig, reg: &Registry, net_id: &str, port: &Port) -> DhcpPlug {
    let short: String = port.id.chars().take(11).collect();
    let ns_id: String = net_id.chars().take(cfg.namespace_id_chars).collect();
    let net = reg.network(net_id);
    let bridge = match net.map(|n| n.network_type.as_str()) {
        // a segment's own bridge, as the linuxbridge agent names it
        Some("vxlan") => Some(segment_bridge(net_id)),
        _ => net
            .and_then(|n| n.physical_network.as_ref())
            .and_then(|p| cfg.bridge_mappings.get(p))
            .cloned(),
    };
    let addrs = port
        .fixed_ips
        .iter()
        .filter_map(|f| {
            reg.subnet(&f.subnet_id)
                .and_then(|s| Ipv4Net::new(f.ip_address, s.cidr.prefix_len()).ok())
        })
        .collect();
    DhcpPlug {
        netns: format!("{}{ns_id}", cfg.namespace_prefix),
        tap: format!("tap{short}"),
        inner: format!("ns-{short}"),
        bridge,
        mac: port.mac_address.0,
        addrs,
    }
}

/// Applies registry changes to the dataplane and the plumbing.
pub struct DhcpSync {
    dp: Arc<Dataplane>,
    cfg: ServeConfig,
    plugged: Mutex<HashMap<String, String>>,
    /// VXLAN segments plumbed, by network, to remove with it.
    segments: Mutex<HashMap<String, VxlanSegment>>,
    /// Each network's DNS server, on its DHCP port.
    dns: Mutex<HashMap<String, Arc<DnsServer>>>,
}

impl DhcpSync {
    fn teardown(&self, net_id: &str) {
        if let Some(d) = self
            .dns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(net_id)
        {
            d.stop();
        }
        self.dp.unlisten(net_id);
        self.dp.remove_network(net_id);
        let ns = self
            .plugged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(net_id);
        if let Some(ns) = ns {
            match delete_netns(&ns) {
                Ok(()) => tracing::info!("network {net_id}: namespace {ns} removed"),
                Err(e) => tracing::error!("network {net_id}: {e}"),
            }
        }
        let seg = self
            .segments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(net_id);
        if let Some(seg) = seg {
            for link in [seg.device(), seg.bridge.clone()] {
                if let Err(e) = delete_link(&link) {
                    tracing::error!("network {net_id}: {e}");
                }
            }
            tracing::info!(
                "network {net_id}: {} and {} removed",
                seg.device(),
                seg.bridge
            );
        }
    }

    /// Plumbs a VXLAN network's segment (bridge and `vxlan-<vni>`), as the linuxbridge agent.
    fn plumb_segment(&self, reg: &Registry, net_id: &str) {
        let Some(n) = reg.network(net_id) else { return };
        if n.network_type == "vlan" {
            tracing::warn!(
                "network {net_id}: VLAN {} is allocated but not plumbed by this version (no VLAN sub-interface); its DHCP port is not reachable from the segment",
                n.segmentation_id.map(|i| i.to_string()).unwrap_or_default()
            );
            return;
        }
        let (Some(vni), "vxlan") = (n.segmentation_id, n.network_type.as_str()) else {
            return;
        };
        let Some(local) = self.cfg.vxlan.local_ip else {
            tracing::warn!("network {net_id}: VXLAN {vni} is not plumbed: no --local-ip");
            return;
        };
        let seg = VxlanSegment {
            vni,
            local,
            group: self.cfg.vxlan.group,
            port: self.cfg.vxlan.port,
            bridge: segment_bridge(net_id),
        };
        match ensure_vxlan(&seg) {
            Ok(()) => {
                tracing::info!(
                    "network {net_id}: {} in {} (local {local}, group {})",
                    seg.device(),
                    seg.bridge,
                    seg.group
                );
                self.segments
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(net_id.into(), seg);
            }
            Err(e) => tracing::error!("network {net_id}: VXLAN {vni}: {e}"),
        }
    }

    fn sync_network(&self, reg: &Registry, net_id: &str) {
        let (subnets, global) = subnets_for(reg, net_id, &self.cfg.dhcp);
        let Some(port) = reg.dhcp_port(net_id).filter(|_| !subnets.is_empty()) else {
            self.teardown(net_id);
            return;
        };
        let domain = self.cfg.dhcp.domain.clone();
        let net = match self.dp.network(net_id) {
            Some(n) => {
                self.dp.set_subnets(&n, subnets, global, domain);
                n
            }
            None => {
                let res: Vec<_> = reg
                    .ports_of(net_id)
                    .filter_map(|p| reservation_for(reg, p))
                    .collect();
                let mut t = NetworkTable::new(subnets, res);
                t.global_options = global;
                t.domain = domain;
                self.dp.add_network(net_id, t)
            }
        };
        self.plumb_segment(reg, net_id);
        let spec = plug_for(&self.cfg, reg, net_id, port);
        if let Err(e) = plug(&spec) {
            tracing::error!("network {net_id}: plumbing failed: {e}");
            return;
        }
        self.plugged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(net_id.into(), spec.netns.clone());
        let key = net_id.to_string();
        if !self.dp.listeners().contains(&key) {
            match socket_in(&spec.netns, &spec.inner) {
                Ok(sock) => match open_netns(&spec.netns) {
                    Ok(f) => match self.dp.listen(net, &key, &spec.inner, sock, Some(f)) {
                        Ok(()) => tracing::info!(
                            "network {net_id}: DHCP listening on {} in {}",
                            spec.inner,
                            spec.netns
                        ),
                        Err(e) => tracing::error!("network {net_id}: {e}"),
                    },
                    Err(e) => tracing::error!("network {net_id}: {e}"),
                },
                Err(e) => tracing::error!(
                    "network {net_id}: cannot open DHCP socket on {}: {e:#}",
                    spec.inner
                ),
            }
        }
        self.sync_dns(reg, net_id, &spec);
    }

    /// Starts the network's DNS server on its DHCP port if it has none, and gives it the
    /// network's subnets and names.
    fn sync_dns(&self, reg: &Registry, net_id: &str, spec: &DhcpPlug) {
        let Some(dns) = &self.cfg.dns else { return };
        let existing = self
            .dns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(net_id)
            .cloned();
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
                    srv.serve_udp(u, &spec.inner)?;
                    srv.serve_tcp(t, &spec.inner)?;
                    srv.start_forwarder()?;
                    Ok(srv)
                });
                match started {
                    Ok(srv) => {
                        tracing::info!(
                            "network {net_id}: DNS listening on {} in {}",
                            spec.inner,
                            spec.netns
                        );
                        self.dns
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(net_id.into(), srv.clone());
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
        self.refresh_names(reg, net_id);
    }

    /// Gives the network's DNS server the names of its ports as they are now.
    fn refresh_names(&self, reg: &Registry, net_id: &str) {
        let server = self
            .dns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(net_id)
            .cloned();
        let Some(server) = server else { return };
        let mut zone = Zone::default();
        for (ip, fqdn, name) in names_for(reg, net_id, self.cfg.dhcp.domain.as_deref()) {
            let names: Vec<Name> = [fqdn, format!("{name}.")]
                .iter()
                .filter_map(|n| Name::from_ascii(n).ok())
                .collect();
            zone.insert(ip, &names);
        }
        server.set_zone(zone);
    }
}

/// A DNS server whose sockets (port 53 on `iface`, and the one it forwards from) live in
/// namespace `ns`.
fn dns_in(
    ns: &str,
    iface: &str,
    settings: Settings,
) -> anyhow::Result<(Arc<DnsServer>, std::net::UdpSocket, std::net::TcpListener)> {
    let f = open_netns(ns)?;
    let iface = iface.to_string();
    std::thread::spawn(move || -> anyhow::Result<_> {
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let srv = DnsServer::new(settings)?;
        let (u, t) = open_dns_sockets(&iface, 53)?;
        Ok((srv, u, t))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("DNS socket thread panicked"))?
}

/// Opens the DHCP socket for `iface` inside namespace `ns` (a socket keeps its namespace).
fn socket_in(ns: &str, iface: &str) -> anyhow::Result<socket2::Socket> {
    let f = open_netns(ns)?;
    let iface = iface.to_string();
    std::thread::spawn(move || -> anyhow::Result<socket2::Socket> {
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)?;
        Ok(open_dhcp_socket(&iface)?)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("socket thread panicked"))?
}

impl DhcpSink for DhcpSync {
    fn apply(&self, reg: &Registry, effects: &[Effect]) {
        for e in effects {
            match e {
                Effect::NetworkChanged(id) => self.sync_network(reg, id),
                Effect::NetworkDeleted(id) => self.teardown(id),
                Effect::PortChanged(before, after) => {
                    let any = after.as_deref().or(before.as_deref());
                    let Some(net_id) = any.map(|p| p.network_id.clone()) else {
                        continue;
                    };
                    let dhcp = [before, after]
                        .iter()
                        .any(|p| p.as_deref().is_some_and(|p| p.device_owner == DHCP_OWNER));
                    if dhcp {
                        self.sync_network(reg, &net_id);
                        continue;
                    }
                    let Some(net) = self.dp.network(&net_id) else {
                        continue;
                    };
                    let new = after.as_deref().and_then(|a| reservation_for(reg, a));
                    if let Some(b) = before.as_deref() {
                        if new.as_ref().is_none_or(|n| n.mac != Some(b.mac_address)) {
                            self.dp.remove_reservation(&net, b.mac_address);
                        }
                    }
                    if let Some(r) = new {
                        self.dp.upsert_reservation(&net, r);
                    }
                    self.refresh_names(reg, &net_id);
                }
            }
        }
    }
}

/// Runs `qdhcp serve`; returns the exit code.
pub fn run(args: &ServeArgs) -> i32 {
    let cfg = match resolve(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("qdhcp serve: {e:#}");
            return 2;
        }
    };
    if let Some(ns) = &cfg.netns {
        let entered = open_netns(ns).map_err(anyhow::Error::from).and_then(|f| {
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(Into::into)
        });
        if let Err(e) = entered {
            eprintln!("qdhcp serve: cannot enter namespace {ns}: {e:#}");
            return 1;
        }
    }
    let sink = match &cfg.log_file {
        Some(p) => logging::sink_for(Some(&p.display().to_string()), false),
        None => logging::sink_for(Some("-"), true),
    };
    match sink {
        Ok(s) => logging::init(s, "qdhcp-dhcp", "qdhcp"),
        Err(e) => {
            eprintln!("qdhcp serve: {e:#}");
            return 1;
        }
    }
    if qdhcp_plumbing::netns_dir_is_slave() {
        // started under `ip netns exec`: its private mount namespace would keep the DHCP
        // namespaces from everyone else (as it does for `ip netns add` run there)
        match qdhcp_plumbing::bind_in_parent_mount_namespace() {
            Ok(true) => tracing::info!(
                "started in a mount namespace of its own (ip netns exec?): DHCP namespaces are bound in the mount namespace of the process that started qdhcp (pid {}), where `ip netns` sees them",
                nix::unistd::getppid()
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                "{} in this process is a slave mount (started under `ip netns exec`?) and the starting process's mount namespace cannot be entered ({e}): the DHCP namespaces cannot be entered from outside this process; use --netns NAME, which enters only the network namespace",
                qdhcp_plumbing::NETNS_DIR
            ),
        }
    }
    match serve(cfg) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("qdhcp serve: {e:#}");
            1
        }
    }
}

fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    let auth = match &cfg.tokens_file {
        Some(p) => Auth::Tokens(Tokens::load(p)?),
        None if cfg.listen.ip().is_loopback() => Auth::NoAuth,
        None => anyhow::bail!(
            "listening on {} needs --tokens-file: only loopback may run without authentication",
            cfg.listen
        ),
    };
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("cannot create state dir {}", cfg.state_dir.display()))?;
    let store = match &cfg.database {
        Some(url) => Store::open_url(url)?,
        None => Store::open(&cfg.state_dir.join("qdhcp.sqlite"))?,
    };
    let policy = Policy {
        decline_quarantine_secs: 600,
        default_router_self: false,
        default_dns_self: false,
        lease_max: None,
        trust_unrelayed_option82: false,
    };
    let dp = Dataplane::open(
        &cfg.state_dir.join("leases.journal"),
        policy,
        serve_options(&cfg),
    )
    .map_err(|e| {
        anyhow::anyhow!("{e} (fix or move the file away to start with an empty lease table)")
    })?;
    let sync = Arc::new(DhcpSync {
        dp: dp.clone(),
        cfg: cfg.clone(),
        plugged: Mutex::new(HashMap::new()),
        segments: Mutex::new(HashMap::new()),
        dns: Mutex::new(HashMap::new()),
    });
    let control = Arc::new(Control::open_with(
        store,
        sync.clone(),
        cfg.segments.clone(),
    )?);
    // Reconcile namespaces, tables and listeners with what the registry holds.
    control.sync_all();

    let house = dp.clone();
    std::thread::Builder::new()
        .name("housekeeping".into())
        .spawn(move || {
            // Compaction's encoding and writing never delay a reply (see `priority`).
            qdhcp_dataplane::priority::lower_to_idle();
            loop {
                std::thread::sleep(Duration::from_secs(1));
                if house.stopping() {
                    break;
                }
                house.housekeeping(now_secs());
            }
        })?;

    let mdp = dp.clone();
    let msync = sync.clone();
    let metrics: qdhcp_api::MetricsSource = Arc::new(move || {
        let mut servers: Vec<(String, Arc<DnsServer>)> = msync
            .dns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        servers.sort_by(|a, b| a.0.cmp(&b.0));
        mdp.prometheus() + &qdhcp_dns::server::prometheus(&servers)
    });
    let state = ApiState::new(control, auth, Some(metrics));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.listen))?;
        tracing::info!("started, qdhcp version {}: Neutron API on http://{}/ , state in {}", env!("CARGO_PKG_VERSION"), cfg.listen, cfg.state_dir.display());
        axum::serve(listener, router(state))
            .with_graceful_shutdown(async {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {},
                }
            })
            .await?;
        Ok::<(), anyhow::Error>(())
    })?;
    tracing::info!("exiting: stopping DHCP");
    dp.shutdown_and_compact();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_toml_file_and_reach_the_dataplane() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("qdhcp.toml");
        std::fs::write(&toml, "listen = \"127.0.0.1:19696\"\nclient_rate = 7\nquiet_dhcp = true\nrealtime = true\n[bridge_mappings]\nphysnet1 = \"br-x\"\n").unwrap();
        let a = ServeArgs {
            config: Some(toml.clone()),
            ..Default::default()
        };
        let c = resolve(&a).unwrap();
        assert_eq!(c.listen.port(), 19696);
        assert_eq!(
            c.bridge_mappings.get("physnet1").map(String::as_str),
            Some("br-x")
        );
        let o = serve_options(&c);
        assert_eq!(o.client_rate, 7);
        assert!(o.quiet);
        assert!(o.realtime, "realtime from the file reaches the dataplane");
        let a = ServeArgs {
            config: Some(toml),
            client_rate: Some(0),
            bridge_mappings: Some("p:b".into()),
            ..Default::default()
        };
        let c = resolve(&a).unwrap();
        assert_eq!(serve_options(&c).client_rate, 0, "the flag wins");
        assert_eq!(c.bridge_mappings.get("p").map(String::as_str), Some("b"));
        let bad = ServeArgs {
            bridge_mappings: Some("nocolon".into()),
            ..Default::default()
        };
        assert!(resolve(&bad).is_err());
        let defaults = resolve(&ServeArgs::default()).unwrap();
        assert_eq!(defaults.listen.to_string(), "127.0.0.1:9696");
        assert_eq!(defaults.namespace_prefix, "qdhcp-");
        assert_eq!(serve_options(&defaults).client_rate, 30);
        assert!(!serve_options(&defaults).realtime, "off unless asked for");
        let flag = ServeArgs {
            realtime: true,
            ..Default::default()
        };
        assert!(serve_options(&resolve(&flag).unwrap()).realtime);
    }
}
