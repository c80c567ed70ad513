//! `qdhcp serve`: the whole system in one process. The Neutron-compatible API and registry
//! (SQLite under the state directory), and the DHCP dataplane for every network with a
//! DHCP-enabled subnet, each in its own namespace `qdhcp-<network>` on `ns-<port>`, whose
//! `tap<port>` peer is on the bridge that `bridge_mappings` names. A port change reaches that
//! network's reservation table in place, before the API call returns.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use qdhcp_api::auth::{Auth, Tokens};
use qdhcp_api::control::Control;
use qdhcp_api::{router, ApiState};
use qdhcp_dataplane::{now_secs, Dataplane, ServeOptions};
use qdhcp_plumbing::open_netns;
use qdhcp_protocol::Policy;
use qdhcp_registry::dhcp::DhcpSettings;
use qdhcp_registry::segments::SegmentConfig;
use qdhcp_store::Store;
use serde::Deserialize;

use crate::logging;
use crate::netsync::DhcpSync;

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
    let node = match a.node.clone().or(file.node.clone()) {
        Some(n) if n.trim().is_empty() => anyhow::bail!("node must not be empty"),
        Some(n) => n,
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into()),
    };
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
            domain: Some(
                a.dns_domain
                    .clone()
                    .or(file.dns_domain)
                    .unwrap_or_else(|| "openstacklocal".into()),
            ),
            metadata_route: true,
            dns_self: dns_on,
            node,
        },
        netns: a.netns.clone().or(file.netns),
        log_file: a.log_file.clone().or(file.log_file),
        client_rate: a
            .client_rate
            .or(file.client_rate)
            .unwrap_or(qdhcp_dataplane::server::MacLimiter::PER_SECOND),
        quiet_dhcp: a.quiet_dhcp || file.quiet_dhcp.unwrap_or(false),
        realtime: a.realtime || file.realtime.unwrap_or(false),
        loops: match a.dhcp_threads.or(file.dhcp_threads) {
            Some(0) => anyhow::bail!("dhcp_threads must be at least 1"),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(2, |n| n.get()),
        },
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
        loops: cfg.loops,
        ..ServeOptions::default()
    }
}

