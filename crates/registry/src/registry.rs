//! The registry: networks, subnets and ports in memory with their indexes (members of a
//! network, addresses and MACs in use, the DHCP scheduler's load, free-address hints) and the
//! queries on them. The operations live beside it, one module per kind (`networks`, `subnets`,
//! `ports`, `dhcp_ports`); every rule about what may exist is there. Pure: time, ids and
//! randomness come from an `Env`; every operation returns what changed so the caller can
//! persist it and update the DHCP tables. No I/O here.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use imbl::OrdMap;

use qdhcp_protocol::Mac;

use crate::error::{invalid, RegistryError};
use crate::index::{Ips, Members};
use crate::model::*;
use crate::scheduling::Scheduling;
use crate::segments::SegmentConfig;

/// What the registry needs from the outside world.
pub trait Env {
    /// Current time as ISO 8601 (`2026-11-25T15:00:00Z`).
    fn now(&mut self) -> Stamp;
    /// A fresh UUID (made the id of a new object of any kind).
    fn new_id(&mut self) -> ArcStr;
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

/// Which object: its kind and its typed id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObjectId {
    /// A network.
    Network(NetworkId),
    /// A subnet.
    Subnet(SubnetId),
    /// A port.
    Port(PortId),
}

impl ObjectId {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            ObjectId::Network(_) => Kind::Network,
            ObjectId::Subnet(_) => Kind::Subnet,
            ObjectId::Port(_) => Kind::Port,
        }
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        match self {
            ObjectId::Network(id) => id,
            ObjectId::Subnet(id) => id,
            ObjectId::Port(id) => id,
        }
    }

    /// The id of an object of kind `kind` whose id reads `id` (a stored row's).
    pub fn of(kind: Kind, id: &str) -> ObjectId {
        match kind {
            Kind::Network => ObjectId::Network(id.into()),
            Kind::Subnet => ObjectId::Subnet(id.into()),
            Kind::Port => ObjectId::Port(id.into()),
        }
    }
}

impl From<NetworkId> for ObjectId {
    fn from(id: NetworkId) -> Self {
        ObjectId::Network(id)
    }
}

impl From<SubnetId> for ObjectId {
    fn from(id: SubnetId) -> Self {
        ObjectId::Subnet(id)
    }
}

impl From<PortId> for ObjectId {
    fn from(id: PortId) -> Self {
        ObjectId::Port(id)
    }
}

/// One change to persist: the object's new state is read from the registry, or it is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Created or updated.
    Put(ObjectId),
    /// Deleted.
    Delete(ObjectId),
}

/// What the DHCP side must do after an operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A network's subnets or settings changed: rebuild its subnets, check its plumbing.
    NetworkChanged(NetworkId),
    /// A network is gone: stop serving it, remove its plumbing.
    NetworkDeleted(NetworkId),
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

/// Networks, subnets and ports with their indexes. Every map is persistent, so a clone costs a
/// few reference counts: readers hold one that writes never change, and a write changes a
/// clone that is published or dropped whole (see docs/ARCHITECTURE.md, "Snapshots").
#[derive(Debug, Default, Clone)]
pub struct Registry {
    pub(crate) networks: OrdMap<NetworkId, Arc<Network>>,
    pub(crate) subnets: OrdMap<SubnetId, Arc<Subnet>>,
    pub(crate) ports: OrdMap<PortId, Arc<Port>>,
    /// (subnet, address) → port.
    pub(crate) ips: Ips,
    /// (network, MAC) → port.
    pub(crate) macs: OrdMap<(NetworkId, Mac), PortId>,
    /// Each network's subnets and ports: a network's members are found without a scan of
    /// every subnet and port (that scan was most of a create's CPU with thousands of
    /// networks).
    pub(crate) members: Members,
    /// ML2's segment settings (ranges, tenant network types).
    pub(crate) segments: SegmentConfig,
    /// The segments the networks hold (kept by [`Registry::put_network`] and
    /// [`Registry::take_network`]).
    pub(crate) in_use: crate::segments::InUse,
    /// Neutron's DHCP agent scheduler: nodes per network and the live nodes.
    pub(crate) scheduling: Scheduling,
    /// node → DHCP ports bound to it (the scheduler's load, kept with the port index).
    pub(crate) dhcp_load: HashMap<NodeName, usize>,
    /// subnet → an address below which no address of its pools is free, so that finding the
    /// first free address does not walk every allocated one (that walk made creating the
    /// n-th port of a subnet O(n)). Kept with the port index; only for pools in order.
    pub(crate) free_from: Hints,
}

