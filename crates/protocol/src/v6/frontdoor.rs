//! The DHCPv6 front door: every byte is checked here before `dhcproto` decodes it.
//!
//! `dhcproto` 0.15's v6 decoder stops at the first option it cannot read and keeps what came
//! before (so one bad option silently removes every later one), subtracts from option lengths
//! without checking them (status code, vendor class), and reads a RELAY-FORW's inner message
//! as another relay message. So relay framing (RFC 8415 §9) is read here, every option TLV of
//! the client's message is walked with the lengths its type allows, nesting included; then
//! `dhcproto` decodes, one by one, the options the server acts on (an IA_NA must decode with
//! as many options as the walk found in it). No I/O here.

use std::fmt;
use std::net::Ipv6Addr;

use dhcproto::v6::{DhcpOption, MessageType};
use dhcproto::{Decodable, Decoder};

use crate::types::Mac;

/// RFC 8415 §7.6 HOP_COUNT_LIMIT: relay messages nested deeper than this are dropped.
pub const HOP_COUNT_LIMIT: usize = 8;
/// Options inside options (IA_NA → IAADDR → status) nest at most this deep here.
const MAX_DEPTH: usize = 4;
/// RELAY-FORW header: type, hop count, link address, peer address.
const RELAY_HEADER: usize = 34;

/// Why an inbound DHCPv6 datagram was dropped; the label names a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed6 {
    /// Shorter than a message header.
    #[error("packet too short")]
    TooShort,
    /// Relayed through more relays than RFC 8415 allows.
    #[error("too many relay hops")]
    TooManyHops,
    /// A relay message without exactly one relayed message in it.
    #[error("relay message without one relayed message")]
    BadRelay,
    /// An option's length runs past its container.
    #[error("option {0} overruns the packet")]
    OptionOverrun(u16),
    /// An option has a length its type forbids.
    #[error("option {0} has a bad length")]
    BadOptionLength(u16),
    /// Options nested deeper than any client message needs.
    #[error("options nested too deep")]
    TooDeep,
    /// A message type a server does not take (ADVERTISE, REPLY, …).
    #[error("message type {0} not handled by a server")]
    UnsupportedType(u8),
    /// The options could not all be decoded.
    #[error("options not decodable")]
    Undecodable,
}

impl Malformed6 {
    /// A stable label for counters and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Malformed6::TooShort => "too_short",
            Malformed6::TooManyHops => "too_many_hops",
            Malformed6::BadRelay => "bad_relay",
            Malformed6::OptionOverrun(_) => "option_overrun",
            Malformed6::BadOptionLength(_) => "bad_option_length",
            Malformed6::TooDeep => "too_deep",
            Malformed6::UnsupportedType(_) => "unsupported_type",
            Malformed6::Undecodable => "undecodable",
        }
    }
}

/// A DHCP unique identifier, shown as dnsmasq shows it (`00:01:00:01:…`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Duid(pub Vec<u8>);

impl fmt::Display for Duid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::types::colon_hex(&self.0, f)
    }
}

impl fmt::Debug for Duid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duid({self})")
    }
}

impl std::str::FromStr for Duid {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let bytes: Result<Vec<u8>, ()> = s
            .split(':')
            .map(|p| {
                if p.is_empty() || p.len() > 2 {
                    return Err(());
                }
                u8::from_str_radix(p, 16).map_err(|_| ())
            })
            .collect();
        let bytes = bytes?;
        if bytes.is_empty() || bytes.len() > 130 {
            return Err(());
        }
        Ok(Duid(bytes))
    }
}

impl Duid {
    /// DUID-LLT (RFC 8415 §11.2) for an Ethernet address: what dnsmasq makes for itself.
    pub fn llt(time: u32, mac: Mac) -> Duid {
        let mut v = vec![0, 1, 0, 1];
        v.extend_from_slice(&time.to_be_bytes());
        v.extend_from_slice(&mac.0);
        Duid(v)
    }

