//! One journal record: a DHCPv4 or DHCPv6 lease change in a named network, as one checksummed
//! line of text (`B`/`R`/`D` for DHCPv4, `B6`/`R6`/`D6` for DHCPv6).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use qdhcp_protocol::v6::{Change6, Lease6};
use qdhcp_protocol::{ClientId, Lease, LeaseChange, Mac};

/// One journal record: a lease change in a named network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Network name (`default` in dnsmasq mode, the network id in serve mode), shared with the
    /// network's own: a record per lease change costs no copy of it.
    pub network: Arc<str>,
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

/// Encodes one record as a checksummed line, written straight into `out` (no `fmt`: the
/// journal writer encodes every lease change, and formatting was 5% of a saturated serving
/// core, bench/DHCPV6.md). The line is byte for byte what `decode` reads.
pub fn encode(r: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    let mut w = Line(out);
    match &r.change {
        Change::V6(Change6::Bind(l)) => {
            w.word(b"B6")
                .str(&r.network)
                .hex(&l.duid.0)
                .dec(u64::from(l.iaid));
            w.v6(l.addr).mac(l.mac).dec(l.expires.unwrap_or(0));
            w.str(l.hostname.as_deref().unwrap_or("*"));
        }
        Change::V6(Change6::Release { duid, iaid, addr }) => {
            w.word(b"R6")
                .str(&r.network)
                .hex(&duid.0)
                .dec(u64::from(*iaid))
                .v6(*addr);
        }
        Change::V6(Change6::Decline { duid, iaid, addr }) => {
            w.word(b"D6")
                .str(&r.network)
                .hex(&duid.0)
                .dec(u64::from(*iaid))
                .v6(*addr);
        }
        Change::V4(LeaseChange::Bind(l)) => {
            w.word(b"B")
                .str(&r.network)
                .mac(l.mac)
                .v4(l.ip)
                .dec(l.expires.unwrap_or(0));
            match &l.client_id {
                Some(c) => w.hex(&c.0),
                None => w.str("*"),
            };
            w.str(l.hostname.as_deref().unwrap_or("*"));
        }
        Change::V4(LeaseChange::Release { mac, ip }) => {
            w.word(b"R").str(&r.network).mac(*mac).v4(*ip);
        }
        Change::V4(LeaseChange::Decline { mac, ip, until }) => {
            w.word(b"D").str(&r.network).mac(*mac).v4(*ip).dec(*until);
        }
    }
    let crc = crc32fast::hash(&out[start..]);
    out.push(b' ');
    for shift in (0..8).rev() {
        out.push(HEX[(crc >> (shift * 4)) as usize & 15]);
    }
    out.push(b'\n');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A line being written: fields separated by one space.
struct Line<'a>(&'a mut Vec<u8>);

impl Line<'_> {
    /// The first field.
    fn word(&mut self, w: &[u8]) -> &mut Self {
        self.0.extend_from_slice(w);
        self
    }

    fn sep(&mut self) {
        self.0.push(b' ');
    }

    fn str(&mut self, s: &str) -> &mut Self {
        self.sep();
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    /// Bytes as two-digit lowercase hex joined by colons (DUIDs, client ids).
    fn hex(&mut self, bytes: &[u8]) -> &mut Self {
        self.sep();
        for (i, b) in bytes.iter().enumerate() {
            if i > 0 {
                self.0.push(b':');
            }
            self.0.push(HEX[usize::from(b >> 4)]);
            self.0.push(HEX[usize::from(b & 15)]);
        }
        self
    }

    fn mac(&mut self, m: Mac) -> &mut Self {
        self.hex(&m.0)
    }

    fn dec(&mut self, v: u64) -> &mut Self {
        self.sep();
        push_dec(self.0, v);
        self
    }

    fn v4(&mut self, ip: Ipv4Addr) -> &mut Self {
        self.sep();
        for (i, o) in ip.octets().iter().enumerate() {
            if i > 0 {
                self.0.push(b'.');
            }
            push_dec(self.0, u64::from(*o));
        }
        self
    }

    /// An IPv6 address as `Ipv6Addr`'s `Display` writes it (RFC 5952).
    fn v6(&mut self, a: Ipv6Addr) -> &mut Self {
        self.sep();
        push_v6(self.0, a);
        self
    }
}

