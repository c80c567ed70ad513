//! The registry: every rule about what may exist (validation, uniqueness, IPAM), applied to
//! in-memory state. Pure: time, ids and randomness come from an `Env`; every operation returns
//! what changed so the caller can persist it and update the DHCP tables. No I/O here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use qdhcp_protocol::Mac;

use crate::dhcp_ports::Scheduling;
use crate::error::{invalid, RegistryError};
use crate::model::*;
use crate::requests::*;
use crate::segments::{Requested, SegmentConfig};

/// What the registry needs from the outside world.
pub trait Env {
    /// Current time as ISO 8601 (`2026-11-25T15:00:00Z`).
    fn now(&mut self) -> String;
    /// A fresh UUID.
    fn new_id(&mut self) -> String;
    /// Random bits for MAC generation.
    fn random(&mut self) -> u32;
}

/// Kind of stored object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A network.
    Network,
    /// A subnet.
    Subnet,
    /// A port.
    Port,
}

/// One change to persist: the object's new state is read from the registry, or it is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Created or updated.
    Put(Kind, String),
    /// Deleted.
    Delete(Kind, String),
}

/// What the DHCP side must do after an operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A network's subnets or settings changed: rebuild its subnets, check its plumbing.
    NetworkChanged(String),
    /// A network is gone: stop serving it, remove its plumbing.
    NetworkDeleted(String),
    /// A port appeared, changed or went away (before, after).
    PortChanged(Option<Box<Port>>, Option<Box<Port>>),
}

/// The result of a mutation.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Objects to persist.
    pub changes: Vec<Change>,
    /// DHCP updates to apply.
    pub effects: Vec<Effect>,
}

/// Who is asking, for ownership of new objects.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Project new objects belong to.
    pub project_id: String,
    /// Admins may set another project.
    pub is_admin: bool,
}

/// Networks, subnets and ports with their indexes.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    networks: BTreeMap<String, Network>,
    subnets: BTreeMap<String, Subnet>,
    pub(crate) ports: BTreeMap<String, Port>,
    /// subnet → address → port.
    pub(crate) ips: HashMap<String, HashMap<Ipv4Addr, String>>,
    /// (network, MAC) → port.
    macs: HashMap<(String, Mac), String>,
    /// network → its subnets and ports (ids, in id order): a network's members are found
    /// without a scan of every subnet and port (that scan was most of a create's CPU with
    /// thousands of networks).
    members: HashMap<String, Members>,
    /// ML2's segment settings (ranges, tenant network types).
    segments: SegmentConfig,
    /// Neutron's DHCP agent scheduler: nodes per network and the live nodes.
    pub(crate) scheduling: Scheduling,
    /// node → DHCP ports bound to it (the scheduler's load, kept with the port index).
    pub(crate) dhcp_load: HashMap<String, usize>,
    /// subnet → an address below which no address of its pools is free, so that finding the
    /// first free address does not walk every allocated one (that walk made creating the
    /// n-th port of a subnet O(n)). Kept with the port index; only for pools in order.
    free_from: Hints,
}

/// The free-address hints, set by the lookups that find the first free address (`&self`).
#[derive(Debug, Default)]
struct Hints(std::sync::Mutex<HashMap<String, u32>>);

impl Clone for Hints {
    fn clone(&self) -> Self {
        Hints(std::sync::Mutex::new(self.map().clone()))
    }
}

impl Hints {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn get(&self, subnet: &str) -> Option<u32> {
        self.map().get(subnet).copied()
    }
    fn set(&self, subnet: &str, from: u32) {
        self.map().insert(subnet.to_string(), from);
    }
    fn lower(&self, subnet: &str, to: u32) {
        if let Some(f) = self.map().get_mut(subnet) {
            *f = (*f).min(to);
        }
    }
    fn remove(&self, subnet: &str) {
        self.map().remove(subnet);
    }
}

/// The subnets and ports of one network, each list sorted by id. Sorted vectors, not
/// B-tree sets: a network has a few members, and an empty B-tree node costs hundreds of bytes
/// (ten thousand networks are meant to fit in tens of megabytes).
#[derive(Debug, Default, Clone)]
struct Members {
    subnets: Vec<String>,
    ports: Vec<String>,
}

/// Inserts `id` into the sorted `v` unless present.
fn insert_sorted(v: &mut Vec<String>, id: &str) {
    if let Err(i) = v.binary_search_by(|x| x.as_str().cmp(id)) {
        v.insert(i, id.to_string());
    }
}

/// Removes `id` from the sorted `v` if present.
fn remove_sorted(v: &mut Vec<String>, id: &str) {
    if let Ok(i) = v.binary_search_by(|x| x.as_str().cmp(id)) {
        v.remove(i);
    }
}

