//! The configuration of `qdhcp serve`: its flags, the same keys in a TOML file (flags win),
//! and what they resolve to, checked once where they enter.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use qdhcp_dataplane::ServeOptions;
use qdhcp_registry::dhcp::DhcpSettings;
use qdhcp_registry::segments::SegmentConfig;
use serde::Deserialize;

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
    /// Least microseconds from the start of one lease-journal commit to the next: fewer, larger
    /// fdatasyncs where each flush slows the whole machine (a VM's disk); 0: none [default: 2000].
    #[arg(long)]
    pub commit_interval_us: Option<u32>,
    /// Event-loop threads serving every network's DHCP sockets (and as many for DNS)
    /// [default: one per core].
    #[arg(long)]
    pub dhcp_threads: Option<usize>,
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
    /// This node's name (Neutron's `host`), shown as its DHCP agent's host [default: the
    /// host name].
    #[arg(long)]
    pub node: Option<String>,
    /// Seconds without a heartbeat after which a node is shown down (Neutron's
    /// `agent_down_time`); heartbeats go every third of it [default: 30].
    #[arg(long)]
    pub node_down_time: Option<u64>,
    /// How many live nodes serve each network, each on a DHCP port of its own (Neutron's
    /// `dhcp_agents_per_network`) [default: 2].
    #[arg(long)]
    pub dhcp_nodes_per_network: Option<usize>,
    /// Neutron's `physical_interface_mappings`: PHYSNET:INTERFACE[,…]. A VLAN network on
    /// PHYSNET gets a sub-interface `INTERFACE.<vid>` in its bridge `brq<network>`; a flat
    /// network on a PHYSNET without a bridge mapping gets INTERFACE itself in that bridge.
    #[arg(long)]
    pub physical_interface_mappings: Option<String>,
    /// Instance metadata at 169.254.169.254.
    #[command(flatten)]
    pub metadata: crate::serve_metadata::MetadataArgs,
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
    commit_interval_us: Option<u32>,
    dhcp_threads: Option<usize>,
    dns_servers: Option<toml::Value>,
    dns_local_resolv: Option<bool>,
    dns: Option<bool>,
    network_vlan_ranges: Option<String>,
    vni_ranges: Option<String>,
    tenant_network_types: Option<String>,
    local_ip: Option<std::net::Ipv4Addr>,
    vxlan_group: Option<std::net::Ipv4Addr>,
    vxlan_port: Option<u16>,
    physical_interface_mappings: Option<String>,
    node: Option<String>,
    node_down_time: Option<u64>,
    dhcp_nodes_per_network: Option<usize>,
    database: Option<String>,
    isolated_metadata: Option<bool>,
    nova_metadata_url: Option<String>,
    metadata_proxy_shared_secret: Option<String>,
    nova_metadata_ca_cert: Option<PathBuf>,
    nova_metadata_insecure: Option<bool>,
    metadata_rate_limit: Option<u32>,
    nova_metadata_timeout: Option<u64>,
    metadata_client_timeout: Option<u64>,
}

impl ServeConfig {
    /// What the network agent needs of it.
    pub fn agent(&self) -> qdhcp_agent::AgentConfig {
        qdhcp_agent::AgentConfig {
            node: self.node.clone(),
            namespace_prefix: self.namespace_prefix.clone(),
            namespace_id_chars: self.namespace_id_chars,
            bridge_mappings: self.bridge_mappings.clone(),
            interface_mappings: self.interface_mappings.clone(),
            dhcp: self.dhcp.clone(),
            dns: self.dns.clone(),
            loops: self.loops,
            vxlan: self.vxlan.clone(),
            metadata: self.metadata.clone(),
        }
    }
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
    /// physnet → physical interface (VLAN sub-interfaces, flat networks without a bridge).
    pub interface_mappings: HashMap<String, String>,
    /// This node's name (its DHCP agent's host).
    pub node: String,
    /// Seconds without a heartbeat after which a node is down.
    pub node_down_secs: u64,
    /// Live nodes serving each network.
    pub nodes_per_network: usize,
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
    /// Least time between the starts of two journal commits.
    pub commit_interval: std::time::Duration,
    /// Event-loop threads for DHCP (and as many for DNS).
    pub loops: usize,
    /// The DNS service of the DHCP ports; `None` when off.
    pub dns: Option<DnsConfig>,
    /// ML2's segment settings.
    pub segments: SegmentConfig,
    /// VXLAN tunnel endpoint, group and port.
    pub vxlan: VxlanConfig,
    /// The registry database URL; `None`: SQLite in the state directory.
    pub database: Option<String>,
    /// The metadata service; `None` when off.
    pub metadata: Option<qdhcp_metadata::Settings>,
}

