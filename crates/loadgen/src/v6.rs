//! `qdhcp loadgen --mode dhcpv6`: many simulated DHCPv6 clients doing SOLICIT → ADVERTISE →
//! REQUEST → REPLY through one relay agent (as `perfdhcp -6 -A1` sends them), each relayed
//! message carrying the client's MAC in RFC 6939's option 79, so servers that match
//! reservations by MAC (qdhcp, dnsmasq, Kea with `mac-sources`) can. Reports exchanges/s,
//! drops and latency percentiles in the same [`Report`] as the DHCPv4 modes (ADVERTISEs as
//! offers, REPLYs as acks).
//!
//! Messages are built from fixed byte templates here rather than through `dhcproto`: the
//! generator must not be the bottleneck, and each message is a handful of fixed-size options.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::link6::Links6;
use crate::report::{Latencies, Report};
use crate::wire::mac_of;

/// Load parameters for DHCPv6.
#[derive(Debug, Clone)]
pub struct Config6 {
    /// The server (port 547).
    pub server: SocketAddrV6,
    /// Our relay address: we send from `[relay]:547`, replies come back there.
    pub relay: Ipv6Addr,
    /// The link-address the relay puts in RELAY-FORW: an address in the served subnet.
    pub link: Ipv6Addr,
    /// Bind the socket to this device.
    pub device: Option<String>,
    /// Distinct clients (MACs `fa:16:3e:xx:xx:xx` from `first_client`).
    pub clients: u32,
    /// Index of the first client.
    pub first_client: u32,
    /// Exchanges started per second; 0 = as fast as the window allows.
    pub rate: u32,
    /// How long to start new exchanges.
    pub duration: Duration,
    /// Most exchanges in flight.
    pub window: usize,
    /// A reply later than this is a drop.
    pub timeout: Duration,
    /// Busy-poll instead of sleeping between turns.
    pub spin: bool,
    /// Where to append `mac address` for every REPLY with an address.
    pub record: Option<std::path::PathBuf>,
    /// Be the clients on these links instead of a relay ([`crate::link6`]); empty: a relay.
    pub links: Vec<String>,
    /// Where to write one line per reply slower than the given time (see [`SlowLog`]), to
    /// tell a server's own tail from stalls every server on the machine meets.
    pub slow_log: Option<(std::path::PathBuf, Duration)>,
}

/// Replies slower than a threshold, as `<advertise|reply> <µs from the start the request was
/// sent> <latency µs>` lines (to the reply's arrival through a relay, to its reading on the
/// link): a stall of the machine shows as a run of them sent within a few milliseconds,
/// whatever the server (`bench/dhcpv6_stalls.py`).
struct SlowLog {
    over: Option<Duration>,
    lines: String,
}

impl SlowLog {
    fn new(over: Option<Duration>) -> SlowLog {
        SlowLog {
            over,
            lines: String::new(),
        }
    }

    fn note(&mut self, kind: &str, sent: Duration, latency: Duration) {
        if self.over.is_some_and(|o| latency > o) {
            use std::fmt::Write as _;
            let _ = writeln!(
                self.lines,
                "{kind} {} {}",
                sent.as_micros(),
                latency.as_micros()
            );
        }
    }
}

/// How client messages reach the server and replies come back.
enum Path6 {
    /// As a relay agent: RELAY-FORW to the server, RELAY-REPL back.
    Relay { sock: UdpSocket, server: SocketAddr },
    /// As the clients themselves, on the link.
    Link(Box<Links6>),
}

/// What one receive found.
enum Got {
    /// Nothing queued.
    Nothing,
    /// A datagram that is no reply to a client.
    Other,
    /// A server message to a client: its bytes in the buffer, and how long it had waited in
    /// our socket when we read it (from the kernel's arrival time stamp; `None` where there is
    /// none), so that a reply's latency can be told apart from the generator's own backlog.
    Msg(std::ops::Range<usize>, Option<Duration>),
}

