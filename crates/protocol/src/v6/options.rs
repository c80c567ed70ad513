//! DHCPv6 options as dnsmasq's opts file names them (`option6:dns-server,[2001:db8::53]`,
//! `option6:59,http://…`) and as sent: each value is turned into a `dhcproto` option once,
//! when the configuration is loaded; the reply path only clones them.

use std::net::Ipv6Addr;

use dhcproto::v6::{DhcpOption, NtpSuboption, OptionCode, UnknownOption};
use dhcproto::{Encodable, Encoder, Name};

use crate::options::OptionError;

/// How a value of an `option6:` line is read (dnsmasq's `opttab6` types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// IPv6 addresses, each `[a]` or bare.
    Addrs,
    /// RFC 1035 names (a search list).
    Names,
    /// Text as it stands (a URL).
    Text,
    /// RFC 8415 "opaque strings": each comma-separated value with a 2-byte length.
    CStrings,
    /// Seconds.
    Time,
    /// NTP servers: addresses or names, as RFC 5908 suboptions.
    Ntp,
    /// Numbers: addresses, hex bytes, an integer or text, as dnsmasq guesses.
    Guess,
}

/// dnsmasq's DHCPv6 option names (`dnsmasq --help dhcp6`) that a configuration may set.
const NAMES: &[(&str, u16, Kind)] = &[
    ("sip-server-domain", 21, Kind::Names),
    ("sip-server", 22, Kind::Addrs),
    ("dns-server", 23, Kind::Addrs),
    ("domain-search", 24, Kind::Names),
    ("nis-server", 27, Kind::Addrs),
    ("nis+-server", 28, Kind::Addrs),
    ("nis-domain", 29, Kind::Names),
    ("nis+-domain", 30, Kind::Names),
    ("sntp-server", 31, Kind::Addrs),
    ("information-refresh-time", 32, Kind::Time),
    ("ntp-server", 56, Kind::Ntp),
    ("bootfile-url", 59, Kind::Text),
    ("bootfile-param", 60, Kind::CStrings),
];

/// Options the server sets itself; a configuration naming them is refused, as dnsmasq does.
const INTERNAL: &[u16] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14, 18, 19, 20, 25, 26];

fn kind_of(code: u16) -> Kind {
    NAMES
        .iter()
        .find(|(_, c, _)| *c == code)
        .map(|(_, _, k)| *k)
        .unwrap_or(Kind::Guess)
}

/// The code of `option6:<name>` or `option6:<number>`.
pub fn code_for(spec: &str) -> Result<u16, OptionError> {
    let spec = spec.trim();
    let code = match spec.parse::<u16>() {
        Ok(n) => n,
        Err(_) => NAMES
            .iter()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(spec))
            .map(|(_, c, _)| *c)
            .ok_or_else(|| OptionError::UnknownName(format!("option6:{spec}")))?,
    };
    if INTERNAL.contains(&code) || code == 0 {
        return Err(OptionError::UnknownName(format!(
            "option6:{spec} (set by the server itself)"
        )));
    }
    Ok(code)
}

fn bad(code: u16, value: &str, why: &'static str) -> OptionError {
    OptionError::BadValue {
        code: code.min(255) as u8,
        value: value.to_string(),
        why,
    }
}

fn values(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|v| !v.is_empty())
}

fn addr(v: &str) -> Option<Ipv6Addr> {
    v.strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(v)
        .parse()
        .ok()
}

fn names(code: u16, value: &str) -> Result<Vec<Name>, OptionError> {
    values(value)
        .map(|d| Name::from_utf8(d).map_err(|_| bad(code, value, "domain names")))
        .collect()
}

/// The wire bytes of names in RFC 1035 form, uncompressed (RFC 8415 §10).
fn name_bytes(code: u16, value: &str) -> Result<Vec<u8>, OptionError> {
    let mut out = Vec::new();
    let mut e = Encoder::new(&mut out);
    DhcpOption::DomainSearchList(names(code, value)?)
        .encode(&mut e)
        .map_err(|_| bad(code, value, "domain names"))?;
    Ok(out.split_off(4))
}

