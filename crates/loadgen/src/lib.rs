//! `qdhcp loadgen`: many simulated clients (distinct `fa:16:3e` MACs, optional client ids)
//! doing DISCOVER→OFFER→REQUEST→ACK, or renewals, as a relay agent (giaddr) so that it runs
//! on loopback or through a namespace at rates a real client population cannot, or on the
//! link as the clients themselves (broadcast frames from their own MACs, [`link`]). Sends and
//! receives in batches (`sendmmsg`/`recvmmsg`) so the generator is not the bottleneck.
//! Reports exchanges/s, drops (no reply within the timeout) and latency percentiles, and can
//! record every (MAC, IP, lease end) it saw acknowledged.
// Unsafe code here only to call the kernel directly (batched syscalls for the relay-agent load);
// every block says why it is sound.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use qdhcp_batchio::{recv_batch, Outbox};

pub mod dns;
pub mod keep;
pub mod link;
pub mod link6;
mod report;
pub mod v6;
mod wire;

pub use report::{Latencies, Report};

use link::Links;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use wire::{build, parse_reply, Msg, PACKET_LEN};
pub use wire::{client_of, mac_of};

/// What each simulated client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// DISCOVER, OFFER, REQUEST, ACK.
    Dora,
    /// DISCOVER/OFFER only (what perfdhcp's `-e` … measures with 2-way exchanges).
    Discover,
    /// REQUEST with ciaddr set (RENEWING) for the addresses in `renew_from`.
    Renew,
}

