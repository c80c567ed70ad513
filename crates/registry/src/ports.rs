//! Creating, updating and deleting ports, with IPAM: MACs (`fa:16:3e:…`, unique in the
//! network), fixed IPs requested or the first free in the pools, per-port DHCP options. Pure,
//! like the rest of the registry.

use std::net::{IpAddr, Ipv4Addr};

use qdhcp_protocol::Mac;

use crate::error::{invalid, RegistryError};
use crate::ipv6;
use crate::model::*;
use crate::registry::*;
use crate::requests::*;

impl Registry {
    pub(crate) fn generate_mac(&self, net_id: &str, env: &mut dyn Env) -> Mac {
        loop {
            let r = env.random().to_be_bytes();
            let m = Mac([0xfa, 0x16, 0x3e, r[1], r[2], r[3]]);
            if !self.macs.contains_key(&(self.id_of_network(net_id), m)) {
                return m;
            }
        }
    }

    /// The first free address in the subnet's pools.
    pub(crate) fn next_free(&self, subnet_id: &str) -> Option<IpAddr> {
        let s = self.subnets.get(subnet_id)?;
        if s.ip_version() == 6 {
            return self.next_free6(s, None, &[]);
        }
        self.next_free4(s).map(IpAddr::V4)
    }

    /// [`Registry::next_free`] in an IPv4 subnet, with the hints.
    fn next_free4(&self, s: &Subnet) -> Option<Ipv4Addr> {
        let subnet_id = s.id.as_str();
        let hinted = self.first_candidate(subnet_id);
        let from = hinted.unwrap_or(0);
        // With several nodes allocating at once, each prefers its own share of the addresses
        // (address mod live nodes = its rank): two nodes never reach for the same one and
        // conflict in the database. Alone, or with its share full, a node takes any.
        let (mut rank, mut nodes) = self.scheduling.rank();
        if let (Some(from), true) = (hinted, nodes > 1) {
            if let Some(a) = self.next_free_in_share(s, from, rank, nodes) {
                return Some(a);
            }
            // the share is full: the first free address of any
            (rank, nodes) = (0, 1);
        }
        let mut first_free = None;
        for (start, end) in s.allocation_pools.iter().filter_map(Pool::v4_range) {
            let mut a = start.max(from);
            while a <= end {
                let ip = IpAddr::V4(Ipv4Addr::from(a));
                if !self.ips.contains(&s.id, ip) {
                    first_free.get_or_insert(a);
                    if a % nodes == rank {
                        break;
                    }
                }
                a += 1;
            }
            if a <= end {
                if hinted.is_some() {
                    // nothing below the first free address seen is free
                    self.free_from.set(&s.id, first_free.unwrap_or(a));
                }
                return Some(Ipv4Addr::from(a));
            }
        }
        if hinted.is_some() {
            if let Some(f) = first_free {
                self.free_from.set(&s.id, f);
            }
        }
        first_free.map(Ipv4Addr::from)
    }

    /// The first free address of the share `rank` of `nodes` in the subnet's pools (in
    /// order), from `from` or the share's own hint, stepping over the share's addresses only.
    fn next_free_in_share(&self, s: &Subnet, from: u32, rank: u32, nodes: u32) -> Option<Ipv4Addr> {
        let from = from.max(self.free_from.share_from(&s.id, rank, nodes).unwrap_or(0));
        for (start, end) in s.allocation_pools.iter().filter_map(Pool::v4_range) {
            let start = u64::from(start.max(from));
            let (rank, nodes) = (u64::from(rank), u64::from(nodes));
            // the share's first address at or after `start`
            let mut a = start + (rank + nodes - start % nodes) % nodes;
            while a <= u64::from(end) {
                let ip = Ipv4Addr::from(a as u32);
                if !self.ips.contains(&s.id, IpAddr::V4(ip)) {
                    self.free_from
                        .set_share(&s.id, rank as u32, nodes as u32, a as u32);
                    return Some(ip);
                }
                a += nodes;
            }
        }
        // the share is full: none of it is free until an address is freed
        self.free_from.set_share(&s.id, rank, nodes, u32::MAX);
        None
    }

