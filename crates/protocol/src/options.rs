//! DHCP options as configured (dnsmasq names or numbers, text values) and as sent (wire bytes).
//! Values are encoded once, when configuration is loaded, with `dhcproto` per option; the reply
//! path only copies bytes.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, OptionCode, UnknownOption};
use dhcproto::{Encodable, Encoder, Name};
use ipnet::Ipv4Net;

/// Why an option could not be configured.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionError {
    /// The name is not one dnsmasq knows.
    #[error("unknown DHCP option name {0:?}")]
    UnknownName(String),
    /// The value does not fit the option's type.
    #[error("bad value {value:?} for option {code}: {why}")]
    BadValue {
        /// Option code.
        code: u8,
        /// The text given.
        value: String,
        /// What was expected.
        why: &'static str,
    },
}

/// How a configured option's text value is read (dnsmasq's option types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One or more IPv4 addresses.
    Ips,
    /// Exactly one IPv4 address.
    Ip,
    /// Text.
    Str,
    /// Unsigned 8-bit.
    U8,
    /// Unsigned 16-bit.
    U16,
    /// Unsigned 32-bit (also times in seconds, with an optional `s`/`m`/`h` suffix).
    U32,
    /// Boolean, 0 or 1.
    Bool,
    /// RFC 3442 routes: `dst/len,gateway,…`.
    Routes,
    /// RFC 3397 domain list.
    Domains,
    /// Guess, as dnsmasq does for numeric codes: addresses, hex bytes, an integer or text.
    Guess,
}

/// dnsmasq's option names (`dnsmasq --help dhcp`), their codes and types.
pub const OPTION_NAMES: &[(&str, u8, Kind)] = &[
    ("netmask", 1, Kind::Ip),
    ("time-offset", 2, Kind::U32),
    ("router", 3, Kind::Ips),
    ("dns-server", 6, Kind::Ips),
    ("log-server", 7, Kind::Ips),
    ("lpr-server", 9, Kind::Ips),
    ("hostname", 12, Kind::Str),
    ("boot-file-size", 13, Kind::U16),
    ("domain-name", 15, Kind::Str),
    ("swap-server", 16, Kind::Ip),
    ("root-path", 17, Kind::Str),
    ("extension-path", 18, Kind::Str),
    ("ip-forward-enable", 19, Kind::Bool),
    ("non-local-source-routing", 20, Kind::Bool),
    ("policy-filter", 21, Kind::Ips),
    ("max-datagram-reassembly", 22, Kind::U16),
    ("default-ttl", 23, Kind::U8),
    ("mtu", 26, Kind::U16),
    ("all-subnets-local", 27, Kind::Bool),
    ("broadcast", 28, Kind::Ip),
    ("router-discovery", 31, Kind::Bool),
    ("router-solicitation", 32, Kind::Ip),
    ("static-route", 33, Kind::Ips),
    ("trailer-encapsulation", 34, Kind::Bool),
    ("arp-timeout", 35, Kind::U32),
    ("ethernet-encap", 36, Kind::Bool),
    ("tcp-ttl", 37, Kind::U8),
    ("tcp-keepalive", 38, Kind::U32),
    ("nis-domain", 40, Kind::Str),
    ("nis-server", 41, Kind::Ips),
    ("ntp-server", 42, Kind::Ips),
    ("vendor-encap", 43, Kind::Guess),
    ("netbios-ns", 44, Kind::Ips),
    ("netbios-dd", 45, Kind::Ips),
    ("netbios-nodetype", 46, Kind::U8),
    ("netbios-scope", 47, Kind::Str),
    ("x-windows-fs", 48, Kind::Ips),
    ("x-windows-dm", 49, Kind::Ips),
    ("lease-time", 51, Kind::U32),
    ("T1", 58, Kind::U32),
    ("T2", 59, Kind::U32),
    ("vendor-class", 60, Kind::Str),
    ("nis+-domain", 64, Kind::Str),
    ("nis+-server", 65, Kind::Ips),
    ("tftp-server", 66, Kind::Str),
    ("bootfile-name", 67, Kind::Str),
    ("mobile-ip-home", 68, Kind::Ips),
    ("smtp-server", 69, Kind::Ips),
    ("pop3-server", 70, Kind::Ips),
    ("nntp-server", 71, Kind::Ips),
    ("irc-server", 74, Kind::Ips),
    ("user-class", 77, Kind::Str),
    ("client-arch", 93, Kind::U16),
    ("posix-timezone", 100, Kind::Str),
    ("tzdb-timezone", 101, Kind::Str),
    ("subnet-select", 118, Kind::Ip),
    ("domain-search", 119, Kind::Domains),
    ("classless-static-route", 121, Kind::Routes),
    ("server-ip-address", 150, Kind::Ip),
];