    /// DUID-LL (RFC 8415 §11.4) for an Ethernet address: no time in it, so every node that
    /// takes over a DHCP port (and its MAC) answers with the identifier clients know.
    pub fn ll(mac: Mac) -> Duid {
        let mut v = vec![0, 3, 0, 1];
        v.extend_from_slice(&mac.0);
        Duid(v)
    }
}

/// The client messages a server acts on (RFC 8415 §7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Msg6 {
    /// Looking for servers.
    Solicit,
    /// Taking the addresses a server advertised.
    Request,
    /// Are my addresses still on this link?
    Confirm,
    /// Extending a lease with the server that granted it.
    Renew,
    /// Extending a lease with any server.
    Rebind,
    /// Giving addresses back.
    Release,
    /// The addresses are in use by someone else.
    Decline,
    /// Options only, no addresses (stateless).
    InformationRequest,
}

impl Msg6 {
    /// dnsmasq's name for it in log lines (`DHCPSOLICIT`…).
    pub fn log_name(self) -> &'static str {
        match self {
            Msg6::Solicit => "DHCPSOLICIT",
            Msg6::Request => "DHCPREQUEST",
            Msg6::Confirm => "DHCPCONFIRM",
            Msg6::Renew => "DHCPRENEW",
            Msg6::Rebind => "DHCPREBIND",
            Msg6::Release => "DHCPRELEASE",
            Msg6::Decline => "DHCPDECLINE",
            Msg6::InformationRequest => "DHCPINFORMATION-REQUEST",
        }
    }

    /// A stable label for counters.
    pub fn label(self) -> &'static str {
        match self {
            Msg6::Solicit => "solicit",
            Msg6::Request => "request",
            Msg6::Confirm => "confirm",
            Msg6::Renew => "renew",
            Msg6::Rebind => "rebind",
            Msg6::Release => "release",
            Msg6::Decline => "decline",
            Msg6::InformationRequest => "information_request",
        }
    }
}

/// One relay a message came through (outermost first in [`Inbound6::relays`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    /// The relay's hop count.
    pub hop_count: u8,
    /// An address on the client's link (tells the subnet), or unspecified.
    pub link: Ipv6Addr,
    /// Where the relay heard the message from: the client, or the next relay in.
    pub peer: Ipv6Addr,
    /// Option 18, echoed back in the RELAY-REPL.
    pub interface_id: Option<Vec<u8>>,
    /// RFC 6939 option 79: the client's link-layer address, when Ethernet.
    pub client_link_addr: Option<Mac>,
}

/// An address the client put in an IA_NA (a hint, or what it holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IaAddr {
    /// The address.
    pub addr: Ipv6Addr,
    /// Preferred lifetime the client asks for (0: no preference).
    pub preferred: u32,
    /// Valid lifetime the client asks for (0: no preference).
    pub valid: u32,
}

/// One IA_NA of the client's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaNa {
    /// The client's identifier for this association.
    pub iaid: u32,
    /// T1 the client asks for.
    pub t1: u32,
    /// T2 the client asks for.
    pub t2: u32,
    /// The addresses in it.
    pub addrs: Vec<IaAddr>,
}

/// A validated client message, with what the server acts on read out of it.
#[derive(Debug, Clone)]
pub struct Inbound6 {
    /// What the client asks.
    pub kind: Msg6,
    /// Transaction id, echoed in the reply.
    pub xid: [u8; 3],
    /// Option 1.
    pub client_id: Option<Duid>,
    /// Option 2.
    pub server_id: Option<Duid>,
    /// The IA_NAs, in message order.
    pub ias: Vec<IaNa>,
    /// Option 6: the options the client asks for.
    pub oro: Vec<u16>,
    /// Option 14.
    pub rapid_commit: bool,
    /// The relays it came through, outermost first; empty when it came straight from the link.
    pub relays: Vec<Relay>,
}

impl Inbound6 {
    /// The client's link-layer address as the relay nearest the client saw it (RFC 6939).
    pub fn relayed_mac(&self) -> Option<Mac> {
        self.relays.last().and_then(|r| r.client_link_addr)
    }

