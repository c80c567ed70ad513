//! The DHCPv6 generator on the link, as the clients themselves rather than as a relay: each
//! client's SOLICIT and REQUEST leave as an Ethernet frame from its own MAC and its EUI-64
//! link-local address to ff02::1:2, through one AF_PACKET socket; replies to port 546 are taken
//! off the links whatever their destination. A server that matches clients by MAC from the
//! link (dnsmasq, qdhcp) finds it in its neighbour table, so like a VM each client answers the
//! neighbour solicitations for its link-local address (a server that has no entry for it
//! resolves it before it can answer, and probes it again later); a server that derives the MAC
//! from an EUI-64 link-local (Kea's `ipv6-link-local` MAC source) needs nothing more.

use std::io;
use std::net::Ipv6Addr;

use qdhcp_batchio::packet::{self, Bpf, Kind, LinkAddr, PacketSocket};

/// IPv6's ethertype.
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_LEN: usize = 14;
const IP6_LEN: usize = 40;
const UDP_LEN: usize = 8;
/// Largest frame read.
const FRAME: usize = 1514;
/// Frames read per system call.
const BATCH: usize = 32;
/// ICMPv6 neighbour solicitation and advertisement.
const NS: u8 = 135;
const NA: u8 = 136;

/// The client's EUI-64 link-local address (RFC 4291 appendix A), as a VM's kernel forms it.
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([mac[0] ^ 2, mac[1]]),
        u16::from_be_bytes([mac[2], 0xff]),
        u16::from_be_bytes([0xfe, mac[3]]),
        u16::from_be_bytes([mac[4], mac[5]]),
    )
}

/// The MAC an EUI-64 link-local address was formed from, if it is one.
pub fn mac_of_link_local(a: Ipv6Addr) -> Option<[u8; 6]> {
    let o = a.octets();
    (o[..8] == [0xfe, 0x80, 0, 0, 0, 0, 0, 0] && o[11] == 0xff && o[12] == 0xfe)
        .then(|| [o[8] ^ 2, o[9], o[10], o[13], o[14], o[15]])
}

/// The folded ones' complement sum of an IPv6 upper-layer packet with its pseudo-header
/// (`src`, `dst`, length, next header; RFC 8200 §8.1): all ones when its checksum is right.
fn ones_sum(src: &Ipv6Addr, dst: &Ipv6Addr, next: u8, body: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(body.len() as u32).to_be_bytes());
    add(&[0, 0, 0, next]);
    add(body);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The checksum for `body` (its checksum field zero): UDP sends an all-zero sum as all ones
/// (RFC 8200 §8.1), harmless for ICMPv6.
pub fn checksum6(src: &Ipv6Addr, dst: &Ipv6Addr, next: u8, body: &[u8]) -> u16 {
    match !ones_sum(src, dst, next, body) {
        0 => 0xffff,
        c => c,
    }
}

/// Appends an Ethernet + IPv6 header (`macs` and `ips`: destination and source) for
/// `payload_len` bytes of `next` to `out`.
fn headers(
    out: &mut Vec<u8>,
    (dst_mac, src_mac): ([u8; 6], [u8; 6]),
    (dst, src): (&Ipv6Addr, &Ipv6Addr),
    next: u8,
    hop_limit: u8,
    payload_len: usize,
) {
    out.extend_from_slice(&dst_mac);
    out.extend_from_slice(&src_mac);
    out.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&(payload_len as u16).to_be_bytes());
    out.extend_from_slice(&[next, hop_limit]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
}