/// The type a code is read as when given by number (249 is Microsoft's copy of 121).
fn kind_of_code(code: u8) -> Kind {
    if code == 249 {
        return Kind::Routes;
    }
    OPTION_NAMES
        .iter()
        .find(|(_, c, _)| *c == code)
        .map(|(_, _, k)| *k)
        .unwrap_or(Kind::Guess)
}

/// Resolves `option:NAME` or a bare number to a code.
pub fn code_for(spec: &str) -> Result<u8, OptionError> {
    if let Some(name) = spec.strip_prefix("option:") {
        if let Ok(n) = name.parse::<u8>() {
            return Ok(n);
        }
        return OPTION_NAMES
            .iter()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, c, _)| *c)
            .ok_or_else(|| OptionError::UnknownName(name.to_string()));
    }
    spec.parse::<u8>()
        .map_err(|_| OptionError::UnknownName(spec.to_string()))
}

/// One option ready for the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireOption {
    /// Code, then length, then data (split into several TLVs past 255 bytes, RFC 3396).
    pub tlv: Vec<u8>,
    /// Sent even when the client did not ask (dnsmasq's `--dhcp-option-force`).
    pub force: bool,
}

/// A set of configured options keyed by code, sorted by code. A vector rather than a map:
/// a subnet has a handful of options, and every network holds a few sets (a B-tree node cost
/// 376 bytes each, most of a network's memory with ten thousand networks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OptionSet(Vec<(u8, WireOption)>);

impl OptionSet {
    /// Adds or replaces an option from its configured text value.
    pub fn set_text(&mut self, code: u8, value: &str, force: bool) -> Result<(), OptionError> {
        let tlv = encode_text(code, value)?;
        self.insert(code, WireOption { tlv, force });
        Ok(())
    }

    /// Adds or replaces an option from a typed `dhcproto` value.
    pub fn set(&mut self, opt: DhcpOption, force: bool) {
        let code = u8::from(OptionCode::from(&opt));
        self.insert(
            code,
            WireOption {
                tlv: encode_one(&opt),
                force,
            },
        );
    }

    /// Gives back the room left over from building the set: ten thousand networks each hold
    /// a few sets for as long as they exist.
    pub fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
        for (_, w) in &mut self.0 {
            w.tlv.shrink_to_fit();
        }
    }

    /// Adds or replaces an option already encoded.
    pub fn insert(&mut self, code: u8, w: WireOption) {
        match self.0.binary_search_by_key(&code, |(c, _)| *c) {
            Ok(i) => self.0[i].1 = w,
            Err(i) => self.0.insert(i, (code, w)),
        }
    }

    /// The option with `code`, if configured.
    pub fn get(&self, code: u8) -> Option<&WireOption> {
        self.0
            .binary_search_by_key(&code, |(c, _)| *c)
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// True when the code is configured (an empty value counts: it suppresses a default).
    pub fn contains(&self, code: u8) -> bool {
        self.get(code).is_some()
    }

    /// The configured codes, in order.
    pub fn codes(&self) -> impl Iterator<Item = u8> + '_ {
        self.0.iter().map(|(c, _)| *c)
    }

    /// Every option with its code, in code order.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &WireOption)> {
        self.0.iter().map(|(c, w)| (*c, w))
    }

    /// How many options are configured.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when none is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Encodes one option with dhcproto into its TLV bytes.
pub fn encode_one(opt: &DhcpOption) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16);
    let mut e = Encoder::new(&mut buf);
    // Encoding into a Vec cannot run out of room; values come from validated config.
    if opt.encode(&mut e).is_err() {
        buf.clear();
    }
    buf
}

fn bad(code: u8, value: &str, why: &'static str) -> OptionError {
    OptionError::BadValue {
        code,
        value: value.to_string(),
        why,
    }
}

