//! What IPv6 subnets add to IPAM, as Neutron has it: the address modes and their allowed
//! combinations, EUI-64 addresses on `slaac` and `dhcpv6-stateless` subnets
//! (`ipv6_utils.get_ipv6_addr_by_EUI64`), default pools over 128-bit numbers, and the first
//! free address of a stateful subnet found by walking the addresses in use, never the pool.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::{IpNet, Ipv6Net};
use qdhcp_protocol::Mac;

use crate::error::{invalid, RegistryError};
use crate::model::{Ipv6Mode, Pool, Subnet};
use crate::registry::Registry;

/// The address a host with `mac` makes for itself in `prefix` (RFC 4291 appendix A: the MAC
/// split by `ff:fe`, its universal/local bit flipped), as Neutron computes it for a port.
pub fn eui64(prefix: Ipv6Net, mac: Mac) -> Ipv6Addr {
    let m = mac.0;
    let iid = u64::from_be_bytes([m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]);
    let net = u128::from(prefix.network()) & !u128::from(u64::MAX);
    Ipv6Addr::from(net | u128::from(iid))
}

/// A port's address on an auto-address subnet; `None` for any other subnet.
pub(crate) fn auto_address(s: &Subnet, mac: Mac) -> Option<IpAddr> {
    match (s.is_auto_address(), s.cidr) {
        (true, IpNet::V6(p)) => Some(IpAddr::V6(eui64(p, mac))),
        _ => None,
    }
}

/// The address modes of a subnet create, checked as Neutron checks them
/// (`_validate_ipv6_attributes`): none on IPv4; none with DHCP off; both the same when both
/// are given; a /64 for the modes where hosts make their addresses.
pub(crate) fn modes(
    ip_version: u8,
    cidr: IpNet,
    enable_dhcp: bool,
    address_mode: Option<&str>,
    ra_mode: Option<&str>,
) -> Result<(Option<Ipv6Mode>, Option<Ipv6Mode>), RegistryError> {
    let parse = |field: &str, v: Option<&str>| {
        v.map(|m| m.parse::<Ipv6Mode>().map_err(|e| invalid(field, e)))
            .transpose()
    };
    let address = parse("ipv6_address_mode", address_mode)?;
    let ra = parse("ipv6_ra_mode", ra_mode)?;
    if address.is_none() && ra.is_none() {
        return Ok((None, None));
    }
    if ip_version == 4 {
        let field = if ra.is_some() {
            "ipv6_ra_mode"
        } else {
            "ipv6_address_mode"
        };
        return Err(operation(format!(
            "{field} is not valid when ip_version is 4"
        )));
    }
    if !enable_dhcp {
        return Err(operation(
            "ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False",
        ));
    }
    if let (Some(r), Some(a)) = (ra, address) {
        if r != a {
            return Err(operation(format!(
                "ipv6_ra_mode set to '{}' with ipv6_address_mode set to '{}' is not valid. \
                 If both attributes are set, they must be the same value",
                r.as_str(),
                a.as_str()
            )));
        }
    }
    let auto = |m: Option<Ipv6Mode>| matches!(m, Some(Ipv6Mode::Slaac | Ipv6Mode::Stateless));
    if (auto(address) || auto(ra)) && cidr.prefix_len() != 64 {
        return Err(operation(format!(
            "Invalid CIDR {cidr} for IPv6 address mode. OpenStack uses the EUI-64 address \
             format, which requires the prefix to be /64"
        )));
    }
    Ok((address, ra))
}

/// Neutron's `InvalidInput` without a field: "Invalid input for operation: …".
pub(crate) fn operation(why: impl std::fmt::Display) -> RegistryError {
    RegistryError::InvalidInput(why.to_string())
}

/// The default pool of an IPv6 prefix (Neutron's `generate_pools`): every address after the
/// subnet-router anycast address to the last, less the gateway.
pub(crate) fn default_pools6(cidr: Ipv6Net, gw: Option<IpAddr>) -> Vec<Pool> {
    let first = u128::from(cidr.network()) + 1;
    let last = u128::from(cidr.broadcast());
    if first > last {
        return Vec::new();
    }
    let range = |a: u128, b: u128| Pool {
        start: IpAddr::V6(a.into()),
        end: IpAddr::V6(b.into()),
    };
    match gw {
        Some(IpAddr::V6(g)) if (first..=last).contains(&u128::from(g)) => {
            let g = u128::from(g);
            let mut v = Vec::new();
            if g > first {
                v.push(range(first, g - 1));
            }
            if g < last {
                v.push(range(g + 1, last));
            }
            v
        }
        _ => vec![range(first, last)],
    }
}

