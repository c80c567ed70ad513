//! Sockets: one UDP socket on port 67 per served interface, bound to that device (so the
//! ingress interface selects the network), plus the ARP-cache injection that lets a reply
//! reach a client that has no address yet, and interface address lookup for the server id.
// Unsafe code here only to call the kernel directly (socket options socket2 does not wrap); every
// block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;

use ipnet::Ipv4Net;
use qdhcp_protocol::Mac;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::delivery::SERVER_PORT;

/// Opens the DHCP server socket for `iface` in the calling thread's network namespace.
pub fn open_dhcp_socket(iface: &str) -> io::Result<Socket> {
    open_socket(iface, SERVER_PORT)
}

/// Opens a UDP socket on `port` bound to `iface` (port 0 picks one; tests use that).
pub fn open_socket(iface: &str, port: u16) -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    set_rcvbuf(&s, 4 << 20);
    s.bind_device(Some(iface.as_bytes()))
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind to interface {iface}: {e}")))?;
    s.bind(&SockAddr::from(SocketAddrV4::new(
        Ipv4Addr::UNSPECIFIED,
        port,
    )))
    .map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot bind UDP port {port} on {iface}: {e}"),
        )
    })?;
    Ok(s)
}

/// Grows the receive buffer so a burst of clients (a rack booting) is queued, not dropped.
/// As root SO_RCVBUFFORCE passes the `rmem_max` cap; otherwise the capped size is taken.
fn set_rcvbuf(s: &Socket, bytes: usize) {
    let v: libc::c_int = bytes as libc::c_int;
    // SAFETY: valid fd, option value is a c_int of the right size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let _ = s.set_recv_buffer_size(bytes);
    }
}

/// `ICMP6_FILTER` of `<netinet/icmp6.h>` (RFC 3542 §3.2), which the libc crate does not name.
const ICMP6_FILTER: libc::c_int = 1;

/// Makes a raw ICMPv6 socket that only sends pass no ICMPv6 type in: without a filter the
/// kernel queues it a copy of every ICMPv6 message the namespace receives (each neighbour
/// solicitation and advertisement of a busy link), none of which is ever read.
pub(crate) fn pass_no_icmp6(s: &Socket) -> io::Result<()> {
    // struct icmp6_filter: 256 bits, one per type; a set bit blocks the type
    let filter = [u32::MAX; 8];
    // SAFETY: valid fd; the value is the 32-byte struct icmp6_filter, read by the kernel only.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_ICMPV6,
            ICMP6_FILTER,
            filter.as_ptr() as *const libc::c_void,
            std::mem::size_of_val(&filter) as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

const SIOCSARP: libc::c_ulong = 0x8955;
const ATF_COM: libc::c_int = 0x02;

/// Adds `ip → mac` to the ARP cache of `iface`, so a unicast to a client that cannot answer
/// ARP yet leaves at once (what dnsmasq does; RFC 2131 §4.1).
pub fn inject_arp(sock: &Socket, iface: &str, ip: Ipv4Addr, mac: Mac) -> io::Result<()> {
    // SAFETY: arpreq is plain old data; every field we rely on is set below.
    let mut req: libc::arpreq = unsafe { std::mem::zeroed() };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in fits in sockaddr (both 16 bytes) and arp_pa is a sockaddr.
    unsafe {
        std::ptr::copy_nonoverlapping(
            &sin as *const libc::sockaddr_in as *const u8,
            &mut req.arp_pa as *mut libc::sockaddr as *mut u8,
            std::mem::size_of::<libc::sockaddr_in>(),
        );
    }
    req.arp_ha.sa_family = libc::ARPHRD_ETHER;
    for (d, s) in req.arp_ha.sa_data.iter_mut().zip(mac.0) {
        *d = s as libc::c_char;
    }
    req.arp_flags = ATF_COM;
    for (d, s) in req.arp_dev.iter_mut().zip(iface.bytes().take(15)) {
        *d = s as libc::c_char;
    }
    // SAFETY: valid socket fd and a fully initialised arpreq.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCSARP as _, &req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The IPv4 addresses (with prefix) of `iface` in the calling thread's namespace.
pub fn iface_addrs(iface: &str) -> Vec<Ipv4Net> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter(|a| a.interface_name == iface)
        .filter_map(|a| {
            let ip = a.address?.as_sockaddr_in()?.ip();
            let mask = a.netmask?.as_sockaddr_in()?.ip();
            Ipv4Net::with_netmask(ip, mask).ok()
        })
        .collect()
}

/// Names of the interfaces that are up, in the calling thread's namespace.
pub fn iface_names() -> Vec<String> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut v: Vec<String> = addrs.map(|a| a.interface_name).collect();
    v.sort();
    v.dedup();
    v
}
