use super::*;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;

/// Takes one datagram per turn and records which source took it.
struct OnePerTurn {
    sock: UdpSocket,
    name: &'static str,
    log: Arc<Mutex<Vec<&'static str>>>,
    dropped: Option<Arc<AtomicBool>>,
}

impl Source for OnePerTurn {
    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
    fn ready(&mut self) -> Turn {
        let mut b = [0u8; 64];
        match self.sock.recv_from(&mut b) {
            Ok(_) => {
                self.log.lock().push(self.name);
                Turn::More
            }
            Err(_) => Turn::Drained,
        }
    }
}

impl Drop for OnePerTurn {
    fn drop(&mut self) {
        if let Some(d) = &self.dropped {
            d.store(true, Ordering::SeqCst);
        }
    }
}

fn bound() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(5), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn noop() -> Arc<dyn Fn() + Send + Sync> {
    Arc::new(|| ())
}

/// Holds its loop inside its turn until released: what the loop finds ready afterwards is
/// everything that arrived meanwhile, whatever the scheduler did to the test thread.
struct Blocker {
    sock: UdpSocket,
    entered: mpsc::Sender<()>,
    release: mpsc::Receiver<()>,
}

impl Source for Blocker {
    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
    fn ready(&mut self) -> Turn {
        let mut b = [0u8; 64];
        if self.sock.recv_from(&mut b).is_ok() {
            let _ = self.entered.send(());
            let _ = self.release.recv();
        }
        Turn::Drained
    }
}

#[test]
fn a_flooded_source_does_not_starve_another_on_the_same_loop() {
    let r = Reactor::new("qt-loop", 1, noop()).unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (a, b, c) = (bound(), bound(), bound());
    let (a_addr, b_addr, c_addr) = (
        a.local_addr().unwrap(),
        b.local_addr().unwrap(),
        c.local_addr().unwrap(),
    );
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    r.add(Box::new(Blocker {
        sock: c,
        entered: entered_tx,
        release: release_rx,
    }));
    r.add(Box::new(OnePerTurn {
        sock: a,
        name: "a",
        log: log.clone(),
        dropped: None,
    }));
    r.add(Box::new(OnePerTurn {
        sock: b,
        name: "b",
        log: log.clone(),
        dropped: None,
    }));
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    // the loop is held in the blocker's turn while the flood and the quiet datagram arrive
    tx.send_to(b"hold", c_addr).unwrap();
    entered.recv_timeout(Duration::from_secs(5)).unwrap();
    for _ in 0..100 {
        tx.send_to(b"flood", a_addr).unwrap();
    }
    tx.send_to(b"quiet", b_addr).unwrap();
    release.send(()).unwrap();
    wait_for("every datagram served", || log.lock().len() == 101);
    let log = log.lock();
    let b_at = log.iter().position(|n| *n == "b").unwrap();
    assert!(
        b_at <= 2,
        "the quiet source waited behind {b_at} of the flood's datagrams"
    );
}

#[test]
fn remove_returns_once_the_source_is_dropped_and_others_keep_serving() {
    let r = Reactor::new("qt-loop", 2, noop()).unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let dropped = Arc::new(AtomicBool::new(false));
    let (a, b) = (bound(), bound());
    let b_addr = b.local_addr().unwrap();
    let ida = r.add(Box::new(OnePerTurn {
        sock: a,
        name: "a",
        log: log.clone(),
        dropped: Some(dropped.clone()),
    }));
    r.add(Box::new(OnePerTurn {
        sock: b,
        name: "b",
        log: log.clone(),
        dropped: None,
    }));
    assert_eq!(r.sources(), 2);
    r.remove(ida);
    assert!(
        dropped.load(Ordering::SeqCst),
        "remove returned before the drop"
    );
    assert_eq!(r.sources(), 1);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.send_to(b"x", b_addr).unwrap();
    wait_for("b served after a's removal", || {
        log.lock().as_slice() == ["b"]
    });
}

/// Counts its turns and timer runs; asks for a timer once, 50 ms after it starts.
struct Counting {
    sock: UdpSocket,
    turns: Arc<AtomicUsize>,
    timers: Arc<AtomicUsize>,
    deadline: Option<Instant>,
}

impl Source for Counting {
    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
    fn ready(&mut self) -> Turn {
        self.turns.fetch_add(1, Ordering::SeqCst);
        let mut b = [0u8; 64];
        while self.sock.recv_from(&mut b).is_ok() {}
        Turn::Drained
    }
    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
    fn timer(&mut self) -> Turn {
        self.timers.fetch_add(1, Ordering::SeqCst);
        self.deadline = None;
        Turn::Drained
    }
}

fn cpu_time_of_thread(name_prefix: &str) -> u64 {
    // utime + stime (clock ticks) of the loop thread, from /proc/self/task/*/stat
    let mut total = 0;
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.trim().starts_with(name_prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split(' ').collect();
        total += f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    }
    total
}