/// Load parameters.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server (port 67).
    pub server: SocketAddrV4,
    /// Our relay address; replies come to `giaddr:67`.
    pub giaddr: Ipv4Addr,
    /// Bind the socket to this device (so replies to giaddr reach us, not the server).
    pub device: Option<String>,
    /// Distinct clients (MACs `fa:16:3e:xx:xx:xx` from `first_client`).
    pub clients: u32,
    /// Index of the first client.
    pub first_client: u32,
    /// Exchanges started per second; 0 = as fast as the window allows.
    pub rate: u32,
    /// How long to start new exchanges.
    pub duration: Duration,
    /// Most exchanges in flight when no rate is set.
    pub window: usize,
    /// A reply later than this is a drop.
    pub timeout: Duration,
    /// Send option 61 (client id `01:<mac>`).
    pub client_id: bool,
    /// What to do.
    pub mode: Mode,
    /// (mac, ip) pairs to renew, for `Mode::Renew`.
    pub renew_from: Vec<(u32, Ipv4Addr)>,
    /// Where to append `mac ip lease_end` for every ACK.
    pub record: Option<PathBuf>,
    /// Send each batch with UDP segmentation offload when the kernel allows it.
    pub gso: bool,
    /// Busy-poll instead of waiting in poll: replies are timed the moment they arrive, and a
    /// server on a veth pair never pays to wake the generator (which, waiting, costs the
    /// server's core a wakeup per reply). Takes a whole core.
    pub spin: bool,
    /// On the link instead of relayed: the interfaces (veth ends facing the server, or the
    /// bridges its ports are on) to send the clients' broadcast frames on, client `i` on link
    /// `i % links.len()`. Empty: relay mode.
    pub links: Vec<String>,
    /// `Mode` keep: renew this long after each ACK instead of at T1 (a test of many renewals
    /// at once without waiting half a lease).
    pub renew_after: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 67),
            giaddr: Ipv4Addr::new(127, 0, 0, 2),
            device: Some("lo".into()),
            clients: 1000,
            first_client: 0,
            rate: 0,
            duration: Duration::from_secs(5),
            window: 4096,
            timeout: Duration::from_secs(1),
            client_id: false,
            mode: Mode::Dora,
            renew_from: Vec::new(),
            record: None,
            gso: true,
            spin: false,
            links: Vec::new(),
            renew_after: None,
        }
    }
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    // SAFETY: rusage is plain data, for which all zeroes is a valid value.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we pass, which lives through the call.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Socket setup failed.
    #[error("socket: {0}")]
    Socket(#[from] io::Error),
    /// The configuration asks for something the generator cannot do.
    #[error("{0}")]
    Usage(&'static str),
}

/// Where the generator's messages go: to the server as a relay, or onto the links as the
/// clients' own frames.
enum Transport {
    Relay {
        sock: Socket,
        outbox: Outbox,
        to: SocketAddrV4,
    },
    Link(Links),
}

impl Transport {
    fn open(cfg: &Config) -> Result<Self, LoadError> {
        if cfg.links.is_empty() {
            // Each batch goes to the server as one segmented send (UDP_SEGMENT): the kernel's
            // UDP/IP path, and on a veth pair the receiver's too, runs on our core once per
            // batch, not once per message, so the load generator is not what limits the rate.
            return Ok(Transport::Relay {
                sock: open(cfg)?,
                outbox: Outbox::new(cfg.gso),
                to: cfg.server,
            });
        }
        if cfg.mode == Mode::Renew {
            return Err(LoadError::Usage(
                "renewals are unicast to the server from a configured address: relay mode only",
            ));
        }
        Ok(Transport::Link(Links::open(&cfg.links)?))
    }

    fn fd(&self) -> i32 {
        match self {
            Transport::Relay { sock, .. } => sock.as_raw_fd(),
            Transport::Link(l) => l.fd(),
        }
    }

    fn push(&mut self, client: u32, msg: &[u8]) {
        match self {
            Transport::Relay { outbox, to, .. } => outbox.push(*to, msg),
            Transport::Link(l) => l.push(client as usize, mac_of(client), msg),
        }
    }

    fn flush(&mut self, mut done: impl FnMut(bool)) {
        match self {
            Transport::Relay { sock, outbox, .. } => {
                outbox.flush(sock.as_raw_fd(), |_, sent| done(sent.is_ok()))
            }
            Transport::Link(l) => l.flush(done),
        }
    }

    /// Replies waiting, with the link each came in on (0 for a relay).
    fn recv(&mut self, bufs: &mut [[u8; 1500]], lens: &mut [usize], from: &mut [usize]) -> usize {
        match self {
            Transport::Relay { sock, .. } => {
                let n = recv_batch(sock.as_raw_fd(), bufs, lens, false).unwrap_or(0);
                from[..n].fill(0);
                n
            }
            Transport::Link(l) => l.recv(bufs, lens, from, &mut [[0; 6]; BATCH]),
        }
    }

    /// Client `client` was offered `ip`: on the link it answers ARP for it from now on.
    fn claim(&mut self, client: u32, ip: Ipv4Addr) {
        if let Transport::Link(l) = self {
            l.claim(ip, mac_of(client));
        }
    }

    /// ARP requests answered (on the link).
    fn arp_replies(&self) -> u64 {
        match self {
            Transport::Relay { .. } => 0,
            Transport::Link(l) => l.arp_replies,
        }
    }

    /// The link a client's frames go out on (0 for a relay).
    fn link_of(&self, client: u32) -> usize {
        match self {
            Transport::Relay { .. } => 0,
            Transport::Link(l) => client as usize % l.len(),
        }
    }

    fn segmenting(&self) -> bool {
        match self {
            Transport::Relay { outbox, .. } => outbox.segmenting(),
            Transport::Link(_) => false,
        }
    }
}

const BATCH: usize = 64;

struct Pending {
    client: u32,
    sent: Instant,
    request: bool,
}

/// How often a paced run starts the exchanges that have come due.
const TICK: Duration = Duration::from_micros(200);

/// Blocks until `fd` has something to read or `timeout` passes (at most 1 ms).
pub(crate) fn wait_readable(fd: i32, timeout: Duration) {
    let t = timeout.min(Duration::from_millis(1));
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    };
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd and a valid timespec for the duration of the call.
    unsafe { libc::ppoll(&mut p, 1, &ts, std::ptr::null()) };
}

/// Opens the relay socket: `giaddr:67`, bound to the device, big buffers.
pub fn open(cfg: &Config) -> Result<Socket, LoadError> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    if let Some(d) = &cfg.device {
        s.bind_device(Some(d.as_bytes()))?;
    }
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    s.bind(&SockAddr::from(SocketAddrV4::new(cfg.giaddr, 67)))?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// How many exchanges a run at `rate` a second (0: unpaced, no bound) starts over `duration`:
/// rate × duration, and at least one, as the first tick always started one (a probe of one
/// exchange in a millisecond, as `bench/tenants.sh` makes, must send it).
fn paced_target(rate: u32, duration: Duration) -> u64 {
    if rate == 0 {
        return u64::MAX;
    }
    ((duration.as_secs_f64() * f64::from(rate)).round() as u64).max(1)
}

