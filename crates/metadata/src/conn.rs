//! One VM's connection to a network's metadata listener, served by an event loop: bytes read
//! as they come, each whole request decided (`answer::decide`) and answered in order, a
//! forwarded one answered when Nova's reply comes back (the upstream client pokes the
//! connection). A head that does not arrive in time (slowloris), or an idle kept-alive
//! connection, is cut off; nothing here ever blocks the loop.

use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use qdhcp_reactor::{Source, SourceId, Turn};

use crate::answer::{decide, Asked, Decision, Why};
use crate::request::{parse, Method, Parsed, Request, MAX_BODY, MAX_HEAD};
use crate::response::Response;
use crate::serve::Site;

/// Requests answered per turn before others get theirs.
const REQUESTS_PER_TURN: usize = 16;
/// How long a reply may take to leave (a VM that does not read it).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Nova's answer, handed from the upstream client to the loop.
type Slot = Arc<Mutex<Option<(Response, Duration)>>>;

/// A request forwarded to Nova and not answered yet.
struct Waiting {
    slot: Slot,
    req: Request,
    started: Instant,
}

pub(crate) struct Conn {
    sock: TcpStream,
    peer: IpAddr,
    site: Arc<Site>,
    id: SourceId,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    /// Close once `out` is written.
    closing: bool,
    /// The VM closed its side.
    eof: bool,
    /// The last read stopped at the buffer's size, not at "would block": the socket may hold
    /// more, and edge-triggered readiness will not say so again.
    unread: bool,
    waiting: Option<Waiting>,
    deadline: Instant,
    client_timeout: Duration,
}

impl Conn {
    pub(crate) fn new(
        sock: TcpStream,
        peer: IpAddr,
        site: Arc<Site>,
        id: SourceId,
        client_timeout: Duration,
    ) -> Conn {
        Conn {
            sock,
            peer,
            site,
            id,
            inbuf: Vec::new(),
            out: Vec::new(),
            sent: 0,
            closing: false,
            eof: false,
            unread: false,
            waiting: None,
            deadline: Instant::now() + client_timeout,
            client_timeout,
        }
    }

