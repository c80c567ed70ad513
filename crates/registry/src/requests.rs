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
    pub name: Option<String>,
    pub admin_state_up: Option<bool>,
    #[serde(default, deserialize_with = "num_or_str")]
    pub mtu: Option<u32>,
    pub shared: Option<bool>,
    #[serde(rename = "provider:network_type")]
    pub network_type: Option<String>,
    #[serde(
        rename = "provider:physical_network",
        default,
        deserialize_with = "nullable"
    )]
    pub physical_network: Option<Option<String>>,
    #[serde(
        rename = "provider:segmentation_id",
        default,
        deserialize_with = "nullable_num"
    )]
    pub segmentation_id: Option<Option<u32>>,
    pub description: Option<String>,
    pub project_id: Option<String>,
    pub tenant_id: Option<String>,
}

/// One allocation pool as sent.
#[derive(Debug, Clone, Deserialize)]
pub struct PoolReq {
    pub start: String,
    pub end: String,
}

/// One host route as sent.
#[derive(Debug, Clone, Deserialize)]
pub struct RouteReq {
    pub destination: String,
    pub nexthop: String,
}

/// Body of `POST/PUT /v2.0/subnets`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SubnetReq {
    pub name: Option<String>,
    pub network_id: Option<String>,
    pub cidr: Option<String>,
    pub ip_version: Option<u8>,
    #[serde(default, deserialize_with = "nullable")]
    pub gateway_ip: Option<Option<String>>,
    pub allocation_pools: Option<Vec<PoolReq>>,
    pub dns_nameservers: Option<Vec<String>>,
    pub host_routes: Option<Vec<RouteReq>>,
    pub enable_dhcp: Option<bool>,
    pub description: Option<String>,
    pub project_id: Option<String>,
    pub tenant_id: Option<String>,
}

/// One fixed IP as sent: a subnet, an address, or both.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FixedIpReq {
    pub subnet_id: Option<String>,
    pub ip_address: Option<String>,
}

/// One extra DHCP option as sent.
#[derive(Debug, Clone, Deserialize)]
pub struct ExtraDhcpOptReq {
    pub opt_name: String,
    #[serde(default)]
    pub opt_value: Option<String>,
    #[serde(default)]
    pub ip_version: Option<serde_json::Value>,
}

/// Body of `POST/PUT /v2.0/ports`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PortReq {
    pub name: Option<String>,
    pub network_id: Option<String>,
    pub mac_address: Option<String>,
    pub fixed_ips: Option<Vec<FixedIpReq>>,
    pub admin_state_up: Option<bool>,
    pub device_id: Option<String>,
    pub device_owner: Option<String>,
    pub extra_dhcp_opts: Option<Vec<ExtraDhcpOptReq>>,
    pub dns_name: Option<String>,
    pub description: Option<String>,
    pub project_id: Option<String>,
    pub tenant_id: Option<String>,
}
