//! Packet sockets (`AF_PACKET`): the one safe interface over the raw calls that the dataplane
//! (replies to clients that have no address yet, `dataplane::linkout`) and the load generator
//! (clients on the link, `loadgen::link`) both use: open, filter, promiscuous membership, bind
//! to an interface, send a frame to a hardware address, and batches in and out.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Ethertypes the callers name.
pub const ETH_P_IP: u16 = libc::ETH_P_IP as u16;
/// IPv6.
pub const ETH_P_IPV6: u16 = libc::ETH_P_IPV6 as u16;
/// ARP.
pub const ETH_P_ARP: u16 = libc::ETH_P_ARP as u16;
/// Every protocol (for binding a receiver).
pub const ETH_P_ALL: u16 = libc::ETH_P_ALL as u16;

/// One instruction of a classic BPF program (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bpf {
    /// Opcode.
    pub code: u16,
    /// Jump offset when true.
    pub jt: u8,
    /// Jump offset when false.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

/// Where a frame goes, or where one came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkAddr {
    /// The interface.
    pub ifindex: i32,
    /// The ethertype (host byte order).
    pub protocol: u16,
    /// The hardware address: the destination of a frame sent (with a `Dgram` socket; a `Raw`
    /// frame carries its own), the source of one received.
    pub mac: [u8; 6],
    /// A received frame that this host sent (`PACKET_OUTGOING`).
    pub outgoing: bool,
}

impl LinkAddr {
    fn to_sys(self) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain data; all zero is a valid start.
        let mut a: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        a.sll_family = libc::AF_PACKET as u16;
        a.sll_protocol = self.protocol.to_be();
        a.sll_ifindex = self.ifindex;
        a.sll_halen = 6;
        a.sll_addr[..6].copy_from_slice(&self.mac);
        a
    }

    fn from_sys(a: &libc::sockaddr_ll) -> LinkAddr {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&a.sll_addr[..6]);
        LinkAddr {
            ifindex: a.sll_ifindex,
            protocol: u16::from_be(a.sll_protocol),
            mac,
            outgoing: a.sll_pkttype == libc::PACKET_OUTGOING,
        }
    }
}

/// Whether the kernel builds the Ethernet header (`Dgram`) or the caller does (`Raw`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `SOCK_DGRAM`: payloads; the kernel adds the header for the address given.
    Dgram,
    /// `SOCK_RAW`: whole frames.
    Raw,
}

/// A packet socket of protocol 0: it receives nothing until [`PacketSocket::bind`] (a socket
/// that only sends never has anything queued).
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

/// The index of interface `name` in this thread's network namespace.
pub fn ifindex(name: &str) -> io::Result<i32> {
    let i = index_of(name)?;
    i32::try_from(i).map_err(|_| io::Error::other("interface index out of range"))
}

