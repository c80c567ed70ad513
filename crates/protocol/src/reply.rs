//! Reply encoding: header through dhcproto, then options in the client's parameter-request-list
//! order, End, and padding to the 300-byte BOOTP minimum. dhcproto alone would write options in
//! code order and never pad (docs/ARCHITECTURE.md, "Wire format"), which some clients mishandle.

use std::net::Ipv4Addr;

use dhcproto::v4::{Flags, HType, Message, MessageType, Opcode};
use dhcproto::{Encodable, Encoder};

use crate::frontdoor::{Inbound, HEADER_LEN};
use crate::options::OptionSet;

/// Smallest reply we send: the BOOTP minimum (RFC 951), which old clients and relays expect.
pub const MIN_REPLY: usize = 300;
/// The size every client must accept when it sends no option 57 (RFC 2131 §2).
pub const DEFAULT_MAX: usize = 576;

/// Which reply the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// DHCPOFFER.
    Offer,
    /// DHCPACK (to REQUEST or INFORM).
    Ack,
    /// DHCPNAK.
    Nak,
}

impl ReplyKind {
    fn message_type(self) -> MessageType {
        match self {
            ReplyKind::Offer => MessageType::Offer,
            ReplyKind::Ack => MessageType::Ack,
            ReplyKind::Nak => MessageType::Nak,
        }
    }
    /// dnsmasq's name for the reply, used in log lines.
    pub fn name(self) -> &'static str {
        match self {
            ReplyKind::Offer => "DHCPOFFER",
            ReplyKind::Ack => "DHCPACK",
            ReplyKind::Nak => "DHCPNAK",
        }
    }
}

/// The layers of options a reply draws from, most specific first.
pub struct OptionLayers<'a> {
    /// Options the server computes for this reply (mask, broadcast, hostname, domain, defaults).
    pub computed: &'a OptionSet,
    /// Per-host options (Neutron's extra_dhcp_opts).
    pub host: Option<&'a OptionSet>,
    /// The subnet's options.
    pub subnet: Option<&'a OptionSet>,
    /// Options for the whole network.
    pub global: &'a OptionSet,
}

impl OptionLayers<'_> {
    fn find(&self, code: u8) -> Option<&crate::options::WireOption> {
        self.host
            .and_then(|h| h.get(code))
            .or_else(|| self.subnet.and_then(|s| s.get(code)))
            .or_else(|| self.global.get(code))
            .or_else(|| self.computed.get(code))
    }
    fn codes(&self) -> impl Iterator<Item = u8> + '_ {
        let mut all: Vec<u8> = self
            .computed
            .codes()
            .chain(self.global.codes())
            .chain(self.subnet.into_iter().flat_map(|s| s.codes()))
            .chain(self.host.into_iter().flat_map(|h| h.codes()))
            .collect();
        all.sort_unstable();
        all.dedup();
        all.into_iter()
    }
}

/// What goes in the header of a reply.
pub struct ReplyHeader {
    /// OFFER, ACK or NAK.
    pub kind: ReplyKind,
    /// The address offered or acknowledged (zero for NAK and INFORM).
    pub yiaddr: Ipv4Addr,
    /// The client's address echoed (ACK to RENEWING/REBINDING/INFORM), else zero.
    pub ciaddr: Ipv4Addr,
    /// Our server identifier (option 54).
    pub server_id: Ipv4Addr,
    /// Lease time in seconds for option 51 (`u32::MAX` = infinite); `None` omits 51/58/59.
    pub lease_secs: Option<u32>,
}

/// Codes the server places itself and never takes from configuration.
const SERVER_OWNED: [u8; 7] = [51, 53, 54, 58, 59, 61, 82];

/// Encodes a reply to `req`. Optional options that do not fit the client's maximum size are
/// left out, lowest priority (latest in the request list) first.
pub fn encode(req: &Inbound, h: &ReplyHeader, layers: &OptionLayers<'_>) -> Vec<u8> {
    let mut m = Message::new_with_id(
        req.xid,
        h.ciaddr,
        h.yiaddr,
        Ipv4Addr::UNSPECIFIED,
        req.giaddr,
        &req.chaddr.0,
    );
    m.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_flags(Flags::from(req.flags));
    let mut out = Vec::with_capacity(DEFAULT_MAX);
    // A header-only message cannot fail to encode into a Vec.
    let _ = m.encode(&mut Encoder::new(&mut out));
    out.truncate(HEADER_LEN);

    let limit = (req.max_size.map(usize::from).unwrap_or(DEFAULT_MAX)).clamp(DEFAULT_MAX, 1500);
    // Room kept for the options we must echo and End.
    let tail = 1
        + req.client_id.as_ref().map_or(0, |c| 2 + c.0.len())
        + req.relay_info.as_ref().map_or(0, |r| 2 + r.len());

    out.extend_from_slice(&[53, 1, u8::from(h.kind.message_type())]);
    out.extend_from_slice(&[54, 4]);
    out.extend_from_slice(&h.server_id.octets());

    if h.kind != ReplyKind::Nak {
        if let Some(lease) = h.lease_secs {
            out.extend_from_slice(&[51, 4]);
            out.extend_from_slice(&lease.to_be_bytes());
            if lease != u32::MAX {
                // T1/T2 from configuration (Neutron forces them) or RFC 2131 §4.4.5 defaults.
                for (code, default) in [(58u8, lease / 2), (59, (lease as u64 * 7 / 8) as u32)] {
                    match layers.find(code) {
                        Some(w) if !w.tlv.is_empty() => out.extend_from_slice(&w.tlv),
                        _ => {
                            out.extend_from_slice(&[code, 4]);
                            out.extend_from_slice(&default.to_be_bytes());
                        }
                    }
                }
            }
        }
        let mut sent = [false; 256];
        for c in SERVER_OWNED {
            sent[c as usize] = true;
        }
        let mut put = |code: u8, out: &mut Vec<u8>| {
            if sent[code as usize] {
                return;
            }
            sent[code as usize] = true;
            if let Some(w) = layers.find(code) {
                if !w.tlv.is_empty() && out.len() + w.tlv.len() + tail <= limit {
                    out.extend_from_slice(&w.tlv);
                }
            }
        };
        // The subnet mask first: clients configure the address with it (RFC 2132 §3.3 order).
        put(1, &mut out);
        if req.prl.is_empty() {
            for code in layers.codes() {
                put(code, &mut out);
            }
        } else {
            for &code in req.prl.codes() {
                put(code, &mut out);
            }
            for code in layers.codes() {
                if layers.find(code).is_some_and(|w| w.force) {
                    put(code, &mut out);
                }
            }
        }
    }

    // RFC 6842: echo the client identifier.
    if let Some(cid) = &req.client_id {
        out.push(61);
        out.push(cid.0.len() as u8);
        out.extend_from_slice(&cid.0);
    }
    // RFC 3046 §2.2: echo relay agent information, last before End.
    if let Some(ri) = &req.relay_info {
        out.push(82);
        out.push(ri.len() as u8);
        out.extend_from_slice(ri);
    }
    out.push(255);
    if out.len() < MIN_REPLY {
        out.resize(MIN_REPLY, 0);
    }
    out
}
