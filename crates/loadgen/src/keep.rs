//! Clients that keep their leases, as VMs do (RFC 2131 §4.4.5): each gets its address (DORA),
//! renews it at T1 by unicast to the server that gave it, rebinds at T2 by broadcast to any
//! server, and starts over only when the lease runs out or a server NAKs it. On the link only
//! ([`crate::link`]). What a failover test needs to know: whether any client was NAKed, lost
//! its lease or changed its address when a server died, and how long it took until every
//! client was bound to a server that is alive (a per-second series of who holds whom).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::link::Links;
use crate::wire::{build, parse_reply, Msg, PACKET_LEN};
use crate::{mac_of, Config, LoadError};

/// A client retransmits what got no answer after this long.
const RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Init,
    Selecting(u32),
    Requesting(u32),
    Bound,
    Renewing(u32),
    Rebinding(u32),
}

impl State {
    fn xid(self) -> Option<u32> {
        match self {
            State::Selecting(x)
            | State::Requesting(x)
            | State::Renewing(x)
            | State::Rebinding(x) => Some(x),
            State::Init | State::Bound => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    ip: Ipv4Addr,
    server: Ipv4Addr,
    server_mac: [u8; 6],
    t1: Instant,
    t2: Instant,
    expiry: Instant,
}

struct Client {
    state: State,
    lease: Option<Lease>,
    /// The first address it was given: any other later is a change of address.
    first_ip: Option<Ipv4Addr>,
    /// Bumped at every change of state: older timers are void.
    gen: u32,
}

/// What the clients went through.
#[derive(Debug, Default, Clone)]
pub struct KeepReport {
    /// Clients simulated.
    pub clients: u32,
    /// Clients bound (or renewing or rebinding a valid lease) at the end.
    pub bound_at_end: u32,
    /// First leases (DORA) acknowledged.
    pub bound: u64,
    /// Renewals (unicast at T1) acknowledged.
    pub renewed: u64,
    /// Rebindings (broadcast after T2) acknowledged.
    pub rebound: u64,
    /// NAKs received.
    pub naks: u64,
    /// Leases that ran out before any server acknowledged them again.
    pub expired: u64,
    /// ACKs that gave a client another address than its first.
    pub address_changes: u64,
    /// Renewals and rebindings sent.
    pub renew_requests: u64,
    /// Rebinding requests sent.
    pub rebind_requests: u64,
}

impl KeepReport {
    /// One JSON object, for scripts.
    pub fn json(&self) -> String {
        format!(
            "{{\"clients\":{},\"bound_at_end\":{},\"bound\":{},\"renewed\":{},\"rebound\":{},\"naks\":{},\"expired\":{},\"address_changes\":{},\"renew_requests\":{},\"rebind_requests\":{}}}",
            self.clients, self.bound_at_end, self.bound, self.renewed, self.rebound, self.naks,
            self.expired, self.address_changes, self.renew_requests, self.rebind_requests
        )
    }
}

struct Run<'a> {
    cfg: &'a Config,
    links: Links,
    clients: Vec<Client>,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    by_xid: HashMap<u32, u32>,
    next_xid: u32,
    msg: Vec<u8>,
    r: KeepReport,
}

impl Run<'_> {
    fn client(&self, i: u32) -> u32 {
        self.cfg.first_client + i
    }

    /// Moves client `i` to `state` and arms its next timer at `at`.
    fn set(&mut self, i: u32, state: State, at: Instant) {
        let c = &mut self.clients[i as usize];
        if let Some(old) = c.state.xid() {
            self.by_xid.remove(&old);
        }
        if let Some(x) = state.xid() {
            self.by_xid.insert(x, i);
        }
        c.state = state;
        c.gen = c.gen.wrapping_add(1);
        self.timers.push(Reverse((at, i, c.gen)));
    }

    fn xid(&mut self) -> u32 {
        let x = self.next_xid;
        self.next_xid = self.next_xid.wrapping_add(1).max(1);
        x
    }

    fn message(&mut self, m: Msg) {
        build(self.cfg, &mut self.msg, m);
    }

