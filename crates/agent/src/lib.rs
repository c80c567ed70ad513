//! Applies what the control plane decided to the DHCP side of `qdhcp serve`: each network's
//! reservation table, its namespace and veth (plumbing), its VXLAN segment, its DHCP listener
//! and its DNS server, as Neutron's DHCP and linuxbridge agents do. Called with the registry as
//! it is after each operation (see `qdhcp_control::DhcpSink`).
#![forbid(unsafe_code)]

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use ipnet::{IpNet, Ipv4Net};
use qdhcp_control::DhcpSink;
use qdhcp_dataplane::listener::open_dhcp_socket;
use qdhcp_dataplane::Dataplane;
use qdhcp_dns::server::DnsServer;
use qdhcp_plumbing::{
    delete_link, delete_netns, links, netns_exists, netns_path, netns_with_prefix, open_netns,
    plug, DhcpPlug, LinkInfo,
};
use qdhcp_protocol::NetworkTable;
use qdhcp_reactor::Reactor;
use qdhcp_registry::dhcp::{reservation_for, subnets_for};
use qdhcp_registry::{Effect, Port, Registry};

mod leases;
mod plan;
mod segment;
mod services;
mod v6;
use plan::Step;
use segment::{bridge_of, segment_bridge};

/// What the agent needs of the node's configuration (`qdhcp serve` resolves it from its
/// flags and TOML file).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// This node's name (its DHCP agent's host).
    pub node: String,
    /// Namespace prefix (`qdhcp-`).
    pub namespace_prefix: String,
    /// Characters of the network id in namespace names.
    pub namespace_id_chars: usize,
    /// physnet → bridge.
    pub bridge_mappings: std::collections::HashMap<String, String>,
    /// physnet → physical interface (VLAN sub-interfaces, flat networks without a bridge).
    pub interface_mappings: std::collections::HashMap<String, String>,
    /// DHCP settings from configuration.
    pub dhcp: qdhcp_registry::dhcp::DhcpSettings,
    /// The DNS service of the DHCP ports; `None` when off.
    pub dns: Option<DnsConfig>,
    /// Event-loop threads for DNS.
    pub loops: usize,
    /// VXLAN tunnel endpoint, group and port.
    pub vxlan: VxlanConfig,
    /// Instance metadata on each DHCP port; `None` when off.
    pub metadata: Option<qdhcp_metadata::Settings>,
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
    pub upstreams: Vec<std::net::SocketAddr>,
}

