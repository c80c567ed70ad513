//! The front door: every byte that arrives is checked here before anything trusts it.
//!
//! dhcproto 0.15 panics on `hlen` > 16 and on bad lengths of some options, silently drops all
//! options after a malformed one and accepts a bad magic cookie (docs/ARCHITECTURE.md, "Wire format"). So the header and
//! every option TLV are validated on the raw bytes first; only a packet that passes is decoded,
//! and the options the server acts on are read from the validated TLVs. No I/O here.

use std::net::Ipv4Addr;

use dhcproto::v4::{Message, MAGIC};
use dhcproto::{Decodable, Decoder};

use crate::types::{ClientId, Mac};

/// Fixed BOOTP header (236 bytes) plus the magic cookie.
pub const HEADER_LEN: usize = 240;

/// Why an inbound packet was dropped; the label names a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Malformed {
    /// Shorter than header + cookie.
    #[error("packet too short")]
    TooShort,
    /// A BOOTREPLY or an unknown op: not for a server.
    #[error("not a BOOTREQUEST")]
    NotRequest,
    /// Not Ethernet with a 6-byte address.
    #[error("unsupported hardware type or length")]
    BadHardware,
    /// Magic cookie is not 99.130.83.99.
    #[error("bad magic cookie")]
    BadCookie,
    /// Relayed through more than 16 hops (RFC 1542 §4.1.1).
    #[error("too many relay hops")]
    TooManyHops,
    /// An option's length runs past the end of the packet.
    #[error("option {0} overruns the packet")]
    OptionOverrun(u8),
    /// An option has a length its type forbids.
    #[error("option {0} has a bad length")]
    BadOptionLength(u8),
    /// A single-valued option appears twice.
    #[error("option {0} repeated")]
    DuplicateOption(u8),
    /// No option 53: BOOTP, which a DHCP-only server does not answer.
    #[error("no DHCP message type (BOOTP)")]
    NoMessageType,
    /// Option 53 names a message a server does not take (OFFER, ACK, leasequery, …).
    #[error("message type {0} not handled by a server")]
    UnsupportedType(u8),
}

impl Malformed {
    /// A stable label for counters and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Malformed::TooShort => "too_short",
            Malformed::NotRequest => "not_request",
            Malformed::BadHardware => "bad_hardware",
            Malformed::BadCookie => "bad_cookie",
            Malformed::TooManyHops => "too_many_hops",
            Malformed::OptionOverrun(_) => "option_overrun",
            Malformed::BadOptionLength(_) => "bad_option_length",
            Malformed::DuplicateOption(_) => "duplicate_option",
            Malformed::NoMessageType => "no_message_type",
            Malformed::UnsupportedType(_) => "unsupported_type",
        }
    }
}

/// The client messages a server acts on (RFC 2131 table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientMsg {
    /// Looking for servers.
    Discover,
    /// Selecting, confirming, renewing or rebinding.
    Request,
    /// The offered address is in use.
    Decline,
    /// Giving the address back.
    Release,
    /// Asking for options only.
    Inform,
}

impl ClientMsg {
    /// dnsmasq's name for the message, used in log lines.
    pub fn name(self) -> &'static str {
        match self {
            ClientMsg::Discover => "DHCPDISCOVER",
            ClientMsg::Request => "DHCPREQUEST",
            ClientMsg::Decline => "DHCPDECLINE",
            ClientMsg::Release => "DHCPRELEASE",
            ClientMsg::Inform => "DHCPINFORM",
        }
    }
}

/// Parameter request list, kept inline so parsing does not allocate.
#[derive(Clone, Copy)]
pub struct Prl {
    codes: [u8; 255],
    len: u8,
}

impl Default for Prl {
    fn default() -> Self {
        Prl {
            codes: [0; 255],
            len: 0,
        }
    }
}

impl Prl {
    /// The requested codes in the client's order.
    pub fn codes(&self) -> &[u8] {
        &self.codes[..self.len as usize]
    }
    /// True when the client sent no option 55.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for Prl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.codes()).finish()
    }
}

/// A validated client message: everything the decision needs, nothing it must re-check.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// Message type (option 53).
    pub msg: ClientMsg,
    /// Transaction id, echoed in the reply.
    pub xid: u32,
    /// Seconds since the client started.
    pub secs: u16,
    /// BOOTP flags; bit 15 is the broadcast flag.
    pub flags: u16,
    /// Relay hops.
    pub hops: u8,
    /// Client address (set in RENEWING, REBINDING, INFORM and RELEASE).
    pub ciaddr: Ipv4Addr,
    /// Relay agent address, zero when not relayed.
    pub giaddr: Ipv4Addr,
    /// Client hardware address, read from the raw bytes.
    pub chaddr: Mac,
    /// Option 61.
    pub client_id: Option<ClientId>,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Option 55.
    pub prl: Prl,
    /// Option 57.
    pub max_size: Option<u16>,
    /// Option 12, lossily decoded, for the log.
    pub hostname: Option<String>,
    /// Option 82 payload, echoed to the relay (RFC 3046 §2.2).
    pub relay_info: Option<Vec<u8>>,
    /// Which option codes the client sent (dnsmasq's `--dhcp-match` tests them).
    pub sent: SentOptions,
    /// Option 77, the user class (dnsmasq's `--dhcp-userclass` tests it).
    pub user_class: Option<Vec<u8>>,
}