/// A `dns_domain` as Neutron's dns-integration accepts it: a domain name of labels of letters,
/// digits and hyphens (none at a label's ends), at most 255 characters, with or without the
/// final dot; empty means none.
fn valid_dns_domain(d: &str) -> Result<String, RegistryError> {
    let d = d.trim();
    if d.is_empty() {
        return Ok(String::new());
    }
    let bad = |why: &str| {
        invalid(
            "dns_domain",
            format!("'{d}' is not a valid domain name: {why}"),
        )
    };
    if d.len() > 255 {
        return Err(bad("longer than 255 characters"));
    }
    let labels: Vec<&str> = d.trim_end_matches('.').split('.').collect();
    if labels.len() < 2 {
        return Err(bad(
            "it must have at least two labels (a domain, not a host name)",
        ));
    }
    for l in labels {
        if l.is_empty() || l.len() > 63 {
            return Err(bad("each label has 1 to 63 characters"));
        }
        if l.starts_with('-') || l.ends_with('-') {
            return Err(bad("a label cannot start or end with a hyphen"));
        }
        if !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(bad("labels hold letters, digits and hyphens only"));
        }
    }
    Ok(d.to_string())
}

fn parse_ip(field: &str, s: &str) -> Result<Ipv4Addr, RegistryError> {
    s.trim()
        .parse::<Ipv4Addr>()
        .map_err(|_| invalid(field, format!("'{s}' is not a valid IPv4 address")))
}

fn ip_add(ip: Ipv4Addr, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(ip).wrapping_add(n))
}

impl Registry {
    /// Takes ML2's segment settings (kept across reloads by the caller).
    pub fn set_segments(&mut self, cfg: SegmentConfig) {
        self.segments = cfg;
    }

    /// Rebuilds a registry from stored objects (at start).
    pub fn from_parts(networks: Vec<Network>, subnets: Vec<Subnet>, ports: Vec<Port>) -> Self {
        let mut r = Registry::default();
        for n in networks {
            r.networks.insert(n.id.clone(), n);
        }
        for s in subnets {
            r.index_subnet(&s);
            r.subnets.insert(s.id.clone(), s);
        }
        for p in ports {
            r.index_port(&p);
            r.ports.insert(p.id.clone(), p);
        }
        r
    }

    fn index_subnet(&mut self, s: &Subnet) {
        let m = self.members.entry(s.network_id.clone()).or_default();
        insert_sorted(&mut m.subnets, &s.id);
    }

    fn unindex_subnet(&mut self, id: &str) {
        if let Some(s) = self.subnets.get(id) {
            if let Some(m) = self.members.get_mut(&s.network_id) {
                remove_sorted(&mut m.subnets, id);
            }
        }
    }

    pub(crate) fn index_port(&mut self, p: &Port) {
        if p.device_owner == DHCP_OWNER && !p.binding_host_id.is_empty() {
            *self.dhcp_load.entry(p.binding_host_id.clone()).or_default() += 1;
        }
        let m = self.members.entry(p.network_id.clone()).or_default();
        insert_sorted(&mut m.ports, &p.id);
        self.macs
            .insert((p.network_id.clone(), p.mac_address), p.id.clone());
        for f in &p.fixed_ips {
            self.ips
                .entry(f.subnet_id.clone())
                .or_default()
                .insert(f.ip_address, p.id.clone());
            // the first free address taken: the next is past it and whatever is used after it
            if self.first_candidate(&f.subnet_id) == Some(u32::from(f.ip_address)) {
                let used = &self.ips[&f.subnet_id];
                let mut next = u32::from(f.ip_address).saturating_add(1);
                while used.contains_key(&Ipv4Addr::from(next)) {
                    next = next.saturating_add(1);
                }
                self.free_from.set(&f.subnet_id, next);
            }
        }
    }

    /// Where the search for a free address in the subnet starts: its hint moved into the
    /// pools (`None` for pools out of order, which are searched in full).
    fn first_candidate(&self, subnet_id: &str) -> Option<u32> {
        let s = self.subnets.get(subnet_id)?;
        if !s
            .allocation_pools
            .windows(2)
            .all(|w| u32::from(w[0].end) < u32::from(w[1].start))
        {
            return None;
        }
        let from = self.free_from.get(subnet_id).unwrap_or(0);
        s.allocation_pools
            .iter()
            .find(|p| u32::from(p.end) >= from)
            .map(|p| from.max(u32::from(p.start)))
    }

    pub(crate) fn unindex_port(&mut self, p: &Port) {
        if p.device_owner == DHCP_OWNER && !p.binding_host_id.is_empty() {
            if let Some(n) = self.dhcp_load.get_mut(&p.binding_host_id) {
                *n = n.saturating_sub(1);
            }
        }
        if let Some(m) = self.members.get_mut(&p.network_id) {
            remove_sorted(&mut m.ports, &p.id);
        }
        self.macs.remove(&(p.network_id.clone(), p.mac_address));
        for f in &p.fixed_ips {
            if let Some(m) = self.ips.get_mut(&f.subnet_id) {
                m.remove(&f.ip_address);
            }
            self.free_from
                .lower(&f.subnet_id, u32::from(f.ip_address));
        }
    }