fn push_dec(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// RFC 5952's text form, as `Ipv6Addr`'s `Display`: hex groups without leading zeros, the
/// longest run of two or more zero groups (the first of equals) as `::`; an IPv4-mapped
/// address with its dotted quad.
fn push_v6(out: &mut Vec<u8>, a: Ipv6Addr) {
    if let Some(v4) = a.to_ipv4_mapped() {
        out.extend_from_slice(b"::ffff:");
        for (i, o) in v4.octets().iter().enumerate() {
            if i > 0 {
                out.push(b'.');
            }
            push_dec(out, u64::from(*o));
        }
        return;
    }
    let g = a.segments();
    let (mut best, mut best_len, mut i) = (0, 0, 0);
    while i < 8 {
        let run = g[i..].iter().take_while(|x| **x == 0).count();
        if run > best_len {
            (best, best_len) = (i, run);
        }
        i += run.max(1);
    }
    let group = |out: &mut Vec<u8>, x: u16| {
        let mut started = false;
        for shift in (0..4).rev() {
            let d = (x >> (shift * 4)) & 15;
            if d != 0 || started || shift == 0 {
                started = true;
                out.push(HEX[usize::from(d)]);
            }
        }
    };
    if best_len < 2 {
        for (i, x) in g.iter().enumerate() {
            if i > 0 {
                out.push(b':');
            }
            group(out, *x);
        }
        return;
    }
    for (i, x) in g[..best].iter().enumerate() {
        if i > 0 {
            out.push(b':');
        }
        group(out, *x);
    }
    out.extend_from_slice(b"::");
    for (i, x) in g[best + best_len..].iter().enumerate() {
        if i > 0 {
            out.push(b':');
        }
        group(out, *x);
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
        network: Arc::from(f[1]),
        change,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use qdhcp_protocol::v6::Duid;

    /// The encoder before it stopped using `fmt`: lines on disk must not change.
    fn encode_with_fmt(r: &Record) -> String {
        let opt = |v: &Option<ClientId>| v.as_ref().map_or("*".to_string(), |c| c.to_string());
        let body = match &r.change {
            Change::V6(Change6::Bind(l)) => format!(
                "B6 {} {} {} {} {} {} {}",
                r.network,
                l.duid,
                l.iaid,
                l.addr,
                l.mac,
                l.expires.unwrap_or(0),
                l.hostname.as_deref().unwrap_or("*")
            ),
            Change::V6(Change6::Release { duid, iaid, addr }) => {
                format!("R6 {} {duid} {iaid} {addr}", r.network)
            }
            Change::V6(Change6::Decline { duid, iaid, addr }) => {
                format!("D6 {} {duid} {iaid} {addr}", r.network)
            }
            Change::V4(LeaseChange::Bind(l)) => format!(
                "B {} {} {} {} {} {}",
                r.network,
                l.mac,
                l.ip,
                l.expires.unwrap_or(0),
                opt(&l.client_id),
                l.hostname.as_deref().unwrap_or("*")
            ),
            Change::V4(LeaseChange::Release { mac, ip }) => format!("R {} {mac} {ip}", r.network),
            Change::V4(LeaseChange::Decline { mac, ip, until }) => {
                format!("D {} {mac} {ip} {until}", r.network)
            }
        };
        format!("{body} {:08x}\n", crc32fast::hash(body.as_bytes()))
    }

    /// A few thousand addresses from a simple generator, zero groups made common.
    fn addresses() -> Vec<Ipv6Addr> {
        let mut v: Vec<Ipv6Addr> = [
            "::",
            "::1",
            "1::",
            "1::1",
            "1:0:0:1:0:0:0:1",
            "1:0:0:1:0:0:1:1",
            "0:0:1::",
            "2001:db8::1:0:0:1",
            "2001:db8:0:1:1:1:1:1",
            "fe80::f816:3eff:fe00:1",
            "::ffff:10.0.0.1",
            "::10.0.0.1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "2001:db8:1::10",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..5000 {
            let mut g = [0u16; 8];
            for s in &mut g {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *s = if x.is_multiple_of(3) {
                    (x >> 20) as u16
                } else {
                    0
                };
            }
            v.push(Ipv6Addr::from(g));
        }
        v
    }

    #[test]
    fn ipv6_addresses_are_written_as_display_writes_them() {
        for a in addresses() {
            let mut out = Vec::new();
            push_v6(&mut out, a);
            assert_eq!(String::from_utf8(out).unwrap(), a.to_string(), "{a:?}");
        }
    }

    #[test]
    fn every_kind_of_record_is_the_line_the_fmt_encoder_wrote_and_decodes_back() {
        let duid = Duid(vec![
            0, 1, 0, 1, 0x2a, 0xff, 0x10, 0x00, 0xfa, 0x16, 0x3e, 0, 0, 9,
        ]);
        let mac = Mac([0xfa, 0x16, 0x3e, 0x0a, 0xb0, 0x01]);
        let mut records = Vec::new();
        for (i, addr) in addresses().into_iter().take(200).enumerate() {
            let i = i as u32;
            records.push(Change::V6(Change6::Bind(Lease6 {
                duid: duid.clone(),
                iaid: i * 7919,
                addr,
                mac,
                expires: (!i.is_multiple_of(3)).then_some(1_765_000_000 + u64::from(i)),
                hostname: i.is_multiple_of(2).then(|| format!("host-{i}")),
            })));
            records.push(Change::V6(Change6::Release {
                duid: duid.clone(),
                iaid: u32::MAX - i,
                addr,
            }));
            records.push(Change::V6(Change6::Decline {
                duid: duid.clone(),
                iaid: i,
                addr,
            }));
            let ip = Ipv4Addr::from(0x0a00_0000 + i * 65_537);
            records.push(Change::V4(LeaseChange::Bind(Lease {
                mac,
                ip,
                expires: (!i.is_multiple_of(4)).then_some(u64::from(i) * 1_000_003),
                client_id: i
                    .is_multiple_of(3)
                    .then(|| ClientId(vec![1, 0xfa, 0x16, 0x3e, 0, 0, i as u8])),
                hostname: i.is_multiple_of(5).then(|| "vm-1".to_string()),
            })));
            records.push(Change::V4(LeaseChange::Release { mac, ip }));
            records.push(Change::V4(LeaseChange::Decline {
                mac,
                ip,
                until: u64::from(i) << 20,
            }));
        }
        for change in records {
            let r = Record {
                network: "3b2f0c2e-5a1d-4c43-9d6a-1b2c3d4e5f60".into(),
                change,
            };
            let mut out = Vec::new();
            encode(&r, &mut out);
            let line = String::from_utf8(out).unwrap();
            assert_eq!(line, encode_with_fmt(&r));
            assert_eq!(decode(line.trim_end()), Some(r));
        }
    }
}