/// The free-address hints, set by the lookups that find the first free address (`&self`).
#[derive(Debug, Default)]
pub(crate) struct Hints(parking_lot::Mutex<HintMaps>);

/// Persistent maps: a registry is cloned for every write (docs/ARCHITECTURE.md, "The walk of an
/// API call"), and a clone must not copy a hint per subnet.
#[derive(Debug, Default, Clone)]
pub(crate) struct HintMaps {
    /// subnet → an address below which no address of its pools is free.
    first: imbl::HashMap<SubnetId, u32>,
    /// subnet → (rank, nodes, from): below `from`, no address of the share `rank` of
    /// `nodes` (address mod nodes = rank) is free. Only for nodes that share a pool, so that
    /// a node taking its own share does not step over the other share's free addresses on
    /// every allocation (that walk was O(addresses in use)).
    share: imbl::HashMap<SubnetId, (u32, u32, u32)>,
}

impl Clone for Hints {
    fn clone(&self) -> Self {
        Hints(parking_lot::Mutex::new(self.map().clone()))
    }
}

impl Hints {
    pub(crate) fn map(&self) -> parking_lot::MutexGuard<'_, HintMaps> {
        self.0.lock()
    }
    pub(crate) fn get(&self, subnet: &str) -> Option<u32> {
        self.map().first.get(subnet).copied()
    }
    pub(crate) fn set(&self, subnet: &SubnetId, from: u32) {
        self.map().first.insert(subnet.clone(), from);
    }
    /// Where the share `rank` of `nodes` may have its first free address in `subnet`.
    pub(crate) fn share_from(&self, subnet: &str, rank: u32, nodes: u32) -> Option<u32> {
        match self.map().share.get(subnet) {
            Some(&(r, n, from)) if (r, n) == (rank, nodes) => Some(from),
            _ => None,
        }
    }
    pub(crate) fn set_share(&self, subnet: &SubnetId, rank: u32, nodes: u32, from: u32) {
        self.map().share.insert(subnet.clone(), (rank, nodes, from));
    }
    /// An address of `subnet` is free again.
    pub(crate) fn lower(&self, subnet: &str, to: u32) {
        let mut m = self.map();
        if let Some(f) = m.first.get_mut(subnet) {
            *f = (*f).min(to);
        }
        if let Some((_, _, f)) = m.share.get_mut(subnet) {
            *f = (*f).min(to);
        }
    }
    pub(crate) fn remove(&self, subnet: &str) {
        let mut m = self.map();
        m.first.remove(subnet);
        m.share.remove(subnet);
    }
}

/// Makes `text` point at `to` when both say the same.
fn share<T: crate::ids::SharedText>(text: &mut T, to: &T) {
    if *text == *to && !text.same_pointer(to) {
        *text = to.clone();
    }
}

pub(crate) fn parse_ip(field: &str, s: &str) -> Result<IpAddr, RegistryError> {
    s.trim()
        .parse::<IpAddr>()
        .map_err(|_| invalid(field, format!("'{s}' is not a valid IP address")))
}

/// The 32-bit number of an IPv4 address, which IPAM's hints count in; `None` for IPv6.
pub(crate) fn v4_bits(ip: IpAddr) -> Option<u32> {
    match ip {
        IpAddr::V4(a) => Some(u32::from(a)),
        IpAddr::V6(_) => None,
    }
}

impl Registry {
    /// Takes ML2's segment settings (kept across reloads by the caller).
    pub fn set_segments(&mut self, cfg: SegmentConfig) {
        self.segments = cfg;
    }

    /// Rebuilds a registry from stored objects (at start).
    pub fn from_parts(networks: Vec<Network>, subnets: Vec<Subnet>, ports: Vec<Port>) -> Self {
        let mut r = Registry::default();
        for mut n in networks {
            r.share_network(&mut n);
            r.put_network(n);
        }
        for mut s in subnets {
            r.share_subnet(&mut s);
            r.index_subnet(&s);
            r.subnets.insert(s.id.clone(), Arc::new(s));
        }
        for mut p in ports {
            r.share_port(&mut p);
            r.index_port(&p);
            r.ports.insert(p.id.clone(), Arc::new(p));
        }
        r
    }