/// The set of option codes present in a client message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SentOptions([u64; 4]);

impl SentOptions {
    /// True when the client sent option `code`.
    pub fn contains(&self, code: u8) -> bool {
        self.0[usize::from(code / 64)] & (1u64 << (code % 64)) != 0
    }
    fn insert(&mut self, code: u8) {
        self.0[usize::from(code / 64)] |= 1u64 << (code % 64);
    }
}

impl Inbound {
    /// True when the client asked for broadcast replies (RFC 2131 §4.1).
    pub fn broadcast(&self) -> bool {
        self.flags & 0x8000 != 0
    }
}

/// Exact lengths dhcproto asserts on in debug builds, and the ones the decision relies on.
fn length_ok(code: u8, len: usize) -> bool {
    match code {
        53 => len == 1,
        50 | 54 => len == 4,
        57 => len == 2,
        61 => len >= 2,
        55 | 12 => len >= 1,
        80 => len == 0,
        81 => len >= 3,
        94 => len == 3,
        152..=155 => len == 4,
        _ => true,
    }
}

/// Validates `buf` and extracts the client message; never panics on any input.
pub fn parse(buf: &[u8]) -> Result<Inbound, Malformed> {
    if buf.len() < HEADER_LEN {
        return Err(Malformed::TooShort);
    }
    if buf[0] != 1 {
        return Err(Malformed::NotRequest);
    }
    if buf[1] != 1 || buf[2] != 6 {
        return Err(Malformed::BadHardware);
    }
    if buf[3] > 16 {
        return Err(Malformed::TooManyHops);
    }
    if buf[236..240] != MAGIC {
        return Err(Malformed::BadCookie);
    }

    // Walk the option TLVs on the raw bytes.
    let mut msg_type = None;
    let mut seen = [false; 256];
    let mut client_id = None;
    let mut requested_ip = None;
    let mut server_id = None;
    let mut prl = Prl::default();
    let mut max_size = None;
    let mut hostname = None;
    let mut relay_info = None;
    let mut user_class = None;
    let mut sent = SentOptions::default();
    let mut i = HEADER_LEN;
    while i < buf.len() {
        let code = buf[i];
        if code == 0 {
            i += 1;
            continue;
        }
        if code == 255 {
            break;
        }
        let Some(&len) = buf.get(i + 1) else {
            return Err(Malformed::OptionOverrun(code));
        };
        let len = len as usize;
        let Some(data) = buf.get(i + 2..i + 2 + len) else {
            return Err(Malformed::OptionOverrun(code));
        };
        if !length_ok(code, len) {
            return Err(Malformed::BadOptionLength(code));
        }
        if matches!(code, 50 | 53 | 54 | 57 | 61) && seen[code as usize] {
            return Err(Malformed::DuplicateOption(code));
        }
        seen[code as usize] = true;
        sent.insert(code);
        match code {
            53 => msg_type = Some(data[0]),
            50 => requested_ip = Some(ip4(data)),
            54 => server_id = Some(ip4(data)),
            57 => max_size = Some(u16::from_be_bytes([data[0], data[1]])),
            61 => client_id = Some(ClientId(data.to_vec())),
            55 => {
                // RFC 3396 allows the list to be split over several option instances.
                for &c in data {
                    if (prl.len as usize) < prl.codes.len() {
                        prl.codes[prl.len as usize] = c;
                        prl.len += 1;
                    }
                }
            }
            12 => hostname = Some(String::from_utf8_lossy(data).into_owned()),
            82 => relay_info = Some(data.to_vec()),
            77 => user_class = Some(data.to_vec()),
            _ => {}
        }
        i += 2 + len;
    }

    let msg = match msg_type {
        None => return Err(Malformed::NoMessageType),
        Some(1) => ClientMsg::Discover,
        Some(3) => ClientMsg::Request,
        Some(4) => ClientMsg::Decline,
        Some(7) => ClientMsg::Release,
        Some(8) => ClientMsg::Inform,
        Some(other) => return Err(Malformed::UnsupportedType(other)),
    };

    // The header is fixed-size and already checked (hlen == 6), so dhcproto decodes it safely.
    // It is handed the header and an End option only: options were read above.
    let mut head = [0u8; HEADER_LEN + 1];
    head[..HEADER_LEN].copy_from_slice(&buf[..HEADER_LEN]);
    head[HEADER_LEN] = 255;
    let m = Message::decode(&mut Decoder::new(&head)).map_err(|_| Malformed::TooShort)?;
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&buf[28..34]);

    Ok(Inbound {
        msg,
        xid: m.xid(),
        secs: m.secs(),
        flags: u16::from(m.flags()),
        hops: m.hops(),
        ciaddr: m.ciaddr(),
        giaddr: m.giaddr(),
        chaddr: Mac(mac),
        client_id,
        requested_ip,
        server_id,
        prl,
        max_size,
        hostname,
        relay_info,
        sent,
        user_class,
    })
}

