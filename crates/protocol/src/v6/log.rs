//! The dnsmasq-style log line of a DHCPv6 event, as data: `DHCPSOLICIT(ns-…) <duid>`,
//! `DHCPADVERTISE(ns-…) <addr> <duid>`, `DHCPREPLY(ns-…) <addr> <duid> <host>`.

use std::fmt;
use std::net::Ipv6Addr;

use crate::v6::frontdoor::Duid;

/// One DHCPv6 event in dnsmasq's wording, without the interface (known only at the edge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log6 {
    /// `DHCPSOLICIT`, `DHCPREPLY`, …
    pub kind: &'static str,
    /// The address concerned, when there is one.
    pub addr: Option<Ipv6Addr>,
    /// The client's DUID (empty for an anonymous INFORMATION-REQUEST).
    pub duid: Duid,
    /// Host name or reason.
    pub note: Option<String>,
}

impl Log6 {
    /// A line with no note.
    pub fn new(kind: &'static str, addr: Option<Ipv6Addr>, duid: &Duid) -> Log6 {
        Log6 {
            kind,
            addr,
            duid: duid.clone(),
            note: None,
        }
    }

    /// Renders the line as dnsmasq prints it for interface `iface`.
    pub fn render<'a>(&'a self, iface: &'a str) -> impl fmt::Display + 'a {
        Rendered { line: self, iface }
    }
}

struct Rendered<'a> {
    line: &'a Log6,
    iface: &'a str,
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = self.line;
        write!(f, "{}({})", l.kind, self.iface)?;
        if let Some(a) = l.addr {
            write!(f, " {a}")?;
        }
        if !l.duid.0.is_empty() {
            write!(f, " {}", l.duid)?;
        }
        if let Some(n) = &l.note {
            write!(f, " {n}")?;
        }
        Ok(())
    }
}