    /// Puts a network in the map, its segment counted in use (the old one's released).
    pub(crate) fn put_network(&mut self, n: Network) {
        self.in_use.add(&n);
        if let Some(old) = self.networks.insert(n.id.clone(), Arc::new(n)) {
            self.in_use.remove(&old);
        }
    }

    /// Takes a network out of the map, releasing its segment.
    pub(crate) fn take_network(&mut self, id: &str) -> Option<Arc<Network>> {
        let n = self.networks.remove(id)?;
        self.in_use.remove(&n);
        Some(n)
    }

    /// Points an object's copies of text the registry already holds at that text, so that a
    /// network's id is stored once however many subnets, ports and indexes name it, and
    /// `updated_at` shares `created_at` until they differ (see docs/ARCHITECTURE.md, "Memory").
    /// Called on every object before it is stored in the registry.
    pub(crate) fn share_network(&self, n: &mut Network) {
        share(&mut n.updated_at, &n.created_at);
        if let Some(old) = self.networks.get(n.id.as_str()) {
            share(&mut n.id, &old.id);
            share(&mut n.project_id, &old.project_id);
        }
    }

    /// The objects `changes` name as they are now (gone ones as [`crate::Stored::Gone`]):
    /// what a write hands the store.
    pub fn stored(&self, changes: &[Change]) -> Vec<crate::Stored> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for c in changes {
            let (Change::Put(id) | Change::Delete(id)) = c;
            if !seen.insert(id) {
                continue;
            }
            let now = match id {
                ObjectId::Network(id) => self.network(id).cloned().map(crate::Stored::Network),
                ObjectId::Subnet(id) => self.subnet(id).cloned().map(crate::Stored::Subnet),
                ObjectId::Port(id) => self.port(id).cloned().map(crate::Stored::Port),
            };
            out.push(now.unwrap_or_else(|| crate::Stored::Gone(id.clone())));
        }
        out
    }

    /// The network's id as the registry holds it (a new copy for a network it lacks).
    pub(crate) fn id_of_network(&self, id: &str) -> NetworkId {
        self.networks
            .get_key_value(id)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| id.into())
    }

    /// [`Registry::share_network`] for a subnet.
    pub(crate) fn share_subnet(&self, s: &mut Subnet) {
        share(&mut s.updated_at, &s.created_at);
        if let Some(n) = self.networks.get(s.network_id.as_str()) {
            share(&mut s.network_id, &n.id);
            share(&mut s.project_id, &n.project_id);
        }
        if let Some(old) = self.subnets.get(s.id.as_str()) {
            share(&mut s.id, &old.id);
        }
    }

    /// [`Registry::share_network`] for a port.
    pub(crate) fn share_port(&self, p: &mut Port) {
        share(&mut p.updated_at, &p.created_at);
        if let Some(n) = self.networks.get(p.network_id.as_str()) {
            share(&mut p.network_id, &n.id);
            share(&mut p.project_id, &n.project_id);
            share(&mut p.created_at, &n.created_at);
            share(&mut p.updated_at, &n.created_at);
        }
        for f in &mut p.fixed_ips {
            if let Some(s) = self.subnets.get(f.subnet_id.as_str()) {
                share(&mut f.subnet_id, &s.id);
            }
        }
        if let Some(old) = self.ports.get(p.id.as_str()) {
            share(&mut p.id, &old.id);
            share(&mut p.binding_host_id, &old.binding_host_id);
        }
    }

    pub(crate) fn index_subnet(&mut self, s: &Subnet) {
        self.members.add_subnet(&s.network_id, &s.id);
    }

    pub(crate) fn unindex_subnet(&mut self, id: &str) {
        if let Some(s) = self.subnets.get(id) {
            self.members.remove_subnet(&s.network_id, &s.id);
        }
    }

    pub(crate) fn index_port(&mut self, p: &Port) {
        if p.is_dhcp() && !p.binding_host_id.is_empty() {
            *self.dhcp_load.entry(p.binding_host_id.clone()).or_default() += 1;
        }
        self.members.add_port(&p.network_id, &p.id);
        self.macs
            .insert((p.network_id.clone(), p.mac_address), p.id.clone());
        for f in &p.fixed_ips {
            self.ips
                .insert(f.subnet_id.clone(), f.ip_address, p.id.clone());
            // the first free address taken: the next is past it and whatever is used after it
            let Some(bits) = v4_bits(f.ip_address) else {
                continue;
            };
            if self.first_candidate(&f.subnet_id) == Some(bits) {
                let mut next = bits.saturating_add(1);
                while self
                    .ips
                    .contains(&f.subnet_id, IpAddr::V4(Ipv4Addr::from(next)))
                {
                    next = next.saturating_add(1);
                }
                self.free_from.set(&f.subnet_id, next);
            }
        }
    }

    /// Where the search for a free address in the subnet starts: its hint moved into the
    /// pools (`None` for pools out of order, which are searched in full).
    pub(crate) fn first_candidate(&self, subnet_id: &str) -> Option<u32> {
        let s = self.subnets.get(subnet_id)?;
        let pools: Vec<(u32, u32)> = s
            .allocation_pools
            .iter()
            .map(Pool::v4_range)
            .collect::<Option<_>>()?;
        if !pools.windows(2).all(|w| w[0].1 < w[1].0) {
            return None;
        }
        let from = self.free_from.get(subnet_id).unwrap_or(0);
        pools.iter().find(|p| p.1 >= from).map(|p| from.max(p.0))
    }

    pub(crate) fn unindex_port(&mut self, p: &Port) {
        if p.is_dhcp() && !p.binding_host_id.is_empty() {
            if let Some(n) = self.dhcp_load.get_mut(&p.binding_host_id) {
                *n = n.saturating_sub(1);
            }
        }
        self.members.remove_port(&p.network_id, &p.id);
        // only what this port holds: another port may have the address or MAC by now
        let key = (p.network_id.clone(), p.mac_address);
        if self.macs.get(&key) == Some(&p.id) {
            self.macs.remove(&key);
        }
        for f in &p.fixed_ips {
            if self.ips.port_at(&f.subnet_id, f.ip_address) == Some(&p.id) {
                self.ips.remove(&f.subnet_id, f.ip_address);
            }
            if let Some(bits) = v4_bits(f.ip_address) {
                self.free_from.lower(&f.subnet_id, bits);
            }
        }
    }

    /// All networks.
    pub fn networks(&self) -> impl Iterator<Item = &Network> {
        self.networks.values().map(|b| &**b)
    }
    /// All subnets.
    pub fn subnets(&self) -> impl Iterator<Item = &Subnet> {
        self.subnets.values().map(|b| &**b)
    }
    /// All ports.
    pub fn ports(&self) -> impl Iterator<Item = &Port> {
        self.ports.values().map(|b| &**b)
    }
    /// One network.
    pub fn network(&self, id: &str) -> Option<&Network> {
        self.networks.get(id).map(|b| &**b)
    }
    /// One subnet.
    pub fn subnet(&self, id: &str) -> Option<&Subnet> {
        self.subnets.get(id).map(|b| &**b)
    }
    /// One port.
    pub fn port(&self, id: &str) -> Option<&Port> {
        self.ports.get(id).map(|b| &**b)
    }
    /// Subnets of a network, in id order.
    pub fn subnets_of<'a>(&'a self, net: &'a str) -> impl Iterator<Item = &'a Subnet> + 'a {
        self.networks
            .get_key_value(net)
            .into_iter()
            .flat_map(|(net, _)| self.members.subnets_of(net))
            .filter_map(|id| self.subnets.get(id).map(|b| &**b))
    }
    /// Ports of a network.
    pub fn ports_of<'a>(&'a self, net: &'a str) -> impl Iterator<Item = &'a Port> + 'a {
        self.networks
            .get_key_value(net)
            .into_iter()
            .flat_map(|(net, _)| self.members.ports_of(net))
            .filter_map(|id| self.ports.get(id).map(|b| &**b))
    }
    /// The DHCP ports of a network (one per node serving it), in id order.
    pub fn dhcp_ports<'a>(&'a self, net: &'a str) -> impl Iterator<Item = &'a Port> + 'a {
        self.ports_of(net).filter(|p| p.is_dhcp())
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

    /// The network a new subnet or port names: required, and it must exist.
    pub(crate) fn existing_network(&self, id: Option<&str>) -> Result<NetworkId, RegistryError> {
        let id = id.ok_or_else(|| invalid("network_id", "it is required"))?;
        match self.networks.get_key_value(id) {
            Some((k, _)) => Ok(k.clone()),
            None => Err(RegistryError::NetworkNotFound(id.into())),
        }
    }

    pub(crate) fn project_for(
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

    /// Addresses in use in a subnet (for pool utilisation).
    pub fn used_in(&self, subnet_id: &str) -> usize {
        self.subnets
            .get_key_value(subnet_id)
            .map_or(0, |(s, _)| self.ips.of(s).count())
    }
}