/// Runs the load and reports.
pub fn run(cfg: &Config) -> Result<Report, LoadError> {
    let mut wire = Transport::open(cfg)?;
    let fd = wire.fd();
    let mut rec = match &cfg.record {
        Some(p) => Some(io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)?,
        )),
        None => None,
    };
    let mut r = Report::default();
    let mut pending: HashMap<u32, Pending> = HashMap::with_capacity(cfg.window * 2);
    let mut order: std::collections::VecDeque<(u32, Instant)> = std::collections::VecDeque::new();
    let mut msg: Vec<u8> = Vec::with_capacity(PACKET_LEN);
    let mut bufs = vec![[0u8; 1500]; BATCH];
    let mut lens = [0usize; BATCH];
    let mut from = [0usize; BATCH];
    let mut requests: Vec<(u32, u32, Ipv4Addr, Option<Ipv4Addr>)> = Vec::new();
    let mut next_xid: u32 = 1;
    let mut seq: u64 = 0;
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    let end_start = start + cfg.duration;
    // A paced run starts rate × duration exchanges: the last tick of the window may fall short
    // of it by a few (at most a batch), which are started at once when the window ends; a
    // generator further behind than that is not made to catch up.
    let target = paced_target(cfg.rate, cfg.duration);
    // Paced runs start new exchanges in bursts every TICK (as perfdhcp's rate timer does); a
    // REQUEST leaves as soon as its OFFER is in, as a client sends it. Replies are waited for
    // in poll (or spinning), so their latency is taken when they arrive.
    let mut next_tick = start;
    loop {
        let now = Instant::now();
        let iteration = now;
        let sending = now < end_start
            || (cfg.rate > 0 && r.started < target && target - r.started <= BATCH as u64);
        if !sending && pending.is_empty() && requests.is_empty() {
            break;
        }
        if now > end_start + cfg.timeout * 2 {
            break;
        }
        // New exchanges, paced by the rate and bounded by the window.
        let mut n = 0;
        let tick = cfg.rate == 0 || now >= next_tick;
        if sending && tick {
            let allowed = if cfg.rate == 0 {
                u64::MAX
            } else {
                ((now - start)
                    .as_secs_f64()
                    .mul_add(f64::from(cfg.rate), 1.0) as u64)
                    .min(target)
            };
            // Paced runs send at the offered rate whatever is outstanding (as perfdhcp does), so a
            // saturated server shows up as drops; unpaced runs are bounded by the window.
            let window = if cfg.rate == 0 {
                cfg.window
            } else {
                usize::MAX
            };
            while n < BATCH && r.started < allowed && pending.len() + n < window {
                let xid = next_xid;
                next_xid = next_xid.wrapping_add(1).max(1);
                let (client, pkt_kind) = match cfg.mode {
                    Mode::Renew if !cfg.renew_from.is_empty() => {
                        let (c, ip) = cfg.renew_from[(seq % cfg.renew_from.len() as u64) as usize];
                        build(
                            cfg,
                            &mut msg,
                            Msg {
                                msg_type: 3,
                                xid,
                                client: c,
                                ciaddr: ip,
                                requested: None,
                                server_id: None,
                            },
                        );
                        (c, true)
                    }
                    _ => {
                        let c = cfg.first_client + (seq % u64::from(cfg.clients.max(1))) as u32;
                        build(
                            cfg,
                            &mut msg,
                            Msg {
                                msg_type: 1,
                                xid,
                                client: c,
                                ciaddr: Ipv4Addr::UNSPECIFIED,
                                requested: None,
                                server_id: None,
                            },
                        );
                        (c, false)
                    }
                };
                wire.push(client, &msg);
                seq += 1;
                pending.insert(
                    xid,
                    Pending {
                        client,
                        sent: now,
                        request: pkt_kind,
                    },
                );
                order.push_back((xid, now));
                r.started += 1;
                n += 1;
            }
        }
        // REQUESTs for the OFFERs received.
        while n < BATCH {
            let Some((xid, client, ip, sid)) = requests.pop() else {
                break;
            };
            build(
                cfg,
                &mut msg,
                Msg {
                    msg_type: 3,
                    xid,
                    client,
                    ciaddr: Ipv4Addr::UNSPECIFIED,
                    requested: Some(ip),
                    server_id: sid,
                },
            );
            wire.push(client, &msg);
            pending.insert(
                xid,
                Pending {
                    client,
                    sent: now,
                    request: true,
                },
            );
            order.push_back((xid, now));
            n += 1;
        }
        if cfg.rate > 0 && tick {
            // A burst cut short at BATCH goes on at once.
            next_tick = if n == BATCH { now } else { now + TICK };
        }
        wire.flush(|sent| r.sent += u64::from(sent));

        let got = wire.recv(&mut bufs, &mut lens, &mut from);
        r.received += got as u64;
        let now = Instant::now();
        for i in 0..got {
            let Some(info) = parse_reply(&bufs[i][..lens[i]]) else {
                continue;
            };
            let Some(p) = pending.get(&info.xid) else {
                continue;
            };
            if from[i] != wire.link_of(p.client) {
                // A reply on another client's network: a leak between networks, never a
                // completed exchange.
                r.wrong_link += 1;
                continue;
            }
            let Some(p) = pending.remove(&info.xid) else {
                continue;
            };
            match info.msg_type {
                2 if !p.request => {
                    r.offers += 1;
                    wire.claim(p.client, info.yiaddr);
                    r.offer_latency.push(now - p.sent);
                    if cfg.mode == Mode::Dora {
                        let xid = next_xid;
                        next_xid = next_xid.wrapping_add(1).max(1);
                        requests.push((xid, p.client, info.yiaddr, info.server_id));
                    }
                }
                5 if p.request => {
                    r.acks += 1;
                    r.ack_latency.push(now - p.sent);
                    if let Some(w) = rec.as_mut() {
                        let epoch = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map(|d| d.as_secs())
                            .unwrap_or(0);
                        let m = mac_of(p.client);
                        let _ = writeln!(
                            w,
                            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} {} {}",
                            m[0],
                            m[1],
                            m[2],
                            m[3],
                            m[4],
                            m[5],
                            info.yiaddr,
                            epoch + u64::from(info.lease.unwrap_or(0))
                        );
                    }
                }
                6 => r.naks += 1,
                _ => {}
            }
        }
        // Expire what waited too long.
        while let Some(&(xid, t)) = order.front() {
            if now - t < cfg.timeout {
                break;
            }
            order.pop_front();
            if pending.remove(&xid).is_some() {
                r.drops += 1;
            }
        }
        if got == 0 && n == 0 {
            // Nothing to do until a reply comes or the next exchange is due: wait in poll (or
            // spin), so a reply's latency is taken when it arrives, not after a fixed sleep.
            if cfg.spin {
                std::hint::spin_loop();
            } else {
                let due = if sending && cfg.rate > 0 {
                    next_tick
                } else {
                    now + Duration::from_millis(1)
                };
                wait_readable(fd, due.saturating_duration_since(Instant::now()));
            }
            // An iteration that sent and received nothing was spent waiting for work.
            r.idle_s += iteration.elapsed().as_secs_f64();
        }
    }
    r.drops += pending.len() as u64;
    r.window = cfg
        .duration
        .min(start.elapsed())
        .max(Duration::from_millis(1));
    r.cpu_s = cpu_seconds() - cpu0;
    r.gso = wire.segmenting();
    r.arp_replies = wire.arp_replies();
    r.elapsed = start
        .elapsed()
        .min(cfg.duration + cfg.timeout)
        .max(Duration::from_millis(1));
    if let Some(w) = rec.as_mut() {
        w.flush()?;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paced_run_starts_rate_times_duration_and_at_least_one() {
        assert_eq!(paced_target(2000, Duration::from_secs(1)), 2000);
        assert_eq!(paced_target(200, Duration::from_secs(10)), 2000);
        // bench/tenants.sh's restart probe: one exchange in a millisecond (it started none,
        // and the probe waited for ever)
        assert_eq!(paced_target(1, Duration::from_millis(1)), 1);
        assert_eq!(paced_target(0, Duration::from_millis(1)), u64::MAX);
    }

    #[test]
    fn macs_round_trip() {
        for i in [0, 1, 255, 256, 65_535, 1_000_000] {
            let m = mac_of(i);
            let s = format!(
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            );
            assert_eq!(client_of(&s), Some(i));
        }
    }

    #[test]
    fn built_requests_are_well_formed_relayed_messages() {
        let cfg = Config::default();
        let mut out = Vec::new();
        build(
            &cfg,
            &mut out,
            Msg {
                msg_type: 3,
                xid: 7,
                client: 5,
                ciaddr: Ipv4Addr::UNSPECIFIED,
                requested: Some(Ipv4Addr::new(10, 0, 0, 5)),
                server_id: Some(Ipv4Addr::new(10, 0, 0, 1)),
            },
        );
        assert_eq!(out[24..28], [127, 0, 0, 2]);
        // options end with END, then pad up to BOOTP's 300 bytes
        assert_eq!(out.len(), PACKET_LEN);
        let end = out.iter().rposition(|&b| b != 0).unwrap();
        assert_eq!(out[end], 255);
        assert!(out.windows(6).any(|w| w == [50, 4, 10, 0, 0, 5]));
    }

    #[test]
    fn percentiles() {
        let mut l = Latencies::default();
        for us in 1..=100 {
            l.push(Duration::from_micros(us));
        }
        assert_eq!(l.percentile(50.0), Some(51));
        assert_eq!(l.percentile(99.0), Some(99));
    }
}
