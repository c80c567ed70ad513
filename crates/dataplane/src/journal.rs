//! The lease journal: an append-only file of lease changes, each line checksummed. A batch of
//! changes is written and made durable with one fdatasync (group commit), and only then are
//! the ACKs of that batch sent. Compaction rewrites the live records to a new file and renames
//! it into place, so a crash at any moment leaves either the old or the new journal.

use ahash::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use qdhcp_protocol::{ClientId, Lease, LeaseChange, Mac};

/// A journal failure, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The journal could not be opened, read or written.
    #[error("lease journal {path}: {source}")]
    Io {
        /// The journal file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// One journal record: a lease change in a named network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Network name (`default` in dnsmasq mode, the network id in serve mode).
    pub network: String,
    /// The change.
    pub change: LeaseChange,
}

/// What loading found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The records in file order.
    pub records: Vec<Record>,
    /// Lines that failed their checksum or were cut short (line numbers), skipped.
    pub damaged: Vec<usize>,
}

/// The append-only lease journal.
pub struct Journal {
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    file: File,
    records: u64,
    buf: Vec<u8>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|x| x.to_string())
        .unwrap_or_else(|| "*".into())
}

/// Encodes one record as a checksummed line.
pub fn encode(r: &Record, out: &mut Vec<u8>) {
    let body = match &r.change {
        LeaseChange::Bind(l) => format!(
            "B {} {} {} {} {} {}",
            r.network,
            l.mac,
            l.ip,
            l.expires.unwrap_or(0),
            opt(&l.client_id),
            l.hostname.as_deref().unwrap_or("*")
        ),
        LeaseChange::Release { mac, ip } => format!("R {} {} {}", r.network, mac, ip),
        LeaseChange::Decline { mac, ip, until } => {
            format!("D {} {} {} {}", r.network, mac, ip, until)
        }
    };
    let crc = crc32fast::hash(body.as_bytes());
    out.extend_from_slice(body.as_bytes());
    out.extend_from_slice(format!(" {crc:08x}\n").as_bytes());
}

/// Decodes one line; `None` when damaged.
pub fn decode(line: &str) -> Option<Record> {
    let (body, crc) = line.rsplit_once(' ')?;
    if u32::from_str_radix(crc, 16).ok()? != crc32fast::hash(body.as_bytes()) {
        return None;
    }
    let f: Vec<&str> = body.split(' ').collect();
    let mac = |s: &str| s.parse::<Mac>().ok();
    let ip = |s: &str| s.parse::<Ipv4Addr>().ok();
    let change = match (f.first()?, f.len()) {
        (&"B", 7) => {
            let exp: u64 = f[4].parse().ok()?;
            LeaseChange::Bind(Lease {
                mac: mac(f[2])?,
                ip: ip(f[3])?,
                expires: (exp != 0).then_some(exp),
                client_id: ClientId::parse_dnsmasq(f[5]),
                hostname: (f[6] != "*").then(|| f[6].to_string()),
            })
        }
        (&"R", 4) => LeaseChange::Release {
            mac: mac(f[2])?,
            ip: ip(f[3])?,
        },
        (&"D", 5) => LeaseChange::Decline {
            mac: mac(f[2])?,
            ip: ip(f[3])?,
            until: f[4].parse().ok()?,
        },
        _ => return None,
    };
    Some(Record {
        network: f[1].to_string(),
        change,
    })
}