pub use qdhcp_agent::{DnsConfig, VxlanConfig};

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
    let mappings = bridge_mappings(a, &file)?;
    let dns_on = !a.no_dns && file.dns.unwrap_or(true);
    let node = match a.node.clone().or(file.node.clone()) {
        Some(n) if n.trim().is_empty() => anyhow::bail!("node must not be empty"),
        Some(n) => n,
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into()),
    };
    let upstreams = dns_upstreams(a, &file)?;
    let segments = segments(a, &file)?;
    let listen = a
        .listen
        .clone()
        .or(file.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:9696".into());
    let listen: SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen {listen:?} is not ADDR:PORT"))?;
    assemble(
        a,
        file,
        Resolved {
            mappings,
            dns_on,
            node,
            upstreams,
            segments,
            listen,
        },
    )
}

/// What `resolve` worked out before assembling the configuration.
struct Resolved {
    mappings: HashMap<String, String>,
    dns_on: bool,
    node: String,
    upstreams: Vec<SocketAddr>,
    segments: SegmentConfig,
    listen: SocketAddr,
}

/// `--bridge-mappings` or the file's `bridge_mappings` (text or table), else `physnet1:br-flat`.
fn bridge_mappings(a: &ServeArgs, file: &FileConfig) -> anyhow::Result<HashMap<String, String>> {
    Ok(match (&a.bridge_mappings, &file.bridge_mappings) {
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
    })
}

/// Where the DNS service forwards: `--dns-servers` or the file's list, plus the host's
/// resolv.conf servers with `dns_local_resolv`.
fn dns_upstreams(a: &ServeArgs, file: &FileConfig) -> anyhow::Result<Vec<SocketAddr>> {
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
    Ok(upstreams)
}

/// ML2's segment settings: VLAN and VNI ranges, tenant network types (VXLAN when only VNI
/// ranges are given).
fn segments(a: &ServeArgs, file: &FileConfig) -> anyhow::Result<SegmentConfig> {
    let vlan = a
        .network_vlan_ranges
        .clone()
        .or(file.network_vlan_ranges.clone());
    let vni = a.vni_ranges.clone().or(file.vni_ranges.clone());
    let tenant = a
        .tenant_network_types
        .clone()
        .or(file.tenant_network_types.clone());
    let mut segments = SegmentConfig {
        vlan_ranges: SegmentConfig::parse_vlan_ranges(vlan.as_deref().unwrap_or(""))
            .map_err(|e| anyhow::anyhow!("--network-vlan-ranges: {e}"))?,
        vni_ranges: SegmentConfig::parse_vni_ranges(vni.as_deref().unwrap_or(""))
            .map_err(|e| anyhow::anyhow!("--vni-ranges: {e}"))?,
        tenant_types: SegmentConfig::parse_tenant_types(tenant.as_deref().unwrap_or(""))
            .map_err(|e| anyhow::anyhow!("--tenant-network-types: {e}"))?,
    };
    if tenant.is_none() && !segments.vni_ranges.is_empty() {
        segments.tenant_types = vec![qdhcp_registry::NetworkType::Vxlan];
    }
    Ok(segments)
}

