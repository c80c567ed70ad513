//! Identity and configuration types shared by every layer: MACs, client ids, subnets and
//! reservations. Values are validated once where they enter (file, API, packet) and trusted after.

use ahash::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;

use crate::options::OptionSet;

/// An Ethernet hardware address, the key Neutron reserves addresses by.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a MAC string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid MAC address {0:?}: expected six hex octets separated by ':' or '-'")]
pub struct BadMac(pub String);

impl FromStr for Mac {
    type Err = BadMac;
    fn from_str(s: &str) -> Result<Self, BadMac> {
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split([':', '-']) {
            if n == 6 || part.is_empty() || part.len() > 2 {
                return Err(BadMac(s.to_string()));
            }
            out[n] = u8::from_str_radix(part, 16).map_err(|_| BadMac(s.to_string()))?;
            n += 1;
        }
        if n != 6 {
            return Err(BadMac(s.to_string()));
        }
        Ok(Mac(out))
    }
}

/// A client identifier (option 61), held as raw bytes because RFC 4361 makes it opaque.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub Vec<u8>);

/// Writes bytes as dnsmasq shows opaque identifiers (client ids, DUIDs): `01:fa:16:…`.
pub(crate) fn colon_hex(bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            f.write_str(":")?;
        }
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        colon_hex(&self.0, f)
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl ClientId {
    /// Parses dnsmasq's `id:` notation: colon-separated hex octets, or else the literal string.
    pub fn parse_dnsmasq(s: &str) -> Option<ClientId> {
        if s.is_empty() || s == "*" {
            return None;
        }
        let hex: Option<Vec<u8>> = s
            .split(':')
            .map(|p| {
                if p.len() == 2 {
                    u8::from_str_radix(p, 16).ok()
                } else {
                    None
                }
            })
            .collect();
        Some(ClientId(hex.unwrap_or_else(|| s.as_bytes().to_vec())))
    }
}

/// One IPv4 subnet that a network serves, with the options every client in it gets.
#[derive(Clone, Debug, PartialEq)]
pub struct Subnet {
    /// The prefix; reservations are matched to subnets by address.
    pub net: Ipv4Net,
    /// Lease length in seconds; `None` is an infinite lease (dnsmasq's `infinite`).
    pub lease_secs: Option<u32>,
    /// Options for this subnet (router, DNS, routes, MTU, …), already encoded for the wire.
    pub options: OptionSet,
}

/// A static binding: the address Neutron allocated to a port, keyed by MAC and/or client id.
#[derive(Clone, Debug, PartialEq)]
pub struct Reservation {
    /// The port's MAC, if the reservation is by hardware address.
    pub mac: Option<Mac>,
    /// The client id (`id:` in the host file), if the reservation is by client id.
    pub client_id: Option<ClientId>,
    /// The address handed out.
    pub ip: Ipv4Addr,
    /// The name sent as option 12 and shown in the DHCPACK log line.
    pub hostname: Option<String>,
    /// Per-host options (Neutron's `extra_dhcp_opts`), overriding the subnet's.
    pub options: OptionSet,
    /// Per-host options given only to clients that match (Neutron's `tag:ipxe,…` options).
    pub conditional: Vec<Conditional>,
}

/// What a client's message must show for [`Conditional`] options to apply: dnsmasq's
/// `--dhcp-match` and `--dhcp-userclass` tags (Neutron sets `ipxe` for option 175).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMatch {
    /// The client sent this option (`--dhcp-match=set:ipxe,175`).
    SentOption(u8),
    /// The client's user class (option 77) contains these bytes (`--dhcp-userclass`).
    UserClass(Vec<u8>),
}

impl ClientMatch {
    /// True when `m` shows what this match looks for.
    pub fn matches(&self, m: &crate::Inbound) -> bool {
        match self {
            ClientMatch::SentOption(code) => m.sent.contains(*code),
            ClientMatch::UserClass(text) => m.user_class.as_ref().is_some_and(|uc| {
                !text.is_empty() && uc.windows(text.len()).any(|w| w == text.as_slice())
            }),
        }
    }
}

/// Options for the clients that match every condition.
#[derive(Clone, Debug, PartialEq)]
pub struct Conditional {
    /// All must hold.
    pub when: Vec<ClientMatch>,
    /// Given over the host's other options.
    pub options: OptionSet,
}

