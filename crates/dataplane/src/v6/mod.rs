//! DHCPv6 serving (see docs/ARCHITECTURE.md, "DHCPv6"): one UDP socket on port 547 per served
//! interface, joined to ff02::1:2, served by the same event loops as DHCPv4; the client's MAC
//! from the neighbour table (`neigh.rs`) or a relay; the decision in
//! `qdhcp_protocol::v6::decide6`; leases in the same journal as DHCPv4 leases, each REPLY that
//! binds sent only after its batch is on disk (`source.rs`).

pub(crate) mod exposition;
mod neigh;
mod source;

use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ahash::HashMap;
use qdhcp_protocol::v6::{Change6, Duid, Lease6, LeaseView6, Malformed6, Msg6, Table6};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::metrics::{Kind, PerKind};
use crate::priority;

pub(crate) use source::{Commit6, Dhcp6Source};

/// ff02::1:2, All_DHCP_Relay_Agents_and_Servers (RFC 8415 §7.1).
pub const ALL_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
/// Port servers and relays listen on.
pub const SERVER_PORT6: u16 = 547;
/// Port clients listen on.
pub const CLIENT_PORT6: u16 = 546;

/// Leases read at most under one hold of the lock by [`Net6::copy_leases`]. With 256 the
/// serving loop waited 0.6–3.4 ms for the lock (p50–p90, waits over 0.2 ms) about once a second
/// under load, and with 32 0.6–0.8 ms: half as many ADVERTISEs over 1 ms (bench/DHCPV6.md).
pub const COPY_CHUNK: usize = 32;

/// The DHCPv6 leases of one network, by address.
#[derive(Debug)]
pub struct Leases6 {
    by_addr: HashMap<Ipv6Addr, Lease6>,
    /// Bumped on every change: the leases file is rewritten when it moves.
    generation: u64,
    /// No lease expires before this (a lower bound: a lease renewed or gone since may have set
    /// it), so the once-a-second reap looks at no lease until one may have expired.
    earliest: u64,
    /// Told when a lease goes away, so the leases file shows it at once (dhcp_release6).
    wake: Option<std::sync::mpsc::SyncSender<()>>,
}

impl Default for Leases6 {
    fn default() -> Leases6 {
        Leases6 {
            by_addr: HashMap::default(),
            generation: 0,
            earliest: u64::MAX,
            wake: None,
        }
    }
}

impl LeaseView6 for Leases6 {
    fn by_addr(&self, addr: Ipv6Addr) -> Option<&Lease6> {
        self.by_addr.get(&addr)
    }
}

impl Leases6 {
    /// Applies one change; returns the lease it replaced or removed.
    pub fn apply(&mut self, c: &Change6) -> Option<Lease6> {
        self.generation += 1;
        match c {
            Change6::Bind(l) => {
                self.note_expiry(l);
                self.by_addr.insert(l.addr, l.clone())
            }
            Change6::Release { duid, iaid, addr } | Change6::Decline { duid, iaid, addr } => {
                let held = self
                    .by_addr
                    .get(addr)
                    .is_some_and(|l| &l.duid == duid && l.iaid == *iaid);
                let gone = held.then(|| self.by_addr.remove(addr)).flatten();
                if gone.is_some() {
                    if let Some(w) = &self.wake {
                        let _ = w.try_send(());
                    }
                }
                gone
            }
        }
    }

    /// Puts back what a bind replaced (its commit failed).
    pub(crate) fn undo(&mut self, addr: Ipv6Addr, before: Option<Lease6>) {
        self.generation += 1;
        match before {
            Some(l) => {
                self.note_expiry(&l);
                self.by_addr.insert(addr, l)
            }
            None => self.by_addr.remove(&addr),
        };
    }

    fn note_expiry(&mut self, l: &Lease6) {
        if let Some(e) = l.expires {
            self.earliest = self.earliest.min(e);
        }
    }

    /// Drops leases expired by `now`; returns how many.
    pub fn reap(&mut self, now: u64) -> usize {
        if now < self.earliest {
            return 0;
        }
        let before = self.by_addr.len();
        self.by_addr
            .retain(|_, l| l.expires.is_none_or(|e| e > now));
        self.earliest = self
            .by_addr
            .values()
            .filter_map(|l| l.expires)
            .min()
            .unwrap_or(u64::MAX);
        let n = before - self.by_addr.len();
        if n > 0 {
            self.generation += 1;
        }
        n
    }

    /// Every lease, in no order.
    pub fn iter(&self) -> impl Iterator<Item = &Lease6> {
        self.by_addr.values()
    }

    /// Number of leases.
    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }

    /// Moves on every change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Wakes `w` whenever a lease is released or declined.
    pub fn wake_on_removal(&mut self, w: std::sync::mpsc::SyncSender<()>) {
        self.wake = Some(w);
    }
}

