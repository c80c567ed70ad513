//! The dnsmasq-style log line for each message, as data: operators grep for
//! `DHCPDISCOVER(ns-…) <mac>`, `DHCPACK(ns-…) <ip> <mac> <name>`; the dataplane renders it.

use std::fmt;
use std::net::Ipv4Addr;

use crate::types::Mac;

/// One DHCP event in dnsmasq's wording, without the interface (known only at the edge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// `DHCPDISCOVER`, `DHCPOFFER`, …
    pub kind: &'static str,
    /// The address concerned, when there is one.
    pub ip: Option<Ipv4Addr>,
    /// The client's hardware address.
    pub mac: Mac,
    /// Host name or reason (`no address available`, `wrong address`, …).
    pub note: Option<String>,
}

impl LogLine {
    /// A line with no note.
    pub fn new(kind: &'static str, ip: Option<Ipv4Addr>, mac: Mac) -> Self {
        LogLine {
            kind,
            ip,
            mac,
            note: None,
        }
    }
    /// Adds a host name or reason.
    pub fn note(mut self, n: &str) -> Self {
        self.note = Some(n.to_string());
        self
    }
    /// Adds a note when there is one.
    pub fn note_opt(mut self, n: Option<String>) -> Self {
        self.note = n;
        self
    }
    /// Renders the line as dnsmasq prints it for interface `iface`.
    pub fn render<'a>(&'a self, iface: &'a str) -> impl fmt::Display + 'a {
        Rendered { line: self, iface }
    }
}

struct Rendered<'a> {
    line: &'a LogLine,
    iface: &'a str,
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = self.line;
        write!(f, "{}({})", l.kind, self.iface)?;
        if let Some(ip) = l.ip {
            write!(f, " {ip}")?;
        }
        write!(f, " {}", l.mac)?;
        if let Some(n) = &l.note {
            write!(f, " {n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_dnsmasq() {
        let mac: Mac = "fa:16:3e:aa:bb:cc".parse().unwrap();
        let l = LogLine::new("DHCPACK", Some(Ipv4Addr::new(172, 16, 1, 103)), mac)
            .note("host-172-16-1-103");
        assert_eq!(
            l.render("ns-19a0ed3d-fe").to_string(),
            "DHCPACK(ns-19a0ed3d-fe) 172.16.1.103 fa:16:3e:aa:bb:cc host-172-16-1-103"
        );
        let d = LogLine::new("DHCPDISCOVER", None, mac).note("no address available");
        assert_eq!(
            d.render("ns-x").to_string(),
            "DHCPDISCOVER(ns-x) fa:16:3e:aa:bb:cc no address available"
        );
    }
}
