//! The client's MAC for a DHCPv6 message straight from the link: the kernel's neighbour entry
//! for the packet's source address, read over netlink. Neutron's hosts file is keyed by MAC,
//! and a DUID need not hold one (DUID-EN, DUID-UUID), nor a link-local address (random ones),
//! so this is how dnsmasq finds it too. A missing entry is made by sending the client an
//! ICMPv6 echo request (the kernel solicits the neighbour first), then read again.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::{Duration, Instant};

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
    /// The kernel cannot look up one entry (before Linux 5.0): dump the table instead.
    dump_only: bool,
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
            crate::listener::pass_no_icmp6(p)?;
        }
        Ok(Neighbours {
            nl,
            seq: 0,
            buf: vec![0; 64 * 1024],
            ping,
            dump_only: false,
        })
    }

    /// The MAC of `addr` on interface `ifindex`, if the kernel knows it: one entry asked for
    /// (`RTM_GETNEIGH` with the address, Linux 5.0 on), so a lookup costs the same with ten
    /// or ten thousand neighbours; a kernel that cannot answer that is asked for the whole
    /// table, as dnsmasq does, from then on.
    pub(crate) fn lookup(&mut self, ifindex: u32, addr: Ipv6Addr) -> io::Result<Option<Neighbour>> {
        if !self.dump_only {
            match self.ask(ifindex, addr, false) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => {
                    self.dump_only = true;
                }
                r => return r,
            }
        }
        self.ask(ifindex, addr, true)
    }

    /// One request: the entry of `addr` alone, or (`dump`) every entry of the family.
    fn ask(&mut self, ifindex: u32, addr: Ipv6Addr, dump: bool) -> io::Result<Option<Neighbour>> {
        self.seq = self.seq.wrapping_add(1);
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet6;
        msg.header.ifindex = ifindex;
        if !dump {
            msg.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Inet6(
                    addr,
                )));
        }
        let mut req = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(RouteNetlinkMessage::GetNeighbour(msg)),
        );
        req.header.flags = if dump {
            NLM_F_REQUEST | NLM_F_DUMP
        } else {
            NLM_F_REQUEST
        };
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
                if m.header.sequence_number != self.seq {
                    // the answer to an earlier request given up on
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok(found),
                    NetlinkPayload::Error(e) => {
                        return match e.code.map(|c| -c.get()) {
                            // no entry for the address asked for
                            Some(libc::ENOENT) if !dump => Ok(None),
                            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
                            None => Ok(found),
                        };
                    }
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(nm)) => {
                        if let Some(n) = usable(&nm, ifindex, addr) {
                            found.get_or_insert(n);
                        }
                        if !dump {
                            return Ok(found);
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

/// Entry `nm` when it is `addr`'s on `ifindex` and resolved (not incomplete or failed).
fn usable(nm: &NeighbourMessage, ifindex: u32, addr: Ipv6Addr) -> Option<Neighbour> {
    if nm.header.ifindex != ifindex
        || matches!(
            nm.header.state,
            NeighbourState::Incomplete | NeighbourState::Failed
        )
    {
        return None;
    }
    let mut dst = None;
    let mut lladdr = None;
    for a in &nm.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(d)) => dst = Some(*d),
            NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(l);
                lladdr = Some(Mac(m));
            }
            _ => {}
        }
    }
    if dst != Some(addr) {
        return None;
    }
    let confirmed = nm.header.state != NeighbourState::Stale;
    lladdr.map(|mac| Neighbour { mac, confirmed })
}

/// A neighbour entry as the server uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Neighbour {
    /// Its link-layer address.
    pub(crate) mac: Mac,
    /// The kernel holds it confirmed (reachable, or being confirmed, or set by hand), not
    /// stale. A reply sent as a frame does not refresh the entry as one through the kernel
    /// does, so the reply to a stale neighbour goes through the UDP socket: the kernel then
    /// confirms the entry and keeps it, instead of dropping it a minute later.
    pub(crate) confirmed: bool,
}