/// Names derived from a network and its DHCP port, as Neutron's agent names them.
fn plug_for(cfg: &AgentConfig, reg: &Registry, net_id: &str, port: &Port) -> DhcpPlug {
    let short: String = port.id.chars().take(11).collect();
    let ns_id: String = net_id.chars().take(cfg.namespace_id_chars).collect();
    let net = reg.network(net_id);
    let bridge = net.and_then(|n| bridge_of(cfg, n));
    let addrs = port
        .fixed_ips
        .iter()
        .filter_map(|f| {
            reg.subnet(&f.subnet_id)
                .and_then(|s| IpNet::new(f.ip_address, s.cidr.prefix_len()).ok())
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
    cfg: AgentConfig,
    plugged: Mutex<HashMap<String, String>>,
    /// Segments plumbed (VXLAN, VLAN, a flat network's interface), by network, to remove
    /// with it.
    segments: Mutex<HashMap<String, Vec<String>>>,
    /// Each network's DNS server, on its DHCP port.
    dns: Mutex<HashMap<String, Arc<DnsServer>>>,
    /// Networks whose DNS server listens on IPv6 too.
    dns6: Mutex<std::collections::HashSet<String>>,
    /// The event loops serving every network's DNS sockets (started with the first) and
    /// metadata connections.
    dns_loops: OnceLock<Arc<Reactor>>,
    /// The metadata service, once started ([`DhcpSync::start_metadata`]).
    metadata: OnceLock<Arc<qdhcp_metadata::Service>>,
}

impl DhcpSync {
    /// Nothing applied yet; `Control::open_with` then calls for every network.
    pub fn new(dp: Arc<Dataplane>, cfg: AgentConfig) -> Self {
        DhcpSync {
            dp,
            cfg,
            plugged: Mutex::new(HashMap::new()),
            segments: Mutex::new(HashMap::new()),
            dns: Mutex::new(HashMap::new()),
            dns6: Mutex::new(Default::default()),
            dns_loops: OnceLock::new(),
            metadata: OnceLock::new(),
        }
    }

    /// Starts the metadata service if configured (before the first network is applied, so
    /// that a bad setting, such as an unreadable CA file, stops the start), on the DNS loops.
    pub fn start_metadata(&self) -> anyhow::Result<()> {
        let Some(settings) = &self.cfg.metadata else {
            return Ok(());
        };
        let service = qdhcp_metadata::Service::new(settings.clone(), self.dns_loops()?)?;
        let _ = self.metadata.set(service);
        Ok(())
    }

    /// Where metadata requests read the registry from (the control plane's published one).
    pub fn set_registry(&self, view: qdhcp_metadata::RegistryView) {
        if let Some(m) = self.metadata.get() {
            m.set_registry(view);
        }
    }

    /// Networks this node should serve (a DHCP port here and a DHCP or DHCPv6 subnet) that
    /// are not listening on each, for readiness.
    pub fn unserved(&self, reg: &Registry) -> Vec<String> {
        reg.networks()
            .map(|n| n.id.as_str())
            .filter(|id| {
                let v4 =
                    !subnets_for(reg, id, &self.cfg.dhcp).0.is_empty() && !self.dp.is_listening(id);
                let v6 = reg.subnets_of(id).any(|s| s.serves_dhcp6())
                    && !self.dp.is_listening(&format!("{id}/dhcpv6"));
                reg.dhcp_port_for(id, &self.cfg.node).is_some() && (v4 || v6)
            })
            .map(str::to_string)
            .collect()
    }

    /// Every lease of the networks served here, as `GET /v2.0/leases` shows them.
    pub fn lease_rows(&self, reg: &Registry) -> Vec<serde_json::Value> {
        leases::lease_rows(
            &self.dp,
            reg,
            &self.cfg.node,
            self.cfg.dhcp.lease_secs.unwrap_or(86400),
            qdhcp_dataplane::now_secs(),
        )
    }

    /// The metadata service, for `/metrics`.
    pub fn metadata(&self) -> Option<Arc<qdhcp_metadata::Service>> {
        self.metadata.get().cloned()
    }

    /// Each network's DNS server, by network id, for `/metrics`.
    pub fn dns_servers(&self) -> Vec<(String, Arc<DnsServer>)> {
        let mut v: Vec<(String, Arc<DnsServer>)> = self
            .dns
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn teardown(&self, net_id: &str) {
        if let Some(d) = self.dns.lock().remove(net_id) {
            d.stop();
        }
        self.dns6.lock().remove(net_id);
        if let Some(m) = self.metadata.get() {
            m.stop(net_id);
        }
        self.dp.unlisten(net_id);
        self.dp.remove_network(net_id);
        self.teardown6(net_id);
        let ns = self.plugged.lock().remove(net_id);
        if let Some(ns) = ns {
            match delete_netns(&ns) {
                Ok(()) => tracing::info!("network {net_id}: namespace {ns} removed"),
                Err(e) => tracing::error!("network {net_id}: {e}"),
            }
        }
        let seg = self.segments.lock().remove(net_id);
        if let Some(seg) = seg {
            for link in &seg {
                if let Err(e) = delete_link(link) {
                    tracing::error!("network {net_id}: {e}");
                }
            }
            tracing::info!("network {net_id}: {} removed", seg.join(", "));
        }
    }

    /// At start: every network whose namespace survived (a restart, even after kill -9) is
    /// served at once from its table, its DHCP socket opened by one thread that visits the
    /// namespaces in turn; checking and repairing the plumbing (bridges, segments, addresses,
    /// DNS) is left to [`DhcpSync::sync_network`], which the caller runs afterwards network by
    /// network. Returns the networks served and those left for that pass.
    pub fn serve_existing(&self, reg: &Registry) -> (usize, Vec<String>) {
        let mut found = Vec::new();
        let mut left = Vec::new();
        for n in reg.networks() {
            let net_id = n.id.as_str();
            let (subnets, global) = subnets_for(reg, net_id, &self.cfg.dhcp);
            let Some(port) = reg
                .dhcp_port_for(net_id, &self.cfg.node)
                .filter(|_| !subnets.is_empty())
            else {
                left.push(net_id.to_string());
                continue;
            };
            let spec = plug_for(&self.cfg, reg, net_id, port);
            if self.dp.is_listening(net_id) || !netns_exists(&spec.netns) {
                left.push(net_id.to_string());
                continue;
            }
            let t = table_for(reg, net_id, subnets, global, self.cfg.dhcp.domain.clone());
            let net = self.dp.add_network(net_id, t);
            found.push((net_id.to_string(), net, spec));
        }
        let wanted: Vec<(String, String)> = found
            .iter()
            .map(|(_, _, s)| (s.netns.clone(), s.inner.clone()))
            .collect();
        let opened = std::thread::spawn(move || {
            wanted
                .iter()
                .map(|(ns, inner)| {
                    let f = open_netns(ns)?;
                    Ok(qdhcp_netns::visit(&f, || open_dhcp_socket(inner))??)
                })
                .collect::<Vec<anyhow::Result<socket2::Socket>>>()
        })
        .join()
        .unwrap_or_default();
        let mut served = 0;
        for ((net_id, net, spec), sock) in found.into_iter().zip(opened) {
            let listening = sock.and_then(|sock| {
                let ns = netns_path(&spec.netns);
                Ok(self.dp.listen(net, &net_id, &spec.inner, sock, Some(ns))?)
            });
            match listening {
                Ok(()) => {
                    served += 1;
                    self.plugged
                        .lock()
                        .insert(net_id.clone(), spec.netns.clone());
                }
                Err(e) => {
                    tracing::warn!(
                        "network {net_id}: not served before its plumbing is checked: {e:#}"
                    );
                    left.insert(0, net_id);
                }
            }
        }
        (served, left)
    }

    /// After the reconcile pass, what a network deleted while this process was down (or
    /// through another node) left behind: DHCP namespaces of no network (their veth pairs go
    /// with them), and segment bridges `brq<network>` of no network that hold nothing but
    /// their segment device (`vxlan-<vni>` or a VLAN sub-interface), which goes too. A bridge
    /// that still holds anything else (a VM's tap, a physical interface) is left alone.
    /// Returns what was removed.
    pub fn remove_stale(&self, control: &qdhcp_control::Control) -> Vec<String> {
        let (prefix, chars) = (
            self.cfg.namespace_prefix.clone(),
            self.cfg.namespace_id_chars,
        );
        let ns_of = move |id: &str| {
            let id: String = id.chars().take(chars).collect();
            format!("{prefix}{id}")
        };
        let mut removed = Vec::new();
        // Each removal is decided and done on the DHCP side's thread, in order with the
        // plumbing: a network created meanwhile is either seen or not plumbed yet.
        for ns in netns_with_prefix(&self.cfg.namespace_prefix) {
            let decided = {
                let (ns, ns_of) = (ns.clone(), ns_of.clone());
                control.on_dhcp_side(move |reg| {
                    (!reg.networks().any(|n| ns_of(&n.id) == ns)).then(|| delete_netns(&ns))
                })
            };
            match decided {
                Some(Some(Ok(()))) => removed.push(ns),
                Some(Some(Err(e))) => tracing::warn!("stale namespace {ns}: {e}"),
                Some(None) => {}
                None => return removed,
            }
        }
        let links = match links() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("cannot list links to find stale segments: {e}");
                return removed;
            }
        };
        for br in links.iter().filter(|l| l.name.starts_with("brq")) {
            let ports: Vec<&LinkInfo> = links
                .iter()
                .filter(|l| l.master == Some(br.index))
                .collect();
            let segment_only = ports
                .iter()
                .all(|p| p.name.starts_with("vxlan-") || p.name.contains('.'));
            if !segment_only {
                continue;
            }
            let names: Vec<String> = ports
                .iter()
                .map(|p| p.name.clone())
                .chain([br.name.clone()])
                .collect();
            let bridge = br.name.clone();
            let deleted = control.on_dhcp_side(move |reg| {
                if reg.networks().any(|n| segment_bridge(&n.id) == bridge) {
                    return Vec::new();
                }
                names
                    .into_iter()
                    .filter_map(|l| match delete_link(&l) {
                        Ok(()) => Some(l),
                        Err(e) => {
                            tracing::warn!("stale link {l}: {e}");
                            None
                        }
                    })
                    .collect()
            });
            match deleted {
                Some(d) => removed.extend(d),
                None => return removed,
            }
        }
        removed
    }

    fn sync_network(&self, reg: &Registry, net_id: &str) {
        let (subnets, global) = subnets_for(reg, net_id, &self.cfg.dhcp);
        let table6 = self.table6(reg, net_id);
        let Some(port) = reg
            .dhcp_port_for(net_id, &self.cfg.node)
            .filter(|_| !subnets.is_empty() || !table6.is_empty())
        else {
            self.teardown(net_id);
            return;
        };
        let serve_v4 = !subnets.is_empty();
        let domain = self.cfg.dhcp.domain.clone();
        let net = match self.dp.network(net_id) {
            Some(n) => {
                self.dp.set_subnets(&n, subnets, global, domain);
                n
            }
            None => self
                .dp
                .add_network(net_id, table_for(reg, net_id, subnets, global, domain)),
        };
        if let Some(links) = reg
            .network(net_id)
            .and_then(|n| segment::plumb_segment(&self.cfg, n))
        {
            self.segments.lock().insert(net_id.into(), links);
        }
        let mut spec = plug_for(&self.cfg, reg, net_id, port);
        let dhcp_addrs: Vec<Ipv4Net> = spec
            .addrs
            .iter()
            .filter_map(|a| match a {
                IpNet::V4(a) => Some(*a),
                IpNet::V6(_) => None,
            })
            .collect();
        if self.metadata.get().is_some() {
            // as Neutron's agent does for isolated metadata (and fe80::a9fe:a9fe/64 where the
            // network has IPv6)
            spec.addrs
                .push(IpNet::V4(Ipv4Net::from(qdhcp_metadata::METADATA_V4)));
            if reg.subnets_of(net_id).any(|s| s.ip_version() == 6) {
                spec.addrs.push(qdhcp_metadata::metadata_v6_net());
            }
        }
        if let Err(e) = plug(&spec) {
            tracing::error!("network {net_id}: plumbing failed: {e}");
            return;
        }
        // plug() made sure these are on the interface: the listener need not read them back
        self.dp.set_addrs(&net, dhcp_addrs);
        self.plugged
            .lock()
            .insert(net_id.into(), spec.netns.clone());
        let key = net_id.to_string();
        if !serve_v4 {
            self.dp.unlisten(&key);
        } else if !self.dp.is_listening(&key) {
            match socket_in(&spec.netns, &spec.inner) {
                Ok(sock) => {
                    let ns = netns_path(&spec.netns);
                    match self.dp.listen(net, &key, &spec.inner, sock, Some(ns)) {
                        Ok(()) => tracing::info!(
                            "network {net_id}: DHCP listening on {} in {}",
                            spec.inner,
                            spec.netns
                        ),
                        Err(e) => tracing::error!("network {net_id}: {e}"),
                    }
                }
                Err(e) => tracing::error!(
                    "network {net_id}: cannot open DHCP socket on {}: {e:#}",
                    spec.inner
                ),
            }
        }
        self.sync_dns(reg, net_id, &spec);
        self.sync_metadata(net_id, &spec);
        self.sync_v6(net_id, table6, port, &spec);
    }
}

/// A network's reservation table as the registry has it: its subnets, the global options, a
/// reservation per port, the DHCP domain.
fn table_for(
    reg: &Registry,
    net_id: &str,
    subnets: Vec<qdhcp_protocol::Subnet>,
    global: qdhcp_protocol::OptionSet,
    domain: Option<String>,
) -> NetworkTable {
    let res: Vec<_> = reg
        .ports_of(net_id)
        .filter_map(|p| reservation_for(reg, p))
        .collect();
    let mut t = NetworkTable::new(subnets, res);
    t.global_options = global;
    t.domain = domain;
    t
}

/// Opens the DHCP socket for `iface` inside namespace `ns` (a socket keeps its namespace).
fn socket_in(ns: &str, iface: &str) -> anyhow::Result<socket2::Socket> {
    Ok(qdhcp_plumbing::within_netns(ns, || {
        open_dhcp_socket(iface)
    })??)
}

impl DhcpSink for DhcpSync {
    fn apply(&self, reg: &Registry, effects: &[Effect]) {
        // every step is applied from the same registry, as it is after all of the effects
        for step in plan::steps(effects) {
            match step {
                Step::Sync(net_id) => self.sync_network(reg, net_id),
                Step::Teardown(net_id) => self.teardown(net_id),
                Step::Names(net_id, ports) => self.move_names(reg, net_id, &ports),
                Step::Port(net_id, before, after) => {
                    self.apply_port6(reg, before, after);
                    let Some(net) = self.dp.network(net_id) else {
                        continue;
                    };
                    let new = after.and_then(|a| reservation_for(reg, a));
                    if let Some(b) = before {
                        if new.as_ref().is_none_or(|n| n.mac != Some(b.mac_address)) {
                            self.dp.remove_reservation(&net, b.mac_address);
                        }
                    }
                    if let Some(r) = new {
                        self.dp.upsert_reservation(&net, r);
                    }
                }
            }
        }
    }
}
