//! Creating, updating and deleting subnets: CIDR, gateway and pool validation, default
//! pools, DNS servers and host routes, and the network's DHCP ports kept in step (see
//! `dhcp_ports`). Pure, like the rest of the registry.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::error::{invalid, RegistryError};
use crate::model::*;
use crate::registry::*;
use crate::requests::*;

fn ip_add(ip: Ipv4Addr, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(ip).wrapping_add(n))
}

impl Registry {
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
        let net_id = self.existing_network(req.network_id.as_deref())?;
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
                net_id: net_id.to_string(),
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
        let mut s = Subnet {
            id: env.new_id().into(),
            name: req.name.unwrap_or_default(),
            network_id: net_id.clone(),
            project_id: project_id.into(),
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
        self.share_subnet(&mut s);
        self.index_subnet(&s);
        self.subnets
            .insert(s.id.clone(), std::sync::Arc::new(s.clone()));
        let mut out = Outcome {
            changes: vec![Change::Put(ObjectId::Subnet(s.id.clone()))],
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
            .map(|s| Box::new(Subnet::clone(s)))
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

    /// Deletes a subnet; refused while ports other than the DHCP port use it.
    pub fn delete_subnet(&mut self, id: &str, env: &mut dyn Env) -> Result<Outcome, RegistryError> {
        let s = self
            .subnets
            .get(id)
            .cloned()
            .ok_or_else(|| RegistryError::SubnetNotFound(id.into()))?;
        let users: HashSet<&PortId> = self.ips.of(&s.id).map(|(_, p)| p).collect();
        if users
            .iter()
            .any(|p| self.ports.get(*p).is_some_and(|p| !p.is_dhcp()))
        {
            return Err(RegistryError::SubnetInUse(id.into()));
        }
        self.unindex_subnet(id);
        self.subnets.remove(id);
        let mut out = Outcome {
            changes: vec![Change::Delete(ObjectId::Subnet(id.into()))],
            effects: vec![],
        };
        self.sync_dhcp_ports(&s.network_id, env, &mut out);
        self.ips.remove_subnet(&s.id);
        self.free_from.remove(id);
        out.effects
            .push(Effect::NetworkChanged(s.network_id.clone()));
        Ok(out)
    }
}
