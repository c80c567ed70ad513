//! The three files Neutron's DHCP agent shares with dnsmasq: hosts (`--dhcp-hostsfile`), opts
//! (`--dhcp-optsfile`) and leases (`--dhcp-leasefile`). A bad line is reported with its number
//! and skipped; it never takes the good lines down with it.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use qdhcp_protocol::options::code_for;
use qdhcp_protocol::{ClientId, Mac};

/// A line that could not be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct FileError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub why: String,
}

/// One `dhcp-host` entry: `mac[,id:clientid][,set:tag],name,ip[,lease]` in any order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostLine {
    /// Hardware address.
    pub mac: Option<Mac>,
    /// Client id (`id:`).
    pub client_id: Option<ClientId>,
    /// Reserved address.
    pub ip: Option<Ipv4Addr>,
    /// Short host name (the part before the first dot of Neutron's FQDN).
    pub hostname: Option<String>,
    /// Tags set for this host (`set:port-<id>`), selecting per-port options.
    pub tags: Vec<String>,
    /// Per-host lease time; `Some(None)` is infinite.
    pub lease: Option<Option<u32>>,
    /// `ignore`: never answer this client.
    pub ignore: bool,
}

/// The lines of a hosts or opts file that say something: trimmed, neither blank nor a comment,
/// with their 1-based numbers.
pub fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(n, raw)| (n + 1, raw.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// Parses every content line with `f`, keeping the entries and the errors with line numbers.
fn parse_each<T>(
    text: &str,
    f: impl Fn(&str) -> Result<Option<T>, String>,
) -> (Vec<T>, Vec<FileError>) {
    let mut out = Vec::new();
    let mut errs = Vec::new();
    for (line, l) in content_lines(text) {
        match f(l) {
            Ok(Some(v)) => out.push(v),
            Ok(None) => {}
            Err(why) => errs.push(FileError { line, why }),
        }
    }
    (out, errs)
}

/// Parses a hosts file; returns the usable lines and the errors.
pub fn parse_hosts(text: &str) -> (Vec<HostLine>, Vec<FileError>) {
    parse_each(text, parse_host)
}

/// Parses one `dhcp-host` value. `Ok(None)` for an entry with nothing for DHCPv4 (IPv6 only).
pub fn parse_host(line: &str) -> Result<Option<HostLine>, String> {
    let mut h = HostLine::default();
    let mut saw_v6 = false;
    for tok in line.split(',').map(str::trim) {
        if tok.is_empty() {
            continue;
        }
        if let Some(id) = tok.strip_prefix("id:") {
            h.client_id = ClientId::parse_dnsmasq(id);
        } else if let Some(t) = tok
            .strip_prefix("set:")
            .or_else(|| tok.strip_prefix("net:"))
        {
            h.tags.push(t.to_string());
        } else if tok == "tag:dhcpv6" {
            // Neutron's mark for a DHCPv6 host line (see `parse_host6`)
            saw_v6 = true;
        } else if tok.starts_with("tag:") {
            // a host entry conditional on a tag: not used by Neutron, accepted
        } else if tok.starts_with('[') {
            saw_v6 = true;
        } else if let Ok(ip) = tok.parse::<Ipv4Addr>() {
            if h.ip.replace(ip).is_some() {
                return Err(format!("two IPv4 addresses in {line:?}"));
            }
        } else if let Ok(mac) = tok.parse::<Mac>() {
            if h.mac.replace(mac).is_some() {
                return Err(format!("more than one MAC in {line:?}: not supported"));
            }
        } else if tok == "ignore" {
            h.ignore = true;
        } else if tok == "infinite" {
            h.lease = Some(None);
        } else if tok.chars().next().is_some_and(|c| c.is_ascii_digit())
            && tok
                .chars()
                .all(|c| c.is_ascii_digit() || "smhdw".contains(c))
        {
            h.lease = Some(Some(
                parse_secs(tok).ok_or_else(|| format!("bad lease time {tok:?}"))?,
            ));
        } else if tok.contains(':') && tok.len() == 17 {
            return Err(format!("bad MAC address {tok:?}"));
        } else if valid_hostname(tok) {
            let short = tok.trim_end_matches('.').split('.').next().unwrap_or(tok);
            h.hostname = Some(short.to_string());
        } else {
            return Err(format!("cannot read {tok:?}"));
        }
    }
    if h.ip.is_none() && saw_v6 {
        return Ok(None);
    }
    if h.mac.is_none() && h.client_id.is_none() && h.hostname.is_none() {
        return Err(format!("no MAC or client id in {line:?}"));
    }
    Ok(Some(h))
}

/// One DHCPv6 `dhcp-host` entry as Neutron writes it:
/// `mac,tag:dhcpv6,host-…,[2001:db8::103][,[…]][,set:port-<id>]`, or `mac,tag:dhcpv6,set:port-<id>`
/// for a port on a stateless subnet (options only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostLine6 {
    /// Hardware address: DHCPv6 clients are matched by it, never by DUID.
    pub mac: Option<Mac>,
    /// Reserved addresses (none for a stateless subnet).
    pub addrs: Vec<std::net::Ipv6Addr>,
    /// Host name as written (with its domain).
    pub hostname: Option<String>,
    /// Tags set for this host (`set:port-<id>`).
    pub tags: Vec<String>,
}

