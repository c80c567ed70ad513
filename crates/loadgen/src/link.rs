//! The generator on the link, as the clients themselves rather than as a relay: each client's
//! messages leave as broadcast Ethernet frames from its own MAC (0.0.0.0:68 →
//! 255.255.255.255:67) on one of the given links, chosen by client, through one AF_PACKET
//! socket; replies are taken off those links whatever their destination, so the server's
//! delivery per RFC 2131 §4.1 (unicast to yiaddr at chaddr, or broadcast) is what is measured,
//! as a VM on the network sees it. Like a VM, a client answers ARP for the address it was
//! offered: a server whose ARP entry for the client is gone (a neighbour table holds 1,024
//! entries by default, and every unicast reply adds one) asks, and the client must answer. A
//! link is a veth end facing the server or a bridge the server's port is plugged into (put in
//! promiscuous mode, so that frames to the clients' MACs, which the bridge has not learned,
//! reach us).

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use qdhcp_batchio::packet::{self, Bpf, Kind, LinkAddr, PacketSocket};

/// Frames handled per system call.
const BATCH: usize = 64;
const ETH_LEN: usize = 14;
const IP_LEN: usize = 20;
const UDP_LEN: usize = 8;
/// Largest frame we read: a reply is at most 1500 bytes of IP.
const FRAME: usize = 1514;

/// The packet sockets of the links: one that only sends, and one per link that receives only
/// that link's frames (an unbound one would see every frame of every interface, and filter
/// them on the server's core too), all in one epoll set.
pub struct Links {
    tx: PacketSocket,
    rx_fds: Vec<PacketSocket>,
    epoll: Epoll,
    ifindex: Vec<i32>,
    /// Frames waiting for the next [`Links::flush`].
    frames: Vec<u8>,
    sizes: Vec<(usize, usize, usize)>,
    rx: Vec<[u8; FRAME]>,
    /// The address each client was offered, and its MAC: what ARP is answered for.
    claims: HashMap<Ipv4Addr, [u8; 6]>,
    /// ARP replies sent.
    pub arp_replies: u64,
}

/// Classic BPF: ARP requests, and IPv4 UDP datagrams to port 68 (replies to clients) that
/// are not fragments.
fn filter() -> [Bpf; 14] {
    let op = |code: u16, jt: u8, jf: u8, k: u32| Bpf { code, jt, jf, k };
    [
        op(0x28, 0, 0, 12),      // 0: ldh [12]            ethertype
        op(0x15, 8, 0, 0x0806),  // 1: ARP → 10
        op(0x15, 0, 10, 0x0800), // 2: not IPv4 → drop
        op(0x30, 0, 0, 23),      // 3: ldb [23]            protocol
        op(0x15, 0, 8, 17),      // 4: not UDP → drop
        op(0x28, 0, 0, 20),      // 5: ldh [20]            flags and fragment offset
        op(0x45, 6, 0, 0x1fff),  // 6: a fragment → drop
        op(0xb1, 0, 0, 14),      // 7: ldxb 4*([14]&0xf)   IP header length
        op(0x48, 0, 0, 16),      // 8: ldh [x+16]          UDP destination port
        op(0x15, 2, 3, 68),      // 9: 68 → accept, else drop
        op(0x28, 0, 0, 20),      // 10: ldh [20]           ARP operation
        op(0x15, 0, 1, 1),       // 11: request → accept, else drop
        op(0x06, 0, 0, 65535),   // 12: accept
        op(0x06, 0, 0, 0),       // 13: drop
    ]
}

/// The reply to an ARP request frame `req` for `ip`, from the client `mac` that holds it.
pub fn arp_reply(req: &[u8], mac: [u8; 6], out: &mut Vec<u8>) {
    let (asker_mac, asker_ip, ip) = (&req[22..28], &req[28..32], &req[38..42]);
    out.clear();
    out.extend_from_slice(asker_mac);
    out.extend_from_slice(&mac);
    out.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]);
    out.extend_from_slice(&mac);
    out.extend_from_slice(ip);
    out.extend_from_slice(asker_mac);
    out.extend_from_slice(asker_ip);
}

