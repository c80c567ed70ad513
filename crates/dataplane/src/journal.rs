//! The lease journal: an append-only file of lease changes, each line checksummed. A batch of
//! changes is written and made durable with one fdatasync (group commit), and only then are
//! the ACKs of that batch sent. Compaction rewrites the live records to a new file and renames
//! it into place, so a crash at any moment leaves either the old or the new journal.
//!
//! The file is kept zero-filled ahead of its last record (written when it is opened and when
//! it is compacted, never in a commit), and commits overwrite those zeros in place: the file's
//! size does not change, so each fdatasync writes the data alone and not the inode as well
//! (on ext4 without a journal, 0.089 ms instead of 0.125 ms at p50 here). The first zero byte
//! ends the journal; nothing after it is read.
// Unsafe code here only to call the kernel directly (the journal's lock file and fdatasync); every
// block says why it is sound.
#![allow(unsafe_code)]

use ahash::HashMap;
use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod record;
pub use record::{decode, encode, Change, Record};

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
    /// Another process kept the journal locked for longer than an exiting instance takes.
    #[error("lease journal {path}: still locked by another process after {waited:?} (another instance serving the same leases file?)")]
    Locked {
        /// The journal file.
        path: PathBuf,
        /// How long was waited.
        waited: Duration,
    },
}

/// How the journal's long work (preallocating zeros, rewriting itself) shares the machine with
/// the threads that serve: the journal says where it holds what serving waits for and where
/// serving may go first; its owner decides what that means (thread priorities in the
/// dataplane, [`crate::priority::ThreadPriority`]; nothing in tests and tools, [`Unpaced`]).
pub trait Pacing: Send + Sync {
    /// A section that serving waits for begins; the token goes back to [`Pacing::done`].
    fn urgent(&self) -> bool;
    /// That section ended.
    fn done(&self, token: bool);
    /// A point between chunks of work where serving may run first.
    fn yield_now(&self);
}

/// No pacing: the journal's work runs as it comes.
pub struct Unpaced;

impl Pacing for Unpaced {
    fn urgent(&self) -> bool {
        false
    }
    fn done(&self, _: bool) {}
    fn yield_now(&self) {}
}

/// Runs `f` as a section that serving waits for.
fn urgently<T>(p: &dyn Pacing, f: impl FnOnce() -> T) -> T {
    let token = p.urgent();
    let out = f();
    p.done(token);
    out
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
    /// How compaction shares the machine with serving (see [`Pacing`]).
    pacing: Box<dyn Pacing>,
}

struct Inner {
    file: File,
    /// Where the next record goes: just after the last one.
    pos: u64,
    /// Bytes after `pos` that a failed commit may have left; the next commit zeroes them.
    scrub: u64,
    records: u64,
    buf: Vec<u8>,
}

/// Zeros kept ahead of the records: three times the live journal (compaction comes at four
/// times), at least 8 MiB (about 95,000 records, what the journal takes before its first
/// compaction) and at most 64 MiB. Past them the file just grows.
fn reserve_for(content: u64) -> u64 {
    (3 * content).clamp(8 << 20, 64 << 20)
}