/// Parses one `dhcp-host` value for DHCPv6: `Ok(None)` for a line with nothing for DHCPv6
/// (no `tag:dhcpv6` and no `[address]`).
pub fn parse_host6(line: &str) -> Result<Option<HostLine6>, String> {
    let mut h = HostLine6::default();
    let mut v6 = false;
    for tok in line.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if tok == "tag:dhcpv6" {
            v6 = true;
        } else if let Some(a) = tok.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            v6 = true;
            h.addrs
                .push(a.parse().map_err(|_| format!("bad IPv6 address {tok:?}"))?);
        } else if let Some(t) = tok
            .strip_prefix("set:")
            .or_else(|| tok.strip_prefix("net:"))
        {
            h.tags.push(t.to_string());
        } else if tok.starts_with("tag:")
            || tok.starts_with("id:")
            || tok.parse::<Ipv4Addr>().is_ok()
        {
            // another condition, a DHCPv4 client id or address: not DHCPv6's
        } else if let Ok(mac) = tok.parse::<Mac>() {
            if h.mac.replace(mac).is_some() {
                return Err(format!("more than one MAC in {line:?}: not supported"));
            }
        } else if tok == "infinite"
            || tok == "ignore"
            || tok.chars().next().is_some_and(|c| c.is_ascii_digit())
        {
            // a lease time or `ignore`: lease times come from the range
        } else if valid_hostname(tok) {
            h.hostname = Some(tok.trim_end_matches('.').to_string());
        } else {
            return Err(format!("cannot read {tok:?}"));
        }
    }
    if !v6 {
        return Ok(None);
    }
    if h.mac.is_none() {
        return Err(format!(
            "no MAC in DHCPv6 host line {line:?}: qdhcp matches DHCPv6 clients by MAC"
        ));
    }
    Ok(Some(h))
}

/// Parses the DHCPv6 lines of a hosts file.
pub fn parse_hosts6(text: &str) -> (Vec<HostLine6>, Vec<FileError>) {
    parse_each(text, parse_host6)
}

/// One `dhcp-option` entry for DHCPv6: `[tag:T,…]option6:NAME|CODE,values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptLine6 {
    /// Tags that must all be set; empty = everyone.
    pub tags: Vec<String>,
    /// Option code.
    pub code: u16,
    /// The value text, commas included.
    pub value: String,
}

/// Parses one `dhcp-option` value for DHCPv6: `Ok(None)` for a DHCPv4 option.
pub fn parse_opt6(line: &str) -> Result<Option<OptLine6>, String> {
    let mut tags = Vec::new();
    let mut rest = line;
    loop {
        let (head, tail) = rest.split_once(',').unwrap_or((rest, ""));
        let head = head.trim();
        if let Some(t) = head
            .strip_prefix("tag:")
            .or_else(|| head.strip_prefix("net:"))
        {
            tags.push(t.to_string());
            rest = tail;
        } else if let Some(spec) = head.strip_prefix("option6:") {
            let code = qdhcp_protocol::v6::options::code_for(spec).map_err(|e| e.to_string())?;
            return Ok(Some(OptLine6 {
                tags,
                code,
                value: tail.trim().to_string(),
            }));
        } else {
            return Ok(None);
        }
    }
}