#[test]
fn an_idle_loop_does_not_wake_and_timers_fire_once() {
    let r = Reactor::new("qt-idle", 1, noop()).unwrap();
    let (turns, timers) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    for _ in 0..200 {
        r.add(Box::new(Counting {
            sock: bound(),
            turns: turns.clone(),
            timers: timers.clone(),
            deadline: Some(Instant::now() + Duration::from_millis(50)),
        }));
    }
    // each source gets one turn when added (data may predate its registration), then none
    wait_for("first turns", || turns.load(Ordering::SeqCst) == 200);
    wait_for("timers", || timers.load(Ordering::SeqCst) == 200);
    let cpu0 = cpu_time_of_thread("qt-idle");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(turns.load(Ordering::SeqCst), 200, "idle sources were woken");
    assert_eq!(timers.load(Ordering::SeqCst), 200, "a timer ran twice");
    // 600 ms idle: at most one clock tick (10 ms) of CPU, not a polling loop
    assert!(cpu_time_of_thread("qt-idle") - cpu0 <= 1);
}

#[test]
fn shutdown_drops_every_source() {
    let r = Reactor::new("qt-stop", 2, noop()).unwrap();
    let flags: Vec<Arc<AtomicBool>> = (0..10).map(|_| Arc::new(AtomicBool::new(false))).collect();
    let log = Arc::new(Mutex::new(Vec::new()));
    for f in &flags {
        r.add(Box::new(OnePerTurn {
            sock: bound(),
            name: "x",
            log: log.clone(),
            dropped: Some(f.clone()),
        }));
    }
    r.shutdown();
    assert!(flags.iter().all(|f| f.load(Ordering::SeqCst)));
}

/// Asks for its timer only after a poke told it that work arrived.
struct Poked {
    sock: UdpSocket,
    work: Arc<AtomicBool>,
    timers: Arc<AtomicUsize>,
}

impl Source for Poked {
    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
    fn ready(&mut self) -> Turn {
        Turn::Drained
    }
    fn deadline(&self) -> Option<Instant> {
        self.work
            .load(Ordering::SeqCst)
            .then(|| Instant::now() + Duration::from_millis(20))
    }
    fn timer(&mut self) -> Turn {
        self.work.store(false, Ordering::SeqCst);
        self.timers.fetch_add(1, Ordering::SeqCst);
        Turn::Drained
    }
}

#[test]
fn a_poke_makes_a_source_look_at_its_deadline_again() {
    let r = Reactor::new("qt-poke", 1, noop()).unwrap();
    let work = Arc::new(AtomicBool::new(false));
    let timers = Arc::new(AtomicUsize::new(0));
    let id = r.add(Box::new(Poked {
        sock: bound(),
        work: work.clone(),
        timers: timers.clone(),
    }));
    std::thread::sleep(Duration::from_millis(50));
    work.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(timers.load(Ordering::SeqCst), 0, "no turn, no timer");
    r.poke(id);
    wait_for("the timer after the poke", || {
        timers.load(Ordering::SeqCst) == 1
    });
}

/// Writes a large reply into a socket the peer does not read, then the rest once it is
/// writable; ends itself (`Turn::Close`) when all is written.
struct Writer {
    sock: std::net::TcpStream,
    left: usize,
    dropped: Arc<AtomicBool>,
    wakes: Arc<AtomicU64>,
}

impl Source for Writer {
    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
    fn ready(&mut self) -> Turn {
        use std::io::Write;
        self.wakes.fetch_add(1, Ordering::SeqCst);
        let chunk = [7u8; 65536];
        while self.left > 0 {
            match self.sock.write(&chunk[..self.left.min(chunk.len())]) {
                Ok(n) => self.left -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Turn::Drained,
                Err(_) => return Turn::Close,
            }
        }
        Turn::Close
    }
    fn wants_write(&self) -> bool {
        self.left > 0
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_source_waiting_to_write_is_woken_when_writable_and_closing_drops_it() {
    use std::io::Read;
    let r = Reactor::new("qt-write", 1, noop()).unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (server, _) = l.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    let total = 8 << 20;
    let dropped = Arc::new(AtomicBool::new(false));
    let wakes = Arc::new(AtomicU64::new(0));
    r.add_with(|_| {
        Box::new(Writer {
            sock: server,
            left: total,
            dropped: dropped.clone(),
            wakes: wakes.clone(),
        })
    });
    // nothing is read yet: the source is stuck on a full socket, not spinning
    std::thread::sleep(Duration::from_millis(200));
    assert!(!dropped.load(Ordering::SeqCst));
    let stuck = wakes.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        wakes.load(Ordering::SeqCst),
        stuck,
        "no turns while nothing changes"
    );
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    assert_eq!(
        got.len(),
        total,
        "every byte came: the loop woke it as the socket drained"
    );
    wait_for("the closed source dropped", || {
        dropped.load(Ordering::SeqCst)
    });
    assert_eq!(r.sources(), 0);
}
