//! The in-memory lease table of one network: O(1) by MAC, the declined-address quarantine,
//! expiry reaping. Durability is the journal's job; this table is rebuilt from it at start.

use ahash::HashMap;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::Ipv4Addr;

use qdhcp_protocol::{Lease, LeaseChange, LeaseView, Mac};

/// Leases and quarantines of one network.
#[derive(Debug, Default)]
pub struct LeaseTable {
    /// Each lease with the expiry its entry in `due` was scheduled for (none if infinite).
    by_mac: HashMap<Mac, (Lease, Option<u64>)>,
    /// Leases by the time they may expire, earliest first: reaping looks only at what is due,
    /// so a table of 1,000,000 leases is not scanned every second under the serving lock.
    /// Entries whose time no longer matches the lease's schedule are stale and skipped.
    due: BinaryHeap<Reverse<(u64, Mac)>>,
    declined: HashMap<Mac, (Ipv4Addr, u64)>,
    /// Changes not yet taken by a follower (see [`LeaseTable::follow`]); `None` when nobody
    /// follows, so that serve mode keeps no log.
    log: Option<Vec<LeaseChange>>,
    /// The log outgrew [`LeaseTable::log_cap`] before the follower took it (a follower starved
    /// under overload): the log is dropped and the follower gets a fresh copy instead.
    overflowed: bool,
    /// Told at once when a lease goes away (see [`LeaseTable::follow_waking`]).
    removal_wake: Option<std::sync::mpsc::SyncSender<()>>,
}

/// What a follower needs to catch up with the table.
#[derive(Debug)]
pub enum Catchup {
    /// The changes since the last catch-up, in order.
    Changes(Vec<LeaseChange>),
    /// The log overflowed: a fresh copy of the whole table.
    Copy(LeaseTable),
}