    fn discover(&mut self, i: u32, now: Instant) {
        let xid = self.xid();
        let client = self.client(i);
        self.message(Msg {
            msg_type: 1,
            xid,
            client,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            requested: None,
            server_id: None,
        });
        self.links.push(client as usize, mac_of(client), &self.msg);
        self.set(i, State::Selecting(xid), now + RETRY);
    }

    /// A REQUEST with ciaddr: unicast to the lease's server (RENEWING) or broadcast
    /// (REBINDING).
    fn extend(&mut self, i: u32, l: Lease, rebinding: bool, now: Instant) {
        let xid = self.xid();
        let client = self.client(i);
        self.message(Msg {
            msg_type: 3,
            xid,
            client,
            ciaddr: l.ip,
            requested: None,
            server_id: None,
        });
        let (dst_mac, dst) = if rebinding {
            ([0xff; 6], Ipv4Addr::BROADCAST)
        } else {
            (l.server_mac, l.server)
        };
        self.links.push_from(
            client as usize,
            mac_of(client),
            l.ip,
            dst_mac,
            dst,
            &self.msg,
        );
        self.r.renew_requests += 1;
        if rebinding {
            self.r.rebind_requests += 1;
            self.set(i, State::Rebinding(xid), (now + RETRY).min(l.expiry));
        } else {
            self.set(i, State::Renewing(xid), l.t2);
        }
    }

    fn timer(&mut self, i: u32, now: Instant) {
        let c = &self.clients[i as usize];
        let (state, lease) = (c.state, c.lease);
        match (state, lease) {
            (State::Init | State::Selecting(_) | State::Requesting(_), _) => self.discover(i, now),
            (State::Bound | State::Renewing(_) | State::Rebinding(_), Some(l)) => {
                if now >= l.expiry {
                    self.r.expired += 1;
                    self.clients[i as usize].lease = None;
                    self.discover(i, now);
                } else if state == State::Bound && now < l.t2 {
                    self.extend(i, l, false, now);
                } else {
                    self.extend(i, l, true, now);
                }
            }
            (_, None) => self.discover(i, now),
        }
    }

    fn reply(&mut self, b: &[u8], link: usize, sender: [u8; 6], now: Instant) {
        let Some(info) = parse_reply(b) else { return };
        let Some(&i) = self.by_xid.get(&info.xid) else {
            return;
        };
        let client = self.client(i);
        if link != client as usize % self.links.len() {
            return;
        }
        let state = self.clients[i as usize].state;
        match (info.msg_type, state) {
            (2, State::Selecting(_)) => {
                let xid = self.xid();
                self.message(Msg {
                    msg_type: 3,
                    xid,
                    client,
                    ciaddr: Ipv4Addr::UNSPECIFIED,
                    requested: Some(info.yiaddr),
                    server_id: info.server_id,
                });
                self.links.push(client as usize, mac_of(client), &self.msg);
                self.links.claim(info.yiaddr, mac_of(client));
                self.set(i, State::Requesting(xid), now + RETRY);
            }
            (5, State::Requesting(_) | State::Renewing(_) | State::Rebinding(_)) => {
                let secs = u64::from(info.lease.unwrap_or(u32::MAX).min(u32::MAX - 1));
                let t2 = Duration::from_secs(info.t2.map_or(secs * 7 / 8, u64::from));
                let t1 = Duration::from_secs(info.t1.map_or(secs / 2, u64::from));
                let t1 = self.cfg.renew_after.map_or(t1, |r| r.min(t1));
                let prev = self.clients[i as usize].lease;
                let server = info
                    .server_id
                    .or(prev.map(|p| p.server))
                    .unwrap_or(Ipv4Addr::UNSPECIFIED);
                let l = Lease {
                    ip: info.yiaddr,
                    server,
                    server_mac: sender,
                    t1: now + t1,
                    t2: now + t2,
                    expiry: now + Duration::from_secs(secs),
                };
                match state {
                    State::Requesting(_) => self.r.bound += 1,
                    State::Renewing(_) => self.r.renewed += 1,
                    _ => self.r.rebound += 1,
                }
                let c = &mut self.clients[i as usize];
                match c.first_ip {
                    Some(f) if f != l.ip => self.r.address_changes += 1,
                    Some(_) => {}
                    None => c.first_ip = Some(l.ip),
                }
                c.lease = Some(l);
                self.links.claim(l.ip, mac_of(client));
                self.set(i, State::Bound, l.t1);
            }
            (6, _) => {
                self.r.naks += 1;
                self.clients[i as usize].lease = None;
                self.set(i, State::Init, now);
            }
            _ => {}
        }
    }

