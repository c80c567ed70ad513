//! A network's DNS sockets as the event loops serve them (see docs/ARCHITECTURE.md, "Event
//! loops"): queries over UDP, answers from upstream servers (and their retry timer), and TCP
//! connections, which are accepted in the loop and served each on a short-lived thread (a
//! TCP client may be slow; a loop must never wait for one).

use std::io::{self, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qdhcp_batchio::{recv_batch_from, Outbox};
use qdhcp_reactor::{Reactor, Source, Turn};

use crate::server::{encode_within, read_framed, DnsServer, TCP_CONNECTIONS};

/// Queries taken from one socket per loop turn before the loop's other sockets get theirs.
const BUDGET: usize = 64;

/// TCP connections served at once over every network: each holds a thread while it lasts.
const TCP_CONNECTIONS_TOTAL: usize = 256;
static TCP_OPEN_TOTAL: AtomicUsize = AtomicUsize::new(0);

/// The UDP socket on port 53 of one interface.
struct UdpQueries {
    server: Arc<DnsServer>,
    sock: Arc<UdpSocket>,
}

impl Source for UdpQueries {
    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn ready(&mut self) -> Turn {
        let fd = self.sock.as_raw_fd();
        UDP.with(|b| {
            let b = &mut *b.borrow_mut();
            if b.bufs.is_empty() {
                b.bufs = vec![[0u8; QUERY_MAX]; BUDGET];
            }
            // one recvmmsg for the batch, one sendmmsg (or segmented send) for the answers
            let n = match recv_batch_from(fd, &mut b.bufs, &mut b.lens, &mut b.froms) {
                Ok(n) => n,
                // an error the next readiness reports again
                Err(_) => return Turn::Drained,
            };
            let me = &self.server;
            for i in 0..n {
                let from = b.froms[i];
                if !me.within_rate(std::net::IpAddr::V4(*from.ip())) {
                    me.counters.dropped_rate.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let query = &b.bufs[i][..b.lens[i]];
                if let Some((reply, limit)) =
                    me.handle(query, SocketAddr::V4(from), Some(&self.sock))
                {
                    if let Some(bytes) = encode_within(&reply, limit) {
                        b.out.push(from, &bytes);
                    }
                }
            }
            b.out.flush(fd, |_, _| {});
            // fewer than asked for: the queue was empty (a new datagram makes a new event)
            if n < BUDGET {
                Turn::Drained
            } else {
                Turn::More
            }
        })
    }
}

/// The UDP socket on port 53 of one interface over IPv6 (the DHCP port's IPv6 addresses,
/// announced by DHCPv6 as DNS servers): a datagram at a time, since the batch path is IPv4's.
struct UdpQueries6 {
    server: Arc<DnsServer>,
    sock: Arc<UdpSocket>,
}

impl Source for UdpQueries6 {
    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn ready(&mut self) -> Turn {
        let mut buf = [0u8; QUERY_MAX];
        let me = &self.server;
        for _ in 0..BUDGET {
            let (n, from) = match self.sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Turn::Drained,
            };
            if !me.within_rate(from.ip()) {
                me.counters.dropped_rate.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if let Some((reply, limit)) = me.handle(&buf[..n], from, Some(&self.sock)) {
                if let Some(bytes) = encode_within(&reply, limit) {
                    let _ = self.sock.send_to(&bytes, from);
                }
            }
        }
        Turn::More
    }
}

/// Largest query taken over UDP (EDNS allows 4,096-byte messages; queries are far smaller).
const QUERY_MAX: usize = 4096;

/// The buffers of one loop thread's UDP batches, shared by every network's socket it serves
/// (a batch is done before the next socket's turn), so ten thousand networks do not each hold
/// a quarter of a megabyte.
struct UdpBatch {
    bufs: Vec<[u8; QUERY_MAX]>,
    lens: [usize; BUDGET],
    froms: [SocketAddrV4; BUDGET],
    out: Outbox,
}

thread_local! {
    static UDP: std::cell::RefCell<UdpBatch> = std::cell::RefCell::new(UdpBatch {
        bufs: Vec::new(),
        lens: [0; BUDGET],
        froms: [SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0); BUDGET],
        out: Outbox::default(),
    });
}

/// The socket answers from upstream servers arrive on; its timer retries or fails the
/// queries they did not answer in time.
struct UpstreamAnswers {
    server: Arc<DnsServer>,
}

impl Source for UpstreamAnswers {
    fn fd(&self) -> RawFd {
        self.server.upstream.as_ref().map_or(-1, |u| u.as_raw_fd())
    }

    fn ready(&mut self) -> Turn {
        let Some(upstream) = &self.server.upstream else {
            return Turn::Drained;
        };
        let mut buf = vec![0u8; 65535];
        for _ in 0..BUDGET {
            match upstream.recv_from(&mut buf) {
                Ok((n, from)) => self.server.relay(&buf[..n], from),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Turn::Drained,
            }
        }
        Turn::More
    }

    fn deadline(&self) -> Option<Instant> {
        self.server.next_retry()
    }

    fn timer(&mut self) -> Turn {
        self.server.retry_or_fail();
        Turn::Drained
    }
}

/// The TCP listener on port 53 of one interface.
struct TcpAccept {
    server: Arc<DnsServer>,
    listener: TcpListener,
}

impl Source for TcpAccept {
    fn fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    fn ready(&mut self) -> Turn {
        for _ in 0..BUDGET {
            let (s, from) = match self.listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Turn::Drained,
            };
            let me = &self.server;
            let here = me.tcp_open.fetch_add(1, Ordering::SeqCst);
            let everywhere = TCP_OPEN_TOTAL.fetch_add(1, Ordering::SeqCst);
            if here >= TCP_CONNECTIONS || everywhere >= TCP_CONNECTIONS_TOTAL {
                // over either bound: the connection is closed at once
                me.tcp_open.fetch_sub(1, Ordering::SeqCst);
                TCP_OPEN_TOTAL.fetch_sub(1, Ordering::SeqCst);
                me.counters.dropped_rate.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let me2 = me.clone();
            let spawned = std::thread::Builder::new()
                .name("dns-tcp-conn".into())
                .stack_size(128 * 1024)
                .spawn(move || {
                    me2.serve_connection(s, from);
                    me2.tcp_open.fetch_sub(1, Ordering::SeqCst);
                    TCP_OPEN_TOTAL.fetch_sub(1, Ordering::SeqCst);
                });
            if spawned.is_err() {
                me.tcp_open.fetch_sub(1, Ordering::SeqCst);
                TCP_OPEN_TOTAL.fetch_sub(1, Ordering::SeqCst);
            }
        }
        Turn::More
    }
}

impl DnsServer {
    fn register(&self, reactor: &Arc<Reactor>, src: Box<dyn Source>) -> qdhcp_reactor::SourceId {
        let id = reactor.add(src);
        let mut loops = self.loops.lock();
        loops
            .get_or_insert_with(|| (reactor.clone(), Vec::new()))
            .1
            .push(id);
        id
    }

    /// Serves queries arriving on `sock` from `reactor`'s loops until [`DnsServer::stop`].
    pub fn serve_udp(self: &Arc<Self>, reactor: &Arc<Reactor>, sock: UdpSocket) -> io::Result<()> {
        sock.set_nonblocking(true)?;
        self.register(
            reactor,
            Box::new(UdpQueries {
                server: self.clone(),
                sock: Arc::new(sock),
            }),
        );
        Ok(())
    }

    /// Serves queries arriving on an IPv6 socket (see [`crate::server::open_sockets6`]) until
    /// [`DnsServer::stop`].
    pub fn serve_udp6(self: &Arc<Self>, reactor: &Arc<Reactor>, sock: UdpSocket) -> io::Result<()> {
        sock.set_nonblocking(true)?;
        self.register(
            reactor,
            Box::new(UdpQueries6 {
                server: self.clone(),
                sock: Arc::new(sock),
            }),
        );
        Ok(())
    }

    /// Serves DNS over TCP on `l` until [`DnsServer::stop`].
    pub fn serve_tcp(self: &Arc<Self>, reactor: &Arc<Reactor>, l: TcpListener) -> io::Result<()> {
        l.set_nonblocking(true)?;
        self.register(
            reactor,
            Box::new(TcpAccept {
                server: self.clone(),
                listener: l,
            }),
        );
        Ok(())
    }

    /// Relays upstream answers to their clients and retries or fails the ones that time out,
    /// until [`DnsServer::stop`]. Without upstream servers there is nothing to relay.
    pub fn start_forwarder(self: &Arc<Self>, reactor: &Arc<Reactor>) -> io::Result<()> {
        if self.upstream.is_none() || self.upstream_source.get().is_some() {
            return Ok(());
        }
        let id = self.register(
            reactor,
            Box::new(UpstreamAnswers {
                server: self.clone(),
            }),
        );
        let _ = self.upstream_source.set(id);
        Ok(())
    }

    /// One TCP connection, on its own thread, in the server's namespace (its forwarding
    /// connects from there).
    fn serve_connection(&self, mut s: TcpStream, from: SocketAddr) {
        let ns = self.netns.lock().clone();
        if let Some(ns) = ns {
            let entered = std::fs::File::open(&ns).and_then(|f| qdhcp_netns::enter_for_good(&f));
            if let Err(e) = entered {
                tracing::warn!(target: "dns", "TCP connection from {from}: cannot enter the network's namespace: {e}");
                return;
            }
        }
        let _ = s.set_nonblocking(false);
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        while let Some(q) = read_framed(&mut s) {
            if !self.within_rate(from.ip()) {
                self.counters.dropped_rate.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let Some((reply, _)) = self.handle(&q, from, None) else {
                return;
            };
            let Some(b) = reply
                .to_vec()
                .ok()
                .filter(|b| b.len() <= usize::from(u16::MAX))
            else {
                return;
            };
            let mut framed = (b.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&b);
            if s.write_all(&framed).is_err() {
                return;
            }
        }
    }
}
