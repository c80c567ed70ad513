//! The event loops that serve every socket of every network (see docs/ARCHITECTURE.md,
//! "Event loops"): a fixed set of threads, each waiting in epoll (through `mio`) on the
//! sockets given to it. Nothing wakes while nothing arrives; a socket that still has data
//! after its budget is served again only after every other ready socket of its loop had its
//! turn, so a flood on one network cannot starve the others; adding or removing a socket
//! touches only that socket.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use parking_lot::Mutex;
use std::cell::Cell;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

/// What a source says after its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Its socket answered "would block": wait for the next readiness.
    Drained,
    /// It used its whole budget and may have more: serve it again after the others.
    More,
    /// It is finished (a closed connection): deregister and drop it.
    Close,
}

/// Something served by a loop: a socket and what to do when it is readable.
pub trait Source: Send + 'static {
    /// The descriptor to wait on (it must stay open while the source is registered).
    fn fd(&self) -> RawFd;
    /// Serves what arrived, at most one budget's worth (the source decides what one is).
    fn ready(&mut self) -> Turn;
    /// When [`Source::timer`] should next run, if ever (retries, time-outs).
    fn deadline(&self) -> Option<Instant> {
        None
    }
    /// Runs at or after [`Source::deadline`]; `Turn::Close` ends the source.
    fn timer(&mut self) -> Turn {
        Turn::Drained
    }
    /// Whether it also waits for its socket to take more output (a reply the kernel could not
    /// take at once); looked at after each turn.
    fn wants_write(&self) -> bool {
        false
    }
}

/// Identifies a registered source, for [`Reactor::remove`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceId {
    id: u64,
    lp: usize,
}

enum Cmd {
    Add(u64, Box<dyn Source>),
    Remove(u64, Option<mpsc::Sender<()>>),
    Poke(u64),
    Stop,
}

/// One loop as seen from outside: where commands go, and how busy it is.
struct LoopHandle {
    cmds: Arc<Mutex<Vec<Cmd>>>,
    waker: Arc<Waker>,
    sources: Arc<AtomicUsize>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

static REACTOR_IDS: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// (reactor id, loop index) of the loop running on this thread, 0 elsewhere.
    static ON_LOOP: Cell<(u64, usize)> = const { Cell::new((0, 0)) };
}

const WAKE: Token = Token(0);

/// A fixed set of event-loop threads.
pub struct Reactor {
    id: u64,
    loops: Vec<LoopHandle>,
    next_id: AtomicU64,
}