/// The configuration from the flags over the file over defaults, with what `resolve` worked out.
fn assemble(a: &ServeArgs, file: FileConfig, r: Resolved) -> anyhow::Result<ServeConfig> {
    let Resolved {
        mappings,
        dns_on,
        node,
        upstreams,
        segments,
        listen,
    } = r;
    let domain = a.dns_domain.clone().or(file.dns_domain.clone());
    let domain = Some(domain.unwrap_or_else(|| "openstacklocal".into()));
    let metadata_file = crate::serve_metadata::MetadataFile {
        isolated_metadata: file.isolated_metadata,
        nova_metadata_url: file.nova_metadata_url.clone(),
        metadata_proxy_shared_secret: file.metadata_proxy_shared_secret.clone(),
        nova_metadata_ca_cert: file.nova_metadata_ca_cert.clone(),
        nova_metadata_insecure: file.nova_metadata_insecure,
        metadata_rate_limit: file.metadata_rate_limit,
        nova_metadata_timeout: file.nova_metadata_timeout,
        metadata_client_timeout: file.metadata_client_timeout,
    };
    let metadata = crate::serve_metadata::resolve(&a.metadata, &metadata_file, domain.clone())?;
    Ok(ServeConfig {
        state_dir: a
            .state_dir
            .clone()
            .or(file.state_dir)
            .unwrap_or_else(|| PathBuf::from("qdhcp-state")),
        listen,
        bridge_mappings: mappings,
        node: node.clone(),
        nodes_per_network: match a.dhcp_nodes_per_network.or(file.dhcp_nodes_per_network) {
            Some(0) => anyhow::bail!("dhcp_nodes_per_network must be at least 1"),
            Some(n) => n,
            None => 2,
        },
        node_down_secs: match a.node_down_time.or(file.node_down_time) {
            Some(0) => anyhow::bail!("node_down_time must be at least 1 second"),
            Some(n) => n,
            None => 30,
        },
        interface_mappings: match a
            .physical_interface_mappings
            .as_ref()
            .or(file.physical_interface_mappings.as_ref())
        {
            Some(m) => parse_mappings(m).context("physical_interface_mappings")?,
            None => HashMap::new(),
        },
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
            domain,
            metadata_route: metadata.is_some(),
            dns_self: dns_on,
            node,
        },
        netns: a.netns.clone().or(file.netns),
        log_file: a.log_file.clone().or(file.log_file),
        client_rate: a
            .client_rate
            .or(file.client_rate)
            .unwrap_or(qdhcp_dataplane::MacLimiter::PER_SECOND),
        quiet_dhcp: a.quiet_dhcp || file.quiet_dhcp.unwrap_or(false),
        realtime: a.realtime || file.realtime.unwrap_or(false),
        commit_interval: match a.commit_interval_us.or(file.commit_interval_us) {
            Some(us) if us > qdhcp_compat::cmdline::MAX_COMMIT_INTERVAL_US => anyhow::bail!(
                "commit_interval_us must be at most {} (a second)",
                qdhcp_compat::cmdline::MAX_COMMIT_INTERVAL_US
            ),
            us => std::time::Duration::from_micros(
                us.unwrap_or(qdhcp_compat::cmdline::DEFAULT_COMMIT_INTERVAL_US)
                    .into(),
            ),
        },
        loops: match a.dhcp_threads.or(file.dhcp_threads) {
            Some(0) => anyhow::bail!("dhcp_threads must be at least 1"),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(2, |n| n.get()),
        },
        dns: dns_on.then_some(DnsConfig { upstreams }),
        segments,
        database: a.database.clone().or(file.database),
        metadata,
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
        loops: cfg.loops,
        commit_interval: cfg.commit_interval,
        ..ServeOptions::default()
    }
}

#[cfg(test)]
#[path = "serve_config_tests.rs"]
mod tests;
