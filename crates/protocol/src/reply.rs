//! Replies as values. The decision builds a [`Reply`]: every field the client will see, typed,
//! with its options already chosen, ordered and fitted to the client's maximum size. The
//! dataplane encodes it at the edge, just before sending: header through dhcproto, then the
//! options in the client's parameter-request-list order, End, and padding to the 300-byte
//! BOOTP minimum. dhcproto alone would write options in code order and never pad
//! (docs/ARCHITECTURE.md, "Wire format"), which some clients mishandle.

use std::net::Ipv4Addr;

use dhcproto::v4::{Flags, HType, Message, MessageType, Opcode};
use dhcproto::{Encodable, Encoder};

use crate::frontdoor::{Inbound, HEADER_LEN};
use crate::options::{OptionSet, WireOption};
use crate::types::{ClientId, Mac};

/// Smallest reply we send: the BOOTP minimum (RFC 951), which old clients and relays expect.
pub const MIN_REPLY: usize = 300;
/// The size every client must accept when it sends no option 57 (RFC 2131 §2).
pub const DEFAULT_MAX: usize = 576;
/// The largest reply we send, whatever the client claims it accepts: one Ethernet frame.
const MAX_REPLY: usize = 1500;

/// Which reply the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// The lease times a reply announces (options 51, 58 and 59), kept as numbers so that the
/// renewal of a still-durable lease can shorten them without touching encoded bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimes {
    /// Option 51 in seconds; `u32::MAX` is infinite, and then no T1 or T2 is sent.
    pub lease: u32,
    /// Option 58 when configured (Neutron forces it); `None` is RFC 2131 §4.4.5's half.
    pub renewal: Option<u32>,
    /// Option 59 when configured; `None` is RFC 2131 §4.4.5's seven eighths.
    pub rebinding: Option<u32>,
}

impl LeaseTimes {
    /// T1 as sent, `None` for an infinite lease.
    pub fn t1(&self) -> Option<u32> {
        (self.lease != u32::MAX).then(|| self.renewal.unwrap_or(self.lease / 2))
    }
    /// T2 as sent, `None` for an infinite lease.
    pub fn t2(&self) -> Option<u32> {
        (self.lease != u32::MAX).then(|| {
            self.rebinding
                .unwrap_or((u64::from(self.lease) * 7 / 8) as u32)
        })
    }
    /// Bytes options 51, 58 and 59 take on the wire.
    fn wire_len(&self) -> usize {
        if self.lease == u32::MAX {
            6
        } else {
            18
        }
    }
}

/// The options of a reply that the server does not place itself, in wire order, already
/// fitted to the client's maximum size. Stored as their TLVs back to back: one allocation per
/// reply, not one per option.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyOptions {
    tlvs: Vec<u8>,
}

impl ReplyOptions {
    /// Each TLV as code and data, in wire order (an option longer than 255 bytes is several
    /// TLVs of one code, RFC 3396).
    pub fn tlvs(&self) -> impl Iterator<Item = (u8, &[u8])> + '_ {
        let mut i = 0;
        std::iter::from_fn(move || {
            let (&code, rest) = self.tlvs.get(i..)?.split_first()?;
            let (&len, rest) = rest.split_first()?;
            let data = rest.get(..usize::from(len))?;
            i += 2 + usize::from(len);
            Some((code, data))
        })
    }
    /// Option codes in wire order, each once.
    pub fn codes(&self) -> Vec<u8> {
        let mut out: Vec<u8> = Vec::new();
        for (code, _) in self.tlvs() {
            if out.last() != Some(&code) {
                out.push(code);
            }
        }
        out
    }
    /// The data of option `code` (its TLVs joined), if the reply carries it.
    pub fn get(&self, code: u8) -> Option<Vec<u8>> {
        let mut found = None::<Vec<u8>>;
        for (c, data) in self.tlvs().filter(|(c, _)| *c == code) {
            debug_assert_eq!(c, code);
            found.get_or_insert_with(Vec::new).extend_from_slice(data);
        }
        found
    }
    /// Bytes the options take on the wire.
    pub fn wire_len(&self) -> usize {
        self.tlvs.len()
    }
}

/// A reply decided but not yet on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// OFFER, ACK or NAK.
    pub kind: ReplyKind,
    /// The request's transaction id.
    pub xid: u32,
    /// The request's BOOTP flags (bit 15: broadcast), echoed.
    pub flags: u16,
    /// The client's address echoed (ACK to RENEWING/REBINDING/INFORM), else zero.
    pub ciaddr: Ipv4Addr,
    /// The address offered or acknowledged (zero for NAK and INFORM).
    pub yiaddr: Ipv4Addr,
    /// The relay's address, echoed.
    pub giaddr: Ipv4Addr,
    /// The client's hardware address.
    pub chaddr: Mac,
    /// Our server identifier (option 54).
    pub server_id: Ipv4Addr,
    /// Options 51, 58 and 59; `None` omits them (NAK, INFORM).
    pub lease: Option<LeaseTimes>,
    /// Every other option, chosen and ordered.
    pub options: ReplyOptions,
    /// Option 61 echoed (RFC 6842).
    pub client_id: Option<ClientId>,
    /// Option 82 echoed to the relay, last before End (RFC 3046 §2.2).
    pub relay_info: Option<Vec<u8>>,
}