fn parse_ips(code: u8, value: &str) -> Result<Vec<Ipv4Addr>, OptionError> {
    value
        .split(',')
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<Ipv4Addr>()
                .map_err(|_| bad(code, value, "IPv4 addresses separated by commas"))
        })
        .collect()
}

pub(crate) fn parse_secs(code: u8, value: &str) -> Result<u32, OptionError> {
    let v = value.trim();
    if v == "infinite" {
        return Ok(u32::MAX);
    }
    let (num, mult) = match v.chars().last() {
        Some('s') => (&v[..v.len() - 1], 1),
        Some('m') => (&v[..v.len() - 1], 60),
        Some('h') => (&v[..v.len() - 1], 3600),
        Some('d') => (&v[..v.len() - 1], 86400),
        _ => (v, 1),
    };
    num.parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| bad(code, value, "an unsigned 32-bit number"))
}

fn raw(code: u8, data: Vec<u8>) -> Vec<u8> {
    encode_one(&DhcpOption::Unknown(UnknownOption::new(
        OptionCode::from(code),
        data,
    )))
}

fn encode_text(code: u8, value: &str) -> Result<Vec<u8>, OptionError> {
    let kind = kind_of_code(code);
    // An empty value means "send nothing" in dnsmasq (e.g. `option:router` to suppress it).
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    Ok(match kind {
        Kind::Ips | Kind::Ip => {
            let ips = parse_ips(code, value)?;
            if kind == Kind::Ip && ips.len() != 1 {
                return Err(bad(code, value, "one IPv4 address"));
            }
            let mut data = Vec::with_capacity(ips.len() * 4);
            for ip in ips {
                data.extend_from_slice(&ip.octets());
            }
            raw(code, data)
        }
        Kind::Str => {
            let s = value.trim_matches('"');
            match code {
                12 => encode_one(&DhcpOption::Hostname(s.to_string())),
                15 => encode_one(&DhcpOption::DomainName(s.to_string())),
                _ => raw(code, s.as_bytes().to_vec()),
            }
        }
        Kind::U8 => raw(
            code,
            vec![value
                .trim()
                .parse::<u8>()
                .map_err(|_| bad(code, value, "a number 0-255"))?],
        ),
        Kind::U16 => {
            let n = value
                .trim()
                .parse::<u16>()
                .map_err(|_| bad(code, value, "a number 0-65535"))?;
            if code == 26 && n < 68 {
                return Err(bad(code, value, "an MTU of at least 68"));
            }
            raw(code, n.to_be_bytes().to_vec())
        }
        Kind::U32 => raw(code, parse_secs(code, value)?.to_be_bytes().to_vec()),
        Kind::Bool => match value.trim() {
            "0" | "false" => raw(code, vec![0]),
            "1" | "true" => raw(code, vec![1]),
            _ => return Err(bad(code, value, "0 or 1")),
        },
        Kind::Routes => {
            let parts: Vec<&str> = value.split(',').map(str::trim).collect();
            if !parts.len().is_multiple_of(2) {
                return Err(bad(code, value, "pairs of destination/prefix,gateway"));
            }
            let mut routes = Vec::new();
            for pair in parts.chunks(2) {
                let dst: Ipv4Net = pair[0]
                    .parse()
                    .map_err(|_| bad(code, value, "a destination like 169.254.169.254/32"))?;
                let gw: Ipv4Addr = pair[1]
                    .parse()
                    .map_err(|_| bad(code, value, "an IPv4 gateway"))?;
                routes.push((dst.trunc(), gw));
            }
            let tlv = encode_one(&DhcpOption::ClasslessStaticRoute(routes));
            if code == 121 {
                tlv
            } else {
                // same RFC 3442 payload under another code (249 for older Windows)
                retag(&tlv, code)
            }
        }
        Kind::Domains => {
            let mut names = Vec::new();
            for d in value.split(',').map(str::trim).filter(|d| !d.is_empty()) {
                let n = Name::from_utf8(d).map_err(|_| bad(code, value, "domain names"))?;
                names.push(n);
            }
            encode_one(&DhcpOption::DomainSearch(names))
        }
        Kind::Guess => raw(code, guess(value)),
    })
}

/// Rewrites the code byte of every TLV chunk.
fn retag(tlv: &[u8], code: u8) -> Vec<u8> {
    let mut out = tlv.to_vec();
    let mut i = 0;
    while i + 1 < out.len() {
        out[i] = code;
        i += 2 + out[i + 1] as usize;
    }
    out
}