/// Replays the DHCPv6 records of the journal into per-network lease tables.
pub fn replay6(records: &[crate::journal::Record], now: u64) -> HashMap<String, Leases6> {
    let mut out: HashMap<String, Leases6> = HashMap::default();
    for r in records {
        if let crate::journal::Change::V6(c) = &r.change {
            out.entry(r.network.to_string()).or_default().apply(c);
        }
    }
    for t in out.values_mut() {
        t.reap(now);
        t.generation = 0;
    }
    out
}

/// DHCPv6 counters of one network.
#[derive(Debug, Default)]
pub struct Counters6 {
    /// Messages received, by type.
    pub rx: PerKind<Msg6, 8>,
    /// ADVERTISEs sent.
    pub advertise: AtomicU64,
    /// REPLYs sent.
    pub reply: AtomicU64,
    /// Datagrams refused by the front door.
    pub malformed: AtomicU64,
    /// Messages not answered (wrong server id, missing client id…).
    pub ignored: AtomicU64,
    /// Messages answered without a MAC (no neighbour entry after every probe).
    pub no_mac: AtomicU64,
    /// Messages from the link dropped because as many as can wait for their senders' neighbour
    /// entries already do (a burst of new clients, or a flood from random link-locals).
    pub neighbour_backlog: AtomicU64,
    /// Binds whose commit failed (no REPLY sent).
    pub persist_failures: AtomicU64,
    /// Replies the kernel refused.
    pub send_errors: AtomicU64,
    /// Replies sent as frames to clients on the link (the rest go through the UDP socket).
    pub frames: AtomicU64,
}

impl Kind for Msg6 {
    const ALL: &'static [Self] = &[
        Msg6::Solicit,
        Msg6::Request,
        Msg6::Confirm,
        Msg6::Renew,
        Msg6::Rebind,
        Msg6::Release,
        Msg6::Decline,
        Msg6::InformationRequest,
    ];
    fn slot(self) -> usize {
        match self {
            Msg6::Solicit => 0,
            Msg6::Request => 1,
            Msg6::Confirm => 2,
            Msg6::Renew => 3,
            Msg6::Rebind => 4,
            Msg6::Release => 5,
            Msg6::Decline => 6,
            Msg6::InformationRequest => 7,
        }
    }
    fn label(self) -> &'static str {
        Msg6::label(self)
    }
}

impl Counters6 {
    /// A bad datagram, counted.
    pub(crate) fn malformed(&self, _why: Malformed6) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
    }
}

/// The DHCPv6 side of one network: its table (changed in place on reload), leases and DUID.
pub struct Net6 {
    /// Name in the journal (the same as the network's DHCPv4 name; shared with every record).
    pub name: Arc<str>,
    table: RwLock<Table6>,
    leases: Mutex<Leases6>,
    server_id: Duid,
    /// Its counters.
    pub counters: Counters6,
}

impl Net6 {
    /// A network served with `table`, as `server_id`, holding `leases`.
    pub(crate) fn new(name: &str, table: Table6, server_id: Duid, leases: Leases6) -> Net6 {
        Net6 {
            name: Arc::from(name),
            table: RwLock::new(table),
            leases: Mutex::new(leases),
            server_id,
            counters: Counters6::default(),
        }
    }

    /// The table served now.
    pub fn table(&self) -> RwLockReadGuard<'_, Table6> {
        self.table.read()
    }

    /// Serves `t` from now on (a SIGHUP's rebuilt table); leases stay.
    pub fn replace_table(&self, t: Table6) {
        *self.table.write() = t;
    }

    /// Changes the table served in place (a port added, changed or removed).
    pub fn update_table(&self, f: impl FnOnce(&mut Table6)) {
        f(&mut self.table.write());
    }

    /// The leases.
    pub fn leases(&self) -> MutexGuard<'_, Leases6> {
        self.leases.lock()
    }

    /// Every lease through `f`, for readers beside the serving loop (the leases file, the
    /// leases view): the lock is held for at most [`COPY_CHUNK`] leases at a time, at normal
    /// priority, and `between` runs while it is free (`priority::yield_to_serving`). One copy
    /// of 10,000 leases under the lock held the loop up for 1–4 ms every second.
    /// Leases that change meanwhile are seen as they are when their chunk is read.
    pub fn copy_leases<T>(
        &self,
        mut f: impl FnMut(&Lease6) -> T,
        mut between: impl FnMut(),
    ) -> Vec<T> {
        let addrs: Vec<Ipv6Addr> =
            priority::at_normal_priority(|| self.leases.lock().iter().map(|l| l.addr).collect());
        let mut out = Vec::with_capacity(addrs.len());
        for chunk in addrs.chunks(COPY_CHUNK) {
            between();
            priority::at_normal_priority(|| {
                let leases = self.leases.lock();
                out.extend(chunk.iter().filter_map(|a| leases.by_addr(*a)).map(&mut f));
            });
        }
        out
    }

    /// Our DUID on this network.
    pub fn server_id(&self) -> &Duid {
        &self.server_id
    }

    /// Takes leases the journal lacks (a leases file written by dnsmasq before qdhcp took
    /// over); an address that already has a lease keeps it. Returns how many were taken.
    pub fn seed(&self, leases: impl IntoIterator<Item = Lease6>) -> usize {
        let mut t = self.leases.lock();
        let mut n = 0;
        for l in leases {
            if t.by_addr(l.addr).is_none() {
                t.apply(&Change6::Bind(l));
                n += 1;
            }
        }
        n
    }
}