fn ip4(d: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(d[0], d[1], d[2], d[3])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal client packet builder for tests: header, cookie, options, End.
    pub fn packet(msg_type: u8, mac: [u8; 6], opts: &[(u8, &[u8])]) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        b[0] = 1;
        b[1] = 1;
        b[2] = 6;
        b[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        b[28..34].copy_from_slice(&mac);
        b[236..240].copy_from_slice(&MAGIC);
        b.extend_from_slice(&[53, 1, msg_type]);
        for (c, d) in opts {
            b.push(*c);
            b.push(d.len() as u8);
            b.extend_from_slice(d);
        }
        b.push(255);
        b
    }

    const MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0, 0, 1];

    #[test]
    fn discover_with_prl_and_client_id_parses() {
        let p = packet(
            1,
            MAC,
            &[
                (55, &[1, 3, 6, 121]),
                (61, &[1, 0xfa, 0x16]),
                (57, &[5, 0xdc]),
            ],
        );
        let m = parse(&p).unwrap();
        assert_eq!(m.msg, ClientMsg::Discover);
        assert_eq!(m.chaddr.to_string(), "fa:16:3e:00:00:01");
        assert_eq!(m.prl.codes(), &[1, 3, 6, 121]);
        assert_eq!(m.client_id.unwrap().0, vec![1, 0xfa, 0x16]);
        assert_eq!(m.max_size, Some(1500));
        assert_eq!(m.xid, 0x1234_5678);
    }

    #[test]
    fn hostile_headers_are_rejected() {
        let good = packet(1, MAC, &[]);
        assert_eq!(parse(&good[..239]).unwrap_err(), Malformed::TooShort);
        let mut p = good.clone();
        p[0] = 2;
        assert_eq!(parse(&p).unwrap_err(), Malformed::NotRequest);
        let mut p = good.clone();
        p[2] = 17; // hlen > 16 panics dhcproto's chaddr()
        assert_eq!(parse(&p).unwrap_err(), Malformed::BadHardware);
        let mut p = good.clone();
        p[236] = 0;
        assert_eq!(parse(&p).unwrap_err(), Malformed::BadCookie);
        let mut p = good.clone();
        p[3] = 17;
        assert_eq!(parse(&p).unwrap_err(), Malformed::TooManyHops);
    }

    #[test]
    fn hostile_options_are_rejected() {
        // options dhcproto asserts on in debug builds
        for (code, data) in [
            (80u8, &[1u8][..]),
            (81, &[0][..]),
            (94, &[1, 2][..]),
            (152, &[1][..]),
        ] {
            let p = packet(1, MAC, &[(code, data)]);
            assert_eq!(parse(&p).unwrap_err(), Malformed::BadOptionLength(code));
        }
        let p = packet(3, MAC, &[(50, &[10, 0, 0])]);
        assert_eq!(parse(&p).unwrap_err(), Malformed::BadOptionLength(50));
        let mut p = packet(1, MAC, &[]);
        p.pop();
        p.extend_from_slice(&[12, 40, b'x']);
        assert_eq!(parse(&p).unwrap_err(), Malformed::OptionOverrun(12));
        let p = packet(3, MAC, &[(54, &[1, 2, 3, 4]), (54, &[1, 2, 3, 5])]);
        assert_eq!(parse(&p).unwrap_err(), Malformed::DuplicateOption(54));
        let p = packet(2, MAC, &[]);
        assert_eq!(parse(&p).unwrap_err(), Malformed::UnsupportedType(2));
        let mut p = packet(1, MAC, &[]);
        p.truncate(HEADER_LEN);
        assert_eq!(parse(&p).unwrap_err(), Malformed::NoMessageType);
    }

    #[test]
    fn malformed_unrelated_option_does_not_hide_later_ones() {
        // option 6 with length 3 makes dhcproto drop everything after it; we keep reading.
        let p = packet(
            3,
            MAC,
            &[(6, &[1, 2, 3]), (12, &[0xff, 0xfe]), (50, &[10, 0, 0, 7])],
        );
        let m = parse(&p).unwrap();
        assert_eq!(m.requested_ip, Some(Ipv4Addr::new(10, 0, 0, 7)));
        assert!(m.hostname.is_some());
    }

    #[test]
    fn split_prl_is_concatenated() {
        let p = packet(1, MAC, &[(55, &[1, 3]), (55, &[6])]);
        assert_eq!(parse(&p).unwrap().prl.codes(), &[1, 3, 6]);
    }
}
