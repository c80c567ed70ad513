//! The journal: records round-tripped, reopened after torn tails and gaps, preallocated zeros, a second opener, compaction with commits during it.

use super::*;
use qdhcp_protocol::LeaseView;
use qdhcp_protocol::{ClientId, Lease, LeaseChange, Mac};
use std::net::Ipv4Addr;

/// Where the records end: the first zero byte, or the end of the file.
fn end_of_records(p: &Path) -> u64 {
    let b = std::fs::read(p).unwrap();
    b.iter().position(|&x| x == 0).unwrap_or(b.len()) as u64
}

/// Writes `bytes` where the next record would go, as a crash in a commit leaves them.
fn write_at_end(p: &Path, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(p).unwrap();
    f.write_all_at(bytes, end_of_records(p)).unwrap();
}

fn bind(m: u8, exp: Option<u64>) -> Record {
    Record {
        network: "net1".into(),
        change: LeaseChange::Bind(Lease {
            mac: Mac([0xfa, 0x16, 0x3e, 0, 0, m]),
            client_id: Some(ClientId(vec![1, 2])),
            ip: Ipv4Addr::new(10, 0, 0, m),
            expires: exp,
            hostname: Some(format!("host-{m}")),
        })
        .into(),
    }
}

#[test]
fn dhcpv6_records_round_trip_beside_dhcpv4_ones() {
    use qdhcp_protocol::v6::{Change6, Lease6};
    let duid: qdhcp_protocol::v6::Duid =
        "00:01:00:01:2c:aa:bb:cc:fa:16:3e:00:00:01".parse().unwrap();
    let addr: std::net::Ipv6Addr = "2001:db8:6::103".parse().unwrap();
    for change in [
        Change6::Bind(Lease6 {
            duid: duid.clone(),
            iaid: 7,
            addr,
            mac: Mac([0xfa, 0x16, 0x3e, 0, 0, 1]),
            expires: Some(1_700_000_000),
            hostname: Some("host-2001-db8-6--103".into()),
        }),
        Change6::Release {
            duid: duid.clone(),
            iaid: 7,
            addr,
        },
        Change6::Decline {
            duid,
            iaid: 4_000_000_000,
            addr,
        },
    ] {
        let r = Record {
            network: "default".into(),
            change: change.into(),
        };
        let mut line = Vec::new();
        encode(&r, &mut line);
        let text = String::from_utf8(line).unwrap();
        assert_eq!(decode(text.trim_end()), Some(r), "{text}");
    }
    // the v4 replay leaves v6 records alone
    let b6 = Record {
        network: "default".into(),
        change: Change6::Release {
            duid: "00:03:00:01:fa:16:3e:00:00:01".parse().unwrap(),
            iaid: 1,
            addr,
        }
        .into(),
    };
    assert!(!replay(&[b6], 0).contains_key("default"));
}

#[test]
fn records_round_trip_and_damage_is_detected() {
    let r = bind(7, Some(1000));
    let mut buf = Vec::new();
    encode(&r, &mut buf);
    let line = std::str::from_utf8(&buf).unwrap().trim_end();
    assert_eq!(decode(line), Some(r));
    let flipped = line.replace("10.0.0.7", "10.0.0.8");
    assert_eq!(decode(&flipped), None);
}

#[test]
fn committed_records_survive_reopen_and_torn_tail_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("leases.journal");
    {
        let (j, l) = Journal::open(&p).unwrap();
        assert!(l.records.is_empty());
        j.commit(&[bind(1, None), bind(2, Some(50))], || ())
            .unwrap();
        j.commit(&[bind(3, None)], || ()).unwrap();
    }
    // simulate a crash mid-commit
    write_at_end(&p, b"B net1 fa:16:3e:00:00:04 10.0.");
    let (j, l) = Journal::open(&p).unwrap();
    assert_eq!(l.records.len(), 3);
    assert_eq!(l.damaged, vec![4]);
    j.commit(&[bind(5, None)], || ()).unwrap();
    drop(j);
    let (_, l) = Journal::open(&p).unwrap();
    assert_eq!(l.records.len(), 4, "append after a torn tail is intact");
    assert_eq!(
        l.damaged,
        vec![4],
        "and the damage is reported once, not more"
    );
    let (_, l) = Journal::open(&p).unwrap();
    assert_eq!(l.damaged, vec![4], "reopening adds no damaged lines");
    let tables = replay(&l.records, 100);
    let t = &tables["net1"];
    assert_eq!(t.len(), 3, "the lease that expired at 50 is gone");
    assert!(t.lease(Mac([0xfa, 0x16, 0x3e, 0, 0, 5])).is_some());
}

