//! The in-memory lease table of one network: O(1) by MAC, the declined-address quarantine,
//! expiry reaping. Durability is the journal's job; this table is rebuilt from it at start.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use qdhcp_protocol::{Lease, LeaseChange, LeaseView, Mac};

/// Leases and quarantines of one network.
#[derive(Debug, Default)]
pub struct LeaseTable {
    by_mac: HashMap<Mac, Lease>,
    declined: HashMap<Mac, (Ipv4Addr, u64)>,
    /// Set on every change; cleared by whoever exports the table (the dnsmasq leases file).
    pub dirty: bool,
}

impl LeaseView for LeaseTable {
    fn lease(&self, mac: Mac) -> Option<&Lease> {
        self.by_mac.get(&mac)
    }
    fn declined(&self, mac: Mac, ip: Ipv4Addr, now: u64) -> bool {
        self.declined
            .get(&mac)
            .is_some_and(|&(i, until)| i == ip && now < until)
    }
    fn count(&self) -> usize {
        self.by_mac.len()
    }
}

impl LeaseTable {
    /// Applies a decided change.
    pub fn apply(&mut self, c: &LeaseChange) {
        self.dirty = true;
        match c {
            LeaseChange::Bind(l) => {
                self.declined.remove(&l.mac);
                self.by_mac.insert(l.mac, l.clone());
            }
            LeaseChange::Release { mac, ip } => {
                if self.by_mac.get(mac).is_some_and(|l| l.ip == *ip) {
                    self.by_mac.remove(mac);
                }
            }
            LeaseChange::Decline { mac, ip, until } => {
                if self.by_mac.get(mac).is_some_and(|l| l.ip == *ip) {
                    self.by_mac.remove(mac);
                }
                self.declined.insert(*mac, (*ip, *until));
            }
        }
    }

    /// Drops the lease of a client whose reservation was removed or re-addressed.
    pub fn revoke(&mut self, mac: Mac) -> Option<Lease> {
        let l = self.by_mac.remove(&mac);
        if l.is_some() {
            self.dirty = true;
        }
        l
    }

    /// Removes expired leases and quarantines; returns how many leases expired.
    pub fn reap(&mut self, now: u64) -> usize {
        let before = self.by_mac.len();
        self.by_mac.retain(|_, l| l.expires.is_none_or(|e| e > now));
        self.declined.retain(|_, &mut (_, until)| until > now);
        let n = before - self.by_mac.len();
        if n > 0 {
            self.dirty = true;
        }
        n
    }

    /// Every live lease.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.by_mac.values()
    }

    /// Live quarantines as (mac, ip, until).
    pub fn quarantines(&self) -> impl Iterator<Item = (Mac, Ipv4Addr, u64)> + '_ {
        self.declined.iter().map(|(m, &(i, u))| (*m, i, u))
    }

    /// Number of live leases.
    pub fn len(&self) -> usize {
        self.by_mac.len()
    }

    /// True when no lease is held.
    pub fn is_empty(&self) -> bool {
        self.by_mac.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(m: u8, ip: u8, expires: Option<u64>) -> Lease {
        Lease {
            mac: Mac([0xfa, 0x16, 0x3e, 0, 0, m]),
            client_id: None,
            ip: Ipv4Addr::new(10, 0, 0, ip),
            expires,
            hostname: None,
        }
    }

    #[test]
    fn bind_release_decline_and_reap() {
        let mut t = LeaseTable::default();
        t.apply(&LeaseChange::Bind(lease(1, 1, Some(100))));
        t.apply(&LeaseChange::Bind(lease(2, 2, None)));
        assert_eq!(t.len(), 2);
        // a release naming another address is not this client's lease
        t.apply(&LeaseChange::Release {
            mac: Mac([0xfa, 0x16, 0x3e, 0, 0, 2]),
            ip: Ipv4Addr::new(10, 0, 0, 9),
        });
        assert_eq!(t.len(), 2);
        assert_eq!(t.reap(100), 1);
        assert_eq!(t.len(), 1, "infinite lease survives");
        let m2 = Mac([0xfa, 0x16, 0x3e, 0, 0, 2]);
        t.apply(&LeaseChange::Decline {
            mac: m2,
            ip: Ipv4Addr::new(10, 0, 0, 2),
            until: 500,
        });
        assert!(t.is_empty());
        assert!(t.declined(m2, Ipv4Addr::new(10, 0, 0, 2), 499));
        assert!(!t.declined(m2, Ipv4Addr::new(10, 0, 0, 2), 500));
        t.reap(600);
        assert_eq!(t.quarantines().count(), 0);
    }
}
