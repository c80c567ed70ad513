//! Batched UDP I/O: a batch of datagrams in with one `recvmmsg`, a batch out with as few
//! syscalls as the kernel allows. Datagrams of one size to one unicast address leave as one
//! `sendmsg` with UDP segmentation offload (`UDP_SEGMENT`), so the kernel's UDP/IP path (and on
//! a veth pair, the receiver's too) runs once per run instead of once per datagram; the rest
//! leave in `sendmmsg` calls. Packet sockets (`packet`): frames to and from hardware addresses
//! for the dataplane and the load generator. No DHCP here: bytes, addresses and file
//! descriptors only.
// Unsafe code here only to call the kernel directly (this crate is the safe interface over
// recvmmsg/sendmmsg); every block says why it is sound.
#![allow(unsafe_code)]

pub mod packet;

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// A socket address datagrams are batched to and from, in the kernel's raw form: IPv4
/// (`sockaddr_in`) or IPv6 (`sockaddr_in6`), so one batch path serves DHCPv4, DHCPv6 and DNS.
pub trait Addr: Copy + PartialEq + std::fmt::Debug {
    /// The kernel's socket address for it.
    type Raw: Copy;
    /// The raw form, for the kernel.
    fn to_raw(&self) -> Self::Raw;
    /// Back from what the kernel wrote; `None` for another family.
    fn from_raw(raw: &Self::Raw) -> Option<Self>;
    /// A raw address for the kernel to fill in.
    fn empty() -> Self::Raw;
    /// What a source of another family is given as.
    fn unspecified() -> Self;
    /// Whether a send there cannot be segmented (broadcast or multicast).
    fn is_group(&self) -> bool;
}

impl Addr for SocketAddrV4 {
    type Raw = libc::sockaddr_in;
    fn to_raw(&self) -> libc::sockaddr_in {
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: self.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*self.ip()).to_be(),
            },
            sin_zero: [0; 8],
        }
    }
    fn from_raw(a: &libc::sockaddr_in) -> Option<Self> {
        (a.sin_family == libc::AF_INET as libc::sa_family_t).then(|| {
            SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )
        })
    }
    fn empty() -> libc::sockaddr_in {
        SocketAddrV4::unspecified().to_raw()
    }
    fn unspecified() -> Self {
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)
    }
    fn is_group(&self) -> bool {
        self.ip().is_broadcast() || self.ip().is_multicast()
    }
}

impl Addr for SocketAddrV6 {
    type Raw = libc::sockaddr_in6;
    fn to_raw(&self) -> libc::sockaddr_in6 {
        libc::sockaddr_in6 {
            sin6_family: libc::AF_INET6 as libc::sa_family_t,
            sin6_port: self.port().to_be(),
            sin6_flowinfo: self.flowinfo().to_be(),
            sin6_addr: libc::in6_addr {
                s6_addr: self.ip().octets(),
            },
            sin6_scope_id: self.scope_id(),
        }
    }
    fn from_raw(a: &libc::sockaddr_in6) -> Option<Self> {
        (a.sin6_family == libc::AF_INET6 as libc::sa_family_t).then(|| {
            SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                u32::from_be(a.sin6_flowinfo),
                a.sin6_scope_id,
            )
        })
    }
    fn empty() -> libc::sockaddr_in6 {
        SocketAddrV6::unspecified().to_raw()
    }
    fn unspecified() -> Self {
        SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0)
    }
    fn is_group(&self) -> bool {
        self.ip().is_multicast()
    }
}

/// Most datagrams one call moves: also the kernel's limit of segments in one UDP GSO send.
pub const MAX_BATCH: usize = 64;
/// Largest UDP payload one segmented send may carry (65,535 less the IPv4 and UDP headers).
const MAX_GSO_BYTES: usize = 65_507;

/// Headers filled per `recvmmsg` call: small enough that the call's frame stays within one
/// page of stack, so a thousand idle listeners do not each keep an extra page resident.
const RECV_CHUNK: usize = 16;

