//! The DHCPv6 part of dnsmasq's leases file: after the IPv4 lines, `duid <server DUID>`, then
//! `<expiry> <IAID> <address> <host|*> <client DUID>` per lease. Neutron keeps the `duid` line
//! across `restart()` so that the server keeps its identifier and clients can renew with it.

use std::fmt::Write as _;
use std::net::Ipv6Addr;

use qdhcp_protocol::v6::Duid;

/// One DHCPv6 lease line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseLine6 {
    /// Expiry, epoch seconds; 0 = infinite.
    pub expiry: u64,
    /// The client's IAID.
    pub iaid: u32,
    /// The leased address.
    pub addr: Ipv6Addr,
    /// Host name without its domain.
    pub hostname: Option<String>,
    /// The client's DUID.
    pub duid: Duid,
}

/// What a leases file says for DHCPv6: the server DUID, if any, and the leases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leases6File {
    /// The `duid` line's DUID.
    pub server_duid: Option<Duid>,
    /// The DHCPv6 leases.
    pub leases: Vec<LeaseLine6>,
}

/// Reads the `duid` line and the DHCPv6 lease lines of a leases file (IPv4 lines skipped).
pub fn parse_leases6(text: &str) -> Leases6File {
    let mut out = Leases6File::default();
    for raw in text.lines() {
        let f: Vec<&str> = raw.split_whitespace().collect();
        match f.as_slice() {
            ["duid", d] => out.server_duid = d.parse().ok(),
            [exp, iaid, addr, host, duid, ..] if addr.contains(':') => {
                let parsed = (|| {
                    Some(LeaseLine6 {
                        expiry: exp.parse().ok()?,
                        iaid: iaid.parse().ok()?,
                        addr: addr.parse().ok()?,
                        hostname: (*host != "*").then(|| host.to_string()),
                        duid: duid.parse().ok()?,
                    })
                })();
                out.leases.extend(parsed);
            }
            _ => {}
        }
    }
    out
}

/// Appends the `duid` line and the DHCPv6 lease lines to a leases file's text.
pub fn format_leases6(out: &mut String, server_duid: &Duid, leases: &[LeaseLine6]) {
    let _ = writeln!(out, "duid {server_duid}");
    for l in leases {
        let _ = writeln!(
            out,
            "{} {} {} {} {}",
            l.expiry,
            l.iaid,
            l.addr,
            l.hostname.as_deref().unwrap_or("*"),
            l.duid
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnsmasqs_dual_stack_leases_file_round_trips() {
        // as dnsmasq 2.90 writes it under Neutron
        let text = "1733600000 fa:16:3e:7a:06:03 10.0.0.3 host-10-0-0-3 *\n\
            duid 00:01:00:01:2e:f1:aa:bb:fa:16:3e:00:00:fe\n\
            1733600000 1234567890 2001:db8:6::103 host-2001-db8-6--103 00:01:00:01:2e:f1:00:01:52:54:00:00:00:01\n";
        let f = parse_leases6(text);
        assert_eq!(
            f.server_duid.as_ref().unwrap().to_string(),
            "00:01:00:01:2e:f1:aa:bb:fa:16:3e:00:00:fe"
        );
        assert_eq!(f.leases.len(), 1);
        assert_eq!(f.leases[0].iaid, 1234567890);
        let mut out = String::from("1733600000 fa:16:3e:7a:06:03 10.0.0.3 host-10-0-0-3 *\n");
        format_leases6(&mut out, f.server_duid.as_ref().unwrap(), &f.leases);
        assert_eq!(out, text);
        // the v4 reader skips all of it
        let (v4, errs) = crate::files::parse_leases(text);
        assert_eq!((v4.len(), errs.len()), (1, 0));
    }
}
