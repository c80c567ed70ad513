//! The DNS server's I/O edge (its sockets are served by the event loops in
//! [`crate::loops`]): UDP and TCP sockets on port 53 of each served interface, the
//! forwarder that relays other names upstream (a fresh query id each time, the next server
//! when one does not answer, SERVFAIL when none does), the cache in front of it, per-source
//! rate limiting, counters and dnsmasq's `--log-queries` lines. What to answer is decided in
//! [`crate::answer::decide`].

use parking_lot::{Mutex, RwLock};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ahash::HashMap;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use ipnet::IpNet;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::answer::{decide, Answered, Context, Outcome, Question, EDNS_PAYLOAD};
use crate::cache::Cache;
use crate::metrics::{type_index, DnsCounters};
use crate::zone::Zone;
use qdhcp_reactor::{Reactor, SourceId};

/// How long one upstream server is given before the next is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(1500);
/// Queries one source may send per second before the rest are dropped (and counted), unless
/// configured otherwise: a flood from one VM cannot take the server from its neighbours.
pub const PER_SOURCE_PER_SECOND: u32 = 1000;
/// TCP connections one network's server serves at once.
pub(crate) const TCP_CONNECTIONS: usize = 32;

/// How a network's DNS server is set up (from dnsmasq's flags or `qdhcp serve`'s).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The network's domain (`--domain`).
    pub domain: Option<Name>,
    /// Where other names go (`--server`, or resolv.conf's nameservers).
    pub upstreams: Vec<SocketAddr>,
    /// Forwarded answers kept (`--cache-size`, dnsmasq's default 150).
    pub cache_size: usize,
    /// dnsmasq's `--log-queries` lines.
    pub log_queries: bool,
    /// Answer only clients of the network's subnets (`--local-service`).
    pub local_only: bool,
    /// Queries one source may send per second (0: no limit).
    pub per_source_rate: u32,
}

/// A query sent upstream and not answered yet.
struct Pending {
    client: SocketAddr,
    reply_via: Arc<UdpSocket>,
    client_id: u16,
    client_limit: usize,
    question: Question,
    query: Message,
    server: usize,
    tries: usize,
    sent: Instant,
    started: Instant,
}

/// Puts the DNS servers' counters of several networks into the registry `/metrics` is encoded
/// from (see [`crate::metrics::register`]).
pub fn register_metrics(
    servers: &[(String, Arc<DnsServer>)],
    registry: &mut prometheus_client::registry::Registry,
) {
    crate::metrics::register(
        servers
            .iter()
            .map(|(net, srv)| (net.as_str(), &srv.counters, srv.names())),
        registry,
    )
}