    /// The address the nearest relay gave for the client's link, when there is one.
    pub fn link_address(&self) -> Option<Ipv6Addr> {
        self.relays
            .iter()
            .rev()
            .map(|r| r.link)
            .find(|a| !a.is_unspecified())
    }
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

/// Walks the option TLVs of `buf`, checking each length against its type, nested options
/// included; returns how many options are at this level.
fn walk(buf: &[u8], depth: usize) -> Result<usize, Malformed6> {
    if depth > MAX_DEPTH {
        return Err(Malformed6::TooDeep);
    }
    let mut i = 0;
    let mut n = 0;
    while i < buf.len() {
        if buf.len() - i < 4 {
            return Err(Malformed6::OptionOverrun(0));
        }
        let code = u16_at(buf, i);
        let len = u16_at(buf, i + 2) as usize;
        let body = buf
            .get(i + 4..i + 4 + len)
            .ok_or(Malformed6::OptionOverrun(code))?;
        let bad = || Err(Malformed6::BadOptionLength(code));
        let nested = |from: usize| -> Result<(), Malformed6> {
            if len < from {
                return Err(Malformed6::BadOptionLength(code));
            }
            walk(&body[from..], depth + 1).map(|_| ())
        };
        match code {
            // ELAPSED_TIME, PREFERENCE, UNICAST, RAPID_COMMIT, RECONF_MSG, RECONF_ACCEPT
            8 if len != 2 => return bad(),
            7 | 19 if len != 1 => return bad(),
            12 if len != 16 => return bad(),
            14 | 20 if len != 0 => return bad(),
            // client and server ids: a DUID is 2 to 130 bytes
            1 | 2 if !(2..=130).contains(&len) => return bad(),
            // ORO, client architecture: 16-bit codes
            6 | 61 if !len.is_multiple_of(2) => return bad(),
            // address lists
            23 | 22 | 27 | 28 | 31 if !len.is_multiple_of(16) => return bad(),
            13 if len < 2 || std::str::from_utf8(&body[2..]).is_err() => return bad(),
            16 | 17 | 11 if len < 4 => return bad(),
            // a relay message never sits inside a client's message
            9 => return Err(Malformed6::BadRelay),
            3 | 25 => nested(12)?,
            4 => nested(4)?,
            5 => nested(24)?,
            26 => nested(25)?,
            17 => nested(4)?,
            56 => walk_ntp(body, code)?,
            _ => {}
        }
        i += 4 + len;
        n += 1;
    }
    Ok(n)
}

/// The option TLVs of an options area the walk has checked: each code with its whole TLV.
pub(super) fn tlvs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut i = 0;
    std::iter::from_fn(move || {
        let head = buf.get(i..i + 4)?;
        let end = i + 4 + u16_at(head, 2) as usize;
        let tlv = buf.get(i..end)?;
        i = end;
        Some((u16_at(head, 0), tlv))
    })
}

/// RFC 5908 suboptions: server or multicast addresses (16 bytes) or a name.
fn walk_ntp(body: &[u8], code: u16) -> Result<(), Malformed6> {
    let mut i = 0;
    while i < body.len() {
        if body.len() - i < 4 {
            return Err(Malformed6::BadOptionLength(code));
        }
        let sub = u16_at(body, i);
        let len = u16_at(body, i + 2) as usize;
        if body.len() - i - 4 < len || !matches!((sub, len), (1 | 2, 16) | (3, 1..)) {
            return Err(Malformed6::BadOptionLength(code));
        }
        i += 4 + len;
    }
    Ok(())
}