#[test]
fn a_second_opener_waits_for_the_holder_and_follows_its_last_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("leases.journal");
    let (j, _) = Journal::open(&p).unwrap();
    j.commit(&[bind(1, None)], || ()).unwrap();
    let p2 = p.clone();
    let waiter = std::thread::spawn(move || {
        let t0 = Instant::now();
        let (j2, l) = Journal::open(&p2).unwrap();
        (t0.elapsed(), l.records, j2)
    });
    std::thread::sleep(Duration::from_millis(150));
    // the holder goes on as an exiting instance does: a commit, a compaction that replaces
    // the file, one more commit, then it lets go
    j.commit(&[bind(2, None)], || ()).unwrap();
    j.compact(|| vec![bind(1, None), bind(2, None)]).unwrap();
    j.commit(&[bind(3, None)], || ()).unwrap();
    drop(j);
    let (waited, records, j2) = waiter.join().unwrap();
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    assert_eq!(records, vec![bind(1, None), bind(2, None), bind(3, None)]);
    // and it appends to the file that is at the path now
    j2.commit(&[bind(4, None)], || ()).unwrap();
    drop(j2);
    assert_eq!(Journal::open(&p).unwrap().1.records.len(), 4);
}

#[test]
fn a_journal_without_zeros_ahead_is_read_and_continued() {
    // journals written before the zero reserve: records up to the end of the file
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("j");
    let mut old = Vec::new();
    encode(&bind(1, None), &mut old);
    encode(&bind(2, None), &mut old);
    old.extend_from_slice(b"B net1 fa:16:3e:00:00:03 10");
    std::fs::write(&p, &old).unwrap();
    let (j, l) = Journal::open(&p).unwrap();
    assert_eq!(l.records, vec![bind(1, None), bind(2, None)]);
    assert_eq!(l.damaged, vec![3]);
    j.commit(&[bind(4, None)], || ()).unwrap();
    drop(j);
    let (_, l) = Journal::open(&p).unwrap();
    assert_eq!(l.records, vec![bind(1, None), bind(2, None), bind(4, None)]);
}

#[test]
fn commits_overwrite_zeros_ahead_and_do_not_grow_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("j");
    let (j, _) = Journal::open(&p).unwrap();
    let len = std::fs::metadata(&p).unwrap().len();
    assert!(len >= 8 << 20, "zeros are written ahead: {len}");
    for m in 0..100 {
        j.commit(&[bind(m, None)], || ()).unwrap();
    }
    assert_eq!(std::fs::metadata(&p).unwrap().len(), len);
    j.compact(|| vec![bind(7, None)]).unwrap();
    assert!(
        std::fs::metadata(&p).unwrap().len() >= 8 << 20,
        "and after a compaction"
    );
    j.commit(&[bind(8, None)], || ()).unwrap();
    drop(j);
    let (_, l) = Journal::open(&p).unwrap();
    assert_eq!(l.records, vec![bind(7, None), bind(8, None)]);
    assert!(l.damaged.is_empty());
}

#[test]
fn records_after_a_gap_of_zeros_are_never_replayed() {
    // A crash in a commit whose later blocks reached the disk but an earlier one did not:
    // those records were never acknowledged, and must not come back after later commits.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("j");
    let (j, _) = Journal::open(&p).unwrap();
    j.commit(&[bind(1, None)], || ()).unwrap();
    drop(j);
    let mut stale = Vec::new();
    encode(&bind(250, None), &mut stale);
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(&stale, end_of_records(&p) + 4096).unwrap();
    drop(f);
    let (j, l) = Journal::open(&p).unwrap();
    assert_eq!(l.records, vec![bind(1, None)]);
    for m in 2..200 {
        j.commit(&[bind(m, None)], || ()).unwrap();
    }
    drop(j);
    let (_, l) = Journal::open(&p).unwrap();
    assert_eq!(l.records.len(), 199);
    assert!(
        !l.records.contains(&bind(250, None)),
        "the stale record stays gone"
    );
}

#[test]
fn compaction_keeps_only_live_records() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("j");
    let (j, _) = Journal::open(&p).unwrap();
    for _ in 0..10 {
        j.commit(&[bind(1, None)], || ()).unwrap();
    }
    assert_eq!(j.record_count(), 10);
    j.compact(|| vec![bind(1, None)]).unwrap();
    j.commit(&[bind(2, None)], || ()).unwrap();
    drop(j);
    let (_, l) = Journal::open(&p).unwrap();
    assert_eq!(l.records, vec![bind(1, None), bind(2, None)]);
}