impl Reply {
    /// The datagram, ready to send.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(DEFAULT_MAX);
        self.encode_into(&mut out);
        out
    }

    /// The datagram, written into `out` (cleared first), so that a sender reuses one buffer.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.clear();
        let mut m = Message::new_with_id(
            self.xid,
            self.ciaddr,
            self.yiaddr,
            Ipv4Addr::UNSPECIFIED,
            self.giaddr,
            &self.chaddr.0,
        );
        m.set_opcode(Opcode::BootReply)
            .set_htype(HType::Eth)
            .set_flags(Flags::from(self.flags));
        // A header-only message cannot fail to encode into a Vec.
        let _ = m.encode(&mut Encoder::new(out));
        out.truncate(HEADER_LEN);

        out.extend_from_slice(&[53, 1, u8::from(self.kind.message_type())]);
        out.extend_from_slice(&[54, 4]);
        out.extend_from_slice(&self.server_id.octets());
        if let Some(t) = &self.lease {
            out.extend_from_slice(&[51, 4]);
            out.extend_from_slice(&t.lease.to_be_bytes());
            for (code, secs) in [(58u8, t.t1()), (59, t.t2())] {
                if let Some(secs) = secs {
                    out.extend_from_slice(&[code, 4]);
                    out.extend_from_slice(&secs.to_be_bytes());
                }
            }
        }
        out.extend_from_slice(&self.options.tlvs);
        if let Some(cid) = &self.client_id {
            out.push(61);
            out.push(cid.0.len() as u8);
            out.extend_from_slice(&cid.0);
        }
        if let Some(ri) = &self.relay_info {
            out.push(82);
            out.push(ri.len() as u8);
            out.extend_from_slice(ri);
        }
        out.push(255);
        if out.len() < MIN_REPLY {
            out.resize(MIN_REPLY, 0);
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
    fn find(&self, code: u8) -> Option<&WireOption> {
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
    /// A configured T1 or T2 in seconds; anything but four bytes leaves the RFC default.
    fn timer(&self, code: u8) -> Option<u32> {
        let tlv = &self.find(code)?.tlv;
        let data: [u8; 4] = tlv.get(2..)?.try_into().ok()?;
        Some(u32::from_be_bytes(data))
    }
}

/// The header a decision chose for its reply.
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

/// Builds the reply to `req`: the subnet mask first, then the options the client asked for in
/// its order (all configured ones when it sent no list), then forced ones. Optional options
/// that do not fit the client's maximum size are left out, lowest priority (latest) first.
pub fn build(req: &Inbound, h: &ReplyHeader, layers: &OptionLayers<'_>) -> Reply {
    let nak = h.kind == ReplyKind::Nak;
    let lease = h.lease_secs.filter(|_| !nak).map(|lease| LeaseTimes {
        lease,
        renewal: layers.timer(58),
        rebinding: layers.timer(59),
    });
    let mut options = ReplyOptions::default();
    if !nak {
        let limit =
            (req.max_size.map(usize::from).unwrap_or(DEFAULT_MAX)).clamp(DEFAULT_MAX, MAX_REPLY);
        // The fixed part: header, 53, 54, the lease times, the echoed options and End.
        let fixed = HEADER_LEN
            + 3
            + 6
            + lease.as_ref().map_or(0, LeaseTimes::wire_len)
            + 1
            + req.client_id.as_ref().map_or(0, |c| 2 + c.0.len())
            + req.relay_info.as_ref().map_or(0, |r| 2 + r.len());
        let mut sent = [false; 256];
        for c in SERVER_OWNED {
            sent[c as usize] = true;
        }
        let mut put = |code: u8, options: &mut ReplyOptions| {
            if sent[code as usize] {
                return;
            }
            sent[code as usize] = true;
            if let Some(w) = layers.find(code) {
                if !w.tlv.is_empty() && fixed + options.tlvs.len() + w.tlv.len() <= limit {
                    options.tlvs.extend_from_slice(&w.tlv);
                }
            }
        };
        // The subnet mask first: clients configure the address with it (RFC 2132 §3.3 order).
        put(1, &mut options);
        if req.prl.is_empty() {
            for code in layers.codes() {
                put(code, &mut options);
            }
        } else {
            for &code in req.prl.codes() {
                put(code, &mut options);
            }
            for code in layers.codes() {
                if layers.find(code).is_some_and(|w| w.force) {
                    put(code, &mut options);
                }
            }
        }
    }
    Reply {
        kind: h.kind,
        xid: req.xid,
        flags: req.flags,
        ciaddr: h.ciaddr,
        yiaddr: h.yiaddr,
        giaddr: req.giaddr,
        chaddr: req.chaddr,
        server_id: h.server_id,
        lease,
        options,
        client_id: req.client_id.clone(),
        relay_info: req.relay_info.clone(),
    }
}