impl LeaseView for LeaseTable {
    fn lease(&self, mac: Mac) -> Option<&Lease> {
        self.by_mac.get(&mac).map(|(l, _)| l)
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
    /// Starts logging changes for a follower and returns a copy of the table as it is now: the
    /// follower keeps that copy up to date from [`LeaseTable::take_log`], so that exporting
    /// 100,000 leases never holds the lock the serving threads take.
    pub fn follow(&mut self) -> LeaseTable {
        self.log = Some(Vec::new());
        self.overflowed = false;
        self.copy()
    }

    fn copy(&self) -> LeaseTable {
        let mut copy = LeaseTable::default();
        copy.by_mac.reserve(self.by_mac.len());
        for (l, _) in self.by_mac.values() {
            copy.bind(l.clone());
        }
        copy
    }

    /// Inserts or renews a lease; schedules it for reaping unless an entry due no later is
    /// already queued (a renewal only moves the expiry out).
    fn bind(&mut self, l: Lease) {
        use std::collections::hash_map::Entry;
        let mac = l.mac;
        let expires = l.expires;
        // one hash lookup: this runs for every ACK
        let push = match self.by_mac.entry(mac) {
            Entry::Vacant(v) => {
                v.insert((l, expires));
                expires
            }
            Entry::Occupied(mut o) => {
                let (lease, sched) = o.get_mut();
                *lease = l;
                match (*sched, expires) {
                    (Some(p), Some(e)) if p <= e => None,
                    (_, e) => {
                        *sched = e;
                        e
                    }
                }
            }
        };
        if let Some(e) = push {
            self.due.push(Reverse((e, mac)));
        }
    }

    /// What the follower needs to catch up since its last call (no change if nobody follows).
    pub fn take_log(&mut self) -> Catchup {
        if std::mem::take(&mut self.overflowed) {
            self.log = Some(Vec::new());
            return Catchup::Copy(self.copy());
        }
        match &mut self.log {
            Some(log) => {
                let cap = log.len();
                Catchup::Changes(std::mem::replace(log, Vec::with_capacity(cap)))
            }
            None => Catchup::Changes(Vec::new()),
        }
    }

    /// [`LeaseTable::follow`], and `wake` is sent to (without blocking) whenever a lease is
    /// released, declined or revoked: a reader of the exported view (Neutron re-reads the
    /// leases file 0.3 s after its `dhcp_release`) must see it gone without waiting for the
    /// next periodic export. Grants wait for the periodic export.
    pub fn follow_waking(&mut self, wake: std::sync::mpsc::SyncSender<()>) -> LeaseTable {
        self.removal_wake = Some(wake);
        self.follow()
    }

    /// The longest log kept: replaying more than the table holds costs more than a copy, and
    /// memory stays within about twice the table however long the follower is kept from
    /// running (a floor keeps small tables from being copied at every catch-up).
    fn log_cap(&self) -> usize {
        self.by_mac.len().max(4096)
    }

    fn record(&mut self, c: LeaseChange) {
        if let (Some(w), LeaseChange::Release { .. } | LeaseChange::Decline { .. }) =
            (&self.removal_wake, &c)
        {
            // full means a wake-up is pending already
            let _ = w.try_send(());
        }
        let cap = self.log_cap();
        if let Some(log) = &mut self.log {
            if self.overflowed {
                return;
            }
            if log.len() >= cap {
                self.overflowed = true;
                *log = Vec::new();
                return;
            }
            log.push(c);
        }
    }

    /// Applies a decided change.
    pub fn apply(&mut self, c: &LeaseChange) {
        if self.log.is_some() {
            self.record(c.clone());
        }
        match c {
            LeaseChange::Bind(l) => {
                self.declined.remove(&l.mac);
                self.bind(l.clone());
            }
            LeaseChange::Release { mac, ip } => {
                if self.by_mac.get(mac).is_some_and(|(l, _)| l.ip == *ip) {
                    self.by_mac.remove(mac);
                }
            }
            LeaseChange::Decline { mac, ip, until } => {
                if self.by_mac.get(mac).is_some_and(|(l, _)| l.ip == *ip) {
                    self.by_mac.remove(mac);
                }
                self.declined.insert(*mac, (*ip, *until));
            }
        }
    }

    /// Drops the lease of a client whose reservation was removed or re-addressed.
    pub fn revoke(&mut self, mac: Mac) -> Option<Lease> {
        let l = self.by_mac.remove(&mac).map(|(l, _)| l);
        if let Some(l) = &l {
            let ip = l.ip;
            self.record(LeaseChange::Release { mac, ip });
        }
        l
    }

    /// Removes expired leases and quarantines; returns how many leases expired.
    pub fn reap(&mut self, now: u64) -> usize {
        let mut n = 0;
        while let Some(&Reverse((at, mac))) = self.due.peek() {
            if at > now {
                break;
            }
            self.due.pop();
            let Some((l, sched)) = self.by_mac.get_mut(&mac) else {
                continue; // released since
            };
            if *sched != Some(at) {
                continue; // stale: rescheduled earlier
            }
            match l.expires {
                Some(e) if e <= now => {
                    self.by_mac.remove(&mac);
                    n += 1;
                }
                // renewed since: due again at its new expiry
                Some(e) => {
                    *sched = Some(e);
                    self.due.push(Reverse((e, mac)));
                }
                None => *sched = None,
            }
        }
        if !self.declined.is_empty() {
            self.declined.retain(|_, &mut (_, until)| until > now);
        }
        n
    }

    /// Every live lease.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.by_mac.values().map(|(l, _)| l)
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
    fn a_waking_follower_is_woken_by_removals_only() {
        let mut t = LeaseTable::default();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let _copy = t.follow_waking(tx);
        t.apply(&LeaseChange::Bind(lease(1, 1, None)));
        t.apply(&LeaseChange::Bind(lease(2, 2, None)));
        assert!(
            rx.try_recv().is_err(),
            "a grant waits for the periodic export"
        );
        t.apply(&LeaseChange::Release {
            mac: Mac([0xfa, 0x16, 0x3e, 0, 0, 1]),
            ip: Ipv4Addr::new(10, 0, 0, 1),
        });
        t.revoke(Mac([0xfa, 0x16, 0x3e, 0, 0, 2]));
        assert!(rx.try_recv().is_ok(), "woken by the release");
        assert!(rx.try_recv().is_err(), "wake-ups coalesce, nothing blocks");
    }

    #[test]
    fn a_follower_replaying_the_log_sees_the_same_leases() {
        let mut t = LeaseTable::default();
        t.apply(&LeaseChange::Bind(lease(1, 1, Some(100))));
        let mut copy = t.follow();
        assert!(copy.log.is_none());
        t.apply(&LeaseChange::Bind(lease(2, 2, None)));
        t.apply(&LeaseChange::Bind(lease(3, 3, Some(50))));
        t.revoke(Mac([0xfa, 0x16, 0x3e, 0, 0, 1]));
        t.apply(&LeaseChange::Decline {
            mac: Mac([0xfa, 0x16, 0x3e, 0, 0, 2]),
            ip: Ipv4Addr::new(10, 0, 0, 2),
            until: 500,
        });
        t.reap(60);
        let Catchup::Changes(log) = t.take_log() else {
            panic!("no overflow here")
        };
        for c in log {
            copy.apply(&c);
        }
        copy.reap(60);
        let ips = |t: &LeaseTable| {
            let mut v: Vec<_> = t.leases().map(|l| (l.mac, l.ip)).collect();
            v.sort();
            v
        };
        assert_eq!(ips(&copy), ips(&t));
        assert!(
            matches!(t.take_log(), Catchup::Changes(l) if l.is_empty()),
            "taken once"
        );
        // a follower kept away long enough gets a copy instead of an endless log
        for i in 0..5_000u32 {
            let mut l = lease(1, 1, None);
            l.mac = Mac([0xfa, 0x16, 0x3e, 1, (i >> 8) as u8, i as u8]);
            t.apply(&LeaseChange::Bind(l));
        }
        assert!(t.log.as_ref().is_some_and(|l| l.len() <= 4096));
        let Catchup::Copy(fresh) = t.take_log() else {
            panic!("expected a copy after the overflow")
        };
        assert_eq!(ips(&fresh), ips(&t));
        assert!(matches!(t.take_log(), Catchup::Changes(l) if l.is_empty()));
    }

    #[test]
    fn a_renewed_lease_is_reaped_at_its_new_expiry_only() {
        let mut t = LeaseTable::default();
        t.apply(&LeaseChange::Bind(lease(1, 1, Some(100))));
        t.apply(&LeaseChange::Bind(lease(1, 1, Some(200))));
        t.apply(&LeaseChange::Bind(lease(2, 2, Some(150))));
        assert_eq!(t.reap(100), 0, "renewed to 200");
        assert_eq!(t.reap(150), 1, "lease 2 expired");
        assert_eq!(t.len(), 1);
        // released and bound again: the old entry must not reap the new lease early
        t.apply(&LeaseChange::Release {
            mac: Mac([0xfa, 0x16, 0x3e, 0, 0, 1]),
            ip: Ipv4Addr::new(10, 0, 0, 1),
        });
        t.apply(&LeaseChange::Bind(lease(1, 1, Some(400))));
        assert_eq!(t.reap(300), 0);
        assert_eq!(t.reap(400), 1);
        assert!(t.is_empty());
        // shortened: rescheduled earlier, the later entry is stale
        t.apply(&LeaseChange::Bind(lease(3, 3, Some(900))));
        t.apply(&LeaseChange::Bind(lease(3, 3, Some(500))));
        assert_eq!(t.reap(500), 1);
        assert_eq!(t.reap(900), 0);
        assert!(t.due.is_empty());
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
