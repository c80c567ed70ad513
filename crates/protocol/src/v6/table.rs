//! What a DHCPv6 server serves on one link: the subnets (each with its lease time and options)
//! and the hosts, keyed by MAC as Neutron's hosts file keys them (never by DUID), each with its
//! fixed addresses (none on a stateless subnet) and its own options.

use std::net::Ipv6Addr;

use ahash::HashMap;
use dhcproto::v6::DhcpOption;
use ipnet::Ipv6Net;

use crate::types::Mac;
use crate::v6::options::Options6;

/// One IPv6 subnet served on the link (`--dhcp-range=set:subnet-…,2001:db8::,static,64,…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet6 {
    /// The prefix.
    pub net: Ipv6Net,
    /// The lease time for its addresses, seconds (`u32::MAX`: infinite).
    pub lease_secs: u32,
    /// Options for clients of this subnet (`tag:subnet-…,option6:…`).
    pub options: Options6,
}

/// One host line with `tag:dhcpv6`: a port's MAC, its IPv6 addresses, its name and options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host6 {
    /// The port's MAC.
    pub mac: Mac,
    /// Its fixed addresses (empty on a stateless subnet: options only).
    pub addrs: Vec<Ipv6Addr>,
    /// Host name as written in the hosts file (may carry the domain).
    pub hostname: Option<String>,
    /// The port's own options (`tag:port-…,option6:…`).
    pub options: Options6,
}

impl Host6 {
    /// The name without its domain, as the leases file and log lines carry it.
    pub fn short_name(&self) -> Option<&str> {
        self.hostname
            .as_deref()
            .map(|h| h.split('.').next().unwrap_or(h))
            .filter(|h| !h.is_empty())
    }
}

/// The DHCPv6 side of one network: its subnets and hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table6 {
    /// Subnets, in configuration order.
    pub subnets: Vec<Subnet6>,
    hosts: HashMap<Mac, Host6>,
    /// Per subnet, how many host addresses lie in it (none: a stateless subnet).
    addrs_in: Vec<usize>,
    /// Options for everyone (untagged `option6:` lines).
    pub global: Options6,
    /// `--domain` as the domain search list sent when none is configured: made once, not for
    /// every message that asks for it.
    domain_search: Option<DhcpOption>,
    /// `--dhcp-rapid-commit`: a SOLICIT with Rapid Commit is answered with a REPLY at once.
    pub rapid_commit: bool,
    /// With no DNS servers configured, announce our own address (dnsmasq does, unless its DNS
    /// is off with `--port=0`).
    pub default_dns_self: bool,
}

impl Table6 {
    /// A table of these subnets and hosts.
    pub fn new(subnets: Vec<Subnet6>, hosts: impl IntoIterator<Item = Host6>) -> Table6 {
        let mut t = Table6 {
            addrs_in: vec![0; subnets.len()],
            subnets,
            ..Table6::default()
        };
        for h in hosts {
            t.upsert(h);
        }
        t
    }

    /// Adds (`+1`) or takes away (`-1`) a host's addresses from the per-subnet counts.
    fn count(&mut self, h: &Host6, add: bool) {
        for a in &h.addrs {
            if let Some(i) = self.subnets.iter().position(|s| s.net.contains(a)) {
                let c = &mut self.addrs_in[i];
                *c = if add { *c + 1 } else { c.saturating_sub(1) };
            }
        }
    }

    /// Subnets where no host has an address: stateless ones (options only).
    pub fn stateless_subnets(&self) -> impl Iterator<Item = &Subnet6> {
        self.subnets
            .iter()
            .zip(&self.addrs_in)
            .filter(|(_, n)| **n == 0)
            .map(|(s, _)| s)
    }

    /// The host line for a MAC.
    pub fn host(&self, mac: Mac) -> Option<&Host6> {
        self.hosts.get(&mac)
    }

    /// Adds or replaces the host of a MAC.
    pub fn upsert(&mut self, h: Host6) -> Option<Host6> {
        self.count(&h, true);
        let old = self.hosts.insert(h.mac, h);
        if let Some(o) = &old {
            self.count(o, false);
        }
        old
    }

    /// Removes the host of a MAC.
    pub fn remove_mac(&mut self, mac: Mac) -> Option<Host6> {
        let old = self.hosts.remove(&mac);
        if let Some(o) = &old {
            self.count(o, false);
        }
        old
    }

    /// Every host, in no particular order.
    pub fn hosts(&self) -> impl Iterator<Item = &Host6> {
        self.hosts.values()
    }

    /// The subnet holding an address.
    pub fn subnet_of(&self, a: Ipv6Addr) -> Option<&Subnet6> {
        self.subnets.iter().find(|s| s.net.contains(&a))
    }

    /// Sets `--domain`, the domain search list of clients with none configured (a name that
    /// is not a valid domain name is never sent).
    pub fn set_domain(&mut self, domain: Option<&str>) {
        self.domain_search = domain
            .and_then(|d| dhcproto::Name::from_utf8(d).ok())
            .map(|n| DhcpOption::DomainSearchList(vec![n]));
    }

    /// The domain search list option made from `--domain`.
    pub fn domain_search(&self) -> Option<&DhcpOption> {
        self.domain_search.as_ref()
    }

    /// True when the table serves nothing (no DHCPv6 range).
    pub fn is_empty(&self) -> bool {
        self.subnets.is_empty()
    }
}
