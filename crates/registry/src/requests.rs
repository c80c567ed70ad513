//! Create and update bodies as clients send them: every field optional and still text, so
//! the registry can name the offending field when one is wrong.

use serde::{Deserialize, Deserializer};

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Some(Option::deserialize(d)?))
}

/// A number that clients may send as a JSON string (the OpenStack CLI sends `"1450"`).
fn num_or_str<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .map(Some)
            .ok_or_else(|| {
                serde::de::Error::custom(format!("'{n}' is not a non-negative integer"))
            }),
        Some(serde_json::Value::String(s)) => s
            .trim()
            .parse::<u32>()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("'{s}' is not an integer"))),
        Some(other) => Err(serde::de::Error::custom(format!(
            "'{other}' is not an integer"
        ))),
    }
}

fn nullable_num<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u32>>, D::Error> {
    Ok(Some(num_or_str(d)?))
}

/// Body of `POST/PUT /v2.0/networks`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetworkReq {
    /// `dns_domain` (dns-integration); empty clears.
    pub dns_domain: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Administrative state.
    pub admin_state_up: Option<bool>,
    /// MTU (a number or a numeric string).
    #[serde(default, deserialize_with = "num_or_str")]
    pub mtu: Option<u32>,
    /// Visible to all projects.
    pub shared: Option<bool>,
    /// `provider:network_type`.
    #[serde(rename = "provider:network_type")]
    pub network_type: Option<String>,
    #[serde(
        rename = "provider:physical_network",
        default,
        deserialize_with = "nullable"
    )]
    /// `provider:physical_network`; `null` clears.
    pub physical_network: Option<Option<String>>,
    #[serde(
        rename = "provider:segmentation_id",
        default,
        deserialize_with = "nullable_num"
    )]
    /// `provider:segmentation_id`; `null` clears.
    pub segmentation_id: Option<Option<u32>>,
    /// Free text.
    pub description: Option<String>,
    /// Owning project (admins may name another).
    pub project_id: Option<String>,
    /// Old name of `project_id`.
    pub tenant_id: Option<String>,
}

/// One allocation pool as sent.
#[derive(Debug, Clone, Deserialize)]
pub struct PoolReq {
    /// First address.
    pub start: String,
    /// Last address.
    pub end: String,
}

/// One host route as sent.
#[derive(Debug, Clone, Deserialize)]
pub struct RouteReq {
    /// Destination prefix.
    pub destination: String,
    /// Next hop.
    pub nexthop: String,
}

/// Body of `POST/PUT /v2.0/subnets`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SubnetReq {
    /// Display name.
    pub name: Option<String>,
    /// The network.
    pub network_id: Option<String>,
    /// The prefix.
    pub cidr: Option<String>,
    /// 4 or 6; absent: the CIDR's.
    pub ip_version: Option<u8>,
    /// `ipv6_address_mode` (`slaac`, `dhcpv6-stateful`, `dhcpv6-stateless`); `null`: none.
    #[serde(default, deserialize_with = "nullable")]
    pub ipv6_address_mode: Option<Option<String>>,
    /// `ipv6_ra_mode`, the same values.
    #[serde(default, deserialize_with = "nullable")]
    pub ipv6_ra_mode: Option<Option<String>>,
    /// Gateway; `null` for none.
    #[serde(default, deserialize_with = "nullable")]
    pub gateway_ip: Option<Option<String>>,
    /// Pools to allocate from.
    pub allocation_pools: Option<Vec<PoolReq>>,
    /// DNS servers for instances.
    pub dns_nameservers: Option<Vec<String>>,
    /// Extra routes.
    pub host_routes: Option<Vec<RouteReq>>,
    /// Serve the subnet with DHCP.
    pub enable_dhcp: Option<bool>,
    /// Free text.
    pub description: Option<String>,
    /// Owning project (admins may name another).
    pub project_id: Option<String>,
    /// Old name of `project_id`.
    pub tenant_id: Option<String>,
}

/// One fixed IP as sent: a subnet, an address, or both.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FixedIpReq {
    /// Subnet to allocate in.
    pub subnet_id: Option<String>,
    /// Address wanted.
    pub ip_address: Option<String>,
}

/// One extra DHCP option as sent.
#[derive(Debug, Clone, Deserialize)]
pub struct ExtraDhcpOptReq {
    /// Option name or number.
    pub opt_name: String,
    /// Option value; `null` removes.
    #[serde(default)]
    pub opt_value: Option<String>,
    /// Must be 4.
    #[serde(default)]
    pub ip_version: Option<serde_json::Value>,
}

/// Body of `POST/PUT /v2.0/ports`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PortReq {
    /// Display name.
    pub name: Option<String>,
    /// The network.
    pub network_id: Option<String>,
    /// MAC; generated when absent.
    pub mac_address: Option<String>,
    /// Addresses wanted.
    pub fixed_ips: Option<Vec<FixedIpReq>>,
    /// Administrative state.
    pub admin_state_up: Option<bool>,
    /// What uses the port.
    pub device_id: Option<String>,
    /// Kind of user.
    pub device_owner: Option<String>,
    /// Per-port DHCP options.
    pub extra_dhcp_opts: Option<Vec<ExtraDhcpOptReq>>,
    /// Host name for DHCP.
    pub dns_name: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Owning project (admins may name another).
    pub project_id: Option<String>,
    /// Old name of `project_id`.
    pub tenant_id: Option<String>,
    /// The host the port is bound to (admins only, as Neutron's policy says).
    #[serde(rename = "binding:host_id")]
    pub binding_host_id: Option<String>,
}