    /// Resolves requested fixed IPs into addresses; does not reserve them. Nothing asked:
    /// as Neutron's IPAM, one address from the first IPv4 subnet with room and one from the
    /// first stateful IPv6 subnet with room. Either way, a port that is not a router's gets
    /// its EUI-64 address on every auto-address subnet (`slaac`, `dhcpv6-stateless`).
    fn resolve_fixed_ips(
        &self,
        net_id: &str,
        req: Option<&[FixedIpReq]>,
        port_id: &str,
        device_owner: &str,
        mac: Mac,
    ) -> Result<Vec<FixedIp>, RegistryError> {
        let mut out: Vec<FixedIp> = Vec::new();
        let router = OwnerKind::of(device_owner) == OwnerKind::Router;
        let taken_by_other = |sid: &str, ip: IpAddr| {
            self.subnets
                .get_key_value(sid)
                .and_then(|(sid, _)| self.ips.port_at(sid, ip))
                .is_some_and(|p| p != port_id)
        };
        match req {
            None => {
                for family in [4, 6] {
                    let mut any = false;
                    let mut found = false;
                    for s in self
                        .subnets_of(net_id)
                        .filter(|s| s.ip_version() == family && !s.is_auto_address())
                    {
                        any = true;
                        if let Some(ip) = self.next_free(&s.id) {
                            out.push(FixedIp {
                                subnet_id: s.id.clone(),
                                ip_address: ip,
                            });
                            found = true;
                            break;
                        }
                    }
                    if any && !found {
                        return Err(RegistryError::IpAddressGenerationFailure(net_id.into()));
                    }
                }
            }
            Some(list) => {
                for f in list {
                    let ip = f
                        .ip_address
                        .as_deref()
                        .map(|s| parse_ip("fixed_ips", s))
                        .transpose()?;
                    let subnet = match (&f.subnet_id, ip) {
                        (Some(sid), _) => {
                            let s = self.subnets.get(sid.as_str()).ok_or_else(|| RegistryError::SubnetNotFound(sid.clone()))?;
                            if s.network_id != net_id {
                                return Err(invalid("fixed_ips", format!("subnet {sid} is not on network {net_id}")));
                            }
                            s
                        }
                        (None, Some(ip)) => self
                            .subnets_of(net_id)
                            .find(|s| s.cidr.contains(&ip))
                            .ok_or_else(|| invalid("fixed_ips", format!("IP address {ip} is not a valid IP for any of the subnets on network {net_id}")))?,
                        (None, None) => return Err(invalid("fixed_ips", "a fixed IP needs subnet_id or ip_address")),
                    };
                    let ip = match ip {
                        Some(ip) => {
                            if subnet.is_auto_address() && !router {
                                return Err(RegistryError::AllocationOnAutoAddressSubnet {
                                    ip: ip.to_string(),
                                    subnet_id: subnet.id.to_string(),
                                });
                            }
                            let c = subnet.cidr;
                            let is_gw = subnet.gateway_ip == Some(ip) && !router;
                            let v4_broadcast = ip.is_ipv4() && ip == c.broadcast();
                            if !c.contains(&ip) || ip == c.network() || v4_broadcast || is_gw {
                                return Err(RegistryError::InvalidIpForSubnet {
                                    ip: ip.to_string(),
                                });
                            }
                            if taken_by_other(&subnet.id, ip)
                                || out.iter().any(|f| f.ip_address == ip)
                            {
                                return Err(RegistryError::IpAddressAlreadyAllocated {
                                    ip: ip.to_string(),
                                    subnet_id: subnet.id.to_string(),
                                });
                            }
                            ip
                        }
                        None => match ipv6::auto_address(subnet, mac) {
                            Some(ip) => ip,
                            None => self.free_for(subnet, port_id, &out).ok_or_else(|| {
                                RegistryError::IpAddressGenerationFailure(net_id.into())
                            })?,
                        },
                    };
                    out.push(FixedIp {
                        subnet_id: subnet.id.clone(),
                        ip_address: ip,
                    });
                }
            }
        }
        if !router {
            for s in self.subnets_of(net_id) {
                if out.iter().any(|f| f.subnet_id == s.id) {
                    continue;
                }
                if let Some(ip) = ipv6::auto_address(s, mac) {
                    out.push(FixedIp {
                        subnet_id: s.id.clone(),
                        ip_address: ip,
                    });
                }
            }
        }
        Ok(out)
    }

    /// The first free address of `subnet` for `port_id`, not already chosen in `out` (an
    /// address the port holds counts as free for it).
    fn free_for(&self, subnet: &Subnet, port_id: &str, out: &[FixedIp]) -> Option<IpAddr> {
        let chosen: Vec<IpAddr> = out.iter().map(|f| f.ip_address).collect();
        if subnet.ip_version() == 6 {
            return self.next_free6(subnet, Some(port_id), &chosen);
        }
        // from the subnet's hint for a new port (an existing one may hold an address below
        // it, which is free for it)
        let from = match self.ports.contains_key(port_id) {
            true => 0,
            false => self.first_candidate(&subnet.id).unwrap_or(0),
        };
        for (start, end) in subnet.allocation_pools.iter().filter_map(Pool::v4_range) {
            for a in start.max(from)..=end {
                let ip = IpAddr::V4(Ipv4Addr::from(a));
                let holder = self.ips.port_at(&subnet.id, ip);
                if holder.is_none_or(|p| p == port_id) && !chosen.contains(&ip) {
                    return Some(ip);
                }
            }
        }
        None
    }