/// Reads the relay framing, if any, down to the client's message.
fn unwrap_relays<'a>(mut bytes: &'a [u8], relays: &mut Vec<Relay>) -> Result<&'a [u8], Malformed6> {
    while bytes.first() == Some(&u8::from(MessageType::RelayForw)) {
        if relays.len() >= HOP_COUNT_LIMIT {
            return Err(Malformed6::TooManyHops);
        }
        if bytes.len() < RELAY_HEADER {
            return Err(Malformed6::TooShort);
        }
        let addr = |at: usize| -> Ipv6Addr {
            let mut o = [0u8; 16];
            o.copy_from_slice(&bytes[at..at + 16]);
            Ipv6Addr::from(o)
        };
        let mut relay = Relay {
            hop_count: bytes[1],
            link: addr(2),
            peer: addr(18),
            interface_id: None,
            client_link_addr: None,
        };
        let opts = &bytes[RELAY_HEADER..];
        let mut inner = None;
        let mut i = 0;
        while i < opts.len() {
            if opts.len() - i < 4 {
                return Err(Malformed6::OptionOverrun(0));
            }
            let code = u16_at(opts, i);
            let len = u16_at(opts, i + 2) as usize;
            let body = opts
                .get(i + 4..i + 4 + len)
                .ok_or(Malformed6::OptionOverrun(code))?;
            match code {
                9 if inner.is_some() => return Err(Malformed6::BadRelay),
                9 => inner = Some(body),
                18 => relay.interface_id = Some(body.to_vec()),
                79 if len == 8 && u16_at(body, 0) == 1 => {
                    let mut m = [0u8; 6];
                    m.copy_from_slice(&body[2..]);
                    relay.client_link_addr = Some(Mac(m));
                }
                _ => {}
            }
            i += 4 + len;
        }
        relays.push(relay);
        bytes = inner.ok_or(Malformed6::BadRelay)?;
    }
    Ok(bytes)
}

/// Validates one datagram received on port 547 and reads out what the server acts on.
pub fn parse6(bytes: &[u8]) -> Result<Inbound6, Malformed6> {
    let mut relays = Vec::new();
    let msg = unwrap_relays(bytes, &mut relays)?;
    if msg.len() < 4 {
        return Err(Malformed6::TooShort);
    }
    let kind = match MessageType::from(msg[0]) {
        MessageType::Solicit => Msg6::Solicit,
        MessageType::Request => Msg6::Request,
        MessageType::Confirm => Msg6::Confirm,
        MessageType::Renew => Msg6::Renew,
        MessageType::Rebind => Msg6::Rebind,
        MessageType::Release => Msg6::Release,
        MessageType::Decline => Msg6::Decline,
        MessageType::InformationRequest => Msg6::InformationRequest,
        _ => return Err(Malformed6::UnsupportedType(msg[0])),
    };
    walk(&msg[4..], 0)?;
    let mut m = Inbound6 {
        kind,
        xid: [msg[1], msg[2], msg[3]],
        client_id: None,
        server_id: None,
        ias: Vec::new(),
        oro: Vec::new(),
        rapid_commit: false,
        relays,
    };
    // The walk checked every length; `dhcproto` decodes each option the server acts on, one
    // at a time (no sorted copy of the others), and must read an IA_NA's options whole.
    for (code, tlv) in tlvs(&msg[4..]) {
        if !matches!(code, 1 | 2 | 3 | 6 | 14) {
            continue;
        }
        let o = DhcpOption::decode(&mut Decoder::new(tlv)).map_err(|_| Malformed6::Undecodable)?;
        match o {
            DhcpOption::ClientId(d) => m.client_id = Some(Duid(d)),
            DhcpOption::ServerId(d) => m.server_id = Some(Duid(d)),
            DhcpOption::ORO(oro) => m.oro = oro.opts.iter().map(|c| u16::from(*c)).collect(),
            DhcpOption::RapidCommit => m.rapid_commit = true,
            DhcpOption::IANA(ia) => {
                if ia.opts.iter().count() != walk(&tlv[16..], 1)? {
                    return Err(Malformed6::Undecodable);
                }
                m.ias.push(IaNa {
                    iaid: ia.id,
                    t1: ia.t1,
                    t2: ia.t2,
                    addrs: ia
                        .opts
                        .iter()
                        .filter_map(|o| match o {
                            DhcpOption::IAAddr(a) => Some(IaAddr {
                                addr: a.addr,
                                preferred: a.preferred_life,
                                valid: a.valid_life,
                            }),
                            _ => None,
                        })
                        .collect(),
                })
            }
            _ => return Err(Malformed6::Undecodable),
        }
    }
    Ok(m)
}