    /// All networks.
    pub fn networks(&self) -> impl Iterator<Item = &Network> {
        self.networks.values()
    }
    /// All subnets.
    pub fn subnets(&self) -> impl Iterator<Item = &Subnet> {
        self.subnets.values()
    }
    /// All ports.
    pub fn ports(&self) -> impl Iterator<Item = &Port> {
        self.ports.values()
    }
    /// One network.
    pub fn network(&self, id: &str) -> Option<&Network> {
        self.networks.get(id)
    }
    /// One subnet.
    pub fn subnet(&self, id: &str) -> Option<&Subnet> {
        self.subnets.get(id)
    }
    /// One port.
    pub fn port(&self, id: &str) -> Option<&Port> {
        self.ports.get(id)
    }
    /// Subnets of a network, in id order.
    pub fn subnets_of<'a>(&'a self, net: &'a str) -> impl Iterator<Item = &'a Subnet> + 'a {
        self.members
            .get(net)
            .into_iter()
            .flat_map(|m| m.subnets.iter())
            .filter_map(|id| self.subnets.get(id))
    }
    /// Ports of a network.
    pub fn ports_of<'a>(&'a self, net: &'a str) -> impl Iterator<Item = &'a Port> + 'a {
        self.members
            .get(net)
            .into_iter()
            .flat_map(|m| m.ports.iter())
            .filter_map(|id| self.ports.get(id))
    }
    /// The DHCP ports of a network (one per node serving it), in id order.
    pub fn dhcp_ports<'a>(&'a self, net: &'a str) -> impl Iterator<Item = &'a Port> + 'a {
        self.ports_of(net).filter(|p| p.device_owner == DHCP_OWNER)
    }

    /// The DHCP port `node` serves the network on: the one bound to it, or an unbound one
    /// (from before scheduling, or with no live node known) that any node serves.
    pub fn dhcp_port_for<'a>(&'a self, net: &'a str, node: &str) -> Option<&'a Port> {
        let mut unbound = None;
        for p in self.dhcp_ports(net) {
            if p.binding_host_id == node {
                return Some(p);
            }
            if p.binding_host_id.is_empty() && unbound.is_none() {
                unbound = Some(p);
            }
        }
        unbound
    }

    fn project_for(
        caller: &Caller,
        project: &Option<String>,
        tenant: &Option<String>,
    ) -> Result<String, RegistryError> {
        let asked = project.clone().or_else(|| tenant.clone());
        match asked {
            Some(p) if p != caller.project_id && !caller.is_admin => Err(RegistryError::BadRequest(
                "Specifying 'project_id' or 'tenant_id' other than the authenticated project in request requires admin privileges".into(),
            )),
            Some(p) => Ok(p),
            None => Ok(caller.project_id.clone()),
        }
    }

    // ---------------------------------------------------------------- networks

    /// Creates a network.
    pub fn create_network(
        &mut self,
        req: NetworkReq,
        caller: &Caller,
        env: &mut dyn Env,
    ) -> Result<(Network, Outcome), RegistryError> {
        let project_id = Self::project_for(caller, &req.project_id, &req.tenant_id)?;
        let requested_physnet = req.physical_network.clone().flatten();
        let segment = crate::segments::decide(
            &self.segments,
            &Requested {
                network_type: req.network_type.as_deref(),
                physical_network: requested_physnet.as_deref(),
                segmentation_id: req.segmentation_id.flatten(),
                is_admin: caller.is_admin,
            },
            self.networks.values(),
        )?;
        let network_type = segment.network_type;
        let physical_network = segment.physical_network;
        if let Some(pn) = physical_network.as_ref().filter(|_| network_type == "flat") {
            // ML2's flat type driver: one flat network per physical network
            if self
                .networks
                .values()
                .any(|o| o.network_type == "flat" && o.physical_network.as_ref() == Some(pn))
            {
                return Err(RegistryError::FlatNetworkInUse(pn.clone()));
            }
        }
        let mtu = req.mtu.unwrap_or(1500);
        if !(68..=65535).contains(&mtu) {
            return Err(invalid("mtu", format!("{mtu} is not in range 68-65535")));
        }
        let dns_domain = match req.dns_domain {
            Some(d) => valid_dns_domain(&d)?,
            None => String::new(),
        };
        let now = env.now();
        let n = Network {
            id: env.new_id(),
            dns_domain,
            name: req.name.unwrap_or_default(),
            project_id,
            admin_state_up: req.admin_state_up.unwrap_or(true),
            mtu,
            shared: req.shared.unwrap_or(false),
            network_type,
            physical_network,
            segmentation_id: segment.segmentation_id,
            description: req.description.unwrap_or_default(),
            created_at: now.clone(),
            updated_at: now,
            revision_number: 1,
        };
        self.networks.insert(n.id.clone(), n.clone());
        let out = Outcome {
            changes: vec![Change::Put(Kind::Network, n.id.clone())],
            effects: vec![Effect::NetworkChanged(n.id.clone())],
        };
        Ok((n, out))
    }

    /// Updates a network's mutable attributes.
    pub fn update_network(
        &mut self,
        id: &str,
        req: NetworkReq,
        env: &mut dyn Env,
    ) -> Result<(Network, Outcome), RegistryError> {
        if req.network_type.is_some()
            || req.physical_network.is_some()
            || req.segmentation_id.is_some()
        {
            return Err(RegistryError::BadRequest(
                "Invalid input for operation: provider attributes cannot be updated.".into(),
            ));
        }
        if let Some(m) = req.mtu {
            if !(68..=65535).contains(&m) {
                return Err(invalid("mtu", format!("{m} is not in range 68-65535")));
            }
        }
        let dns_domain = req
            .dns_domain
            .as_deref()
            .map(valid_dns_domain)
            .transpose()?;
        let now = env.now();
        let n = self
            .networks
            .get_mut(id)
            .ok_or_else(|| RegistryError::NetworkNotFound(id.into()))?;
        if let Some(v) = req.name {
            n.name = v;
        }
        if let Some(v) = req.admin_state_up {
            n.admin_state_up = v;
        }
        if let Some(v) = req.mtu {
            n.mtu = v;
        }
        if let Some(v) = req.shared {
            n.shared = v;
        }
        if let Some(v) = req.description {
            n.description = v;
        }
        if let Some(v) = dns_domain {
            n.dns_domain = v;
        }
        n.updated_at = now;
        n.revision_number += 1;
        let n = n.clone();
        Ok((
            n.clone(),
            Outcome {
                changes: vec![Change::Put(Kind::Network, n.id.clone())],
                effects: vec![Effect::NetworkChanged(n.id)],
            },
        ))
    }

    /// Deletes a network with its subnets and DHCP port; refused while other ports remain.
    pub fn delete_network(&mut self, id: &str) -> Result<Outcome, RegistryError> {
        if !self.networks.contains_key(id) {
            return Err(RegistryError::NetworkNotFound(id.into()));
        }
        if self.ports_of(id).any(|p| p.device_owner != DHCP_OWNER) {
            return Err(RegistryError::NetworkInUse(id.into()));
        }
        let mut out = Outcome::default();
        let ports: Vec<Port> = self.ports_of(id).cloned().collect();
        for p in ports {
            self.unindex_port(&p);
            self.ports.remove(&p.id);
            out.changes.push(Change::Delete(Kind::Port, p.id.clone()));
        }
        let subnets: Vec<String> = self.subnets_of(id).map(|s| s.id.clone()).collect();
        for s in subnets {
            self.unindex_subnet(&s);
            self.subnets.remove(&s);
            self.ips.remove(&s);
            self.free_from.remove(&s);
            out.changes.push(Change::Delete(Kind::Subnet, s));
        }
        self.members.remove(id);
        self.networks.remove(id);
        out.changes.push(Change::Delete(Kind::Network, id.into()));
        out.effects.push(Effect::NetworkDeleted(id.into()));
        Ok(out)
    }

    // ---------------------------------------------------------------- subnets

    fn validate_pools(
        cidr: Ipv4Net,
        gw: Option<Ipv4Addr>,
        pools: &[Pool],
    ) -> Result<(), RegistryError> {
        for (i, p) in pools.iter().enumerate() {
            if p.start > p.end {
                return Err(invalid(
                    "allocation_pools",
                    format!("start {} is after end {}", p.start, p.end),
                ));
            }
            for a in [p.start, p.end] {
                if !cidr.contains(&a) || a == cidr.network() || a == cidr.broadcast() {
                    return Err(invalid(
                        "allocation_pools",
                        format!("{a} is not a usable address of {cidr}"),
                    ));
                }
            }
            if let Some(g) = gw.filter(|g| p.contains(*g)) {
                return Err(RegistryError::GatewayConflictWithAllocationPools {
                    ip: g.to_string(),
                    pool: format!("{}-{}", p.start, p.end),
                });
            }
            for q in &pools[i + 1..] {
                if p.start <= q.end && q.start <= p.end {
                    return Err(invalid("allocation_pools", "pools overlap"));
                }
            }
        }
        Ok(())
    }

    fn default_pools(cidr: Ipv4Net, gw: Option<Ipv4Addr>) -> Vec<Pool> {
        let first = ip_add(cidr.network(), 1);
        let last = Ipv4Addr::from(u32::from(cidr.broadcast()).saturating_sub(1));
        if cidr.prefix_len() >= 31 || first > last {
            return Vec::new();
        }
        match gw {
            Some(g) if g == first => vec![Pool {
                start: ip_add(first, 1),
                end: last,
            }]
            .into_iter()
            .filter(|p| p.start <= p.end)
            .collect(),
            Some(g) if g == last => vec![Pool {
                start: first,
                end: Ipv4Addr::from(u32::from(last) - 1),
            }],
            Some(g) if first < g && g < last => vec![
                Pool {
                    start: first,
                    end: Ipv4Addr::from(u32::from(g) - 1),
                },
                Pool {
                    start: ip_add(g, 1),
                    end: last,
                },
            ],
            _ => vec![Pool {
                start: first,
                end: last,
            }],
        }
    }

    fn parse_dns(v: &[String]) -> Result<Vec<Ipv4Addr>, RegistryError> {
        let mut out = Vec::new();
        for s in v {
            let ip = parse_ip("dns_nameservers", s)?;
            if out.contains(&ip) {
                return Err(invalid(
                    "dns_nameservers",
                    format!("duplicate nameserver '{ip}'"),
                ));
            }
            out.push(ip);
        }
        Ok(out)
    }

    fn parse_routes(v: &[RouteReq]) -> Result<Vec<HostRoute>, RegistryError> {
        v.iter()
            .map(|r| {
                let destination: Ipv4Net = r.destination.parse().map_err(|_| {
                    invalid(
                        "host_routes",
                        format!("'{}' is not a valid IPv4 prefix", r.destination),
                    )
                })?;
                Ok(HostRoute {
                    destination: destination.trunc(),
                    nexthop: parse_ip("host_routes", &r.nexthop)?,
                })
            })
            .collect()
    }

    /// Creates a subnet; the network's DHCP port gets an address in it when DHCP is on.
    pub fn create_subnet(
        &mut self,
        req: SubnetReq,
        caller: &Caller,
        env: &mut dyn Env,
    ) -> Result<(Subnet, Outcome), RegistryError> {
        let net_id = req
            .network_id
            .clone()
            .ok_or_else(|| invalid("network_id", "it is required"))?;
        if !self.networks.contains_key(&net_id) {
            return Err(RegistryError::NetworkNotFound(net_id));
        }
        if let Some(v) = req.ip_version {
            if v != 4 {
                return Err(invalid(
                    "ip_version",
                    format!("{v}: qdhcp serves IPv4 (DHCPv4) only"),
                ));
            }
        }
        let cidr_s = req
            .cidr
            .clone()
            .ok_or_else(|| invalid("cidr", "it is required"))?;
        let cidr: Ipv4Net = cidr_s
            .parse()
            .map_err(|_| invalid("cidr", format!("'{cidr_s}' is not a valid IPv4 CIDR")))?;
        if cidr.trunc() != cidr {
            return Err(invalid(
                "cidr",
                format!(
                    "'{cidr_s}' is not a recognized CIDR, '{}' is recommended",
                    cidr.trunc()
                ),
            ));
        }
        if cidr.prefix_len() > 30 {
            return Err(invalid(
                "cidr",
                format!("'{cidr_s}' is too small: a prefix of at most /30 is needed"),
            ));
        }
        if self
            .subnets_of(&net_id)
            .any(|s| s.cidr.contains(&cidr.network()) || cidr.contains(&s.cidr.network()))
        {
            return Err(RegistryError::Overlap {
                cidr: cidr_s,
                net_id,
            });
        }
        let gateway_ip = match &req.gateway_ip {
            None => Some(ip_add(cidr.network(), 1)),
            Some(None) => None,
            Some(Some(g)) if g.is_empty() => None,
            Some(Some(g)) => {
                let g = parse_ip("gateway_ip", g)?;
                if !cidr.contains(&g) || g == cidr.network() || g == cidr.broadcast() {
                    return Err(invalid(
                        "gateway_ip",
                        format!("{g} is not a usable address of {cidr}"),
                    ));
                }
                Some(g)
            }
        };
        let pools = match &req.allocation_pools {
            Some(v) if !v.is_empty() => v
                .iter()
                .map(|p| {
                    Ok(Pool {
                        start: parse_ip("allocation_pools", &p.start)?,
                        end: parse_ip("allocation_pools", &p.end)?,
                    })
                })
                .collect::<Result<Vec<_>, RegistryError>>()?,
            _ => Self::default_pools(cidr, gateway_ip),
        };
        Self::validate_pools(cidr, gateway_ip, &pools)?;
        let project_id = Self::project_for(caller, &req.project_id, &req.tenant_id)?;
        let now = env.now();
        let s = Subnet {
            id: env.new_id(),
            name: req.name.unwrap_or_default(),
            network_id: net_id.clone(),
            project_id,
            cidr,
            gateway_ip,
            allocation_pools: pools,
            dns_nameservers: Self::parse_dns(req.dns_nameservers.as_deref().unwrap_or(&[]))?,
            host_routes: Self::parse_routes(req.host_routes.as_deref().unwrap_or(&[]))?,
            enable_dhcp: req.enable_dhcp.unwrap_or(true),
            description: req.description.unwrap_or_default(),
            created_at: now.clone(),
            updated_at: now,
            revision_number: 1,
        };
        self.index_subnet(&s);
        self.subnets.insert(s.id.clone(), s.clone());
        let mut out = Outcome {
            changes: vec![Change::Put(Kind::Subnet, s.id.clone())],
            effects: vec![],
        };
        self.sync_dhcp_ports(&net_id, env, &mut out);
        out.effects.push(Effect::NetworkChanged(net_id));
        Ok((s, out))
    }

    /// Updates a subnet's mutable attributes.
    pub fn update_subnet(
        &mut self,
        id: &str,
        req: SubnetReq,
        env: &mut dyn Env,
    ) -> Result<(Subnet, Outcome), RegistryError> {
        let mut s = self
            .subnets
            .get(id)
            .cloned()
            .ok_or_else(|| RegistryError::SubnetNotFound(id.into()))?;
        if req.cidr.is_some() || req.network_id.is_some() || req.ip_version.is_some() {
            return Err(RegistryError::BadRequest(
                "Invalid input for operation: cidr, network_id and ip_version cannot be updated."
                    .into(),
            ));
        }
        if let Some(g) = &req.gateway_ip {
            s.gateway_ip = match g {
                None => None,
                Some(g) if g.is_empty() => None,
                Some(g) => {
                    let g = parse_ip("gateway_ip", g)?;
                    if !s.cidr.contains(&g) || g == s.cidr.network() || g == s.cidr.broadcast() {
                        return Err(invalid(
                            "gateway_ip",
                            format!("{g} is not a usable address of {}", s.cidr),
                        ));
                    }
                    Some(g)
                }
            };
        }
        if let Some(p) = &req.allocation_pools {
            // new pools: the search starts over
            self.free_from.remove(id);
            s.allocation_pools = p
                .iter()
                .map(|p| {
                    Ok(Pool {
                        start: parse_ip("allocation_pools", &p.start)?,
                        end: parse_ip("allocation_pools", &p.end)?,
                    })
                })
                .collect::<Result<Vec<_>, RegistryError>>()?;
        }
        Self::validate_pools(s.cidr, s.gateway_ip, &s.allocation_pools)?;
        if let Some(d) = &req.dns_nameservers {
            s.dns_nameservers = Self::parse_dns(d)?;
        }
        if let Some(r) = &req.host_routes {
            s.host_routes = Self::parse_routes(r)?;
        }
        if let Some(v) = req.enable_dhcp {
            s.enable_dhcp = v;
        }
        if let Some(v) = req.name {
            s.name = v;
        }
        if let Some(v) = req.description {
            s.description = v;
        }
        s.updated_at = env.now();
        s.revision_number += 1;
        let net_id = s.network_id.clone();
        self.subnets.insert(id.into(), s.clone());
        let mut out = Outcome {
            changes: vec![Change::Put(Kind::Subnet, id.into())],
            effects: vec![],
        };
        self.sync_dhcp_ports(&net_id, env, &mut out);
        out.effects.push(Effect::NetworkChanged(net_id));
        Ok((s, out))
    }

    /// Deletes a subnet; refused while ports other than the DHCP port use it.
    pub fn delete_subnet(&mut self, id: &str, env: &mut dyn Env) -> Result<Outcome, RegistryError> {
        let s = self
            .subnets
            .get(id)
            .cloned()
            .ok_or_else(|| RegistryError::SubnetNotFound(id.into()))?;
        let users: HashSet<&String> = self
            .ips
            .get(id)
            .map(|m| m.values().collect())
            .unwrap_or_default();
        if users.iter().any(|p| {
            self.ports
                .get(*p)
                .is_some_and(|p| p.device_owner != DHCP_OWNER)
        }) {
            return Err(RegistryError::SubnetInUse(id.into()));
        }
        self.unindex_subnet(id);
        self.subnets.remove(id);
        let mut out = Outcome {
            changes: vec![Change::Delete(Kind::Subnet, id.into())],
            effects: vec![],
        };
        self.sync_dhcp_ports(&s.network_id, env, &mut out);
        self.ips.remove(id);
        self.free_from.remove(id);
        out.effects.push(Effect::NetworkChanged(s.network_id));
        Ok(out)
    }

    // ---------------------------------------------------------------- ports and IPAM

    pub(crate) fn generate_mac(&self, net_id: &str, env: &mut dyn Env) -> Mac {
        loop {
            let r = env.random().to_be_bytes();
            let m = Mac([0xfa, 0x16, 0x3e, r[1], r[2], r[3]]);
            if !self.macs.contains_key(&(net_id.to_string(), m)) {
                return m;
            }
        }
    }

    /// The first free address in the subnet's pools.
    pub(crate) fn next_free(&self, subnet_id: &str) -> Option<Ipv4Addr> {
        let s = self.subnets.get(subnet_id)?;
        let used = self.ips.get(subnet_id);
        let hinted = self.first_candidate(subnet_id);
        let from = hinted.unwrap_or(0);
        for p in &s.allocation_pools {
            let mut a = u32::from(p.start).max(from);
            while a <= u32::from(p.end) {
                let ip = Ipv4Addr::from(a);
                if !used.is_some_and(|u| u.contains_key(&ip)) {
                    if hinted.is_some() {
                        // the first free: nothing below it is
                        self.free_from.set(subnet_id, a);
                    }
                    return Some(ip);
                }
                a += 1;
            }
        }
        None
    }

    /// Resolves requested fixed IPs (or allocates one from the network's first subnet with
    /// room) into addresses; does not reserve them.
    fn resolve_fixed_ips(
        &self,
        net_id: &str,
        req: Option<&[FixedIpReq]>,
        port_id: &str,
        device_owner: &str,
    ) -> Result<Vec<FixedIp>, RegistryError> {
        let mut out: Vec<FixedIp> = Vec::new();
        let taken_by_other = |sid: &str, ip: Ipv4Addr| {
            self.ips
                .get(sid)
                .and_then(|m| m.get(&ip))
                .is_some_and(|p| p != port_id)
        };
        match req {
            None => {
                let mut any = false;
                for s in self.subnets_of(net_id) {
                    any = true;
                    if let Some(ip) = self.next_free(&s.id) {
                        out.push(FixedIp {
                            subnet_id: s.id.clone(),
                            ip_address: ip,
                        });
                        break;
                    }
                }
                if any && out.is_empty() {
                    return Err(RegistryError::IpAddressGenerationFailure(net_id.into()));
                }
            }
            Some(list) => {
                for f in list {
                    let ip = f
                        .ip_address
                        .as_deref()
                        .map(|s| parse_ip("fixed_ips", s))
                        .transpose()?;
                    let subnet = match (&f.subnet_id, ip) {
                        (Some(sid), _) => {
                            let s = self.subnets.get(sid).ok_or_else(|| RegistryError::SubnetNotFound(sid.clone()))?;
                            if s.network_id != net_id {
                                return Err(invalid("fixed_ips", format!("subnet {sid} is not on network {net_id}")));
                            }
                            s
                        }
                        (None, Some(ip)) => self
                            .subnets_of(net_id)
                            .find(|s| s.cidr.contains(&ip))
                            .ok_or_else(|| invalid("fixed_ips", format!("IP address {ip} is not a valid IP for any of the subnets on network {net_id}")))?,
                        (None, None) => return Err(invalid("fixed_ips", "a fixed IP needs subnet_id or ip_address")),
                    };
                    let ip = match ip {
                        Some(ip) => {
                            let c = subnet.cidr;
                            let is_gw = subnet.gateway_ip == Some(ip)
                                && !device_owner.starts_with("network:router");
                            if !c.contains(&ip) || ip == c.network() || ip == c.broadcast() || is_gw
                            {
                                return Err(RegistryError::InvalidIpForSubnet {
                                    ip: ip.to_string(),
                                });
                            }
                            if taken_by_other(&subnet.id, ip)
                                || out.iter().any(|f| f.ip_address == ip)
                            {
                                return Err(RegistryError::IpAddressAlreadyAllocated {
                                    ip: ip.to_string(),
                                    subnet_id: subnet.id.clone(),
                                });
                            }
                            ip
                        }
                        None => {
                            // the first free address not already chosen in this request
                            let used = self.ips.get(&subnet.id);
                            let mut found = None;
                            'pools: for p in &subnet.allocation_pools {
                                for a in u32::from(p.start)..=u32::from(p.end) {
                                    let ip = Ipv4Addr::from(a);
                                    let holder = used.and_then(|u| u.get(&ip));
                                    let free = holder.is_none_or(|p| p == port_id)
                                        && !out.iter().any(|f| f.ip_address == ip);
                                    if free {
                                        found = Some(ip);
                                        break 'pools;
                                    }
                                }
                            }
                            found.ok_or_else(|| {
                                RegistryError::IpAddressGenerationFailure(net_id.into())
                            })?
                        }
                    };
                    out.push(FixedIp {
                        subnet_id: subnet.id.clone(),
                        ip_address: ip,
                    });
                }
            }
        }
        Ok(out)
    }

    fn parse_extra_opts(v: &[ExtraDhcpOptReq]) -> Result<Vec<ExtraDhcpOpt>, RegistryError> {
        let mut out = Vec::new();
        for o in v {
            let ip_version = match &o.ip_version {
                None => 4,
                Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0) as u8,
                Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
                Some(_) => 0,
            };
            if ip_version != 4 && ip_version != 6 {
                return Err(invalid("extra_dhcp_opts", "ip_version must be 4 or 6"));
            }
            let Some(value) = o.opt_value.clone() else {
                continue;
            };
            if ip_version == 4 {
                // `tag:ipxe,NAME`: for iPXE clients only (see dhcp::reservation_for)
                let name = match o.opt_name.strip_prefix("tag:").map(|r| r.split_once(',')) {
                    None => o.opt_name.as_str(),
                    Some(Some(("ipxe", name))) => name,
                    Some(_) => {
                        return Err(invalid(
                            "extra_dhcp_opts",
                            format!("{:?}: the only tag served is ipxe", o.opt_name),
                        ))
                    }
                };
                let spec = if name.parse::<u8>().is_ok() {
                    name.to_string()
                } else {
                    format!("option:{name}")
                };
                let code = qdhcp_protocol::options::code_for(&spec)
                    .map_err(|e| invalid("extra_dhcp_opts", e))?;
                let mut probe = qdhcp_protocol::OptionSet::default();
                probe
                    .set_text(code, &value, false)
                    .map_err(|e| invalid("extra_dhcp_opts", e))?;
            }
            out.push(ExtraDhcpOpt {
                opt_name: o.opt_name.clone(),
                opt_value: value,
                ip_version,
            });
        }
        Ok(out)
    }

    /// Creates a port: a MAC (generated `fa:16:3e:…` or given, unique in the network) and
    /// fixed IPs (requested, or allocated from the pools). Nothing is half-created on error.
    pub fn create_port(
        &mut self,
        req: PortReq,
        caller: &Caller,
        env: &mut dyn Env,
    ) -> Result<(Port, Outcome), RegistryError> {
        let net_id = req
            .network_id
            .clone()
            .ok_or_else(|| invalid("network_id", "it is required"))?;
        if !self.networks.contains_key(&net_id) {
            return Err(RegistryError::NetworkNotFound(net_id));
        }
        let project_id = Self::project_for(caller, &req.project_id, &req.tenant_id)?;
        if req.binding_host_id.is_some() && !caller.is_admin {
            return Err(RegistryError::PolicyNotAuthorized(
                "(rule:create_port and rule:create_port:binding:host_id)".into(),
            ));
        }
        let mac = match &req.mac_address {
            Some(m) => {
                let m: Mac = m.parse().map_err(|_| {
                    invalid("mac_address", format!("'{m}' is not a valid MAC address"))
                })?;
                if m.0[0] & 1 == 1 || m == Mac([0; 6]) {
                    return Err(invalid(
                        "mac_address",
                        format!("'{m}' is not a valid unicast MAC address"),
                    ));
                }
                if self.macs.contains_key(&(net_id.clone(), m)) {
                    return Err(RegistryError::MacAddressInUse {
                        net_id,
                        mac: m.to_string(),
                    });
                }
                m
            }
            None => self.generate_mac(&net_id, env),
        };
        let device_owner = req.device_owner.clone().unwrap_or_default();
        let id = env.new_id();
        let fixed_ips =
            self.resolve_fixed_ips(&net_id, req.fixed_ips.as_deref(), &id, &device_owner)?;
        let extra = Self::parse_extra_opts(req.extra_dhcp_opts.as_deref().unwrap_or(&[]))?;
        let dns_name = req.dns_name.clone().unwrap_or_default();
        validate_dns_name(&dns_name)?;
        let now = env.now();
        let p = Port {
            id,
            name: req.name.unwrap_or_default(),
            network_id: net_id,
            project_id,
            mac_address: mac,
            fixed_ips,
            admin_state_up: req.admin_state_up.unwrap_or(true),
            device_id: req.device_id.unwrap_or_default(),
            device_owner,
            binding_host_id: req.binding_host_id.unwrap_or_default(),
            extra_dhcp_opts: extra,
            dns_name,
            description: req.description.unwrap_or_default(),
            status: "DOWN".into(),
            created_at: now.clone(),
            updated_at: now,
            revision_number: 1,
        };
        self.index_port(&p);
        self.ports.insert(p.id.clone(), p.clone());
        Ok((
            p.clone(),
            Outcome {
                changes: vec![Change::Put(Kind::Port, p.id.clone())],
                effects: vec![Effect::PortChanged(None, Some(Box::new(p)))],
            },
        ))
    }

    /// Updates a port; a new address or MAC takes effect for DHCP at once.
    pub fn update_port(
        &mut self,
        id: &str,
        req: PortReq,
        env: &mut dyn Env,
    ) -> Result<(Port, Outcome), RegistryError> {
        let before = self
            .ports
            .get(id)
            .cloned()
            .ok_or_else(|| RegistryError::PortNotFound(id.into()))?;
        if req
            .network_id
            .as_ref()
            .is_some_and(|n| *n != before.network_id)
        {
            return Err(invalid(
                "network_id",
                "a port cannot move to another network",
            ));
        }
        let mut p = before.clone();
        if let Some(m) = &req.mac_address {
            let m: Mac = m
                .parse()
                .map_err(|_| invalid("mac_address", format!("'{m}' is not a valid MAC address")))?;
            if m != p.mac_address && self.macs.contains_key(&(p.network_id.clone(), m)) {
                return Err(RegistryError::MacAddressInUse {
                    net_id: p.network_id.clone(),
                    mac: m.to_string(),
                });
            }
            p.mac_address = m;
        }
        if let Some(v) = req.device_owner {
            p.device_owner = v;
        }
        if let Some(f) = req.fixed_ips.as_deref() {
            p.fixed_ips = self.resolve_fixed_ips(&p.network_id, Some(f), id, &p.device_owner)?;
        }
        if let Some(e) = req.extra_dhcp_opts.as_deref() {
            p.extra_dhcp_opts = Self::parse_extra_opts(e)?;
        }
        if let Some(d) = req.dns_name {
            validate_dns_name(&d)?;
            p.dns_name = d;
        }
        if let Some(v) = req.name {
            p.name = v;
        }
        if let Some(v) = req.admin_state_up {
            p.admin_state_up = v;
        }
        if let Some(v) = req.device_id {
            p.device_id = v;
        }
        if let Some(v) = req.binding_host_id {
            p.binding_host_id = v;
        }
        if let Some(v) = req.description {
            p.description = v;
        }
        p.updated_at = env.now();
        p.revision_number += 1;
        self.unindex_port(&before);
        self.index_port(&p);
        self.ports.insert(id.into(), p.clone());
        Ok((
            p.clone(),
            Outcome {
                changes: vec![Change::Put(Kind::Port, id.into())],
                effects: vec![Effect::PortChanged(
                    Some(Box::new(before)),
                    Some(Box::new(p)),
                )],
            },
        ))
    }

    /// Deletes a port; its addresses are free again at once.
    pub fn delete_port(&mut self, id: &str) -> Result<Outcome, RegistryError> {
        let p = self
            .ports
            .remove(id)
            .ok_or_else(|| RegistryError::PortNotFound(id.into()))?;
        self.unindex_port(&p);
        Ok(Outcome {
            changes: vec![Change::Delete(Kind::Port, id.into())],
            effects: vec![Effect::PortChanged(Some(Box::new(p)), None)],
        })
    }

    /// Addresses in use in a subnet (for pool utilisation).
    pub fn used_in(&self, subnet_id: &str) -> usize {
        self.ips.get(subnet_id).map_or(0, |m| m.len())
    }
}

fn validate_dns_name(d: &str) -> Result<(), RegistryError> {
    let ok = d.len() <= 63
        && d.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !d.starts_with('-')
        && !d.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "dns_name",
            format!("'{d}' is not a valid host name"),
        ))
    }
}