    fn parse_extra_opts(v: &[ExtraDhcpOptReq]) -> Result<Vec<ExtraDhcpOpt>, RegistryError> {
        let mut out = Vec::new();
        for o in v {
            let ip_version = match &o.ip_version {
                None => 4,
                Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0) as u8,
                Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
                Some(_) => 0,
            };
            if ip_version != 4 && ip_version != 6 {
                return Err(invalid("extra_dhcp_opts", "ip_version must be 4 or 6"));
            }
            let Some(value) = o.opt_value.clone() else {
                continue;
            };
            if ip_version == 4 {
                // `tag:ipxe,NAME`: for iPXE clients only (see dhcp::reservation_for)
                let name = match o.opt_name.strip_prefix("tag:").map(|r| r.split_once(',')) {
                    None => o.opt_name.as_str(),
                    Some(Some(("ipxe", name))) => name,
                    Some(_) => {
                        return Err(invalid(
                            "extra_dhcp_opts",
                            format!("{:?}: the only tag served is ipxe", o.opt_name),
                        ))
                    }
                };
                let spec = if name.parse::<u8>().is_ok() {
                    name.to_string()
                } else {
                    format!("option:{name}")
                };
                let code = qdhcp_protocol::options::code_for(&spec)
                    .map_err(|e| invalid("extra_dhcp_opts", e))?;
                let mut probe = qdhcp_protocol::OptionSet::default();
                probe
                    .set_text(code, &value, false)
                    .map_err(|e| invalid("extra_dhcp_opts", e))?;
            }
            if ip_version == 6 {
                use qdhcp_protocol::v6::options::{code_for, parse_value};
                let code = code_for(crate::dhcp6::option6_name(&o.opt_name))
                    .map_err(|e| invalid("extra_dhcp_opts", e))?;
                parse_value(code, &value).map_err(|e| invalid("extra_dhcp_opts", e))?;
            }
            out.push(ExtraDhcpOpt {
                opt_name: o.opt_name.clone(),
                opt_value: value,
                ip_version,
            });
        }
        Ok(out)
    }

    /// Creates a port: a MAC (generated `fa:16:3e:…` or given, unique in the network) and
    /// fixed IPs (requested, or allocated from the pools). Nothing is half-created on error.
    pub fn create_port(
        &mut self,
        req: PortReq,
        caller: &Caller,
        env: &mut dyn Env,
    ) -> Result<(Port, Outcome), RegistryError> {
        let net_id = self.existing_network(req.network_id.as_deref())?;
        let project_id = Self::project_for(caller, &req.project_id, &req.tenant_id)?;
        if req.binding_host_id.is_some() && !caller.is_admin {
            return Err(RegistryError::PolicyNotAuthorized(
                "(rule:create_port and rule:create_port:binding:host_id)".into(),
            ));
        }
        let mac = match &req.mac_address {
            Some(m) => {
                let m: Mac = m.parse().map_err(|_| {
                    invalid("mac_address", format!("'{m}' is not a valid MAC address"))
                })?;
                if m.0[0] & 1 == 1 || m == Mac([0; 6]) {
                    return Err(invalid(
                        "mac_address",
                        format!("'{m}' is not a valid unicast MAC address"),
                    ));
                }
                if self.macs.contains_key(&(net_id.clone(), m)) {
                    return Err(RegistryError::MacAddressInUse {
                        net_id: net_id.to_string(),
                        mac: m.to_string(),
                    });
                }
                m
            }
            None => self.generate_mac(&net_id, env),
        };
        let device_owner = req.device_owner.clone().unwrap_or_default();
        let id = env.new_id();
        let fixed_ips =
            self.resolve_fixed_ips(&net_id, req.fixed_ips.as_deref(), &id, &device_owner, mac)?;
        let extra = Self::parse_extra_opts(req.extra_dhcp_opts.as_deref().unwrap_or(&[]))?;
        let dns_name = req.dns_name.clone().unwrap_or_default();
        validate_dns_name(&dns_name)?;
        let now = env.now();
        let mut p = Port {
            id: id.into(),
            name: req.name.unwrap_or_default(),
            network_id: net_id,
            project_id: project_id.into(),
            mac_address: mac,
            fixed_ips,
            admin_state_up: req.admin_state_up.unwrap_or(true),
            device_id: req.device_id.unwrap_or_default(),
            device_owner,
            binding_host_id: req.binding_host_id.unwrap_or_default().into(),
            extra_dhcp_opts: extra,
            dns_name,
            description: req.description.unwrap_or_default(),
            status: PortStatus::Down,
            created_at: now.clone(),
            updated_at: now,
            revision_number: 1,
        };
        self.share_port(&mut p);
        self.index_port(&p);
        self.ports
            .insert(p.id.clone(), std::sync::Arc::new(p.clone()));
        Ok((
            p.clone(),
            Outcome {
                changes: vec![Change::Put(ObjectId::Port(p.id.clone()))],
                effects: vec![Effect::PortChanged(None, Some(Box::new(p)))],
            },
        ))
    }

    /// Updates a port; a new address or MAC takes effect for DHCP at once.
    pub fn update_port(
        &mut self,
        id: &str,
        req: PortReq,
        env: &mut dyn Env,
    ) -> Result<(Port, Outcome), RegistryError> {
        let before = self
            .ports
            .get(id)
            .map(|p| Box::new(Port::clone(p)))
            .ok_or_else(|| RegistryError::PortNotFound(id.into()))?;
        if req
            .network_id
            .as_ref()
            .is_some_and(|n| before.network_id != *n)
        {
            return Err(invalid(
                "network_id",
                "a port cannot move to another network",
            ));
        }
        let mut p = before.clone();
        if let Some(m) = &req.mac_address {
            let m: Mac = m
                .parse()
                .map_err(|_| invalid("mac_address", format!("'{m}' is not a valid MAC address")))?;
            if m != p.mac_address && self.macs.contains_key(&(p.network_id.clone(), m)) {
                return Err(RegistryError::MacAddressInUse {
                    net_id: p.network_id.to_string(),
                    mac: m.to_string(),
                });
            }
            p.mac_address = m;
        }
        if let Some(v) = req.device_owner {
            p.device_owner = v;
        }
        if let Some(f) = req.fixed_ips.as_deref() {
            p.fixed_ips =
                self.resolve_fixed_ips(&p.network_id, Some(f), id, &p.device_owner, p.mac_address)?;
        } else if p.mac_address != before.mac_address {
            // a new MAC makes new EUI-64 addresses, as in Neutron
            for f in &mut p.fixed_ips {
                if let Some(ip) = self
                    .subnets
                    .get(&f.subnet_id)
                    .and_then(|s| ipv6::auto_address(s, p.mac_address))
                {
                    f.ip_address = ip;
                }
            }
        }
        if let Some(e) = req.extra_dhcp_opts.as_deref() {
            p.extra_dhcp_opts = Self::parse_extra_opts(e)?;
        }
        if let Some(d) = req.dns_name {
            validate_dns_name(&d)?;
            p.dns_name = d;
        }
        if let Some(v) = req.name {
            p.name = v;
        }
        if let Some(v) = req.admin_state_up {
            p.admin_state_up = v;
        }
        if let Some(v) = req.device_id {
            p.device_id = v;
        }
        if let Some(v) = req.binding_host_id {
            p.binding_host_id = v.into();
        }
        if let Some(v) = req.description {
            p.description = v;
        }
        let mut out = Outcome::default();
        let stored = self.put_changed_port(before, p, env, &mut out);
        Ok((stored, out))
    }

    /// Stores a changed port (from the API, or a subnet's automatic addresses): its revision
    /// and time moved on, its addresses indexed and shared, the change and its effect told in
    /// `out` as for any port change. Returns the port as stored.
    pub(crate) fn put_changed_port(
        &mut self,
        before: Box<Port>,
        mut p: Box<Port>,
        env: &mut dyn Env,
        out: &mut Outcome,
    ) -> Port {
        p.updated_at = env.now();
        p.revision_number += 1;
        self.unindex_port(&before);
        self.share_port(&mut p);
        self.index_port(&p);
        self.ports
            .insert(p.id.clone(), std::sync::Arc::new(Port::clone(&p)));
        let stored = Port::clone(&p);
        out.changes.push(Change::Put(ObjectId::Port(p.id.clone())));
        out.effects.push(Effect::PortChanged(Some(before), Some(p)));
        stored
    }

    /// Deletes a port; its addresses are free again at once.
    pub fn delete_port(&mut self, id: &str) -> Result<Outcome, RegistryError> {
        let p = self
            .ports
            .remove(id)
            .ok_or_else(|| RegistryError::PortNotFound(id.into()))?;
        self.unindex_port(&p);
        Ok(Outcome {
            changes: vec![Change::Delete(ObjectId::Port(id.into()))],
            effects: vec![Effect::PortChanged(Some(Box::new(Port::clone(&p))), None)],
        })
    }
}

fn validate_dns_name(d: &str) -> Result<(), RegistryError> {
    let ok = d.len() <= 63
        && d.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !d.starts_with('-')
        && !d.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "dns_name",
            format!("'{d}' is not a valid host name"),
        ))
    }
}