/// Parses the DHCPv6 lines of an opts file.
pub fn parse_opts6(text: &str) -> (Vec<OptLine6>, Vec<FileError>) {
    parse_each(text, parse_opt6)
}

fn valid_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
}

/// A dnsmasq time: seconds, or a number with `s`, `m`, `h`, `d` or `w` (the host file's lease
/// time and `--dhcp-range`'s read it alike).
pub(crate) fn parse_secs(s: &str) -> Option<u32> {
    let (num, mult) = match s.chars().last()? {
        's' => (&s[..s.len() - 1], 1),
        'm' => (&s[..s.len() - 1], 60),
        'h' => (&s[..s.len() - 1], 3600),
        'd' => (&s[..s.len() - 1], 86400),
        'w' => (&s[..s.len() - 1], 604800),
        _ => (s, 1),
    };
    num.parse::<u32>().ok()?.checked_mul(mult)
}

/// One `dhcp-option` entry: `[tag:T,…]option:NAME|CODE,values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptLine {
    /// Tags that must all be set for the option to apply; empty = everyone.
    pub tags: Vec<String>,
    /// Option code.
    pub code: u8,
    /// The value text, commas included.
    pub value: String,
    /// Sent even when not requested.
    pub force: bool,
}

/// Parses an opts file; returns the usable lines and the errors.
pub fn parse_opts(text: &str) -> (Vec<OptLine>, Vec<FileError>) {
    parse_each(text, |line| parse_opt(line, false))
}

/// Parses one `dhcp-option` value. `Ok(None)` for DHCPv6 options, which qdhcp does not serve.
pub fn parse_opt(line: &str, force: bool) -> Result<Option<OptLine>, String> {
    let mut tags = Vec::new();
    let mut rest = line;
    loop {
        let (head, tail) = rest.split_once(',').unwrap_or((rest, ""));
        let head = head.trim();
        if let Some(t) = head
            .strip_prefix("tag:")
            .or_else(|| head.strip_prefix("net:"))
        {
            tags.push(t.to_string());
            rest = tail;
        } else if head.starts_with("encap:")
            || head.starts_with("vi-encap:")
            || head.starts_with("vendor:")
        {
            return Err(format!(
                "encapsulated/vendor options are not supported: {line:?}"
            ));
        } else if head.starts_with("option6:") {
            return Ok(None);
        } else {
            let code = code_for(head).map_err(|e| e.to_string())?;
            if code == 0 || code == 255 {
                return Err(format!("option {code} cannot be configured"));
            }
            return Ok(Some(OptLine {
                tags,
                code,
                value: tail.trim().to_string(),
                force,
            }));
        }
    }
}

/// One lease in dnsmasq's leases file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseLine {
    /// Expiry, epoch seconds; 0 = infinite.
    pub expiry: u64,
    /// Client MAC.
    pub mac: Mac,
    /// Leased address.
    pub ip: Ipv4Addr,
    /// Host name, if known.
    pub hostname: Option<String>,
    /// Client id, if sent.
    pub client_id: Option<ClientId>,
}

/// Parses dnsmasq's leases file (`<expiry> <mac> <ip> <name|*> <client-id|*>`), skipping the
/// `duid` line and DHCPv6 leases.
pub fn parse_leases(text: &str) -> (Vec<LeaseLine>, Vec<FileError>) {
    let mut out = Vec::new();
    let mut errs = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let f: Vec<&str> = raw.split_whitespace().collect();
        if f.is_empty() || f[0] == "duid" {
            continue;
        }
        let err = |why: String| FileError { line: n + 1, why };
        if f.len() < 4 {
            errs.push(err(format!("expected at least 4 fields in {raw:?}")));
            continue;
        }
        if f[2].contains(':') {
            continue; // DHCPv6 lease
        }
        let parsed = (|| {
            let expiry = f[0]
                .parse::<u64>()
                .map_err(|_| format!("bad expiry {:?}", f[0]))?;
            let mac = f[1].parse::<Mac>().map_err(|e| e.to_string())?;
            let ip = f[2]
                .parse::<Ipv4Addr>()
                .map_err(|_| format!("bad address {:?}", f[2]))?;
            let hostname = (f[3] != "*").then(|| f[3].to_string());
            let client_id = f.get(4).and_then(|c| ClientId::parse_dnsmasq(c));
            Ok::<_, String>(LeaseLine {
                expiry,
                mac,
                ip,
                hostname,
                client_id,
            })
        })();
        match parsed {
            Ok(l) => out.push(l),
            Err(why) => errs.push(err(why)),
        }
    }
    (out, errs)
}

