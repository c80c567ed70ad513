//! The built-in answers, in the formats of Nova's metadata API (`nova/api/metadata/base.py`,
//! network data as `nova/virt/netutils.py` builds it from Neutron's ports and subnets), made
//! from the registry as it is at the request. What is served and what is not:
//! docs/METADATA.md.

use qdhcp_registry::{Port, Registry};
use serde_json::{json, Map, Value};

use crate::response::Response;

/// Nova's dated OpenStack metadata versions up to Rocky; `latest` is served as the newest.
pub const OPENSTACK_VERSIONS: [&str; 8] = [
    "2012-08-10",
    "2013-04-04",
    "2013-10-17",
    "2015-10-15",
    "2016-06-30",
    "2016-10-06",
    "2017-02-22",
    "2018-08-27",
];

/// The EC2-compatible versions Nova lists at `/`.
pub const EC2_VERSIONS: [&str; 9] = [
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
];

/// The EC2 `meta-data/` keys served.
const EC2_KEYS: [&str; 7] = [
    "ami-launch-index",
    "hostname",
    "instance-id",
    "local-hostname",
    "local-ipv4",
    "mac",
    "placement/",
];

/// Nova's default availability zone, the one a VM booted without one is in.
pub const AVAILABILITY_ZONE: &str = "nova";

/// The instance as the built-in answers see it: the port the request came from, and the
/// registry it is in.
pub struct Instance<'a> {
    /// The registry at the request.
    pub reg: &'a Registry,
    /// The VM's port on the network asked.
    pub port: &'a Port,
    /// The DHCP domain (`dhcp_domain`), appended to the host name when set.
    pub domain: Option<&'a str>,
}

impl Instance<'_> {
    /// The short name: the port's `dns_name`, else `host-<ip-dashed>` as DHCP and DNS name it.
    pub fn name(&self) -> String {
        if !self.port.dns_name.is_empty() {
            return self.port.dns_name.clone();
        }
        let first = self.port.fixed_ips.iter().find(|f| f.ip_address.is_ipv4());
        match first.or(self.port.fixed_ips.first()) {
            Some(f) => qdhcp_registry::dhcp::host_name_of(f.ip_address),
            None => format!(
                "host-{}",
                &self.port.id.as_str()[..8.min(self.port.id.len())]
            ),
        }
    }

    /// The name with the domain, as the VM's DHCP lease gives it.
    pub fn hostname(&self) -> String {
        match self
            .domain
            .map(|d| d.trim_end_matches('.'))
            .filter(|d| !d.is_empty())
        {
            Some(d) => format!("{}.{d}", self.name()),
            None => self.name(),
        }
    }

    fn meta_data(&self, version: &str) -> Value {
        let mut m = Map::new();
        m.insert("uuid".into(), json!(self.port.device_id));
        m.insert("meta".into(), json!({}));
        m.insert("hostname".into(), json!(self.hostname()));
        m.insert("name".into(), json!(self.name()));
        m.insert("launch_index".into(), json!(0));
        m.insert("availability_zone".into(), json!(AVAILABILITY_ZONE));
        m.insert("project_id".into(), json!(self.port.project_id.as_str()));
        if version >= "2016-06-30" {
            m.insert("devices".into(), json!([]));
        }
        Value::Object(m)
    }

    /// Every port of the instance (its device_id), in the order they were made: Nova lists
    /// each of the instance's interfaces.
    fn ports(&self) -> Vec<&Port> {
        let mut ports: Vec<&Port> = self
            .reg
            .ports()
            .filter(|p| p.device_id == self.port.device_id)
            .collect();
        ports.sort_by(|a, b| (&a.created_at, a.id.as_str()).cmp(&(&b.created_at, b.id.as_str())));
        ports
    }

    /// `network_data.json` as Nova builds it: a link per port, a network per address (DHCP
    /// subnets as `ipv4_dhcp`, others static with netmask, default and host routes, DNS), the
    /// DNS servers of them all as services.
    pub fn network_data(&self) -> Value {
        let mut links = Vec::new();
        let mut networks = Vec::new();
        let mut services: Vec<Value> = Vec::new();
        for port in self.ports() {
            let link_id = format!("tap{}", &port.id.as_str()[..11.min(port.id.len())]);
            let mtu = self.reg.network(&port.network_id).map(|n| n.mtu);
            links.push(json!({
                "id": link_id,
                "vif_id": port.id.as_str(),
                "type": "bridge",
                "mtu": mtu,
                "ethernet_mac_address": port.mac_address.to_string(),
            }));
            for f in &port.fixed_ips {
                let Some(subnet) = self.reg.subnet(&f.subnet_id) else {
                    continue;
                };
                let id = format!("network{}", networks.len());
                let dns: Vec<Value> = subnet
                    .dns_nameservers
                    .iter()
                    .map(|a| json!({"type": "dns", "address": a.to_string()}))
                    .collect();
                for s in &dns {
                    if !services.contains(s) {
                        services.push(s.clone());
                    }
                }
                let version = subnet.ip_version();
                if subnet.enable_dhcp && version == 4 {
                    networks.push(json!({
                        "id": id,
                        "type": "ipv4_dhcp",
                        "link": link_id,
                        "network_id": port.network_id.as_str(),
                    }));
                    continue;
                }
                let mut routes = Vec::new();
                if let Some(gw) = subnet.gateway_ip {
                    let any = if version == 4 { "0.0.0.0" } else { "::" };
                    routes.push(json!({
                        "network": any,
                        "netmask": any,
                        "gateway": gw.to_string(),
                    }));
                }
                for r in &subnet.host_routes {
                    routes.push(json!({
                        "network": r.destination.network().to_string(),
                        "netmask": r.destination.netmask().to_string(),
                        "gateway": r.nexthop.to_string(),
                    }));
                }
                // IPv6 as Nova types it: by the subnet's address mode
                let kind = match (version, subnet.ipv6_address_mode) {
                    (4, _) => "ipv4".to_string(),
                    (_, Some(m)) => format!("ipv6_{}", m.as_str()),
                    (_, None) => "ipv6".to_string(),
                };
                networks.push(json!({
                    "id": id,
                    "type": kind,
                    "link": link_id,
                    "ip_address": f.ip_address.to_string(),
                    "netmask": subnet.cidr.netmask().to_string(),
                    "routes": routes,
                    "network_id": port.network_id.as_str(),
                    "services": dns,
                }));
            }
        }
        json!({"links": links, "networks": networks, "services": services})
    }

    fn ec2_value(&self, key: &str) -> Option<String> {
        Some(match key {
            "ami-launch-index" => "0".into(),
            "hostname" | "local-hostname" => self.hostname(),
            "instance-id" => self.port.device_id.clone(),
            "local-ipv4" => self
                .port
                .fixed_ips
                .iter()
                .find(|f| f.ip_address.is_ipv4())?
                .ip_address
                .to_string(),
            "mac" => self.port.mac_address.to_string(),
            _ => return None,
        })
    }
}