/// Has the kernel stamp every datagram's arrival on `sock` (see `Got::Msg`). The kernel
/// starts stamping at arrival a moment later; what comes before is stamped when read (so its
/// latency counts in full, never less).
fn stamp_arrivals(sock: &impl std::os::fd::AsFd) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt::ReceiveTimestampns};
    setsockopt(sock, ReceiveTimestampns, &true).map_err(io::Error::from)
}

/// One datagram from a non-blocking socket with its arrival stamp: its length and how long it
/// waited in the socket; `None` when nothing is queued.
fn recv_stamped(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Option<(usize, Option<Duration>)>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrIn6};
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let mut iov = [io::IoSliceMut::new(buf)];
    match recvmsg::<SockaddrIn6>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    ) {
        Ok(m) => {
            let waited = m.cmsgs().ok().and_then(|mut c| {
                c.find_map(|c| match c {
                    ControlMessageOwned::ScmTimestampns(ts) => waited_since(ts),
                    _ => None,
                })
            });
            Ok(Some((m.bytes, waited)))
        }
        Err(nix::errno::Errno::EAGAIN) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Counts a reply that came `read` after its request (when the generator read it): in `all`,
/// and less the time it `waited` in our socket in `arrival` when that is known. Returns the
/// latency to its arrival (to its reading when not known).
fn took(
    all: &mut Latencies,
    arrival: &mut Latencies,
    read: Duration,
    waited: Option<Duration>,
) -> Duration {
    all.push(read);
    let Some(w) = waited else {
        return read;
    };
    let lat = read.saturating_sub(w);
    arrival.push(lat);
    lat
}

/// How long ago the kernel stamped a datagram's arrival (`SO_TIMESTAMPNS`, the realtime
/// clock), read at once after it was received.
fn waited_since(ts: nix::sys::time::TimeSpec) -> Option<Duration> {
    let at = std::time::UNIX_EPOCH
        + Duration::new(u64::try_from(ts.tv_sec()).ok()?, ts.tv_nsec() as u32);
    Some(
        std::time::SystemTime::now()
            .duration_since(at)
            .unwrap_or_default(),
    )
}

impl Path6 {
    fn open(cfg: &Config6) -> io::Result<Path6> {
        if !cfg.links.is_empty() {
            let first = cfg.first_client;
            let clients = first..first.saturating_add(cfg.clients.max(1));
            return Ok(Path6::Link(Box::new(Links6::open(&cfg.links, clients)?)));
        }
        let s = socket2::Socket::new(
            socket2::Domain::IPV6,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        s.set_only_v6(true)?;
        s.set_reuse_address(true)?;
        let _ = s.set_recv_buffer_size(8 << 20);
        let _ = s.set_send_buffer_size(8 << 20);
        if let Some(d) = &cfg.device {
            s.bind_device(Some(d.as_bytes()))?;
        }
        s.bind(&SocketAddr::V6(SocketAddrV6::new(cfg.relay, 547, 0, 0)).into())?;
        s.set_nonblocking(true)?;
        stamp_arrivals(&s)?;
        Ok(Path6::Relay {
            sock: s.into(),
            server: SocketAddr::V6(cfg.server),
        })
    }

    fn send(&mut self, cfg: &Config6, client: u32, msg: &[u8]) -> bool {
        let mac = mac_of(client);
        match self {
            Path6::Relay { sock, server } => sock.send_to(&relayed(cfg, mac, msg), *server).is_ok(),
            Path6::Link(l) => l.send(client, mac, msg),
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Got> {
        match self {
            Path6::Relay { sock, .. } => {
                let Some((n, waited)) = recv_stamped(sock, buf)? else {
                    return Ok(Got::Nothing);
                };
                Ok(match relay_inner(&buf[..n]) {
                    Some(inner) => {
                        let at = inner.as_ptr() as usize - buf.as_ptr() as usize;
                        Got::Msg(at..at + inner.len(), waited)
                    }
                    None => Got::Other,
                })
            }
            Path6::Link(l) => Ok(match l.recv(buf) {
                Some(n) => Got::Msg(0..n, None),
                None => Got::Nothing,
            }),
        }
    }
}

fn opt(out: &mut Vec<u8>, code: u16, data: &[u8]) {
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

/// The client's DUID-LL (type 3, Ethernet).
fn duid(mac: [u8; 6]) -> [u8; 10] {
    let mut d = [0, 3, 0, 1, 0, 0, 0, 0, 0, 0];
    d[4..].copy_from_slice(&mac);
    d
}

/// A client's message: SOLICIT, or REQUEST for `addr` from `server_id`.
fn client_msg(kind: u8, xid: u32, mac: [u8; 6], request: Option<(&[u8], Ipv6Addr)>) -> Vec<u8> {
    let mut m = Vec::with_capacity(96);
    m.push(kind);
    m.extend_from_slice(&xid.to_be_bytes()[1..]);
    opt(&mut m, 1, &duid(mac));
    if let Some((sid, _)) = request {
        opt(&mut m, 2, sid);
    }
    opt(&mut m, 8, &[0, 0]);
    opt(&mut m, 6, &[0, 23, 0, 24]);
    let mut ia = Vec::with_capacity(40);
    ia.extend_from_slice(&1u32.to_be_bytes());
    ia.extend_from_slice(&[0; 8]);
    if let Some((_, a)) = request {
        let mut ad = Vec::with_capacity(24);
        ad.extend_from_slice(&a.octets());
        ad.extend_from_slice(&[0; 8]);
        opt(&mut ia, 5, &ad);
    }
    opt(&mut m, 3, &ia);
    m
}

/// The client's message in a RELAY-FORW with its MAC (option 79) and an interface-id.
fn relayed(cfg: &Config6, mac: [u8; 6], inner: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(inner.len() + 64);
    r.push(12);
    r.push(0);
    r.extend_from_slice(&cfg.link.octets());
    // the client's link-local address, EUI-64 from its MAC
    let peer = crate::link6::link_local(mac);
    r.extend_from_slice(&peer.octets());
    let mut ll = vec![0, 1];
    ll.extend_from_slice(&mac);
    opt(&mut r, 79, &ll);
    opt(&mut r, 18, b"lg0");
    opt(&mut r, 9, inner);
    r
}

/// The server's message inside a RELAY-REPL.
fn relay_inner(b: &[u8]) -> Option<&[u8]> {
    if b.len() < 34 || b[0] != 13 {
        return None;
    }
    tlvs(&b[34..]).find(|(c, _)| *c == 9).map(|(_, v)| v)
}

/// What a server's message carried: (message type, xid, server id, first address).
fn parse_reply(inner: &[u8]) -> Option<(u8, u32, Vec<u8>, Option<Ipv6Addr>)> {
    if inner.len() < 4 {
        return None;
    }
    let xid = u32::from_be_bytes([0, inner[1], inner[2], inner[3]]);
    let mut sid = Vec::new();
    let mut addr = None;
    for (c, v) in tlvs(&inner[4..]) {
        match c {
            2 => sid = v.to_vec(),
            3 if v.len() >= 12 => {
                addr = tlvs(&v[12..])
                    .find(|(c, v)| *c == 5 && v.len() >= 24)
                    .map(|(_, v)| {
                        Ipv6Addr::from(<[u8; 16]>::try_from(&v[..16]).expect("16 bytes"))
                    });
            }
            _ => {}
        }
    }
    Some((inner[0], xid, sid, addr))
}

fn tlvs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let c = u16::from_be_bytes([b[0], b[1]]);
        let l = u16::from_be_bytes([b[2], b[3]]) as usize;
        let v = b.get(4..4 + l)?;
        b = &b[4 + l..];
        Some((c, v))
    })
}

/// One exchange in flight.
struct Flight {
    client: u32,
    sent: Instant,
    /// True once the REQUEST went out.
    requesting: bool,
}

/// Runs the DHCPv6 load.
pub fn run6(cfg: &Config6) -> io::Result<Report> {
    let mut path = Path6::open(cfg)?;
    let start = Instant::now();
    let cpu0 = crate::cpu_seconds();
    let mut r = Report::default();
    let mut flights: HashMap<u32, Flight> = HashMap::new();
    let mut next_xid: u32 = 1;
    let mut next_client = 0u32;
    let mut buf = vec![0u8; 2048];
    let mut last_sweep = start;
    let mut idle = Duration::ZERO;
    let mut record = String::new();
    let mut slow = SlowLog::new(cfg.slow_log.as_ref().map(|(_, over)| *over));
    loop {
        let now = Instant::now();
        let elapsed = now - start;
        let sending = elapsed < cfg.duration;
        // start exchanges due by now (at `rate` a second, or up to the window)
        if sending {
            let due = if cfg.rate == 0 {
                r.started + (cfg.window.saturating_sub(flights.len())) as u64
            } else {
                (elapsed.as_secs_f64() * f64::from(cfg.rate)) as u64
            };
            while r.started < due && flights.len() < cfg.window.max(1) * 4 {
                let client = cfg.first_client + next_client % cfg.clients.max(1);
                next_client += 1;
                let xid = next_xid & 0xff_ffff;
                next_xid = next_xid.wrapping_add(1);
                let msg = client_msg(1, xid, mac_of(client), None);
                if path.send(cfg, client, &msg) {
                    r.sent += 1;
                }
                r.started += 1;
                flights.insert(
                    xid,
                    Flight {
                        client,
                        sent: Instant::now(),
                        requesting: false,
                    },
                );
            }
        } else if r.window.is_zero() {
            r.window = elapsed;
        }
        // take every reply waiting
        let mut got = false;
        loop {
            match path.recv(&mut buf)? {
                Got::Nothing => break,
                Got::Other => {
                    got = true;
                    r.received += 1;
                }
                Got::Msg(at, waited) => {
                    got = true;
                    r.received += 1;
                    let Some((kind, xid, sid, addr)) = parse_reply(&buf[at]) else {
                        continue;
                    };
                    let Some(f) = flights.get_mut(&xid) else {
                        continue;
                    };
                    let t = Instant::now();
                    match (kind, f.requesting, addr) {
                        (2, false, Some(a)) => {
                            r.offers += 1;
                            let lat = took(
                                &mut r.offer_latency,
                                &mut r.offer_arrival,
                                t - f.sent,
                                waited,
                            );
                            slow.note("advertise", f.sent - start, lat);
                            let msg = client_msg(3, xid, mac_of(f.client), Some((&sid, a)));
                            if path.send(cfg, f.client, &msg) {
                                r.sent += 1;
                            }
                            f.sent = Instant::now();
                            f.requesting = true;
                        }
                        (7, true, Some(a)) => {
                            r.acks += 1;
                            let lat =
                                took(&mut r.ack_latency, &mut r.ack_arrival, t - f.sent, waited);
                            slow.note("reply", f.sent - start, lat);
                            if cfg.record.is_some() {
                                let m = mac_of(f.client);
                                use std::fmt::Write as _;
                                let _ = writeln!(
                                    record,
                                    "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} {a}",
                                    m[0], m[1], m[2], m[3], m[4], m[5]
                                );
                            }
                            flights.remove(&xid);
                        }
                        // ADVERTISE without an address, or a REPLY with a status: a refusal
                        (2 | 7, _, _) => {
                            r.naks += 1;
                            flights.remove(&xid);
                        }
                        _ => {}
                    }
                }
            }
        }
        // exchanges past the timeout are drops
        if now - last_sweep >= Duration::from_millis(20) {
            last_sweep = now;
            let before = flights.len();
            flights.retain(|_, f| now - f.sent < cfg.timeout);
            r.drops += (before - flights.len()) as u64;
        }
        if !sending && flights.is_empty() {
            break;
        }
        if !sending && elapsed > cfg.duration + cfg.timeout * 2 {
            r.drops += flights.len() as u64;
            break;
        }
        if !got && !cfg.spin {
            let t = Instant::now();
            std::thread::sleep(Duration::from_micros(100));
            idle += t.elapsed();
        }
    }
    r.elapsed = start.elapsed();
    if let Path6::Link(l) = &path {
        r.arp_replies = l.adverts;
    }
    if r.window.is_zero() {
        r.window = cfg.duration.min(r.elapsed);
    }
    r.cpu_s = crate::cpu_seconds() - cpu0;
    r.idle_s = idle.as_secs_f64();
    if let Some((p, _)) = &cfg.slow_log {
        std::fs::write(p, slow.lines)?;
    }
    if let Some(p) = &cfg.record {
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)?
            .write_all(record.as_bytes())?;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slow_log_keeps_only_replies_over_its_threshold() {
        let mut s = SlowLog::new(Some(Duration::from_micros(500)));
        s.note(
            "advertise",
            Duration::from_micros(10),
            Duration::from_micros(499),
        );
        s.note(
            "advertise",
            Duration::from_micros(20),
            Duration::from_micros(501),
        );
        s.note("reply", Duration::from_micros(30), Duration::from_millis(3));
        assert_eq!(s.lines, "advertise 20 501\nreply 30 3000\n");
        let mut off = SlowLog::new(None);
        off.note("reply", Duration::ZERO, Duration::from_secs(1));
        assert!(off.lines.is_empty());
    }

    #[test]
    fn a_reply_read_late_says_how_long_it_waited_in_the_socket() {
        let rx = UdpSocket::bind("[::1]:0").unwrap();
        stamp_arrivals(&rx).unwrap();
        // the kernel turns arrival stamping on for everyone a moment later (deferred work);
        // until then a datagram is stamped when it is read
        std::thread::sleep(Duration::from_millis(200));
        rx.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        assert!(recv_stamped(&rx, &mut buf).unwrap().is_none());
        let tx = UdpSocket::bind("[::1]:0").unwrap();
        tx.send_to(b"late", rx.local_addr().unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let (n, waited) = recv_stamped(&rx, &mut buf).unwrap().expect("queued");
        assert_eq!(&buf[..n], b"late");
        let waited = waited.expect("the kernel stamped its arrival");
        assert!(waited >= Duration::from_millis(25), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }

    #[test]
    fn a_relayed_request_is_read_by_the_servers_front_door() {
        let cfg = Config6 {
            server: "[::1]:547".parse().unwrap(),
            relay: "2001:db8::2".parse().unwrap(),
            link: "2001:db8:1::1".parse().unwrap(),
            device: None,
            clients: 1,
            first_client: 0,
            rate: 0,
            duration: Duration::ZERO,
            window: 1,
            timeout: Duration::from_secs(1),
            spin: false,
            record: None,
            links: Vec::new(),
            slow_log: None,
        };
        let mac = mac_of(7);
        let sid = [0u8, 3, 0, 1, 1, 2, 3, 4, 5, 6];
        let m = relayed(
            &cfg,
            mac,
            &client_msg(
                3,
                0x123456,
                mac,
                Some((&sid, "2001:db8:1::7".parse().unwrap())),
            ),
        );
        let parsed = qdhcp_protocol::v6::parse6(&m).expect("valid");
        assert_eq!(parsed.relayed_mac(), Some(qdhcp_protocol::Mac(mac)));
        assert_eq!(parsed.xid, [0x12, 0x34, 0x56]);
        assert_eq!(
            parsed.server_id.as_ref().map(|d| d.0.clone()),
            Some(sid.to_vec())
        );
        assert_eq!(
            parsed.ias[0].addrs[0].addr,
            "2001:db8:1::7".parse::<Ipv6Addr>().unwrap()
        );
    }
}