fn index_of(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name with NUL"))?;
    // SAFETY: a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {name}: {}", io::Error::last_os_error()),
        ));
    }
    Ok(i)
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl PacketSocket {
    /// Opens one; `nonblocking` for sockets waited on in a loop.
    pub fn open(kind: Kind, nonblocking: bool) -> io::Result<PacketSocket> {
        let ty = match kind {
            Kind::Dgram => libc::SOCK_DGRAM,
            Kind::Raw => libc::SOCK_RAW,
        } | libc::SOCK_CLOEXEC
            | if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
        // SAFETY: plain socket creation; the descriptor is owned at once.
        let fd = cvt(unsafe { libc::socket(libc::AF_PACKET, ty, 0) })?;
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(PacketSocket { fd })
    }

    fn set_opt<T>(&self, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
        // SAFETY: `v` is a valid value of the option's type for the duration of the call,
        // which copies it.
        cvt(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                v as *const T as *const libc::c_void,
                std::mem::size_of::<T>() as libc::socklen_t,
            )
        })
        .map(|_| ())
    }

    /// Keeps only the frames `prog` accepts (set before binding, so nothing else is queued).
    pub fn set_filter(&self, prog: &[Bpf]) -> io::Result<()> {
        let mut insns: Vec<libc::sock_filter> = prog
            .iter()
            .map(|b| libc::sock_filter {
                code: b.code,
                jt: b.jt,
                jf: b.jf,
                k: b.k,
            })
            .collect();
        let fprog = libc::sock_fprog {
            len: u16::try_from(insns.len()).map_err(|_| io::Error::other("filter too long"))?,
            filter: insns.as_mut_ptr(),
        };
        self.set_opt(libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
    }

    /// Asks for a receive buffer of `bytes` (a smaller one is only slower).
    pub fn set_recv_buffer(&self, bytes: i32) -> io::Result<()> {
        self.set_opt(libc::SOL_SOCKET, libc::SO_RCVBUF, &bytes)
    }

    /// Puts interface `ifindex` in promiscuous mode for as long as the socket is open.
    pub fn add_promiscuous(&self, ifindex: i32) -> io::Result<()> {
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex,
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        self.set_opt(libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
    }

    /// Receives frames of `protocol` on `ifindex` from now on.
    pub fn bind(&self, ifindex: i32, protocol: u16) -> io::Result<()> {
        let a = LinkAddr {
            ifindex,
            protocol,
            ..LinkAddr::default()
        }
        .to_sys();
        // SAFETY: a valid sockaddr_ll of the size given.
        cvt(unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                &a as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })
        .map(|_| ())
    }

    /// Sends one frame (or payload, for `Dgram`) to `to`.
    pub fn send_to(&self, buf: &[u8], to: LinkAddr) -> io::Result<usize> {
        let a = to.to_sys();
        // SAFETY: a valid buffer and address for the duration of the call.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                buf.as_ptr() as *const libc::c_void,
                buf.len(),
                0,
                &a as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Sends the frames (at most [`crate::MAX_BATCH`]) with one `sendmmsg`; how many left.
    pub fn send_batch(&self, frames: &[(&[u8], LinkAddr)]) -> io::Result<usize> {
        let frames = &frames[..frames.len().min(crate::MAX_BATCH)];
        let mut names: Vec<libc::sockaddr_ll> = frames.iter().map(|(_, a)| a.to_sys()).collect();
        let mut iovs: Vec<libc::iovec> = frames
            .iter()
            .map(|(b, _)| libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        let mut msgs = headers(&mut names, &mut iovs);
        // SAFETY: every header points into `names`, `iovs` and the callers' frames, alive and
        // unmoved until the call returns; the kernel only reads the frames.
        let n = unsafe {
            libc::sendmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                msgs.len() as libc::c_uint,
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Receives what is queued (never blocks), at most `bufs.len()` (and [`crate::MAX_BATCH`])
    /// frames with one `recvmmsg`: each one's length and sender go to `lens` and `from`.
    pub fn recv_batch<B: AsMut<[u8]>>(
        &self,
        bufs: &mut [B],
        lens: &mut [usize],
        from: &mut [LinkAddr],
    ) -> usize {
        let want = bufs
            .len()
            .min(lens.len())
            .min(from.len())
            .min(crate::MAX_BATCH);
        // SAFETY: sockaddr_ll is plain data; all zero is valid.
        let mut names: Vec<libc::sockaddr_ll> = vec![unsafe { std::mem::zeroed() }; want];
        let mut iovs: Vec<libc::iovec> = bufs[..want]
            .iter_mut()
            .map(|b| {
                let b = b.as_mut();
                libc::iovec {
                    iov_base: b.as_mut_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                }
            })
            .collect();
        let mut msgs = headers(&mut names, &mut iovs);
        // SAFETY: every header points into `names`, `iovs` and the callers' buffers, alive and
        // unmoved for the call.
        let n = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                want as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let n = n.max(0) as usize;
        for k in 0..n {
            lens[k] = msgs[k].msg_len as usize;
            from[k] = LinkAddr::from_sys(&names[k]);
        }
        n
    }

    /// Waits at most `ms` milliseconds for room to send.
    pub fn wait_writable(&self, ms: i32) {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, ms) };
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// One message header per address and buffer. The headers point into `names` and `iovs`,
/// which must stay alive and unmoved while they are used.
fn headers(names: &mut [libc::sockaddr_ll], iovs: &mut [libc::iovec]) -> Vec<libc::mmsghdr> {
    names
        .iter_mut()
        .zip(iovs.iter_mut())
        .map(|(name, iov)| {
            // SAFETY: mmsghdr is plain data; all zero is a valid start.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = name as *mut _ as *mut libc::c_void;
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_addresses_round_trip_through_the_kernels_form() {
        let a = LinkAddr {
            ifindex: 7,
            protocol: ETH_P_IP,
            mac: [0xfa, 0x16, 0x3e, 1, 2, 3],
            outgoing: false,
        };
        let sys = a.to_sys();
        assert_eq!(sys.sll_protocol, 0x0800u16.to_be());
        assert_eq!(LinkAddr::from_sys(&sys), a);
    }

    #[test]
    fn an_unknown_interface_is_an_error_naming_it() {
        let e = ifindex("qt-no-such-if0").unwrap_err();
        assert!(e.to_string().contains("qt-no-such-if0"), "{e}");
    }
}
