//! The values of single options: ranges, tags and matches, servers, lease times.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::{CmdlineError, DhcpRange};

/// `set:TAG,REST` of `--dhcp-match` and `--dhcp-userclass`.
pub(super) fn set_tag(v: &str) -> Result<(String, &str), CmdlineError> {
    v.strip_prefix("set:")
        .and_then(|r| r.split_once(','))
        .filter(|(t, r)| !t.is_empty() && !r.is_empty())
        .map(|(t, r)| (t.to_string(), r))
        .ok_or_else(|| CmdlineError::BadValue {
            flag: "dhcp-match".into(),
            why: format!("{v:?} is not set:TAG,VALUE"),
        })
}

/// `set:TAG,CODE` or `set:TAG,option:NAME`: the tag is set when the client sent that option.
pub(super) fn parse_match(v: &str) -> Result<(String, qdhcp_protocol::ClientMatch), String> {
    let (tag, rest) = set_tag(v).map_err(|e| e.to_string())?;
    if rest.contains(',') || rest.starts_with("vi-encap:") || rest.starts_with("option6:") {
        return Err(format!(
            "{v:?}: only set:TAG,CODE and set:TAG,option:NAME are supported (no value, no vi-encap, no option6)"
        ));
    }
    let code = qdhcp_protocol::options::code_for(rest).map_err(|e| e.to_string())?;
    Ok((tag, qdhcp_protocol::ClientMatch::SentOption(code)))
}

/// `IP[#PORT]` (dnsmasq's `--server` without domains); empty names no server.
pub(super) fn parse_server(v: &str) -> Result<Option<std::net::SocketAddr>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    if v.starts_with('/') {
        return Err(format!("{v:?}: per-domain servers are not supported"));
    }
    let (ip, port) = match v.split_once('#') {
        Some((ip, port)) => (
            ip,
            port.parse::<u16>()
                .map_err(|_| format!("{port:?} is not a port"))?,
        ),
        None => (v, 53),
    };
    let ip: std::net::IpAddr = ip
        .split('@')
        .next()
        .unwrap_or(ip)
        .parse()
        .map_err(|_| format!("{ip:?} is not an address"))?;
    Ok(Some(std::net::SocketAddr::new(ip, port)))
}

/// A lease time of `--dhcp-range`: `infinite` (none) or a dnsmasq time.
pub(super) fn parse_secs(s: &str) -> Option<Option<u32>> {
    if s == "infinite" {
        return Some(None);
    }
    crate::files::parse_secs(s).map(Some)
}

/// True for a DHCPv6 range (`set:T,fd00::,static,64,LEASE` from Neutron's IPv6 subnets).
pub(super) fn is_ipv6_range(v: &str) -> bool {
    v.split(',').map(str::trim).any(|t| {
        !t.starts_with("set:")
            && !t.starts_with("tag:")
            && !t.starts_with("mode:")
            && !t.starts_with("constructor:")
            && t.parse::<std::net::Ipv6Addr>().is_ok()
    })
}

/// `[set:T,]START[,END],static|MODE[,PREFIXLEN][,LEASE]` for DHCPv6. Only `static` is served
/// (reservations from the hosts file, what Neutron writes for every DHCPv6 subnet).
pub(super) fn parse_range6(v: &str) -> Result<super::DhcpRange6, String> {
    let mut tag = None;
    let mut start: Option<std::net::Ipv6Addr> = None;
    let mut is_static = false;
    let mut numbers: Vec<&str> = Vec::new();
    for tok in v.split(',').map(str::trim) {
        if let Some(t) = tok.strip_prefix("set:") {
            tag = Some(t.to_string());
        } else if tok.starts_with("tag:") || tok.starts_with("constructor:") || tok.is_empty() {
            continue;
        } else if let Ok(a) = tok.parse::<std::net::Ipv6Addr>() {
            start.get_or_insert(a);
        } else if tok == "static" {
            is_static = true;
        } else if matches!(
            tok,
            "ra-only" | "slaac" | "ra-names" | "ra-stateless" | "ra-advrouter" | "off-link"
        ) {
            return Err(format!(
                "mode {tok}: router advertisements are not served by qdhcp"
            ));
        } else {
            numbers.push(tok);
        }
    }
    let start = start.ok_or_else(|| format!("no IPv6 address in {v:?}"))?;
    if !is_static {
        return Err(
            "only static DHCPv6 ranges are served (reservations from the hosts file)".into(),
        );
    }
    // `[PREFIXLEN,]LEASE`: with two numbers the first is the prefix length
    let (prefix, lease) = match numbers.as_slice() {
        [] => (64, None),
        [l] => (64, Some(*l)),
        [p, l] => (
            p.parse::<u8>()
                .ok()
                .filter(|p| *p <= 128)
                .ok_or_else(|| format!("bad prefix length {p:?} in {v:?}"))?,
            Some(*l),
        ),
        _ => return Err(format!("cannot read {v:?}")),
    };
    let lease = match lease {
        Some(l) => parse_secs(l).ok_or_else(|| format!("bad lease time {l:?} in {v:?}"))?,
        None => Some(86400),
    };
    let net = ipnet::Ipv6Net::new(start, prefix)
        .map_err(|e| e.to_string())?
        .trunc();
    Ok(super::DhcpRange6 {
        tag,
        net,
        lease_secs: lease,
    })
}

/// `[tag:T,][set:T,]START,static,MASK[,BCAST][,LEASE]`.
pub(super) fn parse_range(v: &str) -> Result<DhcpRange, String> {
    let mut tag = None;
    let mut addrs: Vec<Ipv4Addr> = Vec::new();
    let mut is_static = false;
    let mut lease: Option<Option<u32>> = None;
    for tok in v.split(',').map(str::trim) {
        if let Some(t) = tok.strip_prefix("set:") {
            tag = Some(t.to_string());
        } else if tok.starts_with("tag:")
            || tok.starts_with("mode:")
            || tok.starts_with("constructor:")
        {
            continue;
        } else if let Ok(a) = tok.parse::<Ipv4Addr>() {
            addrs.push(a);
        } else if tok == "static" {
            is_static = true;
        } else if matches!(
            tok,
            "proxy" | "ra-only" | "slaac" | "ra-names" | "ra-stateless"
        ) {
            return Err(format!("mode {tok} is not supported"));
        } else if tok.contains(':') {
            return Err("IPv6 ranges are not served by qdhcp (DHCPv4 only)".into());
        } else if let Some(l) = parse_secs(tok) {
            lease = Some(l);
        } else {
            return Err(format!("cannot read {tok:?} in {v:?}"));
        }
    }
    if !is_static {
        return Err(format!(
            "{v:?}: only static ranges are served (reservations from the hosts file), as Neutron uses"
        ));
    }
    let (start, mask) = match addrs.as_slice() {
        [start, mask, ..] => (*start, *mask),
        _ => {
            return Err(format!(
                "{v:?}: a static range needs an address and a netmask"
            ))
        }
    };
    let prefix = u32::from(mask).leading_ones() as u8;
    if u32::from(mask).count_ones() != prefix as u32 {
        return Err(format!("{mask} is not a netmask"));
    }
    let net = Ipv4Net::new(start, prefix)
        .map_err(|e| e.to_string())?
        .trunc();
    Ok(DhcpRange {
        tag,
        net,
        lease_secs: lease.unwrap_or(Some(3600)),
    })
}