impl Journal {
    /// Opens (creating if needed) the journal at `path` and reads every intact record.
    pub fn open(path: &Path) -> Result<(Journal, Loaded), JournalError> {
        let mut loaded = Loaded::default();
        match File::open(path) {
            Ok(f) => {
                let mut reader = BufReader::new(f);
                let mut line = Vec::new();
                let mut n = 0;
                loop {
                    line.clear();
                    let got = reader.read_until(b'\n', &mut line).map_err(io_err(path))?;
                    if got == 0 {
                        break;
                    }
                    n += 1;
                    let complete = line.last() == Some(&b'\n');
                    let rec = std::str::from_utf8(&line)
                        .ok()
                        .filter(|_| complete)
                        .and_then(|s| decode(s.trim_end_matches('\n')));
                    match rec {
                        Some(r) => loaded.records.push(r),
                        None => loaded.damaged.push(n),
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(path)(e)),
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_err(path))?;
        let j = Journal {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner {
                file,
                records: loaded.records.len() as u64,
                buf: Vec::with_capacity(64 * 1024),
            }),
        };
        if !loaded.damaged.is_empty() {
            // A torn tail would glue onto the next append: start a fresh line.
            j.lock().file.write_all(b"\n").map_err(io_err(path))?;
        }
        Ok((j, loaded))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `records` and makes them durable with one fdatasync; then runs `after` while
    /// still holding the journal, so in-memory state changes in journal order.
    pub fn commit<T>(
        &self,
        records: &[Record],
        after: impl FnOnce() -> T,
    ) -> Result<T, JournalError> {
        let mut g = self.lock();
        if !records.is_empty() {
            let inner = &mut *g;
            inner.buf.clear();
            for r in records {
                encode(r, &mut inner.buf);
            }
            let res = inner
                .file
                .write_all(&inner.buf)
                .and_then(|_| inner.file.sync_data());
            if let Err(e) = res {
                // Leave no half-written line behind for the next append.
                let _ = inner.file.write_all(b"\n");
                return Err(io_err(&self.path)(e));
            }
            inner.records += records.len() as u64;
        }
        Ok(after())
    }

    /// Records appended since the last compaction (or load).
    pub fn record_count(&self) -> u64 {
        self.lock().records
    }

    /// Replaces the journal with `live` (the current leases and quarantines), atomically.
    /// `live` is called with the journal held and the journal's end noted with it; the big
    /// write of the snapshot then runs while commits go on, and only the records appended
    /// meanwhile are copied over with the journal held, before the swap. ACKs wait for that
    /// short tail, not for the whole rewrite.
    pub fn compact(&self, live: impl FnOnce() -> Vec<Record>) -> Result<usize, JournalError> {
        let (records, mark, count_at_mark) = {
            let g = self.lock();
            let records = live();
            let mark = g.file.metadata().map_err(io_err(&self.path))?.len();
            (records, mark, g.records)
        };
        let tmp = self.path.with_extension("compact");
        let mut buf = Vec::with_capacity(records.len() * 80);
        for r in &records {
            encode(r, &mut buf);
        }
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&buf)
            .and_then(|_| f.sync_data())
            .map_err(io_err(&tmp))?;

        let mut g = self.lock();
        let mut tail = Vec::new();
        File::open(&self.path)
            .and_then(|mut old| {
                old.seek(SeekFrom::Start(mark))?;
                old.read_to_end(&mut tail)
            })
            .map_err(io_err(&self.path))?;
        f.write_all(&tail)
            .and_then(|_| f.sync_all())
            .map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(io_err(&self.path))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        g.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io_err(&self.path))?;
        g.records = records.len() as u64 + (g.records - count_at_mark);
        Ok(records.len())
    }
}

/// Replays records into per-network lease tables, dropping what has expired by `now`.
pub fn replay(records: &[Record], now: u64) -> HashMap<String, crate::leases::LeaseTable> {
    let mut out: HashMap<String, crate::leases::LeaseTable> = HashMap::default();
    for r in records {
        out.entry(r.network.clone()).or_default().apply(&r.change);
    }
    for t in out.values_mut() {
        t.reap(now);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use qdhcp_protocol::LeaseView;

    fn bind(m: u8, exp: Option<u64>) -> Record {
        Record {
            network: "net1".into(),
            change: LeaseChange::Bind(Lease {
                mac: Mac([0xfa, 0x16, 0x3e, 0, 0, m]),
                client_id: Some(ClientId(vec![1, 2])),
                ip: Ipv4Addr::new(10, 0, 0, m),
                expires: exp,
                hostname: Some(format!("host-{m}")),
            }),
        }
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
        // simulate a crash mid-append
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"B net1 fa:16:3e:00:00:04 10.0.").unwrap();
        drop(f);
        let (j, l) = Journal::open(&p).unwrap();
        assert_eq!(l.records.len(), 3);
        assert_eq!(l.damaged, vec![4]);
        j.commit(&[bind(5, None)], || ()).unwrap();
        drop(j);
        let (_, l) = Journal::open(&p).unwrap();
        assert_eq!(l.records.len(), 4, "append after a torn tail is intact");
        let tables = replay(&l.records, 100);
        let t = &tables["net1"];
        assert_eq!(t.len(), 3, "the lease that expired at 50 is gone");
        assert!(t.lease(Mac([0xfa, 0x16, 0x3e, 0, 0, 5])).is_some());
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
                    if let LeaseChange::Bind(l) = &mut r.change {
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
}