/// dnsmasq's guess for untyped options: addresses, then hex bytes, then an integer, else text.
pub(crate) fn guess(value: &str) -> Vec<u8> {
    let v = value.trim();
    if let Ok(ips) = parse_ips(0, v) {
        return ips.iter().flat_map(|ip| ip.octets()).collect();
    }
    if v.contains(':') {
        let hex: Option<Vec<u8>> = v
            .split(':')
            .map(|p| {
                (p.len() <= 2)
                    .then(|| u8::from_str_radix(p, 16).ok())
                    .flatten()
            })
            .collect();
        if let Some(h) = hex {
            return h;
        }
    }
    if let Ok(n) = v.parse::<u32>() {
        return if n <= 0xff {
            vec![n as u8]
        } else if n <= 0xffff {
            (n as u16).to_be_bytes().to_vec()
        } else {
            n.to_be_bytes().to_vec()
        };
    }
    v.trim_matches('"').as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_resolve_to_codes() {
        assert_eq!(code_for("option:router").unwrap(), 3);
        assert_eq!(code_for("option:dns-server").unwrap(), 6);
        assert_eq!(code_for("option:classless-static-route").unwrap(), 121);
        assert_eq!(code_for("option:mtu").unwrap(), 26);
        assert_eq!(code_for("option:T1").unwrap(), 58);
        assert_eq!(code_for("249").unwrap(), 249);
        assert!(matches!(
            code_for("option:bogus"),
            Err(OptionError::UnknownName(_))
        ));
    }

    #[test]
    fn classless_routes_use_rfc3442_encoding_for_121_and_249() {
        let mut s = OptionSet::default();
        s.set_text(
            121,
            "169.254.169.254/32,172.16.1.2,0.0.0.0/0,172.16.1.1",
            false,
        )
        .unwrap();
        s.set_text(
            249,
            "169.254.169.254/32,172.16.1.2,0.0.0.0/0,172.16.1.1",
            false,
        )
        .unwrap();
        let body = [32, 169, 254, 169, 254, 172, 16, 1, 2, 0, 172, 16, 1, 1];
        let mut want = vec![121, body.len() as u8];
        want.extend_from_slice(&body);
        assert_eq!(s.get(121).unwrap().tlv, want);
        want[0] = 249;
        assert_eq!(s.get(249).unwrap().tlv, want);
    }

    #[test]
    fn typed_values_are_checked() {
        let mut s = OptionSet::default();
        s.set_text(26, "1450", true).unwrap();
        assert_eq!(s.get(26).unwrap().tlv, vec![26, 2, 0x05, 0xaa]);
        assert!(s.get(26).unwrap().force);
        s.set_text(6, "8.8.8.8,1.1.1.1", false).unwrap();
        assert_eq!(s.get(6).unwrap().tlv, vec![6, 8, 8, 8, 8, 8, 1, 1, 1, 1]);
        s.set_text(58, "43200s", false).unwrap();
        assert_eq!(s.get(58).unwrap().tlv, vec![58, 4, 0, 0, 0xa8, 0xc0]);
        assert!(s.set_text(3, "not-an-ip", false).is_err());
        assert!(s.set_text(26, "70000", false).is_err());
        assert!(s.set_text(121, "10.0.0.0/8", false).is_err());
        // empty value suppresses: present but sends nothing
        s.set_text(3, "", false).unwrap();
        assert!(s.contains(3));
        assert!(s.get(3).unwrap().tlv.is_empty());
    }

    #[test]
    fn guessed_values_follow_dnsmasq() {
        assert_eq!(guess("10.0.0.1,10.0.0.2"), vec![10, 0, 0, 1, 10, 0, 0, 2]);
        assert_eq!(guess("01:02:ff"), vec![1, 2, 0xff]);
        assert_eq!(guess("300"), vec![1, 44]);
        assert_eq!(guess("hello"), b"hello".to_vec());
    }

    #[test]
    fn domain_search_encodes() {
        let mut s = OptionSet::default();
        s.set_text(119, "example.com,corp.example.com", false)
            .unwrap();
        let tlv = &s.get(119).unwrap().tlv;
        assert_eq!(tlv[0], 119);
        assert_eq!(tlv[1] as usize, tlv.len() - 2);
    }
}
