//! What DHCP serves for a network, derived from the registry as Neutron's DHCP agent derives
//! dnsmasq's files: subnet options (router, DNS, classless routes with the metadata route via
//! the DHCP port, MTU, domain) and one reservation per port. Pure functions.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use qdhcp_protocol::{ClientMatch, Conditional, OptionSet, Reservation, Subnet as DhcpSubnet};

use crate::model::Port;
use crate::registry::Registry;

/// The IPv4 address, if it is one.
fn v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

/// Neutron's host name for an address without a `dns_name`: `host-10-0-0-3`,
/// `host-2001-db8-16--10`.
pub fn host_name_of(ip: IpAddr) -> String {
    format!("host-{}", ip.to_string().replace(['.', ':'], "-"))
}

/// DHCP settings that come from configuration, not from the API.
#[derive(Debug, Clone)]
pub struct DhcpSettings {
    /// Lease seconds (Neutron's `dhcp_lease_duration`, default 86400; `None` = infinite).
    pub lease_secs: Option<u32>,
    /// Domain sent as option 15 (Neutron's `dns_domain`, default `openstacklocal`).
    pub domain: Option<String>,
    /// Push the 169.254.169.254/32 route via the DHCP port (isolated metadata).
    pub metadata_route: bool,
    /// The DHCP port answers DNS: a subnet without `dns_nameservers` announces its address.
    pub dns_self: bool,
    /// The node serving, whose DHCP port is the server (empty: the network's unbound port).
    pub node: String,
}

impl Default for DhcpSettings {
    fn default() -> Self {
        DhcpSettings {
            lease_secs: Some(86400),
            domain: Some("openstacklocal".into()),
            metadata_route: true,
            dns_self: true,
            node: String::new(),
        }
    }
}

/// The DHCP-enabled subnets of a network with their options, and the network-wide options.
pub fn subnets_for(
    reg: &Registry,
    net_id: &str,
    cfg: &DhcpSettings,
) -> (Vec<DhcpSubnet>, OptionSet) {
    let mut global = OptionSet::default();
    if let Some(n) = reg.network(net_id) {
        let _ = global.set_text(26, &n.mtu.to_string(), true);
    }
    let dhcp_port = reg.dhcp_port_for(net_id, &cfg.node);
    let mut out = Vec::new();
    for s in reg.subnets_of(net_id).filter(|s| s.enable_dhcp) {
        let IpNet::V4(net) = s.cidr else {
            continue;
        };
        let mut o = OptionSet::default();
        let ip_in = |p: &Port| {
            p.fixed_ips
                .iter()
                .find(|f| f.subnet_id == s.id)
                .and_then(|f| v4(f.ip_address))
        };
        let server = dhcp_port.and_then(ip_in);
        // every DHCP port of the subnet answers DNS (one per serving node): this node's first
        let mut dns_ports: Vec<Ipv4Addr> = server.into_iter().collect();
        for ip in reg.dhcp_ports(net_id).filter_map(ip_in) {
            if !dns_ports.contains(&ip) {
                dns_ports.push(ip);
            }
        }
        // An empty router option suppresses the default (no gateway on this subnet).
        let _ = o.set_text(
            3,
            &s.gateway_ip.map(|g| g.to_string()).unwrap_or_default(),
            false,
        );
        // Option 6 as Neutron's agent writes it: the subnet's servers; `0.0.0.0` alone means
        // "announce none"; none given, the DHCP ports themselves when they answer DNS.
        let unspecified = [IpAddr::V4(Ipv4Addr::UNSPECIFIED)];
        if s.dns_nameservers == unspecified {
            let _ = o.set_text(6, "", false);
        } else if !s.dns_nameservers.is_empty() {
            let v: Vec<String> = s.dns_nameservers.iter().map(|d| d.to_string()).collect();
            let _ = o.set_text(6, &v.join(","), false);
        } else if cfg.dns_self && !dns_ports.is_empty() {
            let v: Vec<String> = dns_ports.iter().map(|d| d.to_string()).collect();
            let _ = o.set_text(6, &v.join(","), false);
        }
        let mut routes: Vec<String> = Vec::new();
        for r in &s.host_routes {
            routes.push(format!("{},{}", r.destination, r.nexthop));
        }
        if cfg.metadata_route {
            if let Some(ip) = server {
                if !s
                    .host_routes
                    .iter()
                    .any(|r| r.destination.to_string() == "169.254.169.254/32")
                {
                    routes.push(format!("169.254.169.254/32,{ip}"));
                }
            }
        }
        if let Some(g) = s.gateway_ip {
            // RFC 3442: a client given 121 ignores option 3, so the default route goes in too.
            routes.push(format!("0.0.0.0/0,{g}"));
        }
        if !routes.is_empty() {
            let v = routes.join(",");
            let _ = o.set_text(121, &v, false);
            let _ = o.set_text(249, &v, false);
        }
        out.push(DhcpSubnet {
            net,
            lease_secs: cfg.lease_secs,
            options: o,
        });
    }
    (out, global)
}

