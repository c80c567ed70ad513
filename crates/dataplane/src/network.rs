//! One served network: its reservation table (changed in place, read by the event loops once
//! per batch), its leases, its counters and the addresses of its DHCP interface.

use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;
use qdhcp_protocol::NetworkTable;

use crate::leases::LeaseTable;
use crate::metrics::NetCounters;

/// One network: its reservation table and its leases.
pub struct Network {
    /// Name used in the journal and logs (shared: every lease record names it).
    pub name: Arc<str>,
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

/// The last offer or release per client of a network, for the leases view: at most
/// [`Recent::CAP`] clients, in two generations (when the newer fills up it becomes the older and
/// the old older one is forgotten), so that noting one costs the same however many clients
/// there are: it happens on the packet path, once per OFFER.
#[derive(Debug, Default)]
pub struct Recent {
    newer: std::collections::HashMap<qdhcp_protocol::Mac, (RecentKind, Ipv4Addr, u64)>,
    older: std::collections::HashMap<qdhcp_protocol::Mac, (RecentKind, Ipv4Addr, u64)>,
}

impl Recent {
    /// Clients remembered per network, at most.
    pub const CAP: usize = 4096;

    pub(crate) fn note(
        &mut self,
        mac: qdhcp_protocol::Mac,
        kind: RecentKind,
        ip: Ipv4Addr,
        at: u64,
    ) {
        if self.newer.len() >= Self::CAP / 2 && !self.newer.contains_key(&mac) {
            self.older = std::mem::take(&mut self.newer);
        }
        self.older.remove(&mac);
        self.newer.insert(mac, (kind, ip, at));
    }

    fn all(&self) -> impl Iterator<Item = (&qdhcp_protocol::Mac, &(RecentKind, Ipv4Addr, u64))> {
        self.older.iter().chain(self.newer.iter())
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
            .all()
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

#[cfg(test)]
mod recent_tests {
    use super::*;
    use qdhcp_protocol::Mac;

    #[test]
    fn recent_keeps_the_newest_clients_within_its_bound_and_one_entry_per_client() {
        let mut r = Recent::default();
        let mac = |i: u32| Mac([0xfa, 0x16, 0x3e, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        let ip = Ipv4Addr::new(10, 0, 0, 1);
        for i in 0..10_000u32 {
            r.note(mac(i), RecentKind::Offered, ip, u64::from(i));
            assert!(r.newer.len() + r.older.len() <= Recent::CAP);
        }
        let all: Vec<_> = r.all().collect();
        assert!(
            all.iter().any(|(m, _)| **m == mac(9_999)),
            "the newest is kept"
        );
        assert!(
            !all.iter().any(|(m, _)| **m == mac(0)),
            "the oldest are forgotten"
        );
        // a client noted again is listed once, with its last event
        r.note(mac(9_000), RecentKind::Released, ip, 20_000);
        let again: Vec<_> = r.all().filter(|(m, _)| **m == mac(9_000)).collect();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].1 .0, RecentKind::Released);
    }
}
