//! The way to a client that has no address yet (RFC 2131 §4.1: unicast to yiaddr at chaddr):
//! an IPv4/UDP datagram built here and sent as an Ethernet frame to chaddr through a packet
//! socket on the interface, as ISC dhcpd and Kea do. Not through ARP injection and the UDP
//! socket: the kernel's neighbour table is shared by every namespace and holds 1,024 entries by
//! default, so a boot storm of a thousand clients across the networks fills it, and then the
//! kernel drops unicast replies. ARP injection stays the fallback when no packet socket can be
//! had (see docs/ARCHITECTURE.md, "Delivery").
//!
//! DHCPv6 replies to clients on the link leave the same way, to the MAC the server found in the
//! neighbour table: a client has a link-local address, so the UDP socket could reach it, but
//! each datagram to another destination costs that socket a route lookup, a source-address
//! choice and a neighbour lookup, the largest part of serving DHCPv6 on the link
//! (bench/DHCPV6.md).

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use qdhcp_batchio::packet::{self, Kind, LinkAddr, PacketSocket};
use qdhcp_protocol::Mac;

use crate::delivery::{CLIENT_PORT, SERVER_PORT};

/// The packet socket of one served interface, opened on first use: a network whose clients
/// all renew by unicast never holds one, and ten thousand networks must not hold ten thousand
/// descriptors more for nothing.
pub(crate) struct LinkOut {
    netns: Option<PathBuf>,
    iface: Arc<str>,
    sock: OnceLock<Option<(PacketSocket, i32)>>,
}

impl LinkOut {
    /// For `iface`, in the namespace at path `netns` (the calling thread's when `None`).
    pub(crate) fn new(netns: Option<PathBuf>, iface: Arc<str>) -> Self {
        LinkOut {
            netns,
            iface,
            sock: OnceLock::new(),
        }
    }

    /// Sends `payload` from `src:67` to `dst:68` at `mac`. `Err` when no packet socket can be
    /// had (no CAP_NET_RAW) or the send fails: the caller falls back to ARP injection.
    pub(crate) fn send(
        &self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        mac: Mac,
        payload: &[u8],
        frame: &mut Vec<u8>,
    ) -> io::Result<()> {
        let Some((fd, ifindex)) = self.sock.get_or_init(|| self.open().ok()) else {
            return Err(io::Error::other("no packet socket"));
        };
        datagram(src, dst, payload, frame);
        let to = LinkAddr {
            ifindex: *ifindex,
            protocol: packet::ETH_P_IP,
            mac: mac.0,
            outgoing: false,
        };
        fd.send_to(frame, to).map(|_| ())
    }