/// Receives up to `bufs.len()` datagrams (at most `MAX_BATCH`) with `recvmmsg`, one call per 16;
/// their lengths go to `lens`. With `wait` it blocks for the first (up to the socket's receive
/// timeout) and takes whatever else is queued without waiting; without it, it never blocks.
/// `Ok(0)` means nothing was queued (or the timeout passed).
pub fn recv_batch<B: AsMut<[u8]>>(
    fd: RawFd,
    bufs: &mut [B],
    lens: &mut [usize],
    wait: bool,
) -> io::Result<usize> {
    let n = bufs.len().min(lens.len()).min(MAX_BATCH);
    let mut got = 0;
    while got < n {
        let want = (n - got).min(RECV_CHUNK);
        let flags = if wait && got == 0 {
            libc::MSG_WAITFORONE
        } else {
            libc::MSG_DONTWAIT
        };
        match recv_chunk(
            fd,
            &mut bufs[got..got + want],
            &mut lens[got..got + want],
            flags,
        ) {
            Ok(k) => {
                got += k;
                if k < want {
                    break;
                }
            }
            // What was received is returned; a lasting error shows on the next call.
            Err(_) if got > 0 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// [`recv_batch`] that also gives each datagram's source (a server answering its clients);
/// never blocks. A source of another family is given as [`Addr::unspecified`].
pub fn recv_batch_from<A: Addr, B: AsMut<[u8]>>(
    fd: RawFd,
    bufs: &mut [B],
    lens: &mut [usize],
    froms: &mut [A],
) -> io::Result<usize> {
    let n = bufs.len().min(lens.len()).min(froms.len()).min(MAX_BATCH);
    let mut got = 0;
    while got < n {
        let want = (n - got).min(RECV_CHUNK);
        let mut names = [A::empty(); RECV_CHUNK];
        match recv_chunk_named(
            fd,
            &mut bufs[got..got + want],
            &mut lens[got..got + want],
            Some(&mut names[..want]),
            libc::MSG_DONTWAIT,
        ) {
            Ok(k) => {
                for (f, a) in froms[got..got + k].iter_mut().zip(&names[..k]) {
                    *f = A::from_raw(a).unwrap_or_else(A::unspecified);
                }
                got += k;
                if k < want {
                    break;
                }
            }
            Err(_) if got > 0 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// One `recvmmsg` into at most `RECV_CHUNK` buffers.
fn recv_chunk<B: AsMut<[u8]>>(
    fd: RawFd,
    bufs: &mut [B],
    lens: &mut [usize],
    flags: libc::c_int,
) -> io::Result<usize> {
    recv_chunk_named::<libc::sockaddr_in, B>(fd, bufs, lens, None, flags)
}

/// [`recv_chunk`], with the sources written to `names` when given.
fn recv_chunk_named<R, B: AsMut<[u8]>>(
    fd: RawFd,
    bufs: &mut [B],
    lens: &mut [usize],
    mut names: Option<&mut [R]>,
    flags: libc::c_int,
) -> io::Result<usize> {
    let n = bufs
        .len()
        .min(RECV_CHUNK)
        .min(names.as_ref().map_or(RECV_CHUNK, |v| v.len()));
    let mut iovs = [MaybeUninit::<libc::iovec>::uninit(); RECV_CHUNK];
    let mut hdrs = [MaybeUninit::<libc::mmsghdr>::uninit(); RECV_CHUNK];
    for i in 0..n {
        let b = bufs[i].as_mut();
        let iov = iovs[i].write(libc::iovec {
            iov_base: b.as_mut_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        });
        let name = names.as_deref_mut().map(|v| &mut v[i]);
        hdrs[i].write(mmsghdr(iov, name));
    }
    // SAFETY: the first `n` headers are initialised and point at buffers that outlive the call.
    let got = unsafe {
        libc::recvmmsg(
            fd,
            hdrs.as_mut_ptr() as *mut libc::mmsghdr,
            n as libc::c_uint,
            flags,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted => {
                Ok(0)
            }
            _ => Err(e),
        };
    }
    for (len, h) in lens.iter_mut().zip(&hdrs[..got as usize]) {
        // SAFETY: the first `n` headers were initialised above, and got <= n.
        *len = unsafe { h.assume_init_ref() }.msg_len as usize;
    }
    Ok(got as usize)
}

/// One queued datagram: where to, and where its bytes sit in the outbox.
#[derive(Debug, Clone, Copy)]
struct Item<A> {
    to: A,
    start: usize,
    len: usize,
}

/// Datagrams gathered during a batch and sent together by `flush`, in the order pushed.
/// Buffers are kept between batches, so a steady load does not allocate.
#[derive(Debug)]
pub struct Outbox<A: Addr = SocketAddrV4> {
    bytes: Vec<u8>,
    items: Vec<Item<A>>,
    segmenting: bool,
}

impl<A: Addr> Default for Outbox<A> {
    fn default() -> Self {
        Self::new(true)
    }
}

impl<A: Addr> Outbox<A> {
    /// An empty outbox; `segmenting` allows UDP segmentation offload (turned off for good the
    /// first time the kernel refuses it).
    pub fn new(segmenting: bool) -> Self {
        // Empty until first used: a quiet network's listener never allocates.
        Self {
            bytes: Vec::new(),
            items: Vec::new(),
            segmenting,
        }
    }

    /// Queues `bytes` for `to`; its index (for `flush`'s report) is the number queued before it.
    pub fn push(&mut self, to: A, bytes: &[u8]) {
        self.items.push(Item {
            to,
            start: self.bytes.len(),
            len: bytes.len(),
        });
        self.bytes.extend_from_slice(bytes);
    }

    /// How many datagrams are queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether segmented sends are still in use (false after the kernel refused one).
    pub fn segmenting(&self) -> bool {
        self.segmenting
    }

    /// Sends everything queued on `fd`, in order, and reports each datagram's outcome by index
    /// to `done`; the outbox is empty afterwards. A datagram that fails does not stop the rest,
    /// except a full send buffer (`EAGAIN`/`ENOBUFS`), which fails the rest of its group.
    pub fn flush(&mut self, fd: RawFd, mut done: impl FnMut(usize, io::Result<()>)) {
        let n = self.items.len();
        let mut i = 0;
        let mut singles_from = 0;
        while i < n {
            let run = if self.segmenting { self.run_at(i) } else { 1 };
            if run < 2 {
                i += 1;
                continue;
            }
            self.send_each(fd, singles_from..i, &mut done);
            match self.send_segmented(fd, i, run) {
                Ok(()) => (i..i + run).for_each(|k| done(k, Ok(()))),
                Err(e) if refuses_segmentation(&e) => {
                    self.segmenting = false;
                    self.send_each(fd, i..i + run, &mut done);
                }
                Err(e) => {
                    let code = e.raw_os_error().unwrap_or(libc::EIO);
                    (i..i + run).for_each(|k| done(k, Err(io::Error::from_raw_os_error(code))));
                }
            }
            i += run;
            singles_from = i;
        }
        self.send_each(fd, singles_from..n, &mut done);
        self.items.clear();
        self.bytes.clear();
    }

    /// How many datagrams from `i` on can leave as one segmented send: same unicast address,
    /// same size as the first (the last may be shorter), within the kernel's limits.
    fn run_at(&self, i: usize) -> usize {
        let first = self.items[i];
        if first.to.is_group() || first.len == 0 {
            return 1;
        }
        let mut total = first.len;
        let mut k = i + 1;
        while k < self.items.len() && k - i < MAX_BATCH {
            let it = self.items[k];
            if it.to != first.to || it.len > first.len || it.len == 0 {
                break;
            }
            if total + it.len > MAX_GSO_BYTES {
                break;
            }
            total += it.len;
            k += 1;
            if it.len < first.len {
                break;
            }
        }
        k - i
    }

    /// One `sendmsg` carrying items `i..i + run` joined, cut by the kernel into datagrams of
    /// the first one's size.
    fn send_segmented(&mut self, fd: RawFd, i: usize, run: usize) -> io::Result<()> {
        let first = self.items[i];
        let last = self.items[i + run - 1];
        let seg = first.len as u16;
        let to = first.to.to_raw();
        let data = &mut self.bytes[first.start..last.start + last.len];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        // u64 words keep the control buffer aligned for cmsghdr.
        let mut control = [0u64; 4];
        // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the sendmsg call,
        // and the control buffer (32 bytes) holds CMSG_SPACE(2) = 24 bytes.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = &to as *const A::Raw as *mut libc::c_void;
            msg.msg_namelen = std::mem::size_of::<A::Raw>() as libc::socklen_t;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = libc::CMSG_SPACE(2) as usize;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = libc::UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, seg);
            loop {
                if libc::sendmsg(fd, &msg, 0) >= 0 {
                    return Ok(());
                }
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }

    /// Sends items in `range` one datagram each, up to `MAX_BATCH` per `sendmmsg`.
    fn send_each(
        &mut self,
        fd: RawFd,
        range: std::ops::Range<usize>,
        done: &mut impl FnMut(usize, io::Result<()>),
    ) {
        let mut k = range.start;
        while k < range.end {
            let count = (range.end - k).min(MAX_BATCH);
            // Only the first `count` entries are written; every pointer set below points into
            // these arrays or `self.bytes`, which outlive the sendmmsg calls.
            let mut addrs = [MaybeUninit::<A::Raw>::uninit(); MAX_BATCH];
            let mut iovs = [MaybeUninit::<libc::iovec>::uninit(); MAX_BATCH];
            let mut hdrs = [MaybeUninit::<libc::mmsghdr>::uninit(); MAX_BATCH];
            for j in 0..count {
                let it = self.items[k + j];
                let addr = addrs[j].write(it.to.to_raw());
                let iov = iovs[j].write(libc::iovec {
                    iov_base: self.bytes[it.start..].as_mut_ptr() as *mut libc::c_void,
                    iov_len: it.len,
                });
                hdrs[j].write(mmsghdr(iov, Some(addr)));
            }
            let mut j = 0;
            while j < count {
                // SAFETY: the headers j..count are initialised above and valid for the call.
                let sent = unsafe {
                    libc::sendmmsg(
                        fd,
                        hdrs[j..].as_mut_ptr() as *mut libc::mmsghdr,
                        (count - j) as libc::c_uint,
                        0,
                    )
                };
                if sent > 0 {
                    (j..j + sent as usize).for_each(|x| done(k + x, Ok(())));
                    j += sent as usize;
                    continue;
                }
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(code @ (libc::EAGAIN | libc::ENOBUFS)) => {
                        (j..count)
                            .for_each(|x| done(k + x, Err(io::Error::from_raw_os_error(code))));
                        j = count;
                    }
                    _ => {
                        done(k + j, Err(e));
                        j += 1;
                    }
                }
            }
            k += count;
        }
    }
}

/// One mmsghdr for one buffer, with the destination when sending; `iov` and `to` must outlive
/// the call that uses it.
fn mmsghdr<R>(iov: &mut libc::iovec, to: Option<&mut R>) -> libc::mmsghdr {
    // SAFETY: a zeroed mmsghdr is a valid empty header; the fields used are set below.
    let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
    if let Some(to) = to {
        h.msg_hdr.msg_name = to as *mut R as *mut libc::c_void;
        h.msg_hdr.msg_namelen = std::mem::size_of::<R>() as libc::socklen_t;
    }
    h.msg_hdr.msg_iov = iov;
    h.msg_hdr.msg_iovlen = 1;
    h
}

/// Errors that mean this socket, route or device cannot take segmented sends at all.
fn refuses_segmentation(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EIO | libc::EOPNOTSUPP | libc::ENOPROTOOPT)
    )
}

#[cfg(test)]
mod tests;