/// How long a MAC read from the neighbour table is used without asking again: long enough for
/// the REQUEST that follows its SOLICIT and for retransmissions, far shorter than the kernel's
/// own confidence in a reachable entry (15-45 s).
pub(crate) const MAC_TTL: Duration = Duration::from_secs(2);
/// Most MACs remembered: past this the expired go, and if none has, all.
const MAC_CACHE_MAX: usize = 16384;

/// MACs lately read from the neighbour table, by source address: each lookup is a netlink
/// round trip, a quarter of a serving core at 25,000 exchanges/s on the link
/// (bench/DHCPV6.md), and a client's messages come in bursts. Only found MACs are kept: a
/// source without an entry is asked (and probed) again every time.
#[derive(Default)]
pub(crate) struct MacCache {
    seen: HashMap<Ipv6Addr, (Neighbour, Instant)>,
}

impl MacCache {
    /// The entry of `addr` if it was read less than [`MAC_TTL`] before `now`.
    pub(crate) fn get(&self, addr: Ipv6Addr, now: Instant) -> Option<Neighbour> {
        self.seen
            .get(&addr)
            .filter(|(_, at)| now.saturating_duration_since(*at) < MAC_TTL)
            .map(|(m, _)| *m)
    }

    /// Remembers the entry `n` of `addr` read at `now`.
    pub(crate) fn put(&mut self, addr: Ipv6Addr, n: Neighbour, now: Instant) {
        if self.seen.len() >= MAC_CACHE_MAX && !self.seen.contains_key(&addr) {
            self.seen
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < MAC_TTL);
            if self.seen.len() >= MAC_CACHE_MAX {
                self.seen.clear();
            }
        }
        self.seen.insert(addr, (n, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    /// Runs `f` on a thread in a fresh network namespace (gone when the thread ends); `None`
    /// when one cannot be made outside CI (not root), which is said.
    fn in_fresh_namespace<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        std::thread::spawn(move || {
            match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                Ok(()) => Some(f()),
                Err(e) if std::env::var_os("CI").is_none() => {
                    eprintln!("skipped: cannot make a network namespace ({e}); run as root");
                    None
                }
                Err(e) => panic!("cannot make a network namespace in CI: {e}"),
            }
        })
        .join()
        .unwrap()
    }

    fn mac(i: u16) -> [u8; 6] {
        let [a, b] = i.to_be_bytes();
        [0xfa, 0x16, 0x3e, 0, a, b]
    }

