//! One served network: its reservation table (changed in place, read by the event loops once
//! per batch), its leases, its counters and the addresses of its DHCP interface.

use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use qdhcp_protocol::NetworkTable;

use crate::leases::LeaseTable;
use crate::metrics::NetCounters;

/// One network: its reservation table and its leases.
pub struct Network {
    /// Name used in the journal and logs.
    pub name: String,
    /// Packet counters of this network.
    pub counters: NetCounters,
    pub(crate) table: RwLock<NetworkTable>,
    pub(crate) leases: Mutex<LeaseTable>,
    /// The addresses its DHCP interface was given, when whoever plumbed it says so
    /// ([`Dataplane::set_addrs`]): the server identifier comes from them, and the serving loop
    /// never enters the namespace to read them (see docs/ARCHITECTURE.md, "Event loops").
    pub(crate) addrs: RwLock<Option<Vec<Ipv4Net>>>,
    /// Addresses recently offered or released, for the leases view (neither is a lease).
    pub(crate) recent: Mutex<Recent>,
}

/// What happened to an address that is not (or no longer) a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecentKind {
    /// Offered to the client, not (yet) requested.
    Offered,
    /// Given back by the client (DHCPRELEASE).
    Released,
}

/// The last offer or release per client of a network, at most [`Recent::CAP`] of them (the
/// oldest forgotten first): what an operator asks after "did this VM ask, what did it get".
#[derive(Debug, Default)]
pub struct Recent {
    by_mac: std::collections::HashMap<qdhcp_protocol::Mac, (RecentKind, Ipv4Addr, u64)>,
}

impl Recent {
    /// Clients remembered per network.
    pub const CAP: usize = 4096;

    pub(crate) fn note(
        &mut self,
        mac: qdhcp_protocol::Mac,
        kind: RecentKind,
        ip: Ipv4Addr,
        at: u64,
    ) {
        if self.by_mac.len() >= Self::CAP && !self.by_mac.contains_key(&mac) {
            if let Some(oldest) = self.by_mac.iter().min_by_key(|(_, v)| v.2).map(|(k, _)| *k) {
                self.by_mac.remove(&oldest);
            }
        }
        self.by_mac.insert(mac, (kind, ip, at));
    }
}

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadStats {
    /// Reservations that are new.
    pub added: usize,
    /// Reservations that are gone.
    pub removed: usize,
    /// Reservations whose address, name or options changed.
    pub changed: usize,
    /// Reservations left as they were.
    pub unchanged: usize,
    /// Leases revoked because their reservation went away or moved.
    pub revoked: usize,
}

impl Network {
    /// The table being served now.
    pub fn table(&self) -> RwLockReadGuard<'_, NetworkTable> {
        self.table.read()
    }

    pub(crate) fn table_mut(&self) -> RwLockWriteGuard<'_, NetworkTable> {
        self.table.write()
    }

    /// The interface addresses set by [`Dataplane::set_addrs`], if any.
    pub(crate) fn known_addrs(&self) -> RwLockReadGuard<'_, Option<Vec<Ipv4Net>>> {
        self.addrs.read()
    }

    /// The last offer or release of each client remembered: (MAC, kind, address, when).
    pub fn recent(&self) -> Vec<(qdhcp_protocol::Mac, RecentKind, Ipv4Addr, u64)> {
        self.recent
            .lock()
            .by_mac
            .iter()
            .map(|(m, (k, ip, at))| (*m, *k, *ip, *at))
            .collect()
    }

    /// Locks the lease table (poisoning is survived: the table stays consistent per change).
    pub fn leases(&self) -> MutexGuard<'_, LeaseTable> {
        self.leases.lock()
    }
}

/// Our address on the interface: one inside a served subnet if there is one.
pub(crate) fn pick_server_id(addrs: &[Ipv4Net], table: &NetworkTable) -> Option<Ipv4Addr> {
    addrs
        .iter()
        .find(|a| table.subnets.iter().any(|s| s.net.contains(&a.addr())))
        .or(addrs.first())
        .map(|a| a.addr())
}