    /// Sends each payload (a whole IP datagram of `protocol`) to its MAC, in `sendmmsg`
    /// batches; returns how many left, in order (`Err` when none could: no packet socket).
    pub(crate) fn send_batch(&self, protocol: u16, frames: &[(&[u8], Mac)]) -> io::Result<usize> {
        let Some((fd, ifindex)) = self.sock.get_or_init(|| self.open().ok()) else {
            return Err(io::Error::other("no packet socket"));
        };
        let to: Vec<(&[u8], LinkAddr)> = frames
            .iter()
            .map(|(b, mac)| {
                let a = LinkAddr {
                    ifindex: *ifindex,
                    protocol,
                    mac: mac.0,
                    outgoing: false,
                };
                (*b, a)
            })
            .collect();
        let mut sent = 0;
        while sent < to.len() {
            match fd.send_batch(&to[sent..]) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(e) if sent == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(sent)
    }

    fn open(&self) -> io::Result<(PacketSocket, i32)> {
        let open_here = || -> io::Result<(PacketSocket, i32)> {
            let ifindex = packet::ifindex(&self.iface)?;
            // Protocol 0: a socket that only sends, so nothing is ever queued on it.
            Ok((PacketSocket::open(Kind::Dgram, false)?, ifindex))
        };
        let r = match &self.netns {
            None => open_here(),
            Some(p) => File::open(p).and_then(|ns| qdhcp_netns::visit(&ns, open_here))?,
        };
        if let Err(e) = &r {
            tracing::warn!(target: "dhcp", "no packet socket on {}: {e}; replies to clients without an address go through ARP injection", self.iface);
        }
        r
    }
}

/// The RFC 1071 sum of `data`, not yet complemented, added to `sum`.
fn sum16(data: &[u8], mut sum: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The IPv4 header, UDP header (checksummed) and `payload` of a reply from `src:67` to
/// `dst:68`, into `out` (cleared first).
pub(crate) fn datagram(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8], out: &mut Vec<u8>) {
    let udp_len = (8 + payload.len()) as u16;
    out.clear();
    out.extend_from_slice(&[0x45, 0]);
    out.extend_from_slice(&(20 + udp_len).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
    let ip_sum = fold(sum16(&out[..20], 0));
    out[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    out.extend_from_slice(&SERVER_PORT.to_be_bytes());
    out.extend_from_slice(&CLIENT_PORT.to_be_bytes());
    out.extend_from_slice(&udp_len.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    // The pseudo-header (RFC 768): addresses, protocol, UDP length.
    let mut sum = sum16(&out[12..20], 0) + 17 + u32::from(udp_len);
    sum = sum16(&out[20..], sum);
    let udp_sum = match fold(sum) {
        0 => 0xffff,
        s => s,
    };
    out[26..28].copy_from_slice(&udp_sum.to_be_bytes());
}

/// The IPv6 header and UDP header (checksummed: IPv6 requires it) and `payload` of a datagram
/// from `src:sport` to `dst:dport`, into `out` (cleared first).
pub(crate) fn datagram6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    ports: (u16, u16),
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let udp_len = (8 + payload.len()) as u16;
    out.clear();
    // version 6, no traffic class or flow label; payload length; UDP; hop limit 64
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&udp_len.to_be_bytes());
    out.extend_from_slice(&[17, 64]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
    out.extend_from_slice(&ports.0.to_be_bytes());
    out.extend_from_slice(&ports.1.to_be_bytes());
    out.extend_from_slice(&udp_len.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    // The pseudo-header (RFC 8200 §8.1): addresses, upper-layer length, next header.
    let mut sum = sum16(&out[8..40], 0) + u32::from(udp_len) + 17;
    sum = sum16(&out[40..], sum);
    let udp_sum = match fold(sum) {
        0 => 0xffff,
        s => s,
    };
    out[46..48].copy_from_slice(&udp_sum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_carry_valid_checksums() {
        let mut out = Vec::new();
        let payload: Vec<u8> = (0..301u16).map(|i| i as u8).collect();
        let (src, dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 3, 7));
        datagram(src, dst, &payload, &mut out);
        assert_eq!(out.len(), 20 + 8 + payload.len());
        // a correct IP header sums to zero
        assert_eq!(fold(sum16(&out[..20], 0)), 0);
        // and so does a correct UDP datagram with its pseudo-header
        let pseudo = sum16(&out[12..20], 0) + 17 + (8 + payload.len()) as u32;
        assert_eq!(fold(sum16(&out[20..], pseudo)), 0);
        assert_eq!(&out[20..24], &[0, 67, 0, 68]);
        assert_eq!(&out[28..], &payload[..]);
    }

    #[test]
    fn ipv6_datagrams_carry_valid_checksums() {
        let mut out = Vec::new();
        for len in [0usize, 1, 57, 300] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let src: Ipv6Addr = "fe80::f816:3eff:fe00:1".parse().unwrap();
            let dst: Ipv6Addr = "fe80::f816:3eff:fe12:3456".parse().unwrap();
            datagram6(src, dst, (547, 546), &payload, &mut out);
            assert_eq!(out.len(), 40 + 8 + len);
            assert_eq!(out[0] >> 4, 6);
            assert_eq!(usize::from(u16::from_be_bytes([out[4], out[5]])), 8 + len);
            assert_eq!((out[6], out[7]), (17, 64));
            assert_eq!(&out[8..24], &src.octets());
            assert_eq!(&out[24..40], &dst.octets());
            assert_eq!(&out[40..44], &[2, 35, 2, 34]);
            // a correct UDP datagram sums to zero with its pseudo-header
            let pseudo = sum16(&out[8..40], 0) + (8 + len) as u32 + 17;
            assert_eq!(fold(sum16(&out[40..], pseudo)), 0);
            assert_eq!(&out[48..], &payload[..]);
        }
    }
}