    fn addr(i: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 1, i)
    }

    /// A table of 2,000 neighbours (permanent: the kernel's table limit, shared by every
    /// namespace, does not count those): each is found with its MAC by a lookup of that one
    /// entry (not a dump of the table), a missing one is `None`, and the dump that kernels
    /// before 5.0 need answers the same.
    #[test]
    fn one_entry_is_looked_up_among_thousands_and_the_dump_agrees() {
        in_fresh_namespace(|| {
            let ip = |args: &[&str]| {
                let st = Command::new("ip").args(args).status().expect("run ip");
                assert!(st.success(), "ip {args:?}");
            };
            ip(&[
                "link", "add", "qtv0", "type", "veth", "peer", "name", "qtv1",
            ]);
            ip(&["link", "set", "qtv0", "up"]);
            let mut batch = Command::new("ip")
                .args(["-batch", "-"])
                .stdin(Stdio::piped())
                .spawn()
                .expect("run ip -batch");
            let mut cmds = String::new();
            for i in 1..=2000u16 {
                let m = mac(i);
                cmds.push_str(&format!(
                    "neigh add {} lladdr {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} dev qtv0 nud permanent\n",
                    addr(i), m[0], m[1], m[2], m[3], m[4], m[5]
                ));
            }
            // one the kernel holds stale: found, but not confirmed
            cmds.push_str(&format!(
                "neigh add {} lladdr fa:16:3e:00:0b:b8 dev qtv0 nud stale\n",
                addr(3000)
            ));
            batch
                .stdin
                .take()
                .unwrap()
                .write_all(cmds.as_bytes())
                .unwrap();
            assert!(batch.wait().unwrap().success());
            let ifindex = nix::net::if_::if_nametoindex("qtv0").unwrap();
            let other = nix::net::if_::if_nametoindex("qtv1").unwrap();
            let mut n = Neighbours::open().unwrap();
            for i in [1u16, 2, 999, 2000] {
                assert_eq!(
                    n.lookup(ifindex, addr(i)).unwrap(),
                    Some(Neighbour {
                        mac: Mac(mac(i)),
                        confirmed: true
                    }),
                    "{i}"
                );
            }
            assert_eq!(n.lookup(ifindex, addr(2001)).unwrap(), None);
            assert_eq!(
                n.lookup(ifindex, addr(3000)).unwrap(),
                Some(Neighbour {
                    mac: Mac(mac(3000)),
                    confirmed: false
                })
            );
            assert_eq!(
                n.lookup(other, addr(1)).unwrap(),
                None,
                "another interface's"
            );
            assert!(!n.dump_only, "this kernel answers for one entry");
            n.dump_only = true;
            for i in [1u16, 1500] {
                assert_eq!(
                    n.lookup(ifindex, addr(i)).unwrap(),
                    Some(Neighbour {
                        mac: Mac(mac(i)),
                        confirmed: true
                    }),
                    "{i}"
                );
            }
            assert_eq!(n.lookup(ifindex, addr(2001)).unwrap(), None);
        });
    }

    #[test]
    fn a_mac_is_used_again_only_for_its_time_and_the_cache_stays_bounded() {
        let t0 = Instant::now();
        let mut c = MacCache::default();
        let at = |i: u16| Neighbour {
            mac: Mac(mac(i)),
            confirmed: true,
        };
        c.put(addr(1), at(1), t0);
        assert_eq!(c.get(addr(1), t0 + MAC_TTL / 2), Some(at(1)));
        assert_eq!(
            c.get(addr(1), t0 + MAC_TTL),
            None,
            "asked again after its time"
        );
        assert_eq!(c.get(addr(2), t0), None);
        // a newer reading replaces the older
        c.put(addr(1), at(9), t0 + MAC_TTL);
        assert_eq!(c.get(addr(1), t0 + MAC_TTL), Some(at(9)));
        // full: the expired make room first, and it never grows past its bound
        let later = t0 + MAC_TTL * 3;
        for i in 0..MAC_CACHE_MAX as u32 + 10 {
            let a = Ipv6Addr::from(0xfe80_0000_0000_0000_0000_0001_0000_0000u128 + u128::from(i));
            c.put(a, at(1), later);
            assert!(c.seen.len() <= MAC_CACHE_MAX);
        }
        assert_eq!(c.get(addr(1), later), None);
    }

    /// The probe socket only sends: ICMPv6 arriving in its namespace is not queued on it (an
    /// unfiltered raw socket beside it gets the same echo request).
    #[test]
    fn the_probe_socket_is_queued_nothing() {
        in_fresh_namespace(|| {
            let st = Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status();
            assert!(st.unwrap().success());
            let n = Neighbours::open().unwrap();
            let probe = n.ping.as_ref().expect("raw ICMPv6 as root");
            let plain = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).unwrap();
            plain
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            n.probe(1, Ipv6Addr::LOCALHOST);
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 256];
            let got = plain
                .recv(&mut buf)
                .expect("the unfiltered socket sees ICMPv6");
            assert!(got >= 8);
            std::thread::sleep(Duration::from_millis(50));
            let e = probe
                .recv(&mut buf)
                .expect_err("nothing queued on the probe socket");
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        });
    }
}
