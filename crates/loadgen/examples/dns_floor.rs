//! The floor under any DNS server on this machine's UDP path (`bench/dns.sh`): it answers
//! every query with the query itself marked as a response (QR set, NOERROR, no records), in
//! batches through recvmmsg and sendmmsg as qdhcp's DNS server does, with the same receive
//! buffer. It looks nothing up and encodes nothing, so its rate is what the kernel's work per
//! query allows one core; no server doing real work on that core can go faster.
//! Usage: `dns_floor IP:PORT` (runs until killed).
// Unsafe code here only to call the kernel directly (batched syscalls, as the server makes them);
// every block says why it is sound.
#![allow(unsafe_code)]

use std::net::SocketAddrV4;
use std::os::fd::AsRawFd;

use qdhcp_batchio::{recv_batch_from, Outbox};
use socket2::{Domain, Socket, Type};

const BATCH: usize = 64;

fn main() -> std::io::Result<()> {
    let addr: SocketAddrV4 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| std::io::Error::other("usage: dns_floor IP:PORT"))?;
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    sock.set_recv_buffer_size(4 << 20)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    let fd = sock.as_raw_fd();
    let mut bufs = vec![[0u8; 1500]; BATCH];
    let mut lens = [0usize; BATCH];
    let mut froms = [SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0); BATCH];
    let mut outbox = Outbox::new(true);
    loop {
        let k = recv_batch_from(fd, &mut bufs, &mut lens, &mut froms)?;
        if k == 0 {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call
            unsafe { libc::poll(&mut p, 1, -1) };
            continue;
        }
        for ((b, &len), &from) in bufs.iter_mut().zip(&lens).zip(&froms).take(k) {
            if len < 12 {
                continue;
            }
            b[2] |= 0x80; // QR: a response
            b[3] &= 0xf0; // RCODE: NOERROR
            outbox.push(from, &b[..len]);
        }
        outbox.flush(fd, |_, _| {});
    }
}
