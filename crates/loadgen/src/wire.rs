//! The messages the generator sends and the replies it reads, at the byte level: it must be
//! able to send what a server would refuse, so it does not go through the server's encoder.

use std::net::Ipv4Addr;

use crate::Config;

/// The MAC of client `i`.
pub fn mac_of(i: u32) -> [u8; 6] {
    [0xfa, 0x16, 0x3e, (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

/// Parses `fa:16:3e:xx:xx:xx` back to a client index.
pub fn client_of(mac: &str) -> Option<u32> {
    let b: Vec<u8> = mac
        .split(':')
        .filter_map(|p| u8::from_str_radix(p, 16).ok())
        .collect();
    (b.len() == 6 && b[..3] == [0xfa, 0x16, 0x3e])
        .then(|| (u32::from(b[3]) << 16) | (u32::from(b[4]) << 8) | u32::from(b[5]))
}

/// One client message to build.
pub(crate) struct Msg {
    pub(crate) msg_type: u8,
    pub(crate) xid: u32,
    pub(crate) client: u32,
    pub(crate) ciaddr: Ipv4Addr,
    pub(crate) requested: Option<Ipv4Addr>,
    pub(crate) server_id: Option<Ipv4Addr>,
}

/// Builds a client message as a relay would forward it, or as the client sends it on the link.
pub(crate) fn build(cfg: &Config, out: &mut Vec<u8>, m: Msg) {
    let Msg {
        msg_type,
        xid,
        client,
        ciaddr,
        requested,
        server_id,
    } = m;
    out.clear();
    out.resize(240, 0);
    out[0] = 1;
    out[1] = 1;
    out[2] = 6;
    let relayed = cfg.links.is_empty();
    out[3] = u8::from(relayed); // hops: relayed once, or sent by the client itself
    out[4..8].copy_from_slice(&xid.to_be_bytes());
    out[12..16].copy_from_slice(&ciaddr.octets());
    if relayed {
        out[24..28].copy_from_slice(&cfg.giaddr.octets());
    }
    let mac = mac_of(client);
    out[28..34].copy_from_slice(&mac);
    out[236..240].copy_from_slice(&[99, 130, 83, 99]);
    out.extend_from_slice(&[53, 1, msg_type]);
    if let Some(r) = requested {
        out.extend_from_slice(&[50, 4]);
        out.extend_from_slice(&r.octets());
    }
    if let Some(s) = server_id {
        out.extend_from_slice(&[54, 4]);
        out.extend_from_slice(&s.octets());
    }
    if cfg.client_id {
        out.extend_from_slice(&[61, 7, 1]);
        out.extend_from_slice(&mac);
    }
    out.extend_from_slice(&[55, 7, 1, 3, 6, 15, 26, 51, 121]);
    out.push(255);
    // padded to BOOTP's 300 bytes as real clients send, which also makes every packet of a
    // batch the same size for segmentation offload
    if out.len() < PACKET_LEN {
        out.resize(PACKET_LEN, 0);
    }
}

/// Size of every message sent (BOOTP's minimum, what dhclient sends).
pub(crate) const PACKET_LEN: usize = 300;

/// A parsed reply: type, xid, yiaddr, server id, lease.
pub(crate) struct ReplyInfo {
    pub(crate) msg_type: u8,
    pub(crate) xid: u32,
    pub(crate) yiaddr: Ipv4Addr,
    pub(crate) server_id: Option<Ipv4Addr>,
    pub(crate) lease: Option<u32>,
    pub(crate) t1: Option<u32>,
    pub(crate) t2: Option<u32>,
}

pub(crate) fn parse_reply(b: &[u8]) -> Option<ReplyInfo> {
    if b.len() < 240 || b[0] != 2 || b[236..240] != [99, 130, 83, 99] {
        return None;
    }
    let xid = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    let yiaddr = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
    let (mut msg_type, mut server_id, mut lease) = (0, None, None);
    let (mut t1, mut t2) = (None, None);
    let mut i = 240;
    while i + 1 < b.len() {
        let code = b[i];
        if code == 0 {
            i += 1;
            continue;
        }
        if code == 255 {
            break;
        }
        let len = b[i + 1] as usize;
        let d = b.get(i + 2..i + 2 + len)?;
        match (code, len) {
            (53, 1) => msg_type = d[0],
            (54, 4) => server_id = Some(Ipv4Addr::new(d[0], d[1], d[2], d[3])),
            (51, 4) => lease = Some(u32::from_be_bytes([d[0], d[1], d[2], d[3]])),
            (58, 4) => t1 = Some(u32::from_be_bytes([d[0], d[1], d[2], d[3]])),
            (59, 4) => t2 = Some(u32::from_be_bytes([d[0], d[1], d[2], d[3]])),
            _ => {}
        }
        i += 2 + len;
    }
    Some(ReplyInfo {
        msg_type,
        xid,
        yiaddr,
        server_id,
        lease,
        t1,
        t2,
    })
}
