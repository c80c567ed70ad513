//! The client's MAC for a DHCPv6 message straight from the link: the kernel's neighbour entry
//! for the packet's source address, read over netlink. Neutron's hosts file is keyed by MAC,
//! and a DUID need not hold one (DUID-EN, DUID-UUID), nor a link-local address (random ones),
//! so this is how dnsmasq finds it too. A missing entry is made by sending the client an
//! ICMPv6 echo request (the kernel solicits the neighbour first), then read again.

use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket as NlSocket, SocketAddr};
use qdhcp_protocol::Mac;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// A netlink socket for neighbour lookups and a raw ICMPv6 socket for probes, both in the
/// namespace of the interface they serve (opened there, with the DHCP socket).
pub(crate) struct Neighbours {
    nl: NlSocket,
    seq: u32,
    buf: Vec<u8>,
    ping: Option<Socket>,
}

impl Neighbours {
    /// Opens both sockets in the calling thread's namespace. Without `CAP_NET_RAW` there is no
    /// probe; lookups still work.
    pub(crate) fn open() -> io::Result<Neighbours> {
        let mut nl = NlSocket::new(NETLINK_ROUTE)?;
        nl.bind_auto()?;
        nl.connect(&SocketAddr::new(0, 0))?;
        let ping = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).ok();
        if let Some(p) = &ping {
            p.set_nonblocking(true)?;
        }
        Ok(Neighbours {
            nl,
            seq: 0,
            buf: vec![0; 64 * 1024],
            ping,
        })
    }

    /// The MAC of `addr` on interface `ifindex`, if the kernel knows it.
    pub(crate) fn lookup(&mut self, ifindex: u32, addr: Ipv6Addr) -> io::Result<Option<Mac>> {
        self.seq = self.seq.wrapping_add(1);
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet6;
        msg.header.ifindex = ifindex;
        let mut req = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(RouteNetlinkMessage::GetNeighbour(msg)),
        );
        req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        req.header.sequence_number = self.seq;
        req.finalize();
        let mut out = vec![0u8; req.buffer_len()];
        req.serialize(&mut out);
        self.nl.send(&out, 0)?;
        let mut found = None;
        loop {
            let n = self.nl.recv(&mut &mut self.buf[..], 0)?;
            let mut at = 0;
            while at < n {
                let part = &self.buf[at..n];
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(part)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = m.header.length as usize;
                if len == 0 {
                    return Ok(found);
                }
                at += len;
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok(found),
                    NetlinkPayload::Error(e) => {
                        return Err(io::Error::other(format!("neighbour dump: {e:?}")))
                    }
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(nm)) => {
                        if nm.header.ifindex != ifindex
                            || matches!(
                                nm.header.state,
                                NeighbourState::Incomplete | NeighbourState::Failed
                            )
                        {
                            continue;
                        }
                        let mut dst = None;
                        let mut lladdr = None;
                        for a in &nm.attributes {
                            match a {
                                NeighbourAttribute::Destination(NeighbourAddress::Inet6(d)) => {
                                    dst = Some(*d)
                                }
                                NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                                    let mut m = [0u8; 6];
                                    m.copy_from_slice(l);
                                    lladdr = Some(Mac(m));
                                }
                                _ => {}
                            }
                        }
                        if dst == Some(addr) && found.is_none() {
                            found = lladdr;
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Sends `addr` an ICMPv6 echo request on `ifindex`: the kernel resolves the neighbour
    /// (a neighbour solicitation) before it can send it.
    pub(crate) fn probe(&self, ifindex: u32, addr: Ipv6Addr) {
        let Some(p) = &self.ping else { return };
        // type 128 (echo request), code 0, checksum filled in by the kernel, id, sequence
        let echo = [128u8, 0, 0, 0, 0x71, 0x64, 0, 1];
        let to = SockAddr::from(SocketAddrV6::new(addr, 0, 0, ifindex));
        let _ = p.send_to(&echo, &to);
    }
}