impl Reactor {
    /// Starts `threads` loops named `name-<i>`; each runs `on_start` first (priority, for one).
    pub fn new(
        name: &str,
        threads: usize,
        on_start: Arc<dyn Fn() + Send + Sync>,
    ) -> io::Result<Reactor> {
        let id = REACTOR_IDS.fetch_add(1, Ordering::Relaxed);
        let mut loops = Vec::new();
        for i in 0..threads.max(1) {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
            let cmds = Arc::new(Mutex::new(Vec::new()));
            let sources = Arc::new(AtomicUsize::new(0));
            let (c, s, hook) = (cmds.clone(), sources.clone(), on_start.clone());
            let thread = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    ON_LOOP.with(|l| l.set((id, i)));
                    hook();
                    run(poll, &c, &s);
                })?;
            loops.push(LoopHandle {
                cmds,
                waker,
                sources,
                thread: Mutex::new(Some(thread)),
            });
        }
        Ok(Reactor {
            id,
            loops,
            next_id: AtomicU64::new(1),
        })
    }

    /// How many loop threads serve.
    pub fn threads(&self) -> usize {
        self.loops.len()
    }

    /// Sources registered, over all loops.
    pub fn sources(&self) -> usize {
        self.loops
            .iter()
            .map(|l| l.sources.load(Ordering::Relaxed))
            .sum()
    }

    fn send(&self, lp: usize, cmd: Cmd) {
        let l = &self.loops[lp];
        l.cmds.lock().push(cmd);
        if let Err(e) = l.waker.wake() {
            tracing::error!("event loop {lp}: cannot wake it: {e}");
        }
    }

    /// Hands `src` to the least busy loop; it is served from its next turn on.
    pub fn add(&self, src: Box<dyn Source>) -> SourceId {
        self.add_with(|_| src)
    }

    /// As [`Reactor::add`], for a source that must know its own id (to be poked from
    /// elsewhere when work it handed out comes back).
    pub fn add_with(&self, make: impl FnOnce(SourceId) -> Box<dyn Source>) -> SourceId {
        let lp = (0..self.loops.len())
            .min_by_key(|&i| self.loops[i].sources.load(Ordering::Relaxed))
            .unwrap_or(0);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let sid = SourceId { id, lp };
        self.loops[lp].sources.fetch_add(1, Ordering::Relaxed);
        self.send(lp, Cmd::Add(id, make(sid)));
        sid
    }

    /// Deregisters and drops a source; once this returns its socket is closed (unless called
    /// from one of this reactor's loops, which cannot wait for itself: then it is closed at
    /// the end of the current turn).
    pub fn remove(&self, s: SourceId) {
        let on_own_loop = ON_LOOP.with(|l| l.get().0) == self.id;
        if on_own_loop {
            self.send(s.lp, Cmd::Remove(s.id, None));
            return;
        }
        let (tx, rx) = mpsc::channel();
        self.send(s.lp, Cmd::Remove(s.id, Some(tx)));
        let _ = rx.recv();
    }

    /// Gives a source a turn soon although its socket did not become readable, so that it
    /// looks at its deadline again (work handed to it from elsewhere, such as a query another
    /// socket forwarded and whose retry it now owns).
    pub fn poke(&self, s: SourceId) {
        self.send(s.lp, Cmd::Poke(s.id));
    }

    /// Stops every loop, dropping its sources, and waits for the threads.
    pub fn shutdown(&self) {
        for lp in 0..self.loops.len() {
            self.send(lp, Cmd::Stop);
        }
        let me = ON_LOOP.with(|l| l.get());
        for (i, l) in self.loops.iter().enumerate() {
            if me == (self.id, i) {
                continue;
            }
            let t = l.thread.lock().take();
            if let Some(t) = t {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A registered source and its loop-side state.
struct Entry {
    src: Box<dyn Source>,
    queued: bool,
    deadline: Option<Instant>,
    /// Watched for writability too.
    writing: bool,
}

/// The loop: wait, serve the sources that are ready (each once, those with more go to the back
/// of the line), run due timers, apply commands.
fn run(mut poll: Poll, cmds: &Mutex<Vec<Cmd>>, count: &AtomicUsize) {
    let mut entries: HashMap<u64, Entry> = HashMap::new();
    let mut again: VecDeque<u64> = VecDeque::new();
    let mut timers: BTreeSet<(Instant, u64)> = BTreeSet::new();
    let mut events = Events::with_capacity(1024);
    let mut pending: Vec<Cmd> = Vec::new();
    loop {
        let timeout = if !again.is_empty() {
            Some(Duration::ZERO)
        } else {
            timers
                .first()
                .map(|(t, _)| t.saturating_duration_since(Instant::now()))
        };
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::error!("event loop: poll failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        // Those left over from the last turn go first, then the newly ready ones, each once.
        let mut turn: Vec<u64> = again.drain(..).collect();
        let mut woken = false;
        for ev in events.iter() {
            if ev.token() == WAKE {
                woken = true;
                continue;
            }
            let id = ev.token().0 as u64;
            if let Some(e) = entries.get_mut(&id) {
                if !e.queued {
                    e.queued = true;
                    turn.push(id);
                }
            }
        }
        if woken {
            pending.append(&mut cmds.lock());
            for c in pending.drain(..) {
                match c {
                    Cmd::Add(id, src) => {
                        let fd = src.fd();
                        if let Err(e) = poll.registry().register(
                            &mut SourceFd(&fd),
                            Token(id as usize),
                            Interest::READABLE,
                        ) {
                            tracing::error!("event loop: cannot watch descriptor {fd}: {e}");
                            count.fetch_sub(1, Ordering::Relaxed);
                            continue;
                        }
                        let deadline = src.deadline();
                        if let Some(d) = deadline {
                            timers.insert((d, id));
                        }
                        // Data may have arrived before it was watched: edge-triggered epoll
                        // would not say so, so it gets a turn at once.
                        entries.insert(
                            id,
                            Entry {
                                src,
                                queued: true,
                                deadline,
                                writing: false,
                            },
                        );
                        turn.push(id);
                    }
                    Cmd::Remove(id, done) => {
                        drop_entry(&poll, &mut entries, &mut timers, count, id);
                        if let Some(done) = done {
                            let _ = done.send(());
                        }
                    }
                    Cmd::Poke(id) => {
                        if let Some(e) = entries.get_mut(&id) {
                            if !e.queued {
                                e.queued = true;
                                turn.push(id);
                            }
                        }
                    }
                    Cmd::Stop => {
                        for (_, e) in entries.drain() {
                            let fd = e.src.fd();
                            let _ = poll.registry().deregister(&mut SourceFd(&fd));
                        }
                        count.store(0, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }
        for id in turn {
            let Some(e) = entries.get_mut(&id) else {
                continue;
            };
            e.queued = false;
            match e.src.ready() {
                Turn::More => {
                    e.queued = true;
                    again.push_back(id);
                }
                Turn::Drained => {}
                Turn::Close => {
                    drop_entry(&poll, &mut entries, &mut timers, count, id);
                    continue;
                }
            }
            retime(&mut timers, id, e);
            rewatch(&poll, id, e);
        }
        let now = Instant::now();
        while let Some(&(t, id)) = timers.first() {
            if t > now {
                break;
            }
            timers.pop_first();
            let Some(e) = entries.get_mut(&id) else {
                continue;
            };
            e.deadline = None;
            if e.src.timer() == Turn::Close {
                drop_entry(&poll, &mut entries, &mut timers, count, id);
                continue;
            }
            retime(&mut timers, id, e);
            rewatch(&poll, id, e);
        }
    }
}

/// Deregisters and drops a source (closing its socket).
fn drop_entry(
    poll: &Poll,
    entries: &mut HashMap<u64, Entry>,
    timers: &mut BTreeSet<(Instant, u64)>,
    count: &AtomicUsize,
    id: u64,
) {
    if let Some(e) = entries.remove(&id) {
        let fd = e.src.fd();
        let _ = poll.registry().deregister(&mut SourceFd(&fd));
        if let Some(d) = e.deadline {
            timers.remove(&(d, id));
        }
        drop(e);
        count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Watches for writability while the source has output waiting, and only then.
fn rewatch(poll: &Poll, id: u64, e: &mut Entry) {
    let want = e.src.wants_write();
    if want == e.writing {
        return;
    }
    let interest = if want {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    let fd = e.src.fd();
    match poll
        .registry()
        .reregister(&mut SourceFd(&fd), Token(id as usize), interest)
    {
        Ok(()) => e.writing = want,
        Err(err) => tracing::error!("event loop: cannot rewatch descriptor {fd}: {err}"),
    }
}

/// Keeps the timer set in step with what the source now asks for.
fn retime(timers: &mut BTreeSet<(Instant, u64)>, id: u64, e: &mut Entry) {
    let d = e.src.deadline();
    if d != e.deadline {
        if let Some(old) = e.deadline {
            timers.remove(&(old, id));
        }
        if let Some(new) = d {
            timers.insert((new, id));
        }
        e.deadline = d;
    }
}

#[cfg(test)]
mod tests;