impl Reservation {
    /// The host's options for client message `m`: its own, with those of every conditional
    /// whose conditions `m` meets laid over them. Borrowed when none applies (the usual case).
    pub fn options_for(&self, m: &crate::Inbound) -> std::borrow::Cow<'_, OptionSet> {
        let mut applying = self
            .conditional
            .iter()
            .filter(|c| c.when.iter().all(|w| w.matches(m)))
            .peekable();
        if applying.peek().is_none() {
            return std::borrow::Cow::Borrowed(&self.options);
        }
        let mut o = self.options.clone();
        for c in applying {
            for (code, v) in c.options.iter() {
                o.insert(code, v.clone());
            }
        }
        std::borrow::Cow::Owned(o)
    }
}

/// Everything one network serves: subnets and the reservation index, rebuilt or updated as a
/// whole and read without locks by the dataplane.
#[derive(Clone, Debug, Default)]
pub struct NetworkTable {
    /// Subnets in configuration order.
    pub subnets: Vec<Subnet>,
    /// Options for every subnet of the network (dnsmasq's untagged options).
    pub global_options: OptionSet,
    /// Domain (option 15) unless an option overrides it.
    pub domain: Option<String>,
    /// Reservations, in the order they were configured.
    reservations: Vec<Reservation>,
    by_mac: HashMap<Mac, usize>,
    by_client_id: HashMap<ClientId, usize>,
}

impl NetworkTable {
    /// Trims the subnets' and the network's option sets to their size (see
    /// [`OptionSet::shrink_to_fit`]).
    pub fn shrink_options(&mut self) {
        self.global_options.shrink_to_fit();
        for s in &mut self.subnets {
            s.options.shrink_to_fit();
        }
    }

    /// Builds a table; later duplicates of a MAC or client id win, as in dnsmasq's host file.
    pub fn new(subnets: Vec<Subnet>, reservations: Vec<Reservation>) -> Self {
        let mut t = NetworkTable {
            subnets,
            ..Default::default()
        };
        t.shrink_options();
        t.reservations.reserve(reservations.len());
        t.by_mac.reserve(reservations.len());
        for r in reservations {
            t.upsert(r);
        }
        t
    }

    /// Inserts or replaces the reservation for the MAC / client id of `r`, in O(1).
    pub fn upsert(&mut self, r: Reservation) {
        let existing = r
            .client_id
            .as_ref()
            .and_then(|c| self.by_client_id.get(c).copied())
            .or_else(|| r.mac.and_then(|m| self.by_mac.get(&m).copied()));
        let idx = match existing {
            Some(i) => {
                let old = std::mem::replace(&mut self.reservations[i], r);
                self.unindex(&old, i);
                i
            }
            None => {
                self.reservations.push(r);
                self.reservations.len() - 1
            }
        };
        let r = &self.reservations[idx];
        if let Some(m) = r.mac {
            self.by_mac.insert(m, idx);
        }
        if let Some(c) = &r.client_id {
            self.by_client_id.insert(c.clone(), idx);
        }
    }

    fn unindex(&mut self, old: &Reservation, idx: usize) {
        if let Some(m) = old.mac {
            if self.by_mac.get(&m) == Some(&idx) {
                self.by_mac.remove(&m);
            }
        }
        if let Some(c) = &old.client_id {
            if self.by_client_id.get(c) == Some(&idx) {
                self.by_client_id.remove(c);
            }
        }
    }

    /// Removes the reservation held by `mac`, returning it.
    pub fn remove_mac(&mut self, mac: Mac) -> Option<Reservation> {
        let idx = self.by_mac.get(&mac).copied()?;
        let last = self.reservations.len() - 1;
        let old = self.reservations.swap_remove(idx);
        self.unindex(&old, idx);
        if idx != last {
            // the former last entry moved to `idx`: re-point its index entries
            let moved = self.reservations[idx].clone();
            if let Some(m) = moved.mac {
                self.by_mac.insert(m, idx);
            }
            if let Some(c) = moved.client_id {
                self.by_client_id.insert(c, idx);
            }
        }
        Some(old)
    }

