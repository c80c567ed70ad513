//! Creating, updating and deleting subnets: CIDR, gateway and pool validation, default
//! pools, DNS servers and host routes, and the network's DHCP ports kept in step (see
//! `dhcp_ports`). Pure, like the rest of the registry.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use crate::error::{invalid, RegistryError};
use crate::ipv6;
use crate::model::*;
use crate::registry::*;
use crate::requests::*;

fn ip_add(ip: Ipv4Addr, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(ip).wrapping_add(n))
}

impl Registry {
    fn validate_pools(
        cidr: IpNet,
        gw: Option<IpAddr>,
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
                if !usable(cidr, a) {
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

    fn default_pools(cidr: IpNet, gw: Option<IpAddr>) -> Vec<Pool> {
        match cidr {
            IpNet::V4(c) => {
                let gw = match gw {
                    Some(IpAddr::V4(g)) => Some(g),
                    _ => None,
                };
                Self::default_pools4(c, gw)
                    .into_iter()
                    .map(|(start, end)| Pool {
                        start: start.into(),
                        end: end.into(),
                    })
                    .collect()
            }
            IpNet::V6(c) => ipv6::default_pools6(c, gw),
        }
    }

    fn default_pools4(cidr: Ipv4Net, gw: Option<Ipv4Addr>) -> Vec<(Ipv4Addr, Ipv4Addr)> {
        let first = ip_add(cidr.network(), 1);
        let last = Ipv4Addr::from(u32::from(cidr.broadcast()).saturating_sub(1));
        if cidr.prefix_len() >= 31 || first > last {
            return Vec::new();
        }
        match gw {
            Some(g) if g == first => vec![(ip_add(first, 1), last)]
                .into_iter()
                .filter(|p| p.0 <= p.1)
                .collect(),
            Some(g) if g == last => vec![(first, Ipv4Addr::from(u32::from(last) - 1))],
            Some(g) if first < g && g < last => vec![
                (first, Ipv4Addr::from(u32::from(g) - 1)),
                (ip_add(g, 1), last),
            ],
            _ => vec![(first, last)],
        }
    }

    fn parse_dns(v: &[String], version: u8) -> Result<Vec<IpAddr>, RegistryError> {
        let mut out = Vec::new();
        for s in v {
            let ip = parse_ip("dns_nameservers", s)?;
            same_version("dns_nameserver", ip, version)?;
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

    fn parse_routes(v: &[RouteReq], version: u8) -> Result<Vec<HostRoute>, RegistryError> {
        v.iter()
            .map(|r| {
                let destination: IpNet = r.destination.parse().map_err(|_| {
                    invalid(
                        "host_routes",
                        format!("'{}' is not a valid IP prefix", r.destination),
                    )
                })?;
                let nexthop = parse_ip("host_routes", &r.nexthop)?;
                same_version("destination", destination.addr(), version)?;
                same_version("nexthop", nexthop, version)?;
                Ok(HostRoute {
                    destination: destination.trunc(),
                    nexthop,
                })
            })
            .collect()
    }

    /// A gateway as asked for: in the subnet and usable there, or for IPv6 a link-local
    /// router (Neutron allows `fe80::1`).
    fn parse_gateway(cidr: IpNet, g: &str) -> Result<IpAddr, RegistryError> {
        let g = parse_ip("gateway_ip", g)?;
        same_version("gateway_ip", g, ip_version_of(cidr))?;
        let link_local = matches!(g, IpAddr::V6(a) if a.is_unicast_link_local());
        if !link_local && !usable(cidr, g) {
            return Err(invalid(
                "gateway_ip",
                format!("{g} is not a usable address of {cidr}"),
            ));
        }
        Ok(g)
    }

    /// Creates a subnet; the network's DHCP port gets an address in it when DHCP is on.
    pub fn create_subnet(
        &mut self,
        req: SubnetReq,
        caller: &Caller,
        env: &mut dyn Env,
    ) -> Result<(Subnet, Outcome), RegistryError> {
        let net_id = self.existing_network(req.network_id.as_deref())?;
        let cidr_s = req
            .cidr
            .clone()
            .ok_or_else(|| invalid("cidr", "it is required"))?;
        let cidr: IpNet = cidr_s
            .parse()
            .map_err(|_| invalid("cidr", format!("'{cidr_s}' is not a valid IP subnet")))?;
        let version = ip_version_of(cidr);
        match req.ip_version {
            None => {}
            Some(v) if v != 4 && v != 6 => {
                return Err(invalid("ip_version", format!("'{v}' is not in [4, 6]")))
            }
            Some(v) if v != version => {
                return Err(ipv6::operation(format!(
                    "cidr '{cidr_s}' does not match the ip_version '{v}'"
                )))
            }
            Some(_) => {}
        }
        if cidr.trunc() != cidr {
            return Err(invalid(
                "cidr",
                format!(
                    "'{cidr_s}' is not a recognized CIDR, '{}' is recommended",
                    cidr.trunc()
                ),
            ));
        }
        if cidr.prefix_len() > cidr.max_prefix_len() - 2 {
            return Err(invalid(
                "cidr",
                format!(
                    "'{cidr_s}' is too small: a prefix of at most /{} is needed",
                    cidr.max_prefix_len() - 2
                ),
            ));
        }
        let enable_dhcp = req.enable_dhcp.unwrap_or(true);
        let (ipv6_address_mode, ipv6_ra_mode) = ipv6::modes(
            version,
            cidr,
            enable_dhcp,
            req.ipv6_address_mode.clone().flatten().as_deref(),
            req.ipv6_ra_mode.clone().flatten().as_deref(),
        )?;
        if self
            .subnets_of(&net_id)
            .any(|s| s.cidr.contains(&cidr.network()) || cidr.contains(&s.cidr.network()))
        {
            return Err(RegistryError::Overlap {
                cidr: cidr_s,
                net_id: net_id.to_string(),
            });
        }
        let gateway_ip = match &req.gateway_ip {
            None => Some(first_after_network(cidr)),
            Some(None) => None,
            Some(Some(g)) if g.is_empty() => None,
            Some(Some(g)) => Some(Self::parse_gateway(cidr, g)?),
        };
        let pools = match &req.allocation_pools {
            Some(v) if !v.is_empty() => v
                .iter()
                .map(|p| parse_pool(p, version))
                .collect::<Result<Vec<_>, RegistryError>>()?,
            _ => Self::default_pools(cidr, gateway_ip),
        };
        Self::validate_pools(cidr, gateway_ip, &pools)?;
        let project_id = Self::project_for(caller, &req.project_id, &req.tenant_id)?;
        let now = env.now();
        let mut s = Subnet {
            id: env.new_id().into(),
            name: req.name.unwrap_or_default(),
            network_id: net_id.clone(),
            project_id: project_id.into(),
            cidr,
            gateway_ip,
            allocation_pools: pools,
            dns_nameservers: Self::parse_dns(
                req.dns_nameservers.as_deref().unwrap_or(&[]),
                version,
            )?,
            host_routes: Self::parse_routes(req.host_routes.as_deref().unwrap_or(&[]), version)?,
            enable_dhcp,
            ipv6_address_mode,
            ipv6_ra_mode,
            description: req.description.unwrap_or_default(),
            created_at: now.clone(),
            updated_at: now,
            revision_number: 1,
        };
        self.share_subnet(&mut s);
        self.index_subnet(&s);
        self.subnets
            .insert(s.id.clone(), std::sync::Arc::new(s.clone()));
        let mut out = Outcome {
            changes: vec![Change::Put(ObjectId::Subnet(s.id.clone()))],
            effects: vec![],
        };
        if s.is_auto_address() {
            self.add_auto_addresses(&s, env, &mut out);
        }
        self.sync_dhcp_ports(&net_id, env, &mut out);
        out.effects.push(Effect::NetworkChanged(net_id));
        Ok((s, out))
    }

    /// Gives every port of the network an EUI-64 address on a new auto-address subnet, as
    /// Neutron does (`_add_auto_addrs_on_network_ports`); router ports are left to the
    /// router, DHCP ports to [`Registry::sync_dhcp_ports`].
    fn add_auto_addresses(&mut self, s: &Subnet, env: &mut dyn Env, out: &mut Outcome) {
        let ports: Vec<Port> = self
            .ports_of(&s.network_id)
            .filter(|p| p.owner_kind() == OwnerKind::Other)
            .cloned()
            .collect();
        for before in ports {
            let Some(ip) = ipv6::auto_address(s, before.mac_address) else {
                continue;
            };
            if self.ips.contains(&s.id, ip) {
                continue;
            }
            let mut p = before.clone();
            p.fixed_ips.push(FixedIp {
                subnet_id: s.id.clone(),
                ip_address: ip,
            });
            self.put_changed_port(Box::new(before), Box::new(p), env, out);
        }
    }

    /// Takes the addresses of a deleted auto-address subnet from the ports holding them (the
    /// hosts made them; Neutron deletes them with the subnet).
    fn drop_auto_addresses(&mut self, s: &Subnet, env: &mut dyn Env, out: &mut Outcome) {
        let holders: HashSet<PortId> = self.ips.of(&s.id).map(|(_, p)| p.clone()).collect();
        for id in holders {
            let Some(before) = self.ports.get(&id).map(|p| Port::clone(p)) else {
                continue;
            };
            if before.is_dhcp() {
                continue;
            }
            let mut p = before.clone();
            p.fixed_ips.retain(|f| f.subnet_id != s.id);
            self.put_changed_port(Box::new(before), Box::new(p), env, out);
        }
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
            .map(|s| Box::new(Subnet::clone(s)))
            .ok_or_else(|| RegistryError::SubnetNotFound(id.into()))?;
        if req.cidr.is_some() || req.network_id.is_some() || req.ip_version.is_some() {
            return Err(RegistryError::BadRequest(
                "Invalid input for operation: cidr, network_id and ip_version cannot be updated."
                    .into(),
            ));
        }
        if req.ipv6_address_mode.is_some() || req.ipv6_ra_mode.is_some() {
            return Err(ipv6::operation(
                "ipv6_address_mode and ipv6_ra_mode cannot be updated",
            ));
        }
        let has_modes = s.ipv6_address_mode.is_some() || s.ipv6_ra_mode.is_some();
        if req.enable_dhcp == Some(false) && has_modes {
            return Err(ipv6::operation(
                "Cannot disable enable_dhcp with ipv6 attributes set",
            ));
        }
        let version = s.ip_version();
        if let Some(g) = &req.gateway_ip {
            s.gateway_ip = match g {
                None => None,
                Some(g) if g.is_empty() => None,
                Some(g) => Some(Self::parse_gateway(s.cidr, g)?),
            };
        }
        if let Some(p) = &req.allocation_pools {
            // new pools: the search starts over
            self.free_from.remove(id);
            s.allocation_pools = p
                .iter()
                .map(|p| parse_pool(p, version))
                .collect::<Result<Vec<_>, RegistryError>>()?;
        }
        Self::validate_pools(s.cidr, s.gateway_ip, &s.allocation_pools)?;
        if let Some(d) = &req.dns_nameservers {
            s.dns_nameservers = Self::parse_dns(d, version)?;
        }
        if let Some(r) = &req.host_routes {
            s.host_routes = Self::parse_routes(r, version)?;
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
        self.share_subnet(&mut s);
        self.subnets
            .insert(s.id.clone(), std::sync::Arc::new(Subnet::clone(&s)));
        let mut out = Outcome {
            changes: vec![Change::Put(ObjectId::Subnet(id.into()))],
            effects: vec![],
        };
        self.sync_dhcp_ports(&net_id, env, &mut out);
        out.effects.push(Effect::NetworkChanged(net_id));
        Ok((*s, out))
    }

    /// Deletes a subnet; refused while ports other than the DHCP port use it, unless their
    /// addresses there are automatic (EUI-64), which go with it.
    pub fn delete_subnet(&mut self, id: &str, env: &mut dyn Env) -> Result<Outcome, RegistryError> {
        let s = self
            .subnets
            .get(id)
            .cloned()
            .ok_or_else(|| RegistryError::SubnetNotFound(id.into()))?;
        let users: HashSet<&PortId> = self.ips.of(&s.id).map(|(_, p)| p).collect();
        if !s.is_auto_address()
            && users
                .iter()
                .any(|p| self.ports.get(*p).is_some_and(|p| !p.is_dhcp()))
        {
            return Err(RegistryError::SubnetInUse(id.into()));
        }
        let mut out = Outcome {
            changes: vec![Change::Delete(ObjectId::Subnet(id.into()))],
            effects: vec![],
        };
        if s.is_auto_address() {
            self.drop_auto_addresses(&s, env, &mut out);
        }
        self.unindex_subnet(id);
        self.subnets.remove(id);
        self.sync_dhcp_ports(&s.network_id, env, &mut out);
        self.ips.remove_subnet(&s.id);
        self.free_from.remove(id);
        out.effects
            .push(Effect::NetworkChanged(s.network_id.clone()));
        Ok(out)
    }
}

/// 4 or 6.
fn ip_version_of(cidr: IpNet) -> u8 {
    match cidr {
        IpNet::V4(_) => 4,
        IpNet::V6(_) => 6,
    }
}

/// The address after the network's: the default gateway (`.1`, `::1`).
fn first_after_network(cidr: IpNet) -> IpAddr {
    match cidr {
        IpNet::V4(c) => IpAddr::V4(ip_add(c.network(), 1)),
        IpNet::V6(c) => IpAddr::V6((u128::from(c.network()) + 1).into()),
    }
}

/// An address a host may hold in `cidr`: inside it, not the network address (IPv6's
/// subnet-router anycast) and, in IPv4, not the broadcast.
fn usable(cidr: IpNet, a: IpAddr) -> bool {
    let broadcast = matches!(cidr, IpNet::V4(_)) && a == cidr.broadcast();
    cidr.contains(&a) && a != cidr.network() && !broadcast
}

/// Refuses an address of the other family, as Neutron's `_validate_ip_version`.
fn same_version(name: &str, ip: IpAddr, version: u8) -> Result<(), RegistryError> {
    let v = if ip.is_ipv4() { 4 } else { 6 };
    if v == version {
        Ok(())
    } else {
        Err(ipv6::operation(format!(
            "{name} '{ip}' does not match the ip_version '{version}'"
        )))
    }
}

fn parse_pool(p: &PoolReq, version: u8) -> Result<Pool, RegistryError> {
    let start = parse_ip("allocation_pools", &p.start)?;
    let end = parse_ip("allocation_pools", &p.end)?;
    same_version("allocation_pools", start, version)?;
    same_version("allocation_pools", end, version)?;
    Ok(Pool { start, end })
}