/// The names the network's DNS server answers, as Neutron's agent writes its addn_hosts file:
/// for each address of each port (the DHCP port's too), `(ip, fqdn, name)` with the name
/// `host-<ip with dashes>`, or the port's `dns_name`, under `domain`; with a network
/// `dns_domain` (dns-integration), the same names under it as well.
pub fn names_for(
    reg: &Registry,
    net_id: &str,
    domain: Option<&str>,
) -> Vec<(IpAddr, String, String)> {
    let net_domain = reg.network(net_id).map(|n| n.dns_domain.as_str());
    reg.ports_of(net_id)
        .flat_map(|p| port_names(p, net_domain, domain))
        .collect()
}

/// [`names_for`] of one port, so that a port change moves only its own names; `net_domain`
/// is its network's `dns_domain`.
pub fn port_names(
    p: &Port,
    net_domain: Option<&str>,
    domain: Option<&str>,
) -> Vec<(IpAddr, String, String)> {
    let also_under = net_domain
        .map(|nd| nd.trim_end_matches('.'))
        .filter(|nd| !nd.is_empty() && Some(*nd) != domain.map(|d| d.trim_end_matches('.')));
    let mut out = Vec::new();
    for f in &p.fixed_ips {
        let name = if p.dns_name.is_empty() {
            host_name_of(f.ip_address)
        } else {
            p.dns_name.clone()
        };
        let fqdn = match domain {
            Some(d) => format!("{name}.{}.", d.trim_end_matches('.')),
            None => format!("{name}."),
        };
        let also = also_under.map(|nd| format!("{name}.{nd}."));
        out.push((f.ip_address, fqdn, name.clone()));
        if let Some(a) = also {
            out.push((f.ip_address, a, name));
        }
    }
    out
}

/// The reservation DHCPv4 serves for a port: its first IPv4 address in a DHCP-enabled subnet.
pub fn reservation_for(reg: &Registry, p: &Port) -> Option<Reservation> {
    if p.is_dhcp() {
        return None;
    }
    let (f, ip) = p.fixed_ips.iter().find_map(|f| {
        let ip = v4(f.ip_address)?;
        reg.subnet(&f.subnet_id)
            .is_some_and(|s| s.enable_dhcp)
            .then_some((f, ip))
    })?;
    let hostname = if p.dns_name.is_empty() {
        host_name_of(f.ip_address)
    } else {
        p.dns_name.clone()
    };
    let mut options = OptionSet::default();
    let mut conditional: Vec<Conditional> = Vec::new();
    for o in p.extra_dhcp_opts.iter().filter(|o| o.ip_version == 4) {
        // `tag:ipxe,bootfile-name`: only for clients that sent option 175 (iPXE), as Neutron's
        // `--dhcp-match=set:ipxe,175` makes dnsmasq do
        let (when, name) = match o
            .opt_name
            .strip_prefix("tag:")
            .and_then(|r| r.split_once(','))
        {
            Some(("ipxe", name)) => (Some(ClientMatch::SentOption(175)), name),
            Some(_) => continue,
            None => (None, o.opt_name.as_str()),
        };
        let spec = if name.parse::<u8>().is_ok() {
            name.to_string()
        } else {
            format!("option:{name}")
        };
        let Ok(code) = qdhcp_protocol::options::code_for(&spec) else {
            continue;
        };
        let target = match when {
            None => &mut options,
            Some(w) => {
                if conditional.is_empty() {
                    conditional.push(Conditional {
                        when: vec![w],
                        options: OptionSet::default(),
                    });
                }
                &mut conditional[0].options
            }
        };
        let _ = target.set_text(code, &o.opt_value, false);
    }
    Some(Reservation {
        mac: Some(p.mac_address),
        client_id: None,
        ip,
        hostname: Some(hostname),
        options,
        conditional,
    })
}
