//! What DHCPv6 serves for a network, derived from the registry as Neutron's DHCP agent writes
//! dnsmasq's files for a dual-stack network: a range per `dhcpv6-stateful` or
//! `dhcpv6-stateless` subnet (options 23 and 24 per subnet), and one host per port keyed by
//! MAC with its stateful addresses and its `ip_version: 6` extra options. Pure functions.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;
use qdhcp_protocol::v6::{Host6, Options6, Subnet6, Table6};

use crate::dhcp::{host_name_of, DhcpSettings};
use crate::model::Port;
use crate::registry::Registry;

/// The DNS servers option (23) and the domain search list (24).
const DNS_SERVERS: u16 = 23;

/// A network's DHCPv6 table: empty (`is_empty`) when no subnet of it is served by DHCPv6.
pub fn table6_for(reg: &Registry, net_id: &str, cfg: &DhcpSettings) -> Table6 {
    let subnets = subnets6_for(reg, net_id, cfg);
    let hosts: Vec<Host6> = if subnets.is_empty() {
        Vec::new()
    } else {
        reg.ports_of(net_id)
            .filter_map(|p| host6_for(reg, p))
            .collect()
    };
    let mut t = Table6::new(subnets, hosts);
    t.set_domain(cfg.domain.as_deref());
    // option 23 is set per subnet above (the DHCP ports' global addresses, not ours on the
    // link, which may be link-local)
    t.default_dns_self = false;
    t
}

/// The served IPv6 subnets with their options: option 23 from `dns_nameservers` (`::` alone:
/// announce none, as Neutron writes it), else, when the DHCP ports answer DNS, their addresses
/// in the subnet (this node's first).
fn subnets6_for(reg: &Registry, net_id: &str, cfg: &DhcpSettings) -> Vec<Subnet6> {
    let mine = reg.dhcp_port_for(net_id, &cfg.node);
    let mut out = Vec::new();
    for s in reg.subnets_of(net_id).filter(|s| s.serves_dhcp6()) {
        let IpNet::V6(net) = s.cidr else {
            continue;
        };
        let ip_in = |p: &Port| {
            p.fixed_ips
                .iter()
                .filter(|f| f.subnet_id == s.id)
                .find_map(|f| v6(f.ip_address))
        };
        let mut options = Options6::default();
        let announce_none = [IpAddr::V6(Ipv6Addr::UNSPECIFIED)];
        let servers: Vec<String> = if s.dns_nameservers == announce_none {
            Vec::new()
        } else if !s.dns_nameservers.is_empty() {
            s.dns_nameservers.iter().map(|d| format!("[{d}]")).collect()
        } else {
            let mut own: Vec<Ipv6Addr> = mine.and_then(ip_in).into_iter().collect();
            for ip in reg.dhcp_ports(net_id).filter_map(ip_in) {
                if !own.contains(&ip) {
                    own.push(ip);
                }
            }
            own.iter().map(|d| format!("[{d}]")).collect()
        };
        let configured = s.dns_nameservers == announce_none
            || !s.dns_nameservers.is_empty()
            || (cfg.dns_self && !servers.is_empty());
        if configured {
            let _ = options.set_text(DNS_SERVERS, &servers.join(","));
        }
        out.push(Subnet6 {
            net,
            lease_secs: cfg.lease_secs.unwrap_or(u32::MAX),
            options,
        });
    }
    out
}

/// The host DHCPv6 serves for a port with an address on a served IPv6 subnet: its addresses on
/// the stateful ones (none on a stateless subnet: options only), its name, its
/// `ip_version: 6` options. DHCP ports are the server, not a host.
pub fn host6_for(reg: &Registry, p: &Port) -> Option<Host6> {
    if p.is_dhcp() {
        return None;
    }
    let mut served = false;
    let mut addrs = Vec::new();
    for f in &p.fixed_ips {
        let Some(s) = reg.subnet(&f.subnet_id).filter(|s| s.serves_dhcp6()) else {
            continue;
        };
        served = true;
        if let (true, Some(a)) = (s.is_stateful6(), v6(f.ip_address)) {
            addrs.push(a);
        }
    }
    if !served {
        return None;
    }
    let hostname = match (p.dns_name.is_empty(), addrs.first()) {
        (false, _) => Some(p.dns_name.clone()),
        (true, Some(a)) => Some(host_name_of(IpAddr::V6(*a))),
        (true, None) => None,
    };
    let mut options = Options6::default();
    for o in p.extra_dhcp_opts.iter().filter(|o| o.ip_version == 6) {
        if let Ok(code) = qdhcp_protocol::v6::options::code_for(option6_name(&o.opt_name)) {
            let _ = options.set_text(code, &o.opt_value);
        }
    }
    Some(Host6 {
        mac: p.mac_address,
        addrs,
        hostname,
        options,
    })
}

/// An `extra_dhcp_opts` name for IPv6 as dnsmasq's opts file would take it: `bootfile-url`,
/// `option6:bootfile-url` or a number.
pub(crate) fn option6_name(name: &str) -> &str {
    name.strip_prefix("option6:").unwrap_or(name)
}

fn v6(ip: IpAddr) -> Option<Ipv6Addr> {
    match ip {
        IpAddr::V6(a) => Some(a),
        IpAddr::V4(_) => None,
    }
}