    /// Who holds how many clients now: by server address, and "unbound".
    fn holders(&self, now: Instant) -> BTreeMap<String, u32> {
        let mut m = BTreeMap::new();
        for c in &self.clients {
            let k = match c.lease {
                Some(l) if l.expiry > now => l.server.to_string(),
                _ => "unbound".to_string(),
            };
            *m.entry(k).or_insert(0) += 1;
        }
        m
    }
}

/// Runs the clients for `cfg.duration`; the first leases are taken at `cfg.rate` a second.
/// Every second, one JSON line goes to `series` (if given): the time, who holds how many
/// clients, and the NAKs, expiries and address changes so far.
pub fn run_keep(cfg: &Config, series: Option<&Path>) -> Result<KeepReport, LoadError> {
    if cfg.links.is_empty() {
        return Err(LoadError::Usage("--mode keep needs --link"));
    }
    let mut out = match series {
        Some(p) => Some(io::BufWriter::new(std::fs::File::create(p)?)),
        None => None,
    };
    let start = Instant::now();
    let rate = f64::from(cfg.rate.max(1));
    let mut run = Run {
        cfg,
        links: Links::open(&cfg.links)?,
        clients: (0..cfg.clients)
            .map(|_| Client {
                state: State::Init,
                lease: None,
                first_ip: None,
                gen: 0,
            })
            .collect(),
        timers: BinaryHeap::new(),
        by_xid: HashMap::new(),
        next_xid: 1,
        msg: Vec::with_capacity(PACKET_LEN),
        r: KeepReport {
            clients: cfg.clients,
            ..KeepReport::default()
        },
    };
    for i in 0..cfg.clients {
        let at = start + Duration::from_secs_f64(f64::from(i) / rate);
        run.set(i, State::Init, at);
    }
    let mut bufs = vec![[0u8; 1500]; 64];
    let (mut lens, mut from, mut senders) = ([0usize; 64], [0usize; 64], [[0u8; 6]; 64]);
    let end = start + cfg.duration;
    let mut next_line = start;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let mut busy = false;
        let mut fired = 0;
        while let Some(&Reverse((at, i, gen))) = run.timers.peek() {
            if at > now || fired >= 256 {
                break;
            }
            run.timers.pop();
            if run.clients[i as usize].gen == gen {
                run.timer(i, now);
                fired += 1;
            }
        }
        busy |= fired > 0;
        run.links.flush(|_| {});
        let got = run
            .links
            .recv(&mut bufs, &mut lens, &mut from, &mut senders);
        for k in 0..got {
            run.reply(&bufs[k][..lens[k]], from[k], senders[k], now);
        }
        busy |= got > 0;
        run.links.flush(|_| {});
        if now >= next_line {
            next_line += Duration::from_secs(1);
            if let Some(w) = out.as_mut() {
                let h: Vec<String> = run
                    .holders(now)
                    .iter()
                    .map(|(k, v)| format!("\"{k}\":{v}"))
                    .collect();
                writeln!(
                    w,
                    "{{\"t\":{:.1},\"holders\":{{{}}},\"naks\":{},\"expired\":{},\"address_changes\":{},\"rebound\":{}}}",
                    (now - start).as_secs_f64(),
                    h.join(","),
                    run.r.naks,
                    run.r.expired,
                    run.r.address_changes,
                    run.r.rebound
                )?;
                w.flush()?;
            }
        }
        if !busy {
            let due = run
                .timers
                .peek()
                .map_or(now + Duration::from_millis(1), |r| r.0 .0);
            crate::wait_readable(
                run.links.fd(),
                due.saturating_duration_since(Instant::now()),
            );
        }
    }
    let now = Instant::now();
    run.r.bound_at_end = run
        .clients
        .iter()
        .filter(|c| c.lease.is_some_and(|l| l.expiry > now))
        .count() as u32;
    Ok(run.r)
}
