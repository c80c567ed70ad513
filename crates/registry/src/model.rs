//! The objects of the Networking API v2.0 that matter to DHCP, as validated values.

use std::net::IpAddr;

pub use arcstr::ArcStr;

use ipnet::IpNet;
use qdhcp_protocol::Mac;
use serde::{Deserialize, Serialize};

pub use crate::ids::{NetworkId, NodeName, PortId, ProjectId, SubnetId};

/// A timestamp as the API shows it (ISO 8601): shared, since `created_at` and `updated_at` are
/// mostly the same text.
pub type Stamp = ArcStr;

/// A layer-2 network (Neutron `network`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// UUID.
    pub id: NetworkId,
    /// Display name (not unique).
    pub name: String,
    /// Owning project.
    pub project_id: ProjectId,
    /// Administrative state.
    pub admin_state_up: bool,
    /// MTU handed to instances (DHCP option 26).
    pub mtu: u32,
    /// Visible to every project.
    pub shared: bool,
    /// `provider:network_type`.
    pub network_type: NetworkType,
    /// `provider:physical_network`, mapped to a bridge by `bridge_mappings`.
    pub physical_network: Option<String>,
    /// `provider:segmentation_id`.
    pub segmentation_id: Option<u32>,
    /// Free text.
    pub description: String,
    /// `dns_domain` (Neutron's dns-integration): its ports' names are answered under it too;
    /// empty: none. Stored objects from before it existed load with none.
    #[serde(default)]
    pub dns_domain: String,
    /// Creation time (ISO 8601).
    pub created_at: Stamp,
    /// Last change (ISO 8601).
    pub updated_at: Stamp,
    /// Bumped on every change.
    pub revision_number: u64,
}

/// A range of addresses IPAM may hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// First address.
    pub start: IpAddr,
    /// Last address (inclusive).
    pub end: IpAddr,
}

impl Pool {
    /// True when `ip` is inside the pool.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.start <= ip && ip <= self.end
    }

    /// The pool as IPv4 numbers (IPAM's hints and node shares count in them); `None` for an
    /// IPv6 pool.
    pub fn v4_range(&self) -> Option<(u32, u32)> {
        match (self.start, self.end) {
            (IpAddr::V4(a), IpAddr::V4(b)) => Some((u32::from(a), u32::from(b))),
            _ => None,
        }
    }
}

/// A static route pushed to instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRoute {
    /// Destination prefix.
    pub destination: IpNet,
    /// Next hop.
    pub nexthop: IpAddr,
}

/// How an IPv6 subnet's hosts get their addresses and options (Neutron's
/// `ipv6_address_mode`, and `ipv6_ra_mode` for what the router advertises).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Ipv6Mode {
    /// Addresses from router advertisements (EUI-64), no DHCPv6.
    #[serde(rename = "slaac")]
    Slaac,
    /// Addresses and options from DHCPv6.
    #[serde(rename = "dhcpv6-stateful")]
    Stateful,
    /// Addresses from router advertisements (EUI-64), options from DHCPv6.
    #[serde(rename = "dhcpv6-stateless")]
    Stateless,
}

impl Ipv6Mode {
    /// The name Neutron's API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Ipv6Mode::Slaac => "slaac",
            Ipv6Mode::Stateful => "dhcpv6-stateful",
            Ipv6Mode::Stateless => "dhcpv6-stateless",
        }
    }
}

impl std::str::FromStr for Ipv6Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "slaac" => Ok(Ipv6Mode::Slaac),
            "dhcpv6-stateful" => Ok(Ipv6Mode::Stateful),
            "dhcpv6-stateless" => Ok(Ipv6Mode::Stateless),
            other => Err(format!(
                "'{other}' is not in ['dhcpv6-stateful', 'dhcpv6-stateless', 'slaac']"
            )),
        }
    }
}

/// A subnet of a network (Neutron `subnet`), IPv4 or IPv6.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subnet {
    /// UUID.
    pub id: SubnetId,
    /// Display name.
    pub name: String,
    /// The network it belongs to.
    pub network_id: NetworkId,
    /// Owning project.
    pub project_id: ProjectId,
    /// The prefix.
    pub cidr: IpNet,
    /// Default router; `None` = no gateway.
    pub gateway_ip: Option<IpAddr>,
    /// Where IPAM allocates from.
    pub allocation_pools: Vec<Pool>,
    /// DNS servers for instances.
    pub dns_nameservers: Vec<IpAddr>,
    /// Extra routes for instances.
    pub host_routes: Vec<HostRoute>,
    /// Whether DHCP serves this subnet.
    pub enable_dhcp: bool,
    /// `ipv6_address_mode` (IPv6 only); stored objects from before IPv6 load with none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_address_mode: Option<Ipv6Mode>,
    /// `ipv6_ra_mode` (IPv6 only): kept and shown, since the router, not qdhcp, advertises.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_ra_mode: Option<Ipv6Mode>,
    /// Free text.
    pub description: String,
    /// Creation time.
    pub created_at: Stamp,
    /// Last change.
    pub updated_at: Stamp,
    /// Bumped on every change.
    pub revision_number: u64,
}

impl Subnet {
    /// 4 or 6.
    pub fn ip_version(&self) -> u8 {
        match self.cidr {
            IpNet::V4(_) => 4,
            IpNet::V6(_) => 6,
        }
    }

