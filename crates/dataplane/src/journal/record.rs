//! One journal record: a DHCPv4 or DHCPv6 lease change in a named network, as one checksummed
//! line of text (`B`/`R`/`D` for DHCPv4, `B6`/`R6`/`D6` for DHCPv6).

use std::net::Ipv4Addr;

use qdhcp_protocol::v6::{Change6, Lease6};
use qdhcp_protocol::{ClientId, Lease, LeaseChange, Mac};

/// One journal record: a lease change in a named network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Network name (`default` in dnsmasq mode, the network id in serve mode).
    pub network: String,
    /// The change.
    pub change: Change,
}

/// A DHCPv4 or a DHCPv6 lease change: both go to the one journal, so one fdatasync makes a
/// batch of either durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// DHCPv4.
    V4(LeaseChange),
    /// DHCPv6.
    V6(Change6),
}

impl From<LeaseChange> for Change {
    fn from(c: LeaseChange) -> Change {
        Change::V4(c)
    }
}

impl From<Change6> for Change {
    fn from(c: Change6) -> Change {
        Change::V6(c)
    }
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|x| x.to_string())
        .unwrap_or_else(|| "*".into())
}

/// Encodes one record as a checksummed line.
pub fn encode(r: &Record, out: &mut Vec<u8>) {
    let body = match &r.change {
        Change::V6(c) => encode6(&r.network, c),
        Change::V4(LeaseChange::Bind(l)) => format!(
            "B {} {} {} {} {} {}",
            r.network,
            l.mac,
            l.ip,
            l.expires.unwrap_or(0),
            opt(&l.client_id),
            l.hostname.as_deref().unwrap_or("*")
        ),
        Change::V4(LeaseChange::Release { mac, ip }) => {
            format!("R {} {} {}", r.network, mac, ip)
        }
        Change::V4(LeaseChange::Decline { mac, ip, until }) => {
            format!("D {} {} {} {}", r.network, mac, ip, until)
        }
    };
    let crc = crc32fast::hash(body.as_bytes());
    out.extend_from_slice(body.as_bytes());
    out.extend_from_slice(format!(" {crc:08x}\n").as_bytes());
}

/// The body of a DHCPv6 record: `B6 net duid iaid addr mac expiry host`, `R6`/`D6 net duid
/// iaid addr`.
fn encode6(network: &str, c: &Change6) -> String {
    match c {
        Change6::Bind(l) => format!(
            "B6 {network} {} {} {} {} {} {}",
            l.duid,
            l.iaid,
            l.addr,
            l.mac,
            l.expires.unwrap_or(0),
            l.hostname.as_deref().unwrap_or("*")
        ),
        Change6::Release { duid, iaid, addr } => format!("R6 {network} {duid} {iaid} {addr}"),
        Change6::Decline { duid, iaid, addr } => format!("D6 {network} {duid} {iaid} {addr}"),
    }
}

/// Decodes one line; `None` when damaged.
pub fn decode(line: &str) -> Option<Record> {
    let (body, crc) = line.rsplit_once(' ')?;
    if u32::from_str_radix(crc, 16).ok()? != crc32fast::hash(body.as_bytes()) {
        return None;
    }
    let f: Vec<&str> = body.split(' ').collect();
    let mac = |s: &str| s.parse::<Mac>().ok();
    let ip = |s: &str| s.parse::<Ipv4Addr>().ok();
    let change = match (f.first()?, f.len()) {
        (&"B6", 8) => Change::V6(Change6::Bind(Lease6 {
            duid: f[2].parse().ok()?,
            iaid: f[3].parse().ok()?,
            addr: f[4].parse().ok()?,
            mac: mac(f[5])?,
            expires: match f[6].parse::<u64>().ok()? {
                0 => None,
                e => Some(e),
            },
            hostname: (f[7] != "*").then(|| f[7].to_string()),
        })),
        (&"R6", 5) | (&"D6", 5) => {
            let (duid, iaid, addr) = (f[2].parse().ok()?, f[3].parse().ok()?, f[4].parse().ok()?);
            Change::V6(if f[0] == "R6" {
                Change6::Release { duid, iaid, addr }
            } else {
                Change6::Decline { duid, iaid, addr }
            })
        }
        (&"B", 7) => Change::V4({
            let exp: u64 = f[4].parse().ok()?;
            LeaseChange::Bind(Lease {
                mac: mac(f[2])?,
                ip: ip(f[3])?,
                expires: (exp != 0).then_some(exp),
                client_id: ClientId::parse_dnsmasq(f[5]),
                hostname: (f[6] != "*").then(|| f[6].to_string()),
            })
        }),
        (&"R", 4) => Change::V4(LeaseChange::Release {
            mac: mac(f[2])?,
            ip: ip(f[3])?,
        }),
        (&"D", 5) => Change::V4(LeaseChange::Decline {
            mac: mac(f[2])?,
            ip: ip(f[3])?,
            until: f[4].parse().ok()?,
        }),
        _ => return None,
    };
    Some(Record {
        network: f[1].to_string(),
        change,
    })
}