/// Turns the text of one `option6:` line into the option to send. An empty value is an option
/// that is configured but sends nothing (Neutron writes `option6:dns-server` alone to say "no
/// DNS servers"); `[::]` among addresses stands for the server's own address, as in dnsmasq.
pub fn parse_value(code: u16, value: &str) -> Result<Option<DhcpOption>, OptionError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let unknown = |data: Vec<u8>| DhcpOption::Unknown(UnknownOption::new(code.into(), data));
    Ok(Some(match kind_of(code) {
        Kind::Addrs => {
            let addrs: Vec<Ipv6Addr> = values(value)
                .map(|v| addr(v).ok_or_else(|| bad(code, value, "IPv6 addresses")))
                .collect::<Result<_, _>>()?;
            if code == u16::from(OptionCode::DomainNameServers) {
                DhcpOption::DomainNameServers(addrs)
            } else {
                unknown(addrs.iter().flat_map(|a| a.octets()).collect())
            }
        }
        Kind::Names if code == u16::from(OptionCode::DomainSearchList) => {
            DhcpOption::DomainSearchList(names(code, value)?)
        }
        Kind::Names => unknown(name_bytes(code, value)?),
        Kind::Text => unknown(value.as_bytes().to_vec()),
        Kind::CStrings => {
            let mut data = Vec::new();
            for v in values(value) {
                let len = u16::try_from(v.len()).map_err(|_| bad(code, value, "short strings"))?;
                data.extend_from_slice(&len.to_be_bytes());
                data.extend_from_slice(v.as_bytes());
            }
            unknown(data)
        }
        Kind::Time => {
            let secs = crate::options::parse_secs(code.min(255) as u8, value)?;
            unknown(secs.to_be_bytes().to_vec())
        }
        Kind::Ntp => {
            let mut subs = Vec::new();
            for v in values(value) {
                match addr(v) {
                    Some(a) if a.is_multicast() => subs.push(NtpSuboption::MulticastAddress(a)),
                    Some(a) => subs.push(NtpSuboption::ServerAddress(a)),
                    None => subs.push(NtpSuboption::FQDN(
                        Name::from_utf8(v).map_err(|_| bad(code, value, "addresses or names"))?,
                    )),
                }
            }
            DhcpOption::NtpServer(subs)
        }
        Kind::Guess => {
            if let Ok(addrs) = values(value)
                .map(|v| addr(v).ok_or(()))
                .collect::<Result<Vec<_>, _>>()
            {
                unknown(addrs.iter().flat_map(|a| a.octets()).collect())
            } else {
                unknown(crate::options::guess(value))
            }
        }
    }))
}

/// Options configured for a subnet, a host or everyone: at most one per code, in code order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options6 {
    opts: Vec<(u16, Option<DhcpOption>)>,
}

impl Options6 {
    /// Sets `option6:<spec>,<value>` from an opts-file line; a later line for a code replaces
    /// an earlier one, as on reload.
    pub fn set_text(&mut self, spec_code: u16, value: &str) -> Result<(), OptionError> {
        let o = parse_value(spec_code, value)?;
        self.set(spec_code, o);
        Ok(())
    }

    /// Sets a code to an option (or to "send nothing").
    pub fn set(&mut self, code: u16, o: Option<DhcpOption>) {
        match self.opts.binary_search_by_key(&code, |(c, _)| *c) {
            Ok(i) => self.opts[i].1 = o,
            Err(i) => self.opts.insert(i, (code, o)),
        }
    }

    /// What is configured for a code: `Some(None)` when it is configured to send nothing.
    pub fn get(&self, code: u16) -> Option<Option<&DhcpOption>> {
        self.opts
            .binary_search_by_key(&code, |(c, _)| *c)
            .ok()
            .map(|i| self.opts[i].1.as_ref())
    }

    /// The configured codes.
    pub fn codes(&self) -> impl Iterator<Item = u16> + '_ {
        self.opts.iter().map(|(c, _)| *c)
    }

    /// True when nothing is configured.
    pub fn is_empty(&self) -> bool {
        self.opts.is_empty()
    }
}