/// Counts what the journal tells its pacing, and checks that an urgent section is the only
/// place the journal is held by compaction.
#[derive(Default)]
struct Counted {
    urgent: std::sync::atomic::AtomicUsize,
    done: std::sync::atomic::AtomicUsize,
    yields: std::sync::atomic::AtomicUsize,
}

impl Pacing for std::sync::Arc<Counted> {
    fn urgent(&self) -> bool {
        self.urgent
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        true
    }
    fn done(&self, token: bool) {
        assert!(token, "done with the token urgent gave");
        self.done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    fn yield_now(&self) {
        self.yields
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn compaction_tells_its_pacing_where_it_holds_the_journal_and_where_serving_may_go_first() {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("j");
    let counted = std::sync::Arc::new(Counted::default());
    let (j, _) = Journal::open(&p).unwrap();
    let j = j.paced(counted.clone());
    let live: Vec<Record> = (0..3000u16)
        .map(|i| {
            let mut r = bind(1, None);
            if let Change::V4(LeaseChange::Bind(l)) = &mut r.change {
                l.mac = Mac([0xfa, 0x16, 0x3e, 1, (i >> 8) as u8, i as u8]);
            }
            r
        })
        .collect();
    j.compact(|| live.clone()).unwrap();
    // the snapshot taken, the end read while catching up, the swap: each held, each ended
    let urgent = counted.urgent.load(SeqCst);
    assert!(urgent >= 2, "{urgent}");
    assert_eq!(counted.done.load(SeqCst), urgent);
    // 3,000 records encoded in chunks of 1,024, and zeros written ahead: serving may go first
    assert!(
        counted.yields.load(SeqCst) >= 2,
        "{}",
        counted.yields.load(SeqCst)
    );
    drop(j);
    let (_, l) = Journal::open(&p).unwrap();
    assert_eq!(l.records.len(), 3000);
}

#[test]
fn records_appended_during_a_compaction_are_copied_outside_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("j");
    let (j, _) = Journal::open(&p).unwrap();
    let live = vec![bind(1, None)];
    let mut appended = Vec::new();
    let c = j
        .compact_with(
            || live.clone(),
            || {
                // the writer goes on while the snapshot is written: 2,000 records
                for i in 0..2_000u16 {
                    let mut r = bind(2, None);
                    if let Change::V4(LeaseChange::Bind(l)) = &mut r.change {
                        l.mac = Mac([0xfa, 0x16, 0x3e, 2, (i >> 8) as u8, i as u8]);
                    }
                    j.commit(std::slice::from_ref(&r), || ()).unwrap();
                    appended.push(r);
                }
            },
        )
        .unwrap();
    assert_eq!(c.records, 1);
    assert!(c.caught_up > CATCH_UP_LEFT, "{c:?}");
    // Before, every one of them was copied with the journal held.
    assert_eq!(c.locked_tail, 0, "nothing committed after the catch-up");
    j.commit(&[bind(3, None)], || ()).unwrap();
    drop(j);
    let (_, l) = Journal::open(&p).unwrap();
    let mut want = live;
    want.extend(appended);
    want.push(bind(3, None));
    assert_eq!(l.records, want, "snapshot, then every append in order");
    assert!(l.damaged.is_empty());
}

#[test]
fn commits_during_a_compaction_survive_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("j");
    let (j, _) = Journal::open(&p).unwrap();
    let committed = std::sync::Mutex::new(Vec::new());
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let mut i: u16 = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // a new client each time: a record lost from a compaction stays lost
                let mut r = bind(1, None);
                if let Change::V4(LeaseChange::Bind(l)) = &mut r.change {
                    l.mac = Mac([0xfa, 0x16, 0x3e, 0, (i >> 8) as u8, i as u8]);
                }
                i = i.wrapping_add(1);
                j.commit(std::slice::from_ref(&r), || {
                    committed.lock().unwrap().push(r.clone())
                })
                .unwrap();
            }
        });
        for _ in 0..20 {
            j.compact(|| committed.lock().unwrap().clone()).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    drop(j);
    let (_, l) = Journal::open(&p).unwrap();
    assert!(l.damaged.is_empty());
    let t = &replay(&l.records, 0)["net1"];
    let n = committed.lock().unwrap().len().min(65536);
    assert_eq!(
        t.len(),
        n,
        "every committed lease is in the compacted journal"
    );
}