/// The target address of an ARP request frame, if it is a well-formed one for IPv4.
pub fn arp_target(f: &[u8]) -> Option<Ipv4Addr> {
    let a = f.get(ETH_LEN..ETH_LEN + 28)?;
    (f[12..14] == [0x08, 0x06] && a[..8] == [0, 1, 0x08, 0x00, 6, 4, 0, 1])
        .then(|| Ipv4Addr::new(a[24], a[25], a[26], a[27]))
}

/// The RFC 1071 checksum of an IPv4 header.
fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A broadcast frame from `mac` carrying `dhcp` from port 68 to port 67.
pub fn frame(mac: [u8; 6], dhcp: &[u8], out: &mut Vec<u8>) {
    frame_to(
        mac,
        [0xff; 6],
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        dhcp,
        out,
    );
}

/// A frame from `mac`/`src` to `dst_mac`/`dst` carrying `dhcp` from port 68 to port 67.
pub fn frame_to(
    mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    dhcp: &[u8],
    out: &mut Vec<u8>,
) {
    let udp_len = (UDP_LEN + dhcp.len()) as u16;
    let ip_len = IP_LEN as u16 + udp_len;
    out.extend_from_slice(&dst_mac);
    out.extend_from_slice(&mac);
    out.extend_from_slice(&[0x08, 0x00]);
    let ip_at = out.len();
    out.extend_from_slice(&[0x45, 0x10]);
    out.extend_from_slice(&ip_len.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
    let sum = ip_checksum(&out[ip_at..ip_at + IP_LEN]);
    out[ip_at + 10..ip_at + 12].copy_from_slice(&sum.to_be_bytes());
    // UDP checksum 0: none, which IPv4 allows (RFC 768).
    out.extend_from_slice(&68u16.to_be_bytes());
    out.extend_from_slice(&67u16.to_be_bytes());
    out.extend_from_slice(&udp_len.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(dhcp);
}

/// The DHCP payload of a received frame (IPv4, UDP), if it is one.
pub fn payload(f: &[u8]) -> Option<&[u8]> {
    let ip = f.get(ETH_LEN..)?;
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    let udp = ip.get(ihl..total.min(ip.len()))?;
    let len = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    udp.get(UDP_LEN..len.min(udp.len()))
}

/// Makes a packet socket receive the replies and ARP requests on interface `ifindex`: the
/// filter first, then big buffers, promiscuous mode, and the binding (only then does anything
/// arrive).
fn receiver(ifindex: i32) -> io::Result<PacketSocket> {
    let rx = PacketSocket::open(Kind::Raw, true)?;
    rx.set_filter(&filter())?;
    // A smaller buffer is only slower: a refusal is ignored.
    let _ = rx.set_recv_buffer(4 << 20);
    rx.add_promiscuous(ifindex)?;
    rx.bind(ifindex, packet::ETH_P_ALL)?;
    Ok(rx)
}

impl Links {
    /// Opens the socket on the named interfaces (in this network namespace).
    pub fn open(names: &[String]) -> io::Result<Links> {
        let ifindex = names
            .iter()
            .map(|n| packet::ifindex(n))
            .collect::<io::Result<Vec<i32>>>()?;
        // The sender: protocol 0, so nothing is ever queued on it.
        let tx = PacketSocket::open(Kind::Raw, true)?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(io::Error::from)?;
        let mut rx_fds = Vec::with_capacity(ifindex.len());
        for (k, &i) in ifindex.iter().enumerate() {
            let rx = receiver(i)?;
            epoll
                .add(&rx, EpollEvent::new(EpollFlags::EPOLLIN, k as u64))
                .map_err(io::Error::from)?;
            rx_fds.push(rx);
        }
        Ok(Links {
            tx,
            rx_fds,
            epoll,
            ifindex,
            frames: Vec::with_capacity(BATCH * 400),
            sizes: Vec::with_capacity(BATCH),
            rx: vec![[0u8; FRAME]; BATCH],
            claims: HashMap::new(),
            arp_replies: 0,
        })
    }

    /// Number of links.
    pub fn len(&self) -> usize {
        self.ifindex.len()
    }

    /// True with no links (never, once opened).
    pub fn is_empty(&self) -> bool {
        self.ifindex.is_empty()
    }

    /// The descriptor to wait on: readable when any link has a frame for us.
    pub fn fd(&self) -> RawFd {
        self.epoll.0.as_raw_fd()
    }

    /// Queues `dhcp` broadcast from client MAC `mac` on link `link` (modulo the number of
    /// links).
    pub fn push(&mut self, link: usize, mac: [u8; 6], dhcp: &[u8]) {
        let start = self.frames.len();
        frame(mac, dhcp, &mut self.frames);
        self.sizes
            .push((link % self.ifindex.len(), start, self.frames.len() - start));
    }

    /// Queues `dhcp` from a client that has an address: from `mac`/`src` to
    /// `dst_mac`/`dst` (a server for a renewal, broadcast for a rebinding).
    pub fn push_from(
        &mut self,
        link: usize,
        mac: [u8; 6],
        src: Ipv4Addr,
        dst_mac: [u8; 6],
        dst: Ipv4Addr,
        dhcp: &[u8],
    ) {
        let start = self.frames.len();
        frame_to(mac, dst_mac, src, dst, dhcp, &mut self.frames);
        self.sizes
            .push((link % self.ifindex.len(), start, self.frames.len() - start));
    }

    /// Sends the queued frames (one `sendmmsg` per batch); calls `done(sent)` for each.
    pub fn flush(&mut self, mut done: impl FnMut(bool)) {
        let mut at = 0;
        while at < self.sizes.len() {
            let chunk = &self.sizes[at..(at + BATCH).min(self.sizes.len())];
            let frames: Vec<(&[u8], LinkAddr)> = chunk
                .iter()
                .map(|&(link, start, len)| {
                    let to = LinkAddr {
                        ifindex: self.ifindex[link],
                        protocol: packet::ETH_P_IP,
                        mac: [0xff; 6],
                        outgoing: false,
                    };
                    (&self.frames[start..start + len], to)
                })
                .collect();
            let mut off = 0;
            while off < frames.len() {
                match self.tx.send_batch(&frames[off..]) {
                    Ok(n) if n > 0 => {
                        for _ in 0..n {
                            done(true);
                        }
                        off += n;
                    }
                    Ok(_) => self.tx.wait_writable(10),
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.kind() == io::ErrorKind::Interrupted =>
                    {
                        self.tx.wait_writable(10)
                    }
                    Err(_) => {
                        // This frame is lost; count it and go on with the next.
                        done(false);
                        off += 1;
                    }
                }
            }
            at += chunk.len();
        }
        self.frames.clear();
        self.sizes.clear();
    }

    /// Client `mac` was offered `ip`: from now on it answers ARP for it, as a VM would.
    pub fn claim(&mut self, ip: Ipv4Addr, mac: [u8; 6]) {
        self.claims.insert(ip, mac);
    }

    /// Answers an ARP request that came in on interface `ifindex` if one of our clients holds
    /// the address asked for.
    fn answer_arp(&mut self, k: usize, len: usize, ifindex: i32) {
        let f = &self.rx[k][..len];
        let Some(mac) = arp_target(f).and_then(|ip| self.claims.get(&ip).copied()) else {
            return;
        };
        let mut out = Vec::with_capacity(42);
        arp_reply(f, mac, &mut out);
        let mut to_mac = [0u8; 6];
        to_mac.copy_from_slice(&out[..6]);
        let to = LinkAddr {
            ifindex,
            protocol: packet::ETH_P_ARP,
            mac: to_mac,
            outgoing: false,
        };
        // A lost reply is asked for again.
        if self.tx.send_to(&out, to).is_ok() {
            self.arp_replies += 1;
        }
    }

    /// Reads the waiting replies on our links (at most `bufs.len()`) into `bufs` as DHCP
    /// payloads, with the link each came from and the MAC that sent it; answers the ARP
    /// requests among them; never blocks.
    pub fn recv(
        &mut self,
        bufs: &mut [[u8; 1500]],
        lens: &mut [usize],
        from: &mut [usize],
        senders: &mut [[u8; 6]],
    ) -> usize {
        let cap = bufs
            .len()
            .min(lens.len())
            .min(from.len())
            .min(senders.len())
            .min(BATCH);
        let mut events = [EpollEvent::empty(); BATCH];
        let ready = self.epoll.wait(&mut events, 0u8).unwrap_or(0);
        let mut got = 0;
        for ev in &events[..ready] {
            if got == cap {
                break;
            }
            let link = ev.data() as usize;
            let n = self.recv_link(
                link,
                &mut bufs[got..cap],
                &mut lens[got..cap],
                &mut senders[got..cap],
            );
            from[got..got + n].fill(link);
            got += n;
        }
        got
    }

    /// One `recvmmsg` on link `link`'s socket; returns the replies it held.
    fn recv_link(
        &mut self,
        link: usize,
        bufs: &mut [[u8; 1500]],
        lens: &mut [usize],
        senders: &mut [[u8; 6]],
    ) -> usize {
        let want = bufs.len().min(BATCH);
        let mut frame_lens = [0usize; BATCH];
        let mut from = [LinkAddr::default(); BATCH];
        let n = self.rx_fds[link].recv_batch(
            &mut self.rx[..want],
            &mut frame_lens[..want],
            &mut from[..want],
        );
        let mut got = 0;
        for k in 0..n {
            // Our own frames going out are not replies to us.
            if from[k].outgoing {
                continue;
            }
            let len = frame_lens[k].min(FRAME);
            if from[k].protocol == packet::ETH_P_ARP {
                self.answer_arp(k, len, from[k].ifindex);
                continue;
            }
            let Some(p) = payload(&self.rx[k][..len]) else {
                continue;
            };
            let l = p.len().min(1500);
            bufs[got][..l].copy_from_slice(&p[..l]);
            lens[got] = l;
            senders[got].copy_from_slice(&self.rx[k][6..12]);
            got += 1;
        }
        got
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_the_payload_and_a_valid_ip_header() {
        let mut f = Vec::new();
        let dhcp = [7u8; 300];
        frame([0xfa, 0x16, 0x3e, 0, 0, 1], &dhcp, &mut f);
        assert_eq!(f.len(), ETH_LEN + IP_LEN + UDP_LEN + 300);
        assert_eq!(f[..6], [0xff; 6]);
        assert_eq!(f[6..12], [0xfa, 0x16, 0x3e, 0, 0, 1]);
        // a header whose checksum is right sums to zero
        assert_eq!(ip_checksum(&f[ETH_LEN..ETH_LEN + IP_LEN]), 0);
        assert_eq!(payload(&f), Some(&dhcp[..]));
        // truncated frames give nothing rather than a panic
        for cut in 0..f.len() {
            let _ = payload(&f[..cut]);
        }
        assert_eq!(arp_target(&f), None);
    }

    #[test]
    fn arp_requests_are_answered_from_the_client_that_holds_the_address() {
        let server = [2, 0, 0, 0, 0, 1];
        let client = [0xfa, 0x16, 0x3e, 0, 0, 9];
        let mut req = vec![0xff; 6];
        req.extend_from_slice(&server);
        req.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        req.extend_from_slice(&server);
        req.extend_from_slice(&[10, 0, 0, 1]);
        req.extend_from_slice(&[0; 6]);
        req.extend_from_slice(&[10, 0, 0, 9]);
        assert_eq!(arp_target(&req), Some(Ipv4Addr::new(10, 0, 0, 9)));
        let mut rep = Vec::new();
        arp_reply(&req, client, &mut rep);
        assert_eq!(rep[..6], server);
        assert_eq!(rep[6..12], client);
        assert_eq!(rep[20..22], [0, 2]);
        assert_eq!(rep[22..28], client);
        assert_eq!(rep[28..32], [10, 0, 0, 9]);
        assert_eq!(rep[32..38], server);
        assert_eq!(rep[38..42], [10, 0, 0, 1]);
        // a reply is not a request
        assert_eq!(arp_target(&rep), None);
    }
}