/// One network's DNS server (dnsmasq mode serves one).
pub struct DnsServer {
    pub(crate) settings: Settings,
    zone: RwLock<Arc<Zone>>,
    /// The domains answered with authority: the server's, then the network's own.
    domains: RwLock<Arc<Vec<Name>>>,
    nets: RwLock<Arc<Vec<IpNet>>>,
    cache: Mutex<Cache>,
    /// Where forwarded queries leave from and their answers arrive: only with upstreams.
    pub(crate) upstream: Option<UdpSocket>,
    pending: Mutex<HashMap<u16, Pending>>,
    per_source: Mutex<(u64, HashMap<IpAddr, u32>)>,
    pub(crate) tcp_open: AtomicUsize,
    pub(crate) stop: AtomicBool,
    /// The event loops serving its sockets, and its sources there.
    pub(crate) loops: Mutex<Option<(Arc<Reactor>, Vec<SourceId>)>>,
    /// The source that reads upstream answers: told when a first query waits for one.
    pub(crate) upstream_source: OnceLock<SourceId>,
    /// The namespace its sockets live in (its path): TCP connections are served and forwarded
    /// from there.
    pub(crate) netns: Mutex<Option<std::path::PathBuf>>,
    ids: ahash::RandomState,
    id_seq: AtomicU64,
    /// What it did.
    pub counters: DnsCounters,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Opens a UDP and a TCP socket on port `port` of `iface` (in the calling thread's network
/// namespace), bound to the device as dnsmasq's `--bind-dynamic` does.
pub fn open_sockets(iface: &str, port: u16) -> io::Result<(UdpSocket, TcpListener)> {
    open_sockets_on(iface, SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
}

/// [`open_sockets`] on IPv6 (`[::]:port` on `iface`, IPv6 only).
pub fn open_sockets6(iface: &str, port: u16) -> io::Result<(UdpSocket, TcpListener)> {
    open_sockets_on(
        iface,
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
    )
}

fn open_sockets_on(iface: &str, at: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let bind = |s: &Socket| -> io::Result<()> {
        if at.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_reuse_address(true)?;
        s.bind_device(Some(iface.as_bytes()))?;
        s.bind(&SockAddr::from(at))
            .map_err(|e| io::Error::new(e.kind(), format!("DNS {at} on {iface}: {e}")))
    };
    let domain = Domain::for_address(at);
    let u = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    bind(&u)?;
    // room for a burst (a flood is dropped after it is read; queries behind it must not be
    // dropped by the kernel before)
    let _ = u.set_recv_buffer_size(4 << 20);
    let t = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    bind(&t)?;
    t.listen(64)?;
    Ok((u.into(), t.into()))
}

fn rdata_text(r: &RData) -> String {
    match r {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(a) => a.0.to_string(),
        RData::PTR(p) => p.0.to_ascii(),
        RData::CNAME(c) => format!("<CNAME> {}", c.0.to_ascii()),
        other => format!("<{}>", other.record_type()),
    }
}

/// Encodes `m` within `limit` bytes: an answer too large for it is sent truncated (TC), with
/// no records, so that the client asks again over TCP.
pub fn encode_within(m: &Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = m.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    let mut t = m.clone();
    t.metadata.truncation = true;
    t.answers.clear();
    t.authorities.clear();
    t.additionals.clear();
    t.to_vec().ok()
}

impl DnsServer {
    /// A server with `settings`; its upstream socket is opened now (before any privilege drop).
    pub fn new(settings: Settings) -> io::Result<Arc<Self>> {
        let upstream = if settings.upstreams.is_empty() {
            None
        } else {
            let u = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            u.set_nonblocking(true)?;
            Some(u)
        };
        let cache = Mutex::new(Cache::new(settings.cache_size));
        let domains: Vec<Name> = settings.domain.iter().cloned().collect();
        Ok(Arc::new(DnsServer {
            settings,
            zone: RwLock::new(Arc::new(Zone::default())),
            domains: RwLock::new(Arc::new(domains)),
            nets: RwLock::new(Arc::new(Vec::new())),
            cache,
            upstream,
            pending: Mutex::new(HashMap::default()),
            per_source: Mutex::new((0, HashMap::default())),
            tcp_open: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            loops: Mutex::new(None),
            upstream_source: OnceLock::new(),
            netns: Mutex::new(None),
            ids: ahash::RandomState::new(),
            id_seq: AtomicU64::new(0),
            counters: DnsCounters::default(),
        }))
    }

    /// Replaces the local names (a SIGHUP, a port change): the next query sees them.
    pub fn set_zone(&self, z: Zone) {
        *self.zone.write() = Arc::new(z);
    }

    /// Changes the names in place (a port's own names on a port change), instead of building
    /// the whole zone again; queries in flight keep the zone they started with.
    pub fn update_zone(&self, f: impl FnOnce(&mut Zone)) {
        f(Arc::make_mut(&mut *self.zone.write()));
    }

    /// The network's own domain (its `dns_domain`), answered with authority besides the
    /// server's; `None` drops it.
    pub fn set_network_domain(&self, d: Option<Name>) {
        let mut v: Vec<Name> = self.settings.domain.iter().cloned().collect();
        v.extend(d.filter(|d| Some(d) != self.settings.domain.as_ref()));
        *self.domains.write() = Arc::new(v);
    }

    /// Replaces the network's subnets.
    pub fn set_nets(&self, nets: Vec<IpNet>) {
        *self.nets.write() = Arc::new(nets);
    }

    /// Local names held.
    pub fn names(&self) -> usize {
        self.zone.read().len()
    }

    /// Stops serving: its sockets leave the event loops (and are closed) before this returns;
    /// a TCP connection being served ends within its read timeout.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let loops = self.loops.lock().take();
        if let Some((reactor, ids)) = loops {
            for id in ids {
                reactor.remove(id);
            }
        }
    }

    /// The namespace (path) its sockets were opened in, for the threads that serve TCP
    /// connections.
    pub fn set_netns(&self, ns: std::path::PathBuf) {
        *self.netns.lock() = Some(ns);
    }

    fn log(&self, f: impl FnOnce() -> String) {
        if self.settings.log_queries {
            tracing::info!(target: "dns", "{}", f());
        }
    }

    /// False when `src` sent more than its share this second.
    pub(crate) fn within_rate(&self, src: IpAddr) -> bool {
        if self.settings.per_source_rate == 0 {
            return true;
        }
        let now = now_secs();
        let mut g = self.per_source.lock();
        if g.0 != now {
            g.0 = now;
            g.1.clear();
        }
        let n = g.1.entry(src).or_insert(0);
        *n += 1;
        self.settings.per_source_rate == 0 || *n <= self.settings.per_source_rate
    }

    fn fresh_id(&self) -> u16 {
        let seq = self.id_seq.fetch_add(1, Ordering::Relaxed);
        self.ids.hash_one(seq) as u16
    }

    /// Decides on one query; the reply to send now, or `None` (forwarded, dropped).
    pub(crate) fn handle(
        &self,
        bytes: &[u8],
        from: SocketAddr,
        via: Option<&Arc<UdpSocket>>,
    ) -> Option<(Message, usize)> {
        let zone = self.zone.read().clone();
        let domains = self.domains.read().clone();
        let nets = self.nets.read().clone();
        let ctx = Context {
            zone: &zone,
            domains: &domains,
            local_nets: &nets,
            local_only: self.settings.local_only,
            can_forward: !self.settings.upstreams.is_empty(),
            local_ttl: 0,
        };
        let limit_for = |m: &Message| match (&m.edns, via) {
            (_, None) => usize::from(u16::MAX),
            (Some(e), _) => usize::from(e.max_payload().clamp(512, EDNS_PAYLOAD)),
            (None, _) => 512,
        };
        match decide(bytes, from.ip(), &ctx) {
            Outcome::Drop(why) => {
                self.counters.dropped(why);
                None
            }
            Outcome::Reply { msg, how, question } => {
                self.counters.answered(how);
                if let Some(q) = &question {
                    self.counters.by_type[type_index(q.qtype)].fetch_add(1, Ordering::Relaxed);
                }
                if let Some(q) = &question {
                    self.log(|| format!("query[{}] {} from {}", q.qtype, q.name, from.ip()));
                    self.log(|| match how {
                        Answered::Local => format!(
                            "config {} is {}",
                            q.name,
                            msg.answers
                                .iter()
                                .map(|r| rdata_text(&r.data))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        Answered::NoData => format!("config {} is NODATA", q.name),
                        Answered::NxDomain => format!("config {} is NXDOMAIN", q.name),
                        other => format!("{} {:?}", q.name, other).to_lowercase(),
                    });
                }
                let limit = limit_for(&msg);
                Some((msg, limit))
            }
            Outcome::Forward { msg, question } => {
                self.counters.by_type[type_index(question.qtype)].fetch_add(1, Ordering::Relaxed);
                self.log(|| {
                    format!(
                        "query[{}] {} from {}",
                        question.qtype,
                        question.name,
                        from.ip()
                    )
                });
                let limit = limit_for(&msg);
                let cached = self.cache.lock().get(&question, now_secs());
                if let Some(mut c) = cached {
                    self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                    c.metadata.id = msg.metadata.id;
                    c.metadata.recursion_desired = msg.metadata.recursion_desired;
                    self.log(|| format!("cached {} is {}", question.name, summary(&c)));
                    return Some((c, limit));
                }
                self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
                match via {
                    Some(sock) => {
                        self.forward_udp(msg, question, from, sock.clone(), limit);
                        None
                    }
                    None => Some((self.forward_tcp(&msg, &question), limit)),
                }
            }
        }
    }

    fn forward_udp(
        &self,
        msg: Message,
        question: Question,
        client: SocketAddr,
        via: Arc<UdpSocket>,
        client_limit: usize,
    ) {
        let mut pending = self.pending.lock();
        let first = pending.is_empty();
        let mut id = self.fresh_id();
        while pending.contains_key(&id) {
            id = self.fresh_id();
        }
        let mut query = msg.clone();
        query.metadata.id = id;
        let now = Instant::now();
        let p = Pending {
            client,
            reply_via: via,
            client_id: msg.metadata.id,
            client_limit,
            question,
            query,
            server: 0,
            tries: 0,
            sent: now,
            started: now,
        };
        self.send_upstream(&p);
        pending.insert(id, p);
        drop(pending);
        if first {
            // the upstream source sets its retry timer from the queries that wait
            self.poke_upstream();
        }
    }

    fn poke_upstream(&self) {
        let loops = self.loops.lock();
        if let (Some((reactor, _)), Some(id)) = (loops.as_ref(), self.upstream_source.get()) {
            reactor.poke(*id);
        }
    }

    fn send_upstream(&self, p: &Pending) {
        let Some(server) = self.settings.upstreams.get(p.server) else {
            return;
        };
        self.log(|| format!("forwarded {} to {}", p.question.name, server.ip()));
        if let (Ok(b), Some(u)) = (p.query.to_vec(), &self.upstream) {
            let _ = u.send_to(&b, server);
        }
    }

    /// A forwarded query over TCP (the client came over TCP, most likely after a truncated
    /// answer): each upstream in turn, SERVFAIL when none answers.
    fn forward_tcp(&self, msg: &Message, question: &Question) -> Message {
        let t0 = Instant::now();
        for server in &self.settings.upstreams {
            self.log(|| format!("forwarded {} to {}", question.name, server.ip()));
            let Ok(mut s) = TcpStream::connect_timeout(server, UPSTREAM_TIMEOUT) else {
                continue;
            };
            let _ = s.set_read_timeout(Some(UPSTREAM_TIMEOUT * 2));
            let Ok(b) = msg.to_vec() else { break };
            let mut framed = (b.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&b);
            if s.write_all(&framed).is_err() {
                continue;
            }
            if let Some(answer) = read_framed(&mut s).and_then(|b| Message::from_vec(&b).ok()) {
                if answer.queries == msg.queries {
                    self.counters
                        .upstream_answers
                        .fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .forward_us
                        .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                    self.cache.lock().put(question, &answer, now_secs());
                    self.log(|| format!("reply {} is {}", question.name, summary(&answer)));
                    return answer;
                }
            }
        }
        self.counters.servfail.fetch_add(1, Ordering::Relaxed);
        let mut r = msg.clone();
        r.metadata.message_type = hickory_proto::op::MessageType::Response;
        r.metadata.response_code = ResponseCode::ServFail;
        r.metadata.recursion_available = true;
        r.answers.clear();
        r.authorities.clear();
        r.additionals.clear();
        r
    }

    pub(crate) fn relay(&self, bytes: &[u8], from: SocketAddr) {
        let Ok(mut answer) = Message::from_vec(bytes) else {
            return;
        };
        let mut pending = self.pending.lock();
        // only the server asked, with the id and the question sent, is believed
        let matches = pending.get(&answer.metadata.id).is_some_and(|p| {
            self.settings.upstreams.get(p.server) == Some(&from)
                && answer.queries == p.query.queries
        });
        if !matches {
            return;
        }
        let Some(p) = pending.remove(&answer.metadata.id) else {
            return;
        };
        drop(pending);
        self.counters
            .upstream_answers
            .fetch_add(1, Ordering::Relaxed);
        self.counters
            .forward_us
            .fetch_add(p.started.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.cache.lock().put(&p.question, &answer, now_secs());
        self.log(|| format!("reply {} is {}", p.question.name, summary(&answer)));
        answer.metadata.id = p.client_id;
        if let Some(b) = encode_within(&answer, p.client_limit) {
            let _ = p.reply_via.send_to(&b, p.client);
        }
    }

    /// When the oldest query sent upstream times out, if one waits.
    pub(crate) fn next_retry(&self) -> Option<Instant> {
        self.pending
            .lock()
            .values()
            .map(|p| p.sent + UPSTREAM_TIMEOUT)
            .min()
    }

    pub(crate) fn retry_or_fail(&self) {
        let now = Instant::now();
        let mut pending = self.pending.lock();
        let mut failed = Vec::new();
        for (id, p) in pending.iter_mut() {
            if now.duration_since(p.sent) < UPSTREAM_TIMEOUT {
                continue;
            }
            p.tries += 1;
            if p.tries >= self.settings.upstreams.len().max(1) * 2 {
                failed.push(*id);
                continue;
            }
            p.server = (p.server + 1) % self.settings.upstreams.len().max(1);
            p.sent = now;
            self.send_upstream(p);
        }
        for id in failed {
            if let Some(p) = pending.remove(&id) {
                self.counters.servfail.fetch_add(1, Ordering::Relaxed);
                self.log(|| {
                    format!(
                        "reply {} is SERVFAIL (no upstream answered)",
                        p.question.name
                    )
                });
                let mut r = p.query.clone();
                r.metadata.id = p.client_id;
                r.metadata.message_type = hickory_proto::op::MessageType::Response;
                r.metadata.response_code = ResponseCode::ServFail;
                r.metadata.recursion_available = true;
                r.answers.clear();
                r.authorities.clear();
                r.additionals.clear();
                if let Ok(b) = r.to_vec() {
                    let _ = p.reply_via.send_to(&b, p.client);
                }
            }
        }
    }

    /// One line of counters (SIGUSR1), as dnsmasq logs its cache statistics.
    pub fn stats_line(&self) -> String {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "DNS: {} names; queries answered locally {}, nxdomain {}, nodata {}, forwarded {}, cache hits {} ({} cached), upstream answers {}, servfail {}, refused {}, formerr {}, notimp {}; dropped: not local {}, malformed {}, not a query {}, over rate {}",
            self.names(),
            l(&c.local),
            l(&c.nxdomain),
            l(&c.nodata),
            l(&c.forwarded),
            l(&c.cache_hits),
            self.cache.lock().len(),
            l(&c.upstream_answers),
            l(&c.servfail),
            l(&c.refused),
            l(&c.formerr),
            l(&c.notimp),
            l(&c.dropped_not_local),
            l(&c.dropped_malformed),
            l(&c.dropped_not_query),
            l(&c.dropped_rate),
        )
    }
}

/// What an answer says, for the log.
fn summary(m: &Message) -> String {
    match m.metadata.response_code {
        ResponseCode::NoError if m.answers.is_empty() => "NODATA".into(),
        ResponseCode::NoError => m
            .answers
            .iter()
            .filter(|r| r.record_type() != RecordType::RRSIG)
            .map(|r| rdata_text(&r.data))
            .collect::<Vec<_>>()
            .join(", "),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        other => other.to_string(),
    }
}

/// Reads one length-prefixed DNS message (RFC 1035 §4.2.2).
pub(crate) fn read_framed(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut b = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut b).ok()?;
    Some(b)
}