/// The frame of client `mac`'s DHCPv6 message `dhcp`: from its link-local address, port 546,
/// to All_DHCP_Relay_Agents_and_Servers (ff02::1:2), port 547.
pub fn solicit_frame(mac: [u8; 6], dhcp: &[u8], out: &mut Vec<u8>) {
    let src = link_local(mac);
    let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
    let udp_len = UDP_LEN + dhcp.len();
    out.clear();
    headers(
        out,
        ([0x33, 0x33, 0, 1, 0, 2], mac),
        (&dst, &src),
        17,
        1,
        udp_len,
    );
    let at = out.len();
    out.extend_from_slice(&546u16.to_be_bytes());
    out.extend_from_slice(&547u16.to_be_bytes());
    out.extend_from_slice(&(udp_len as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(dhcp);
    let sum = checksum6(&src, &dst, 17, &out[at..]);
    out[at + 6..at + 8].copy_from_slice(&sum.to_be_bytes());
}

/// The neighbour advertisement answering solicitation frame `ns` for client `mac`'s
/// link-local address (solicited, override, with its link-layer address), as a host sends it.
pub fn advert_frame(ns: &[u8], mac: [u8; 6], out: &mut Vec<u8>) -> Option<()> {
    let asker_mac: [u8; 6] = ns.get(6..12)?.try_into().ok()?;
    let asker: [u8; 16] = ns.get(22..38)?.try_into().ok()?;
    let asker = Ipv6Addr::from(asker);
    if asker.is_unspecified() {
        // duplicate address detection by someone else: nothing to answer
        return None;
    }
    let target = link_local(mac);
    out.clear();
    headers(out, (asker_mac, mac), (&asker, &target), 58, 255, 32);
    let at = out.len();
    out.extend_from_slice(&[NA, 0, 0, 0, 0x60, 0, 0, 0]);
    out.extend_from_slice(&target.octets());
    out.extend_from_slice(&[2, 1]);
    out.extend_from_slice(&mac);
    let sum = checksum6(&target, &asker, 58, &out[at..]);
    out[at + 2..at + 4].copy_from_slice(&sum.to_be_bytes());
    Some(())
}

/// The target of a neighbour solicitation frame.
pub fn solicited(f: &[u8]) -> Option<Ipv6Addr> {
    if f.get(ETH_LEN + 6) != Some(&58) || f.get(ETH_LEN + IP6_LEN) != Some(&NS) {
        return None;
    }
    let t: [u8; 16] = f
        .get(ETH_LEN + IP6_LEN + 8..ETH_LEN + IP6_LEN + 24)?
        .try_into()
        .ok()?;
    Some(Ipv6Addr::from(t))
}

/// The DHCPv6 message of a frame to UDP port 546, if it is one.
pub fn payload(f: &[u8]) -> Option<&[u8]> {
    if f.get(ETH_LEN + 6) != Some(&17) {
        return None;
    }
    let udp = f.get(ETH_LEN + IP6_LEN..)?;
    if udp.get(2..4)? != 546u16.to_be_bytes() {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    udp.get(UDP_LEN..len.min(udp.len()))
}

/// Classic BPF: IPv6 frames that are UDP to port 546 or ICMPv6 neighbour solicitations
/// (neither with extension headers, which servers do not put there).
fn filter() -> [Bpf; 11] {
    let op = |code: u16, jt: u8, jf: u8, k: u32| Bpf { code, jt, jf, k };
    [
        op(0x28, 0, 0, 12),                    // 0: ldh [12]   ethertype
        op(0x15, 0, 8, u32::from(ETH_P_IPV6)), // 1: not IPv6 → drop
        op(0x30, 0, 0, 20),                    // 2: ldb [20]   next header
        op(0x15, 0, 2, 17),                    // 3: not UDP → 6
        op(0x28, 0, 0, 56),                    // 4: ldh [56]   UDP destination port
        op(0x15, 3, 4, 546),                   // 5: 546 → accept, else drop
        op(0x15, 0, 3, 58),                    // 6: not ICMPv6 → drop
        op(0x30, 0, 0, 54),                    // 7: ldb [54]   ICMPv6 type
        op(0x15, 0, 1, u32::from(NS)),         // 8: NS → accept, else drop
        op(0x06, 0, 0, 65535),                 // 9: accept
        op(0x06, 0, 0, 0),                     // 10: drop
    ]
}

/// The links the clients are on: one socket that sends, one per link that receives.
pub struct Links6 {
    tx: PacketSocket,
    rx: Vec<PacketSocket>,
    ifindex: Vec<i32>,
    /// Whether client `i` is one of ours (its NS is answered).
    clients: std::ops::Range<u32>,
    frame: Vec<u8>,
    bufs: Vec<[u8; FRAME]>,
    lens: [usize; BATCH],
    froms: [LinkAddr; BATCH],
    /// Frames read and not yet handed out: `next..got` of `bufs`.
    next: usize,
    got: usize,
    /// The link being read.
    turn: usize,
    /// Neighbour advertisements sent.
    pub adverts: u64,
}

impl Links6 {
    /// Opens the sockets on the named interfaces (in this network namespace), for clients
    /// `clients` (indexes, MACs as [`crate::wire::mac_of`]).
    pub fn open(names: &[String], clients: std::ops::Range<u32>) -> io::Result<Links6> {
        let ifindex = names
            .iter()
            .map(|n| packet::ifindex(n))
            .collect::<io::Result<Vec<i32>>>()?;
        let tx = PacketSocket::open(Kind::Raw, false)?;
        let mut rx = Vec::with_capacity(ifindex.len());
        for &i in &ifindex {
            let s = PacketSocket::open(Kind::Raw, true)?;
            s.set_filter(&filter())?;
            let _ = s.set_recv_buffer(8 << 20);
            // frames to the clients' MACs, which a bridge has not learned, reach us too
            s.add_promiscuous(i)?;
            s.bind(i, packet::ETH_P_ALL)?;
            rx.push(s);
        }
        Ok(Links6 {
            tx,
            rx,
            ifindex,
            clients,
            frame: Vec::with_capacity(256),
            bufs: vec![[0u8; FRAME]; BATCH],
            lens: [0; BATCH],
            froms: [LinkAddr::default(); BATCH],
            next: 0,
            got: 0,
            turn: 0,
            adverts: 0,
        })
    }

    fn send_frame(&self, client: u32, frame: &[u8]) -> bool {
        let link = client as usize % self.ifindex.len();
        let to = LinkAddr {
            ifindex: self.ifindex[link],
            protocol: ETH_P_IPV6,
            mac: frame[..6].try_into().expect("6 bytes"),
            outgoing: false,
        };
        self.tx.send_to(frame, to).is_ok()
    }

    /// Sends client `client`'s (MAC `mac`) DHCPv6 message.
    pub fn send(&mut self, client: u32, mac: [u8; 6], dhcp: &[u8]) -> bool {
        let mut f = std::mem::take(&mut self.frame);
        solicit_frame(mac, dhcp, &mut f);
        let ok = self.send_frame(client, &f);
        self.frame = f;
        ok
    }

    /// The next DHCPv6 message to a client, copied into `buf` (its length), answering the
    /// neighbour solicitations for our clients met on the way; `None` when nothing is queued.
    pub fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        loop {
            if self.next == self.got {
                self.next = 0;
                self.got = 0;
                for _ in 0..self.rx.len() {
                    let k = self.turn;
                    self.turn = (self.turn + 1) % self.rx.len();
                    self.got =
                        self.rx[k].recv_batch(&mut self.bufs, &mut self.lens, &mut self.froms);
                    if self.got > 0 {
                        break;
                    }
                }
                if self.got == 0 {
                    return None;
                }
            }
            let k = self.next;
            self.next += 1;
            if self.froms[k].outgoing {
                continue;
            }
            let f = &self.bufs[k][..self.lens[k].min(FRAME)];
            if let Some(p) = payload(f) {
                let n = p.len().min(buf.len());
                buf[..n].copy_from_slice(&p[..n]);
                return Some(n);
            }
            let Some(mac) = solicited(f).and_then(mac_of_link_local) else {
                continue;
            };
            if mac[..3] != [0xfa, 0x16, 0x3e] {
                continue;
            }
            let client = (u32::from(mac[3]) << 16) | (u32::from(mac[4]) << 8) | u32::from(mac[5]);
            if !self.clients.contains(&client) {
                continue;
            }
            let mut out = std::mem::take(&mut self.frame);
            if advert_frame(f, mac, &mut out).is_some() && self.send_frame(client, &out) {
                self.adverts += 1;
            }
            self.frame = out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checksum is right when summing the packet with it gives all ones.
    fn verifies(src: &Ipv6Addr, dst: &Ipv6Addr, next: u8, body: &[u8]) -> bool {
        ones_sum(src, dst, next, body) == 0xffff
    }

    #[test]
    fn a_clients_frame_is_from_its_eui64_link_local_to_the_servers_group_with_a_valid_sum() {
        let mac = [0xfa, 0x16, 0x3e, 0x01, 0x02, 0x03];
        let mut f = Vec::new();
        solicit_frame(mac, &[1, 0xaa, 0xbb, 0xcc, 0, 8, 0, 2, 0, 0], &mut f);
        let src = link_local(mac);
        assert_eq!(src, "fe80::f816:3eff:fe01:203".parse::<Ipv6Addr>().unwrap());
        assert_eq!(mac_of_link_local(src), Some(mac));
        assert_eq!(&f[..6], &[0x33, 0x33, 0, 1, 0, 2]);
        assert_eq!(&f[6..12], &mac);
        assert_eq!(&f[22..38], &src.octets());
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&f[38..54]).unwrap());
        assert_eq!(dst, "ff02::1:2".parse::<Ipv6Addr>().unwrap());
        assert!(verifies(&src, &dst, 17, &f[54..]));
        assert_eq!(
            usize::from(u16::from_be_bytes([f[18], f[19]])),
            f.len() - 54
        );
    }

    #[test]
    fn a_solicitation_for_a_client_is_answered_with_its_mac_and_a_valid_sum() {
        let mac = [0xfa, 0x16, 0x3e, 0, 0, 9];
        let server_mac = [2, 0, 0, 0, 0, 1];
        let server: Ipv6Addr = "fe80::1".parse().unwrap();
        let target = link_local(mac);
        // the server's solicitation, to the target's solicited-node group
        let mut ns = Vec::new();
        let group = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 9);
        headers(
            &mut ns,
            ([0x33, 0x33, 0xff, 0, 0, 9], server_mac),
            (&group, &server),
            58,
            255,
            32,
        );
        ns.extend_from_slice(&[NS, 0, 0, 0, 0, 0, 0, 0]);
        ns.extend_from_slice(&target.octets());
        ns.extend_from_slice(&[1, 1]);
        ns.extend_from_slice(&server_mac);
        assert_eq!(solicited(&ns), Some(target));
        assert_eq!(payload(&ns), None);
        let mut na = Vec::new();
        advert_frame(&ns, mac, &mut na).expect("answered");
        assert_eq!(&na[..6], &server_mac);
        assert_eq!(&na[6..12], &mac);
        assert_eq!(na[21], 255, "hop limit 255, or the server drops it");
        assert_eq!(na[54], NA);
        assert_eq!(na[58] & 0x40, 0x40, "solicited");
        assert_eq!(&na[62..78], &target.octets());
        assert_eq!(&na[78..80], &[2, 1]);
        assert_eq!(&na[80..86], &mac);
        assert!(verifies(&target, &server, 58, &na[54..]));
    }

    #[test]
    fn a_udp_frame_to_546_yields_its_dhcpv6_message() {
        let mut f = Vec::new();
        let a: Ipv6Addr = "fe80::1".parse().unwrap();
        let b = link_local([0xfa, 0x16, 0x3e, 0, 0, 1]);
        headers(&mut f, ([0; 6], [0; 6]), (&b, &a), 17, 64, 12);
        f.extend_from_slice(&547u16.to_be_bytes());
        f.extend_from_slice(&546u16.to_be_bytes());
        f.extend_from_slice(&12u16.to_be_bytes());
        f.extend_from_slice(&[0, 0, 2, 1, 2, 3]);
        assert_eq!(payload(&f), Some(&[2u8, 1, 2, 3][..]));
        assert_eq!(solicited(&f), None);
    }
}