/// Writes `len` zeros at `at` and makes them durable; on any failure (a full disk) the file is
/// cut back to `at` and runs without the reserve. Skipped on tmpfs, where it would only take
/// memory. Returns the bytes reserved.
fn zero_fill(file: &File, at: u64, len: u64, pacing: &dyn Pacing) -> u64 {
    const TMPFS: nix::sys::statfs::FsType = nix::sys::statfs::TMPFS_MAGIC;
    if nix::sys::statfs::fstatfs(file).is_ok_and(|s| s.filesystem_type() == TMPFS) {
        return 0;
    }
    let zeros = vec![0u8; 256 << 10];
    let mut done = 0;
    let res = (|| {
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            file.write_all_at(&zeros[..n], at + done)?;
            done += n as u64;
            pacing.yield_now();
        }
        file.sync_data()
    })();
    match res {
        Ok(()) => len,
        Err(_) => {
            let _ = file.set_len(at);
            0
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Journal {
    /// Opens (creating if needed) the journal at `path` and reads every intact record. The
    /// journal is held with an exclusive `flock` while open, so a second process on the same
    /// file (a restarted dnsmasq-mode instance while the old one still exits) waits until the
    /// first has written its last record, instead of appending to a file about to be replaced.
    pub fn open(path: &Path) -> Result<(Journal, Loaded), JournalError> {
        let mut loaded = Loaded::default();
        let mut pos = 0u64;
        let mut torn = false;
        let file = open_locked(path)?;
        {
            let mut reader = BufReader::with_capacity(1 << 20, &file);
            let mut line = Vec::new();
            let mut n = 0;
            loop {
                let chunk = reader.fill_buf().map_err(io_err(path))?;
                if chunk.is_empty() {
                    break;
                }
                let Some(i) = chunk.iter().position(|&b| b == b'\n' || b == 0) else {
                    let len = chunk.len();
                    line.extend_from_slice(chunk);
                    reader.consume(len);
                    pos += len as u64;
                    continue;
                };
                let end_of_journal = chunk[i] == 0;
                line.extend_from_slice(&chunk[..i]);
                if end_of_journal {
                    pos += i as u64;
                    break;
                }
                reader.consume(i + 1);
                pos += i as u64 + 1;
                n += 1;
                if line.iter().all(u8::is_ascii_whitespace) {
                    line.clear();
                    continue;
                }
                match std::str::from_utf8(&line).ok().and_then(decode) {
                    Some(r) => loaded.records.push(r),
                    None => loaded.damaged.push(n),
                }
                line.clear();
            }
            if !line.is_empty() {
                // Cut short by a crash in the middle of a commit: never acknowledged.
                loaded.damaged.push(n + 1);
                torn = true;
            }
        }
        // Whatever follows the end (zeros, or a failed commit's leftovers) goes.
        file.set_len(pos).map_err(io_err(path))?;
        if torn {
            // A torn line would glue onto the next record: end it.
            file.write_all_at(b"\n", pos).map_err(io_err(path))?;
            pos += 1;
        }
        zero_fill(&file, pos, reserve_for(pos), &Unpaced);
        let j = Journal {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner {
                file,
                pos,
                scrub: 0,
                records: loaded.records.len() as u64,
                buf: Vec::with_capacity(64 * 1024),
            }),
            pacing: Box::new(Unpaced),
        };
        Ok((j, loaded))
    }

    /// The journal, its compactions paced by `p` from now on.
    pub fn paced(mut self, p: impl Pacing + 'static) -> Journal {
        self.pacing = Box::new(p);
        self
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Inner> {
        self.inner.lock()
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
            let len = inner.buf.len() as u64;
            // What a failed commit may have left beyond these records is zeroed with them.
            if inner.scrub > len {
                inner.buf.resize(inner.scrub as usize, 0);
            }
            let res = inner
                .file
                .write_all_at(&inner.buf, inner.pos)
                .and_then(|_| inner.file.sync_data());
            if let Err(e) = res {
                // These records were never acknowledged: the next commit overwrites them.
                inner.scrub = inner.scrub.max(len);
                return Err(io_err(&self.path)(e));
            }
            inner.pos += len;
            inner.scrub = 0;
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
    /// write of the snapshot then runs while commits go on, and the records appended meanwhile
    /// are copied over, most of them outside the journal too (see [`CATCH_UP_LEFT`]). Only
    /// what is committed during the last copy is copied with the journal held, before the
    /// swap: ACKs wait for that short tail, not for the rewrite.
    pub fn compact(&self, live: impl FnOnce() -> Vec<Record>) -> Result<usize, JournalError> {
        self.compact_with(live, || ()).map(|c| c.records)
    }

    /// [`Journal::compact`], with `before_catch_up` run once the snapshot is written (tests
    /// commit there, as the writer does while a compaction runs).
    fn compact_with(
        &self,
        live: impl FnOnce() -> Vec<Record>,
        before_catch_up: impl FnOnce(),
    ) -> Result<Compacted, JournalError> {
        // The sections holding the journal are urgent to the pacing (normal priority in a
        // server) even when the encoding and writing between them are not: ACKs wait for it.
        let pacing = &*self.pacing;
        let (records, mark, count_at_mark, old) = urgently(pacing, || {
            let g = self.lock();
            // Only compaction replaces the file, so this handle reads the journal until the swap.
            let old = g.file.try_clone().map_err(io_err(&self.path))?;
            Ok::<_, JournalError>((live(), g.pos, g.records, old))
        })?;
        let tmp = self.path.with_extension("compact");
        let mut buf = Vec::with_capacity(records.len() * 80);
        for (i, r) in records.iter().enumerate() {
            encode(r, &mut buf);
            if i % 1024 == 1023 {
                pacing.yield_now();
            }
        }
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        // Held before it replaces the journal, so that a process waiting for the journal's lock
        // never takes the file that is about to be unlinked and then keeps it.
        try_lock(&f).map_err(io_err(&tmp))?;
        f.write_all_at(&buf, 0).map_err(io_err(&tmp))?;
        let content = buf.len() as u64;
        zero_fill(&f, content, reserve_for(content), &*self.pacing);
        // The snapshot, the zeros and the file's size are durable before the journal is held:
        // under it, the tail overwrites zeros in place and needs a data-only fdatasync, not a
        // filesystem journal commit, so ACKs wait less.
        f.sync_all().map_err(io_err(&tmp))?;
        before_catch_up();

        // Catch up outside the journal: records below its end are never rewritten, so they
        // can be read while commits go on. At idle priority under load the snapshot took up
        // to a second, and copying all that arrived meanwhile with the journal held stalled
        // the ACKs for ~30 ms.
        let src = (&old, self.path.as_path());
        let (mut from, mut to) = (mark, content);
        for _ in 0..8 {
            let end = urgently(pacing, || self.lock().pos);
            if end - from <= CATCH_UP_LEFT {
                break;
            }
            to += copy_range(src, (&f, &tmp), from..end, to)?;
            from = end;
            pacing.yield_now();
        }
        f.sync_data().map_err(io_err(&tmp))?;
        let caught_up = to - content;

        let locked_tail = urgently(pacing, || {
            let mut g = self.lock();
            let tail = copy_range(src, (&f, &tmp), from..g.pos, to)?;
            f.sync_data().map_err(io_err(&tmp))?;
            std::fs::rename(&tmp, &self.path).map_err(io_err(&self.path))?;
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                if let Ok(d) = File::open(dir) {
                    let _ = d.sync_all();
                }
            }
            g.file = f;
            g.pos = to + tail;
            g.scrub = 0;
            g.records = records.len() as u64 + (g.records - count_at_mark);
            Ok::<_, JournalError>(tail)
        })?;
        Ok(Compacted {
            records: records.len(),
            caught_up,
            locked_tail,
        })
    }
}

/// How long [`Journal::open`] waits for another process to let go of the journal: an
/// instance told to stop finishes its last commit and exits well within it.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Takes the journal's `flock` without waiting; false when another open file holds it.
fn try_lock(f: &File) -> io::Result<bool> {
    // SAFETY: flock on a descriptor this `File` owns; no memory is passed.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Opens the journal file and holds its lock, waiting for a holder to let go; a holder that
/// replaced the file meanwhile (its last compaction) is followed to the new file.
fn open_locked(path: &Path) -> Result<File, JournalError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        while !try_lock(&file).map_err(io_err(path))? {
            if Instant::now() >= deadline {
                return Err(JournalError::Locked {
                    path: path.to_path_buf(),
                    waited: LOCK_WAIT,
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let held = file.metadata().map_err(io_err(path))?;
        match std::fs::metadata(path) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => return Ok(file),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(path)(e)),
        }
    }
}

/// Copies the bytes `range` of `src` into `dst` at `at`; returns how many (each file is given
/// with its path, for the error).
fn copy_range(
    (src, src_path): (&File, &Path),
    (dst, dst_path): (&File, &Path),
    range: std::ops::Range<u64>,
    at: u64,
) -> Result<u64, JournalError> {
    let mut chunk = vec![0u8; (range.end - range.start) as usize];
    src.read_exact_at(&mut chunk, range.start)
        .map_err(io_err(src_path))?;
    dst.write_all_at(&chunk, at).map_err(io_err(dst_path))?;
    Ok(chunk.len() as u64)
}

/// Bytes of records appended during a compaction that may be left for the copy made with the
/// journal held (about 800 records): the catch-up outside it goes on until no more remain.
const CATCH_UP_LEFT: u64 = 64 << 10;

/// What a compaction copied, and where.
#[derive(Debug)]
struct Compacted {
    /// Live records written to the snapshot.
    records: usize,
    /// Bytes appended during the compaction and copied outside the journal (read by tests).
    #[cfg_attr(not(test), allow(dead_code))]
    caught_up: u64,
    /// Bytes copied with the journal held (read by tests).
    #[cfg_attr(not(test), allow(dead_code))]
    locked_tail: u64,
}

/// Replays records into per-network lease tables, dropping what has expired by `now`.
pub fn replay(records: &[Record], now: u64) -> HashMap<String, crate::leases::LeaseTable> {
    let mut out: HashMap<String, crate::leases::LeaseTable> = HashMap::default();
    for r in records {
        if let Change::V4(c) = &r.change {
            out.entry(r.network.to_string()).or_default().apply(c);
        }
    }
    for t in out.values_mut() {
        t.reap(now);
    }
    out
}

#[cfg(test)]
mod tests;
