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
// Unsafe code here only to call the kernel directly (the packet socket the clients on the link
// send and receive through); every block says why it is sound.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

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
    fd: OwnedFd,
    rx_fds: Vec<OwnedFd>,
    epoll: OwnedFd,
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
fn filter() -> [libc::sock_filter; 14] {
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
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

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
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

/// A non-blocking packet socket of protocol 0: it receives nothing until bound.
fn packet_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket creation; the descriptor is owned at once.
    Ok(unsafe {
        OwnedFd::from_raw_fd(cvt(libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        ))?)
    })
}

/// Makes `fd` receive the replies and ARP requests on interface `ifindex`: the filter first,
/// then big buffers, promiscuous mode, and the binding (only then does anything arrive).
fn attach(fd: &OwnedFd, ifindex: i32) -> io::Result<()> {
    let prog = filter();
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: the program outlives the call, which copies it.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &fprog as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as u32,
        )
    })?;
    let big: libc::c_int = 4 << 20;
    // SAFETY: an int option. A smaller buffer is only slower: a refusal is ignored.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &big as *const _ as *const libc::c_void,
            4,
        )
    };
    let mreq = libc::packet_mreq {
        mr_ifindex: ifindex,
        mr_type: libc::PACKET_MR_PROMISC as u16,
        mr_alen: 0,
        mr_address: [0; 8],
    };
    // SAFETY: a valid packet_mreq; undone by the kernel when the socket closes.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            &mreq as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::packet_mreq>() as u32,
        )
    })?;
    // SAFETY: sockaddr_ll is plain data; all zero is a valid start.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex;
    // SAFETY: a valid sockaddr_ll of the size given.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sll as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    })?;
    Ok(())
}

impl Links {
    /// Opens the socket on the named interfaces (in this network namespace).
    pub fn open(names: &[String]) -> io::Result<Links> {
        let mut ifindex = Vec::with_capacity(names.len());
        for n in names {
            let c = CString::new(n.as_str())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"))?;
            // SAFETY: a valid NUL-terminated string.
            let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
            if i == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no interface {n}"),
                ));
            }
            ifindex.push(i as i32);
        }
        // The sender: protocol 0, so nothing is ever queued on it.
        let fd = packet_socket()?;
        // SAFETY: plain epoll creation; the descriptor is owned at once.
        let epoll = unsafe { OwnedFd::from_raw_fd(cvt(libc::epoll_create1(libc::EPOLL_CLOEXEC))?) };
        let mut rx_fds = Vec::with_capacity(ifindex.len());
        for (k, &i) in ifindex.iter().enumerate() {
            let rx = packet_socket()?;
            attach(&rx, i)?;
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: k as u64,
            };
            // SAFETY: valid descriptors and event for the call.
            cvt(unsafe {
                libc::epoll_ctl(
                    epoll.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    rx.as_raw_fd(),
                    &mut ev,
                )
            })?;
            rx_fds.push(rx);
        }
        Ok(Links {
            fd,
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
        self.epoll.as_raw_fd()
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
            let mut addrs: Vec<libc::sockaddr_ll> = chunk
                .iter()
                .map(|&(link, _, _)| {
                    // SAFETY: sockaddr_ll is plain data; all zero is a valid start.
                    let mut a: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                    a.sll_family = libc::AF_PACKET as u16;
                    a.sll_protocol = (libc::ETH_P_IP as u16).to_be();
                    a.sll_ifindex = self.ifindex[link];
                    a.sll_halen = 6;
                    a.sll_addr[..6].copy_from_slice(&[0xff; 6]);
                    a
                })
                .collect();
            let mut iovs: Vec<libc::iovec> = chunk
                .iter()
                .map(|&(_, start, len)| libc::iovec {
                    iov_base: self.frames[start..].as_mut_ptr() as *mut libc::c_void,
                    iov_len: len,
                })
                .collect();
            let mut msgs = headers(&mut addrs, &mut iovs);
            let mut off = 0;
            while off < msgs.len() {
                // SAFETY: every header points into `addrs`, `iovs` and `self.frames`, which
                // live and stay unmoved until the call returns.
                let n = unsafe {
                    libc::sendmmsg(
                        self.fd.as_raw_fd(),
                        msgs[off..].as_mut_ptr(),
                        (msgs.len() - off) as u32,
                        0,
                    )
                };
                if n <= 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted
                    {
                        wait_writable(self.fd.as_raw_fd());
                        continue;
                    }
                    // This frame is lost; count it and go on with the next.
                    done(false);
                    off += 1;
                    continue;
                }
                for _ in 0..n {
                    done(true);
                }
                off += n as usize;
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
        // SAFETY: sockaddr_ll is plain data; all zero is a valid start.
        let mut a: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        a.sll_family = libc::AF_PACKET as u16;
        a.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
        a.sll_ifindex = ifindex;
        a.sll_halen = 6;
        a.sll_addr[..6].copy_from_slice(&out[..6]);
        // SAFETY: a valid buffer and address for the call. A lost reply is asked for again.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                out.as_ptr() as *const libc::c_void,
                out.len(),
                0,
                &a as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n > 0 {
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
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; BATCH];
        // SAFETY: a valid epoll descriptor and event array of the length given.
        let ready = unsafe {
            libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), BATCH as i32, 0)
        };
        let mut got = 0;
        for ev in &events[..ready.max(0) as usize] {
            if got == cap {
                break;
            }
            let link = ev.u64 as usize;
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
        let want = bufs.len();
        // SAFETY: sockaddr_ll is plain data.
        let mut names: Vec<libc::sockaddr_ll> = vec![unsafe { std::mem::zeroed() }; want];
        let mut iovs: Vec<libc::iovec> = self.rx[..want]
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr() as *mut libc::c_void,
                iov_len: FRAME,
            })
            .collect();
        let mut msgs = headers(&mut names, &mut iovs);
        // SAFETY: every header points into `names`, `iovs` and `self.rx`, alive for the call.
        let n = unsafe {
            libc::recvmmsg(
                self.rx_fds[link].as_raw_fd(),
                msgs.as_mut_ptr(),
                want as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let mut got = 0;
        for k in 0..n.max(0) as usize {
            let name = &names[k];
            // Our own frames going out are not replies to us.
            if name.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let len = (msgs[k].msg_len as usize).min(FRAME);
            if name.sll_protocol == (libc::ETH_P_ARP as u16).to_be() {
                let ifindex = name.sll_ifindex;
                self.answer_arp(k, len, ifindex);
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

/// One message header per address and buffer, for `sendmmsg`/`recvmmsg`. The headers point
/// into `names` and `iovs`, which must stay alive and unmoved while they are used.
fn headers(names: &mut [libc::sockaddr_ll], iovs: &mut [libc::iovec]) -> Vec<libc::mmsghdr> {
    names
        .iter_mut()
        .zip(iovs.iter_mut())
        .map(|(name, iov)| {
            // SAFETY: msghdr is plain data; all zero is a valid start.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = name as *mut _ as *mut libc::c_void;
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect()
}

fn wait_writable(fd: RawFd) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, 10) };
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