/// Opens the DHCPv6 server socket for `iface` in the calling thread's namespace: UDP port 547
/// bound to the device and joined to ff02::1:2 there.
pub fn open_dhcp6_socket(iface: &str) -> io::Result<Socket> {
    open_socket6(iface, SERVER_PORT6)
}

/// As [`open_dhcp6_socket`] on any port (tests use port 0).
pub fn open_socket6(iface: &str, port: u16) -> io::Result<Socket> {
    let ifindex = nix::net::if_::if_nametoindex(iface).map_err(|e| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {iface}: {e}"),
        )
    })?;
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_only_v6(true)?;
    s.set_reuse_address(true)?;
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind_device(Some(iface.as_bytes()))
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind to interface {iface}: {e}")))?;
    s.bind(&SockAddr::from(SocketAddrV6::new(
        Ipv6Addr::UNSPECIFIED,
        port,
        0,
        0,
    )))
    .map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot bind UDP port {port} on {iface} (IPv6): {e}"),
        )
    })?;
    s.join_multicast_v6(&ALL_SERVERS, ifindex)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot join ff02::1:2 on {iface}: {e}")))?;
    s.set_multicast_loop_v6(true)?;
    Ok(s)
}

/// The IPv6 addresses of `iface` in the calling thread's namespace.
pub fn iface_addrs6(iface: &str) -> Vec<Ipv6Addr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter(|a| a.interface_name == iface)
        .filter_map(|a| Some(a.address?.as_sockaddr_in6()?.ip()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use qdhcp_protocol::Mac;

    fn lease(i: u32) -> Lease6 {
        let mac = Mac([0xfa, 0x16, 0x3e, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        Lease6 {
            duid: Duid::ll(mac),
            iaid: 1,
            addr: Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0001_0000u128 + u128::from(i)),
            mac,
            expires: Some(1_000_000),
            hostname: Some(format!("host-{i}")),
        }
    }

    #[test]
    fn reaping_looks_at_no_lease_until_one_may_have_expired_and_misses_none() {
        let mut t = Leases6::default();
        let at = |i: u32, e: u64| Lease6 {
            expires: Some(e),
            ..lease(i)
        };
        t.apply(&Change6::Bind(at(1, 100)));
        t.apply(&Change6::Bind(at(2, 200)));
        t.apply(&Change6::Bind(Lease6 {
            expires: None,
            ..lease(3)
        }));
        assert_eq!(t.reap(99), 0);
        assert_eq!(t.reap(100), 1);
        // renewed: its old expiry passes without it going
        t.apply(&Change6::Bind(at(2, 400)));
        assert_eq!(t.reap(250), 0);
        assert_eq!(t.len(), 2);
        // a bind that expires sooner than every other lease is not skipped
        t.apply(&Change6::Bind(at(4, 300)));
        assert_eq!(t.reap(300), 1);
        assert_eq!(t.reap(400), 1);
        assert_eq!(t.len(), 1, "the lease without expiry stays");
        assert_eq!(t.reap(u64::MAX - 1), 0);
        // a failed commit puts back a lease that expires soon
        t.undo(lease(5).addr, Some(at(5, 500)));
        assert_eq!(t.reap(500), 1);
    }

    #[test]
    fn a_copy_of_every_lease_lets_the_serving_loop_in_between_chunks() {
        let n = 10_000;
        let net = Net6::new(
            "n",
            Table6::default(),
            Duid::ll(Mac([2, 0, 0, 0, 0, 1])),
            Leases6::default(),
        );
        for i in 0..n {
            net.leases().apply(&Change6::Bind(lease(i)));
        }
        // the last lease released and another re-addressed while the copy runs
        let (gone, moved) = (lease(n - 1).addr, lease(n - 2).addr);
        let mut gaps = 0;
        let copied = net.copy_leases(
            |l| (l.addr, l.iaid),
            || {
                let mut t = net
                    .leases
                    .try_lock()
                    .expect("the lock is free between chunks");
                gaps += 1;
                if gaps == 2 {
                    let l = lease(n - 1);
                    t.apply(&Change6::Release {
                        duid: l.duid,
                        iaid: 1,
                        addr: l.addr,
                    });
                    t.apply(&Change6::Bind(Lease6 {
                        iaid: 7,
                        ..lease(n - 2)
                    }));
                }
            },
        );
        assert!(gaps >= n as usize / COPY_CHUNK, "{gaps} chunks");
        assert_eq!(copied.len(), n as usize - 1);
        assert!(!copied.iter().any(|(a, _)| *a == gone));
        assert!(copied.contains(&(moved, 7)));
    }
}