    /// Finds the reservation for a client: by client id first, then by MAC (dnsmasq's order).
    pub fn lookup(&self, mac: Mac, client_id: Option<&ClientId>) -> Option<&Reservation> {
        client_id
            .and_then(|c| self.by_client_id.get(c))
            .or_else(|| self.by_mac.get(&mac))
            .map(|&i| &self.reservations[i])
    }

    /// All reservations, for diffing on reload and for listing.
    pub fn reservations(&self) -> &[Reservation] {
        &self.reservations
    }

    /// The subnet that contains `ip`, if this network serves it.
    pub fn subnet_of(&self, ip: Ipv4Addr) -> Option<&Subnet> {
        self.subnets.iter().find(|s| s.net.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(mac: &str, ip: &str) -> Reservation {
        Reservation {
            mac: Some(mac.parse().unwrap()),
            client_id: None,
            ip: ip.parse().unwrap(),
            hostname: None,
            options: OptionSet::default(),
            conditional: Vec::new(),
        }
    }

    #[test]
    fn mac_parses_colon_and_dash_forms_and_rejects_junk() {
        assert_eq!(
            "fa:16:3e:00:00:01".parse::<Mac>().unwrap(),
            Mac([0xfa, 0x16, 0x3e, 0, 0, 1])
        );
        assert_eq!(
            "FA-16-3E-00-00-01".parse::<Mac>().unwrap().to_string(),
            "fa:16:3e:00:00:01"
        );
        for bad in [
            "",
            "fa:16:3e:00:00",
            "fa:16:3e:00:00:01:02",
            "zz:16:3e:00:00:01",
            "fa::3e:00:00:01",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }

    #[test]
    fn client_id_accepts_hex_or_string() {
        assert_eq!(
            ClientId::parse_dnsmasq("01:fa:16").unwrap().0,
            vec![1, 0xfa, 0x16]
        );
        assert_eq!(ClientId::parse_dnsmasq("abc").unwrap().0, b"abc".to_vec());
        assert!(ClientId::parse_dnsmasq("*").is_none());
    }

    #[test]
    fn upsert_replaces_and_remove_keeps_index_consistent() {
        let mut t = NetworkTable::new(
            vec![],
            vec![
                res("fa:16:3e:00:00:01", "10.0.0.1"),
                res("fa:16:3e:00:00:02", "10.0.0.2"),
                res("fa:16:3e:00:00:03", "10.0.0.3"),
            ],
        );
        t.upsert(res("fa:16:3e:00:00:02", "10.0.0.22"));
        assert_eq!(t.reservations().len(), 3);
        let m1: Mac = "fa:16:3e:00:00:01".parse().unwrap();
        let m2: Mac = "fa:16:3e:00:00:02".parse().unwrap();
        let m3: Mac = "fa:16:3e:00:00:03".parse().unwrap();
        assert_eq!(
            t.lookup(m2, None).unwrap().ip,
            "10.0.0.22".parse::<Ipv4Addr>().unwrap()
        );
        assert!(t.remove_mac(m1).is_some());
        assert!(t.lookup(m1, None).is_none());
        assert_eq!(
            t.lookup(m3, None).unwrap().ip,
            "10.0.0.3".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(
            t.lookup(m2, None).unwrap().ip,
            "10.0.0.22".parse::<Ipv4Addr>().unwrap()
        );
    }

    #[test]
    fn lookup_prefers_client_id_over_mac() {
        let mut by_id = res("fa:16:3e:00:00:09", "10.0.0.9");
        by_id.mac = None;
        by_id.client_id = Some(ClientId(vec![1, 2, 3]));
        let t = NetworkTable::new(vec![], vec![res("fa:16:3e:00:00:01", "10.0.0.1"), by_id]);
        let m1: Mac = "fa:16:3e:00:00:01".parse().unwrap();
        assert_eq!(
            t.lookup(m1, Some(&ClientId(vec![1, 2, 3])))
                .unwrap()
                .ip
                .to_string(),
            "10.0.0.9"
        );
        assert_eq!(
            t.lookup(m1, Some(&ClientId(vec![9])))
                .unwrap()
                .ip
                .to_string(),
            "10.0.0.1"
        );
    }
}
