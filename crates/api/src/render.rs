//! Objects as Neutron renders them: the attribute names and defaults real OpenStack clients
//! read (`tenant_id` beside `project_id`, `provider:*`, `revision_number`, timestamps, …).

use qdhcp_registry::{Network, Port, Registry, Subnet};
use serde_json::{json, Value};

/// A network in Neutron's shape.
pub fn network(reg: &Registry, n: &Network) -> Value {
    let subnets: Vec<&str> = reg.subnets_of(&n.id).map(|s| s.id.as_str()).collect();
    json!({
        "id": n.id,
        "name": n.name,
        "tenant_id": n.project_id,
        "project_id": n.project_id,
        "admin_state_up": n.admin_state_up,
        "mtu": n.mtu,
        "status": if n.admin_state_up { "ACTIVE" } else { "DOWN" },
        "subnets": subnets,
        "shared": n.shared,
        "router:external": false,
        "provider:network_type": n.network_type,
        "provider:physical_network": n.physical_network,
        "provider:segmentation_id": n.segmentation_id,
        "availability_zone_hints": [],
        "availability_zones": ["nova"],
        "ipv4_address_scope": null,
        "ipv6_address_scope": null,
        "port_security_enabled": true,
        "l2_adjacency": true,
        "is_default": false,
        "qos_policy_id": null,
        "dns_domain": n.dns_domain,
        "description": n.description,
        "tags": [],
        "created_at": n.created_at,
        "updated_at": n.updated_at,
        "revision_number": n.revision_number,
    })
}

/// A subnet in Neutron's shape.
pub fn subnet(_reg: &Registry, s: &Subnet) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "network_id": s.network_id,
        "tenant_id": s.project_id,
        "project_id": s.project_id,
        "ip_version": s.ip_version(),
        "cidr": s.cidr.to_string(),
        "gateway_ip": s.gateway_ip.map(|g| g.to_string()),
        "allocation_pools": s.allocation_pools.iter().map(|p| json!({"start": p.start.to_string(), "end": p.end.to_string()})).collect::<Vec<_>>(),
        "dns_nameservers": s.dns_nameservers.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        "host_routes": s.host_routes.iter().map(|r| json!({"destination": r.destination.to_string(), "nexthop": r.nexthop.to_string()})).collect::<Vec<_>>(),
        "enable_dhcp": s.enable_dhcp,
        "ipv6_ra_mode": s.ipv6_ra_mode.map(|m| m.as_str()),
        "ipv6_address_mode": s.ipv6_address_mode.map(|m| m.as_str()),
        "subnetpool_id": null,
        "service_types": [],
        "segment_id": null,
        "dns_publish_fixed_ip": false,
        "description": s.description,
        "tags": [],
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "revision_number": s.revision_number,
    })
}

/// The domain a port's `dns_assignment` names are under (Neutron's `dns_domain` option), as
/// `ApiState` keeps it: with its trailing dot, or empty for none.
pub fn dns_domain_of(domain: &str) -> String {
    let d = domain.trim().trim_end_matches('.');
    if d.is_empty() {
        String::new()
    } else {
        format!("{d}.")
    }
}

/// A port's `dns_assignment` as Neutron's dns-integration computes it: per address, the host
/// name (its `dns_name`, or `host-<ip with dashes>`) and the FQDN under the server's domain (a
/// `dns_name` ending in a dot is already one).
fn dns_assignment(p: &Port, domain: &str) -> Vec<Value> {
    p.fixed_ips
        .iter()
        .map(|f| {
            let ip = f.ip_address.to_string();
            let (hostname, fqdn) = if p.dns_name.is_empty() {
                let h = qdhcp_registry::dhcp::host_name_of(f.ip_address);
                let fqdn = if domain.is_empty() {
                    h.clone()
                } else {
                    format!("{h}.{domain}")
                };
                (h, fqdn)
            } else if p.dns_name.ends_with('.') {
                (p.dns_name.clone(), p.dns_name.clone())
            } else {
                (p.dns_name.clone(), format!("{}.{domain}", p.dns_name))
            };
            json!({"hostname": hostname, "ip_address": ip, "fqdn": fqdn})
        })
        .collect()
}

/// A port in Neutron's shape; `domain` as [`dns_domain_of`] makes it.
pub fn port(_reg: &Registry, p: &Port, domain: &str) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        "network_id": p.network_id,
        "tenant_id": p.project_id,
        "project_id": p.project_id,
        "mac_address": p.mac_address.to_string(),
        "admin_state_up": p.admin_state_up,
        "status": p.status,
        "device_id": p.device_id,
        "device_owner": p.device_owner,
        "fixed_ips": p.fixed_ips.iter().map(|f| json!({"subnet_id": f.subnet_id, "ip_address": f.ip_address.to_string()})).collect::<Vec<_>>(),
        "allowed_address_pairs": [],
        "extra_dhcp_opts": p.extra_dhcp_opts.iter().map(|o| json!({"opt_name": o.opt_name, "opt_value": o.opt_value, "ip_version": o.ip_version})).collect::<Vec<_>>(),
        "security_groups": [],
        "port_security_enabled": true,
        "binding:vnic_type": "normal",
        "binding:host_id": p.binding_host_id,
        "binding:vif_type": if p.binding_host_id.is_empty() { "unbound" } else { "other" },
        "binding:vif_details": {},
        "binding:profile": {},
        "dns_name": p.dns_name,
        "dns_assignment": dns_assignment(p, domain),
        "qos_policy_id": null,
        "description": p.description,
        "tags": [],
        "created_at": p.created_at,
        "updated_at": p.updated_at,
        "revision_number": p.revision_number,
    })
}