    /// An IPv6 subnet whose hosts make their own addresses (EUI-64): `slaac` or
    /// `dhcpv6-stateless`, where IPAM may hand out no other address (Neutron's
    /// `is_auto_address_subnet`).
    pub fn is_auto_address(&self) -> bool {
        let auto = |m: Option<Ipv6Mode>| matches!(m, Some(Ipv6Mode::Slaac | Ipv6Mode::Stateless));
        auto(self.ipv6_address_mode) || auto(self.ipv6_ra_mode)
    }

    /// An IPv6 subnet DHCPv6 serves, as Neutron's dnsmasq driver gives it a range: DHCP on,
    /// and an address mode `dhcpv6-stateful` or `dhcpv6-stateless`, or neither mode set.
    pub fn serves_dhcp6(&self) -> bool {
        self.ip_version() == 6
            && self.enable_dhcp
            && match self.ipv6_address_mode {
                Some(m) => m != Ipv6Mode::Slaac,
                None => self.ipv6_ra_mode.is_none(),
            }
    }

    /// A served IPv6 subnet whose hosts take their addresses from DHCPv6 (as opposed to
    /// options only).
    pub fn is_stateful6(&self) -> bool {
        self.serves_dhcp6() && !self.is_auto_address()
    }
}

/// One address of a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedIp {
    /// Subnet the address is in.
    pub subnet_id: SubnetId,
    /// The address.
    pub ip_address: IpAddr,
}

/// A per-port DHCP option (Neutron `extra_dhcp_opts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraDhcpOpt {
    /// Option name (dnsmasq's) or number.
    pub opt_name: String,
    /// Option value as text.
    pub opt_value: String,
    /// 4 or 6.
    pub ip_version: u8,
}

/// A port (Neutron `port`): a MAC and its fixed IPs on a network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Port {
    /// UUID.
    pub id: PortId,
    /// Display name.
    pub name: String,
    /// The network it is on.
    pub network_id: NetworkId,
    /// Owning project.
    pub project_id: ProjectId,
    /// Hardware address, unique within the network.
    #[serde(with = "mac_serde")]
    pub mac_address: Mac,
    /// Allocated addresses.
    pub fixed_ips: Vec<FixedIp>,
    /// Administrative state.
    pub admin_state_up: bool,
    /// What uses the port (instance UUID, …).
    pub device_id: String,
    /// Kind of user (`compute:nova`, `network:dhcp`, …).
    pub device_owner: String,
    /// The host the port is bound to (`binding:host_id`): for a DHCP port, the node serving it.
    #[serde(default)]
    pub binding_host_id: NodeName,
    /// Per-port DHCP options.
    pub extra_dhcp_opts: Vec<ExtraDhcpOpt>,
    /// Host name for DHCP option 12; empty = `host-<ip>`.
    pub dns_name: String,
    /// Free text.
    pub description: String,
    /// `ACTIVE` or `DOWN`.
    pub status: PortStatus,
    /// Creation time.
    pub created_at: Stamp,
    /// Last change.
    pub updated_at: Stamp,
    /// Bumped on every change.
    pub revision_number: u64,
}

/// The `device_owner` of the DHCP server's own port.
pub const DHCP_OWNER: &str = "network:dhcp";

/// The kinds of `device_owner` the code branches on; the text itself is free (Neutron keeps
/// whatever a caller sets) and is stored and shown as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerKind {
    /// `network:dhcp`: a DHCP server's own port.
    Dhcp,
    /// A router's port (`network:router_interface`, `…_gateway`, `…_distributed`, HA
    /// replicas): it may hold the subnet's gateway address.
    Router,
    /// Anything else (`compute:nova`, `baremetal:none`, empty…).
    Other,
}

impl OwnerKind {
    /// The kind of a `device_owner` text.
    pub fn of(owner: &str) -> OwnerKind {
        match owner {
            DHCP_OWNER => OwnerKind::Dhcp,
            o if o.starts_with("network:router")
                || o == "network:ha_router_replicated_interface" =>
            {
                OwnerKind::Router
            }
            _ => OwnerKind::Other,
        }
    }
}

impl Port {
    /// What kind of owner the port has.
    pub fn owner_kind(&self) -> OwnerKind {
        OwnerKind::of(&self.device_owner)
    }

    /// Whether this is a DHCP server's own port (Neutron's `network:dhcp`), which the
    /// scheduler manages and DHCP does not serve a reservation for.
    pub fn is_dhcp(&self) -> bool {
        self.owner_kind() == OwnerKind::Dhcp
    }
}

/// `provider:network_type`: the kinds of segment this server plumbs (ML2's type drivers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkType {
    /// An untagged physical network (or no segment at all without a physical network).
    Flat,
    /// No segment: the network stays on this host.
    Local,
    /// A VLAN of a physical network.
    Vlan,
    /// A VXLAN segment over the tunnel interface.
    Vxlan,
}

impl NetworkType {
    /// The name Neutron's API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkType::Flat => "flat",
            NetworkType::Local => "local",
            NetworkType::Vlan => "vlan",
            NetworkType::Vxlan => "vxlan",
        }
    }
}

impl std::fmt::Display for NetworkType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for NetworkType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "flat" => Ok(NetworkType::Flat),
            "local" => Ok(NetworkType::Local),
            "vlan" => Ok(NetworkType::Vlan),
            "vxlan" => Ok(NetworkType::Vxlan),
            other => Err(format!(
                "network type {other} is not supported (flat, local, vlan, vxlan)"
            )),
        }
    }
}

/// A port's `status`, as Neutron shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PortStatus {
    /// In use (a DHCP port once scheduled).
    Active,
    /// Not bound to anything that brings it up.
    Down,
}

mod mac_serde {
    use qdhcp_protocol::Mac;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &Mac, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&m.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