impl Registry {
    /// The first address of a stateful IPv6 subnet's pools that no port holds (one held by
    /// `port` counts as free for it) and that is not in `chosen`: a walk over the addresses
    /// in use, in order, so a /64 costs what its ports cost, not what it holds.
    pub(crate) fn next_free6(
        &self,
        s: &Subnet,
        port: Option<&str>,
        chosen: &[IpAddr],
    ) -> Option<IpAddr> {
        for p in &s.allocation_pools {
            let (IpAddr::V6(start), IpAddr::V6(end)) = (p.start, p.end) else {
                continue;
            };
            let end = u128::from(end);
            let mut used = self
                .ips
                .of_from(&s.id, IpAddr::V6(start))
                .filter(|(_, holder)| port.is_none_or(|me| *holder != me))
                .filter_map(|(ip, _)| match ip {
                    IpAddr::V6(a) => Some(u128::from(a)),
                    IpAddr::V4(_) => None,
                })
                .peekable();
            let mut cand = u128::from(start);
            loop {
                if cand > end {
                    break;
                }
                while used.next_if(|u| *u < cand).is_some() {}
                let ip = IpAddr::V6(cand.into());
                if used.peek() == Some(&cand) || chosen.contains(&ip) {
                    match cand.checked_add(1) {
                        Some(c) => cand = c,
                        None => break,
                    }
                    continue;
                }
                return Some(ip);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eui64_is_neutrons() {
        // neutron.common.ipv6_utils.get_ipv6_addr_by_EUI64('2001:db8::/64', 'fa:16:3e:7a:06:03')
        let p: Ipv6Net = "2001:db8::/64".parse().unwrap();
        let mac: Mac = "fa:16:3e:7a:06:03".parse().unwrap();
        assert_eq!(
            eui64(p, mac),
            "2001:db8::f816:3eff:fe7a:603".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn default_pools_skip_the_anycast_address_and_the_gateway() {
        let p: Ipv6Net = "2001:db8:6::/64".parse().unwrap();
        let gw = Some("2001:db8:6::1".parse().unwrap());
        let pools = default_pools6(p, gw);
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].start.to_string(), "2001:db8:6::2");
        assert_eq!(pools[0].end.to_string(), "2001:db8:6:0:ffff:ffff:ffff:ffff");
        let mid = default_pools6(p, Some("2001:db8:6::10".parse().unwrap()));
        assert_eq!(mid[0].end.to_string(), "2001:db8:6::f");
        assert_eq!(mid[1].start.to_string(), "2001:db8:6::11");
    }

    #[test]
    fn modes_follow_neutrons_combinations() {
        let c: IpNet = "2001:db8::/64".parse().unwrap();
        let s = Some("dhcpv6-stateful");
        assert!(modes(6, c, true, s, s).is_ok());
        assert!(modes(6, c, true, s, None).is_ok());
        assert!(modes(6, c, true, None, Some("slaac")).is_ok());
        let e = modes(6, c, true, Some("slaac"), s).unwrap_err().to_string();
        assert!(e.contains("must be the same value"), "{e}");
        let e = modes(6, c, false, s, None).unwrap_err().to_string();
        assert!(e.contains("enable_dhcp is set to False"), "{e}");
        let v4: IpNet = "10.0.0.0/24".parse().unwrap();
        let e = modes(4, v4, true, s, None).unwrap_err().to_string();
        assert!(e.contains("ip_version is 4"), "{e}");
        let c56: IpNet = "2001:db8::/56".parse().unwrap();
        let e = modes(6, c56, true, Some("dhcpv6-stateless"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("requires the prefix to be /64"), "{e}");
        assert!(modes(6, c56, true, s, s).is_ok());
        let e = modes(6, c, true, Some("dhcp"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Invalid input for ipv6_address_mode"), "{e}");
    }
}