/// The files of an OpenStack version's directory, as Nova lists them (no user data is held,
/// so `user_data` is neither listed nor served).
fn version_files(version: &str) -> Vec<&'static str> {
    let mut files = vec!["meta_data.json"];
    if version >= "2013-04-04" {
        files.push("password");
    }
    if version >= "2013-10-17" {
        files.push("vendor_data.json");
    }
    if version >= "2015-10-15" {
        files.push("network_data.json");
    }
    if version >= "2016-10-06" {
        files.push("vendor_data2.json");
    }
    files
}

/// The dated version `latest` stands for, or `v` itself if it is one Nova lists.
fn openstack_version(v: &str) -> Option<&'static str> {
    if v == "latest" {
        return OPENSTACK_VERSIONS.last().copied();
    }
    OPENSTACK_VERSIONS.iter().find(|d| **d == v).copied()
}

fn listing<S: AsRef<str>>(items: &[S]) -> Response {
    let lines: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    Response::text(200, lines.join("\n"))
}

/// The built-in answer for `path` (a GET or HEAD).
pub fn answer(inst: &Instance, path: &str) -> Response {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        [] => {
            let mut v: Vec<&str> = EC2_VERSIONS.to_vec();
            v.push("latest");
            listing(&v)
        }
        ["openstack"] => {
            let mut v: Vec<&str> = OPENSTACK_VERSIONS.to_vec();
            v.push("latest");
            listing(&v)
        }
        ["openstack", v] => match openstack_version(v) {
            Some(d) => listing(&version_files(d)),
            None => Response::error(404),
        },
        ["openstack", v, file] => {
            let Some(d) = openstack_version(v) else {
                return Response::error(404);
            };
            if !version_files(d).contains(file) {
                return Response::error(404);
            }
            match *file {
                "meta_data.json" => Response::json(&inst.meta_data(d)),
                "network_data.json" => Response::json(&inst.network_data()),
                "vendor_data.json" | "vendor_data2.json" => Response::json(&json!({})),
                // Nova answers an empty body while no password was set
                "password" => Response::text(200, ""),
                _ => Response::error(404),
            }
        }
        [v, rest @ ..] if *v == "latest" || EC2_VERSIONS.contains(v) => match rest {
            [] => listing(&["meta-data/"]),
            ["meta-data"] => listing(&EC2_KEYS),
            ["meta-data", "placement"] => listing(&["availability-zone"]),
            ["meta-data", "placement", "availability-zone"] => {
                Response::text(200, AVAILABILITY_ZONE)
            }
            ["meta-data", key] => match inst.ec2_value(key) {
                Some(v) => Response::text(200, v),
                None => Response::error(404),
            },
            _ => Response::error(404),
        },
        _ => Response::error(404),
    }
}