/// Writes leases in dnsmasq's format.
pub fn format_leases(leases: &[LeaseLine]) -> String {
    let mut s = String::with_capacity(leases.len() * 64);
    for l in leases {
        let _ = writeln!(
            s,
            "{} {} {} {} {}",
            l.expiry,
            l.mac,
            l.ip,
            l.hostname.as_deref().unwrap_or("*"),
            l.client_id
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "*".into())
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neutron_host_lines_parse() {
        let text = "fa:16:3e:11:22:33,host-172-16-1-103.openstacklocal.,172.16.1.103\n\
            fa:16:3e:11:22:34,set:port-9d2e,host-172-16-1-104.openstacklocal.,172.16.1.104\n\
            fa:16:3e:11:22:35,id:01:fa:16:3e:11:22:35,host-172-16-1-105.openstacklocal.,172.16.1.105\n\
            fa:16:3e:11:22:36,host-fd00--5.openstacklocal.,[fd00::5]\n";
        let (hosts, errs) = parse_hosts(text);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(hosts.len(), 3, "the IPv6-only line is skipped");
        assert_eq!(hosts[0].hostname.as_deref(), Some("host-172-16-1-103"));
        assert_eq!(hosts[0].ip, Some("172.16.1.103".parse().unwrap()));
        assert_eq!(hosts[1].tags, vec!["port-9d2e"]);
        assert_eq!(
            hosts[2].client_id,
            Some(ClientId(vec![1, 0xfa, 0x16, 0x3e, 0x11, 0x22, 0x35]))
        );
    }

    #[test]
    fn bad_host_lines_are_reported_and_skipped() {
        let (hosts, errs) = parse_hosts(
            "fa:16:3e:zz:22:33,h,10.0.0.1\nfa:16:3e:11:22:33,h,10.0.0.2\n10.0.0.3,10.0.0.4\n",
        );
        assert_eq!(hosts.len(), 1);
        assert_eq!(errs.iter().map(|e| e.line).collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn neutron_opts_lines_parse() {
        let text = "tag:subnet-abc,option:router,172.16.1.1\n\
            tag:subnet-abc,option:dns-server,8.8.8.8,8.8.4.4\n\
            tag:subnet-abc,option:classless-static-route,169.254.169.254/32,172.16.1.2,0.0.0.0/0,172.16.1.1\n\
            tag:subnet-abc,249,169.254.169.254/32,172.16.1.2,0.0.0.0/0,172.16.1.1\n\
            tag:port-9d2e,option:bootfile-name,pxelinux.0\n\
            tag:subnet-v6,option6:dns-server,[fd00::1]\n\
            option:bogus-name,1\n";
        let (opts, errs) = parse_opts(text);
        assert_eq!(opts.len(), 5);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, 7);
        assert_eq!(opts[1].value, "8.8.8.8,8.8.4.4");
        assert_eq!(opts[3].code, 249);
        assert_eq!(opts[4].tags, vec!["port-9d2e"]);
    }

    #[test]
    fn leases_round_trip_and_preseeded_lines_read() {
        let text = "0 fa:16:3e:11:22:33 172.16.1.103 * *\n\
            1700000000 fa:16:3e:11:22:34 172.16.1.104 host-172-16-1-104 01:fa:16:3e:11:22:34\n\
            duid 00:01:00:01\n\
            1700000000 1234 fd00::5 * 00:01\n";
        let (l, errs) = parse_leases(text);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].expiry, 0);
        let out = format_leases(&l);
        assert_eq!(parse_leases(&out).0, l);
        assert_eq!(
            out.lines().next().unwrap(),
            "0 fa:16:3e:11:22:33 172.16.1.103 * *"
        );
    }
}