/// Every network holds a few descriptors (its DHCP socket, its DNS sockets, its namespace),
/// so ten thousand networks need more than the usual soft limit of 1,024: the soft limit is
/// raised to the hard one, and the hard one (as root) to the kernel's `nr_open`.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    let want = nr_open.max(hard);
    if setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return;
    }
    if soft < hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Records this node in the database and keeps its heartbeat going (every third of the down
/// time), so that Neutron's agent API shows it alive; it keeps the agent id it had before.
fn start_heartbeats(
    control: &Arc<qdhcp_api::control::Control>,
    cfg: &ServeConfig,
) -> anyhow::Result<()> {
    let fmt = qdhcp_api::agents::AGENT_TIME;
    let id = control
        .nodes()?
        .into_iter()
        .find(|n| n.host == cfg.node)
        .map(|n| n.id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let started = chrono::Utc::now().format(fmt).to_string();
    let row = |at: String| qdhcp_store::NodeRow {
        host: cfg.node.clone(),
        id: id.clone(),
        started_at: started.clone(),
        heartbeat_at: at,
    };
    control.heartbeat(&row(started.clone()))?;
    update_live_nodes(control, cfg);
    tracing::info!(
        "node {} (DHCP agent {id}) heartbeats every {} s",
        cfg.node,
        (cfg.node_down_secs / 3).max(1)
    );
    let every = std::time::Duration::from_secs((cfg.node_down_secs / 3).max(1));
    let c = control.clone();
    let me = cfg.clone();
    let mut next = row(started.clone());
    std::thread::Builder::new()
        .name("heartbeat".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            next.heartbeat_at = chrono::Utc::now().format(fmt).to_string();
            if let Err(e) = c.heartbeat(&next) {
                tracing::warn!("heartbeat not recorded: {e}");
            }
            update_live_nodes(&c, &me);
        })?;
    Ok(())
}

/// Tells the scheduler which nodes are alive now (heartbeats younger than the down time);
/// the first of them moves the networks of nodes that went down (see `Control::live_nodes`).
fn update_live_nodes(control: &qdhcp_api::control::Control, cfg: &ServeConfig) {
    let rows = match control.nodes() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("cannot read the nodes' heartbeats: {e}");
            return;
        }
    };
    let now = chrono::Utc::now().naive_utc();
    let live: Vec<String> = rows
        .into_iter()
        .filter(|n| qdhcp_api::agents::alive(&n.heartbeat_at, now, cfg.node_down_secs))
        .map(|n| n.host)
        .collect();
    if let Err(e) = control.live_nodes(live, &cfg.node) {
        tracing::warn!("DHCP scheduler: networks not moved yet: {e}");
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
    raise_open_files_limit();
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
    let sync = Arc::new(DhcpSync::new(dp.clone(), cfg.clone()));
    let control = Arc::new(Control::open_with(
        store,
        sync.clone(),
        cfg.segments.clone(),
    )?);
    // This node's heartbeat first: the scheduler places networks on live nodes, this one too.
    control.set_nodes_per_network(cfg.nodes_per_network);
    start_heartbeats(&control, &cfg)?;
    // Serve at once every network whose namespace survived (a restart), then check and repair
    // every network's plumbing in the background, one network at a time, while the API runs.
    let t0 = std::time::Instant::now();
    let (served, mut left) = {
        let reg = control.read();
        sync.serve_existing(&reg)
    };
    if served > 0 {
        tracing::info!(
            "{served} networks served again in {} ms; checking their plumbing in the background",
            t0.elapsed().as_millis()
        );
    }
    {
        let reg = control.read();
        let known: std::collections::HashSet<String> = left.iter().cloned().collect();
        left.extend(
            reg.networks()
                .map(|n| n.id.clone())
                .filter(|id| !known.contains(id)),
        );
    }
    let reconcile = control.clone();
    let stale = sync.clone();
    std::thread::Builder::new()
        .name("reconcile".into())
        .spawn(move || {
            let t0 = std::time::Instant::now();
            let n = reconcile.sync_each(left);
            let removed = stale.remove_stale(&reconcile);
            if !removed.is_empty() {
                tracing::info!(
                    "removed what networks deleted meanwhile left behind: {}",
                    removed.join(", ")
                );
            }
            tracing::info!(
                "plumbing of {n} networks checked in {} ms",
                t0.elapsed().as_millis()
            );
        })?;

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
    let metrics: qdhcp_api::MetricsSource =
        Arc::new(move || mdp.prometheus() + &qdhcp_dns::server::prometheus(&msync.dns_servers()));
    qdhcp_api::render::set_dns_domain(cfg.dhcp.domain.as_deref().unwrap_or(""));
    // writes through other nodes' APIs reach this node's tables (PostgreSQL's LISTEN/NOTIFY)
    control.watch()?;
    let state = ApiState::new(control, auth, Some(metrics));
    state.set_node_down_secs(cfg.node_down_secs);
    // One async worker answers HTTP; one blocking thread runs the writes (they queue on the
    // registry lock anyway): threads stay few however many networks or requests there are.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
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

    #[test]
    fn the_readmes_two_node_toml_is_a_valid_configuration() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .unwrap();
        let section = readme
            .split("## Several nodes on PostgreSQL")
            .nth(1)
            .expect("README has the two-node section");
        let toml_text = section
            .split("```toml\n")
            .nth(1)
            .and_then(|t| t.split("```").next())
            .expect("a TOML example");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qdhcp.toml");
        std::fs::write(&path, toml_text).unwrap();
        let c = resolve(&ServeArgs {
            config: Some(path),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.node, "net1");
        assert_eq!(c.nodes_per_network, 2);
        assert_eq!(c.node_down_secs, 30);
        assert!(c.database.as_deref().unwrap().starts_with("postgresql://"));
        assert_eq!(c.dhcp.node, "net1", "DHCP serves this node's ports");
        let one = resolve(&ServeArgs {
            dhcp_nodes_per_network: Some(0),
            ..Default::default()
        });
        assert!(one.is_err(), "at least one node per network");
    }
}