    /// Writes what is waiting; `false` when the connection broke.
    fn flush(&mut self) -> bool {
        while self.sent < self.out.len() {
            match self.sock.write(&self.out[self.sent..]) {
                Ok(0) => return false,
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        self.out.clear();
        self.sent = 0;
        true
    }

    /// Reads what arrived; `false` when the connection broke.
    fn fill(&mut self) -> bool {
        let cap = MAX_HEAD + MAX_BODY + 1;
        let mut buf = [0u8; 4096];
        self.unread = false;
        loop {
            if self.inbuf.len() >= cap {
                self.unread = true;
                return true;
            }
            match self.sock.read(&mut buf) {
                Ok(0) => {
                    self.eof = true;
                    return true;
                }
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    fn queue(&mut self, req: &Request, resp: &Response, why: Why, started: Instant) {
        let keep = req.keep_alive && !self.eof;
        self.out
            .extend_from_slice(&resp.encode(keep, req.http10, req.method == Method::Head));
        if !keep {
            self.closing = true;
        }
        self.site
            .log_request(self.peer, req, resp, why, started.elapsed());
    }

    /// Answers the requests in the buffer, in order, until one waits for Nova.
    fn work(&mut self) -> Turn {
        for _ in 0..REQUESTS_PER_TURN {
            if self.closing || self.waiting.is_some() {
                return Turn::Drained;
            }
            let started = Instant::now();
            match parse(&self.inbuf) {
                Parsed::Partial => {
                    if self.inbuf.is_empty() && self.eof {
                        self.closing = true;
                    }
                    return Turn::Drained;
                }
                Parsed::Bad(bad) => {
                    self.site.bad_request(self.peer, bad);
                    let resp = Response::error(bad.status());
                    self.out
                        .extend_from_slice(&resp.encode(false, false, false));
                    self.closing = true;
                    self.inbuf.clear();
                    return Turn::Drained;
                }
                Parsed::Done(req, used) => {
                    self.inbuf.drain(..used);
                    self.deadline = Instant::now() + self.client_timeout;
                    self.answer(req, started);
                }
            }
        }
        Turn::More
    }

    fn answer(&mut self, req: Request, started: Instant) {
        let Some(service) = self.site.service.upgrade() else {
            self.closing = true;
            return;
        };
        if !self.site.limiter.lock().allow(self.peer, Instant::now()) {
            self.queue(&req, &Response::error(429), Why::Limited, started);
            return;
        }
        let Some(reg) = service.registry() else {
            self.queue(&req, &Response::error(503), Why::Served, started);
            return;
        };
        let asked = Asked {
            reg: &reg,
            network_id: &self.site.network_id,
            source: self.peer,
            domain: service.settings.domain.as_deref(),
        };
        let (decision, why) = decide(&req, &asked, &service.settings.mode);
        drop(reg);
        match decision {
            Decision::Respond(resp) => self.queue(&req, &resp, why, started),
            Decision::Forward(fwd) => {
                let Some(up) = &service.upstream else {
                    self.queue(&req, &Response::error(502), why, started);
                    return;
                };
                let slot: Slot = Arc::new(Mutex::new(None));
                let (back, me, loops) = (slot.clone(), self.id, service.loops.clone());
                up.send(fwd, move |resp, took| {
                    *back.lock() = Some((resp, took));
                    loops.poke(me);
                });
                self.waiting = Some(Waiting { slot, req, started });
            }
        }
    }

    /// Takes Nova's answer if it came.
    fn collect(&mut self) {
        let came = match &self.waiting {
            Some(w) => w.slot.lock().take(),
            None => return,
        };
        if let Some((resp, took)) = came {
            let w = self.waiting.take().expect("waiting");
            if let Some(service) = self.site.service.upgrade() {
                service.upstream_latency.observe(took.as_secs_f64());
            }
            self.queue(&w.req, &resp, Why::Forwarded, w.started);
            self.deadline = Instant::now() + self.client_timeout;
        }
    }

    fn turn(&mut self) -> Turn {
        self.collect();
        if !self.flush() {
            return Turn::Close;
        }
        if !self.out.is_empty() {
            return Turn::Drained;
        }
        if self.closing {
            return Turn::Close;
        }
        if !self.eof && !self.fill() {
            return Turn::Close;
        }
        let t = self.work();
        if !self.flush() {
            return Turn::Close;
        }
        if self.out.is_empty() && self.closing {
            return Turn::Close;
        }
        if !self.out.is_empty() {
            self.deadline = Instant::now() + WRITE_TIMEOUT;
        }
        if self.eof && self.waiting.is_none() && self.out.is_empty() && self.inbuf.is_empty() {
            return Turn::Close;
        }
        if self.unread && self.waiting.is_none() {
            return Turn::More;
        }
        t
    }
}

impl Source for Conn {
    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn ready(&mut self) -> Turn {
        self.turn()
    }

    fn deadline(&self) -> Option<Instant> {
        // a request forwarded to Nova is timed by the client (504), never cut here
        self.waiting.is_none().then_some(self.deadline)
    }

    fn timer(&mut self) -> Turn {
        if self.waiting.is_some() || Instant::now() < self.deadline {
            return Turn::Drained;
        }
        if !self.inbuf.is_empty() && self.out.is_empty() {
            // a head that did not arrive in time (slowloris): 408, then closed
            self.site.counters.timed_out.fetch_add(1, Ordering::Relaxed);
            let resp = Response::error(408);
            let _ = self.sock.write(&resp.encode(false, false, false));
        }
        Turn::Close
    }

    fn wants_write(&self) -> bool {
        !self.out.is_empty()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.site.open.fetch_sub(1, Ordering::Relaxed);
        self.site.conns.lock().remove(&self.id);
    }
}
