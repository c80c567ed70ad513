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
