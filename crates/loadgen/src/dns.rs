//! `qdhcp loadgen --mode dns`: a DNS query generator for the DNS benchmark. dnsperf sends and
//! receives one datagram per system call, so on a core of its own it can be the limit rather
//! than the server under test; this sends batches (`sendmmsg`, `UDP_SEGMENT` where queries are
//! of one size) and receives them with `recvmmsg`, so that the server is what is measured. Open loop at `--rate` (the latency of a
//! server that keeps up, without queueing in the generator), or closed loop with `--window`
//! queries outstanding (the peak). Every answer is matched to its query by socket and id; its
//! latency, answer code and the queries never answered are counted.
// Unsafe code here only to call the kernel directly (raw sockets and batched syscalls for the DNS
// load); every block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use qdhcp_batchio::{recv_batch, Outbox, MAX_BATCH};

use crate::Latencies;

/// What to send and how.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// The server (port 53 usually).
    pub server: SocketAddrV4,
    /// `name TYPE` lines, dnsperf's data file format; sent in turn, round and round.
    pub queries: Vec<(String, RecordType)>,
    /// Queries per second; 0: as many as `window` allows.
    pub rate: u32,
    /// Most queries outstanding.
    pub window: usize,
    /// How long to send.
    pub duration: Duration,
    /// An unanswered query counts as lost after this.
    pub timeout: Duration,
    /// Source sockets (ports) the queries are spread over, as dnsperf's `-c`.
    pub sockets: usize,
    /// Busy-poll between sends at a fixed rate instead of waiting in the kernel for the next
    /// query's time or an answer. A spinning generator holds its core, and the kernel's
    /// deferred work for the datagrams it sends (ksoftirqd) waits behind it: that adds
    /// milliseconds to the measured tail that are not the server's.
    pub spin: bool,
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct DnsReport {
    /// Queries sent.
    pub sent: u64,
    /// Answers matched to a query.
    pub answered: u64,
    /// Queries with no answer within the timeout.
    pub lost: u64,
    /// Answers by response code (index = RCODE, 0–15).
    pub rcodes: [u64; 16],
    /// Query → answer.
    pub latency: Latencies,
    /// Time spent sending.
    pub window: Duration,
    /// CPU seconds the generator used, to show it was not the limit.
    pub cpu_s: f64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl DnsReport {
    /// Answered queries per second of sending time.
    pub fn rate(&self) -> f64 {
        self.answered as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// One JSON object, for the benchmark script.
    pub fn json(&self, offered_rate: u32) -> String {
        let p = |q| {
            self.latency
                .percentile(q)
                .map(|v| v.to_string())
                .unwrap_or_else(|| "null".into())
        };
        format!(
            "{{\"offered_rate\":{offered_rate},\"sent\":{},\"answered\":{},\"lost\":{},\"noerror\":{},\"servfail\":{},\"nxdomain\":{},\"refused\":{},\"rate\":{:.1},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"loadgen_cpu_pct\":{:.1}}}",
            self.sent, self.answered, self.lost, self.rcodes[0], self.rcodes[2], self.rcodes[3], self.rcodes[5],
            self.rate(), p(50.0), p(99.0), p(99.9), p(100.0),
            100.0 * self.cpu_s / self.elapsed.as_secs_f64().max(1e-9)
        )
    }
}

/// Reads dnsperf's data file format: `name TYPE` per line (TYPE defaults to A); `#` comments.
pub fn parse_queries(text: &str) -> Result<Vec<(String, RecordType)>, String> {
    let mut out = Vec::new();
    for (n, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let mut f = l.split_whitespace();
        let name = f.next().unwrap_or_default().to_string();
        let ty = match f.next() {
            None => RecordType::A,
            Some(t) => t
                .to_ascii_uppercase()
                .parse()
                .map_err(|_| format!("line {}: unknown query type {t:?}", n + 1))?,
        };
        Name::from_ascii(&name).map_err(|e| format!("line {}: {name:?}: {e}", n + 1))?;
        out.push((name, ty));
    }
    if out.is_empty() {
        return Err("no queries".into());
    }
    Ok(out)
}

/// The query on the wire, recursion desired, id 0 (set per send).
fn encode(name: &str, ty: RecordType) -> io::Result<Vec<u8>> {
    let name =
        Name::from_ascii(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut m = Message::new(0, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name, ty));
    m.to_vec()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// One source socket and its queries in flight, by id.
struct Source {
    sock: UdpSocket,
    /// When the query with this id left; `None`: free.
    inflight: Vec<Option<Instant>>,
    next_id: u16,
    outbox: Outbox,
}

/// Runs the generator.
pub fn run(cfg: &DnsConfig) -> io::Result<DnsReport> {
    let wire: Vec<Vec<u8>> = cfg
        .queries
        .iter()
        .map(|(n, t)| encode(n, *t))
        .collect::<io::Result<_>>()?;
    let sockets = cfg.sockets.max(1);
    // a socket's ids must outnumber what it has outstanding
    let window = cfg.window.clamp(1, sockets * 60_000);
    let mut sources = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        sock.set_nonblocking(true)?;
        let s2 = socket2::SockRef::from(&sock);
        let _ = s2.set_recv_buffer_size(8 << 20);
        let _ = s2.set_send_buffer_size(8 << 20);
        sources.push(Source {
            sock,
            inflight: vec![None; 65_536],
            next_id: 0,
            outbox: Outbox::new(true),
        });
    }
    let mut report = DnsReport::default();
    // queries in the order sent, to find the lost ones: (source, id, sent at)
    let mut order: std::collections::VecDeque<(usize, u16, Instant)> = Default::default();
    let mut outstanding = 0usize;
    let mut next_query = 0usize;
    let mut query = Vec::with_capacity(512);
    let mut next_source = 0usize;
    let mut bufs = vec![[0u8; 1500]; MAX_BATCH];
    let mut lens = vec![0usize; MAX_BATCH];
    let cpu0 = crate::cpu_seconds();
    let t0 = Instant::now();
    let mut sending = true;
    loop {
        let now = Instant::now();
        let since = now - t0;
        if sending && since >= cfg.duration {
            sending = false;
            report.window = since;
        }
        if !sending && (outstanding == 0 || since >= cfg.duration + cfg.timeout) {
            break;
        }
        // send what is due, in batches, each socket in turn
        if sending {
            let due = if cfg.rate == 0 {
                u64::MAX
            } else {
                ((since.as_secs_f64() * f64::from(cfg.rate)) as u64).saturating_sub(report.sent)
            };
            let room = window.saturating_sub(outstanding) as u64;
            let mut n = due.min(room).min((MAX_BATCH * sockets) as u64) as usize;
            while n > 0 {
                let s = &mut sources[next_source];
                let take = n.min(MAX_BATCH);
                for _ in 0..take {
                    let mut id = s.next_id;
                    while s.inflight[usize::from(id)].is_some() {
                        id = id.wrapping_add(1);
                    }
                    s.next_id = id.wrapping_add(1);
                    // the query with its id, in a buffer reused for every send
                    query.clear();
                    query.extend_from_slice(&wire[next_query]);
                    next_query = (next_query + 1) % wire.len();
                    query[..2].copy_from_slice(&id.to_be_bytes());
                    s.outbox.push(cfg.server, &query);
                    s.inflight[usize::from(id)] = Some(now);
                    order.push_back((next_source, id, now));
                }
                let fd = s.sock.as_raw_fd();
                let mut failed = Vec::new();
                let base = order.len() - take;
                s.outbox.flush(fd, |i, r| {
                    if r.is_err() {
                        failed.push(base + i);
                    }
                });
                // a datagram the kernel would not take was never sent
                for &k in failed.iter().rev() {
                    if let Some((src, id, _)) = order.remove(k) {
                        sources[src].inflight[usize::from(id)] = None;
                    }
                }
                let sent = take - failed.len();
                report.sent += sent as u64;
                outstanding += sent;
                n -= take;
                next_source = (next_source + 1) % sockets;
                if !failed.is_empty() {
                    break;
                }
            }
        }
        // take every answer queued
        let mut got_any = false;
        for s in sources.iter_mut() {
            loop {
                let k = match recv_batch(s.sock.as_raw_fd(), &mut bufs, &mut lens, false) {
                    Ok(k) => k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => 0,
                    Err(e) => return Err(e),
                };
                if k == 0 {
                    break;
                }
                got_any = true;
                let at = Instant::now();
                for (b, &len) in bufs.iter().zip(&lens).take(k) {
                    if len < 12 {
                        continue;
                    }
                    let id = u16::from_be_bytes([b[0], b[1]]);
                    if let Some(sent_at) = s.inflight[usize::from(id)].take() {
                        outstanding -= 1;
                        report.answered += 1;
                        report.rcodes[usize::from(b[3] & 0x0f)] += 1;
                        report.latency.push(at - sent_at);
                    }
                }
            }
        }
        // what is past its time is lost
        let now = Instant::now();
        while let Some(&(src, id, at)) = order.front() {
            if now - at < cfg.timeout {
                break;
            }
            order.pop_front();
            let slot = &mut sources[src].inflight[usize::from(id)];
            if *slot == Some(at) {
                *slot = None;
                outstanding -= 1;
                report.lost += 1;
            }
        }
        if !got_any && (!sending || outstanding >= window) {
            // nothing to do until an answer comes: wait for one briefly
            wait_readable(&sources, Duration::from_micros(200));
        } else if !got_any && sending && cfg.rate > 0 && !cfg.spin {
            // at a fixed rate, with nothing due: wait for an answer or the next query's time
            let next = t0 + Duration::from_secs_f64((report.sent + 1) as f64 / f64::from(cfg.rate));
            let wait = next.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                wait_readable(&sources, wait);
            }
        }
        // keep the queue of sent queries from holding every answered one
        if order.len() > 4 * window {
            order.retain(|&(src, id, at)| sources[src].inflight[usize::from(id)] == Some(at));
        }
    }
    report.elapsed = t0.elapsed();
    if report.window.is_zero() {
        report.window = report.elapsed;
    }
    report.cpu_s = crate::cpu_seconds() - cpu0;
    Ok(report)
}

/// Waits until a socket has an answer, or `max` has passed.
fn wait_readable(sources: &[Source], max: Duration) {
    let mut fds: Vec<libc::pollfd> = sources
        .iter()
        .map(|s| libc::pollfd {
            fd: s.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let max = max.min(Duration::from_millis(1));
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: max.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `fds` is a valid array of pollfd of the length passed, `ts` a valid timespec.
    unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnsperf_data_files_are_read() {
        let q = parse_queries(
            "# names\nhost-10-0-0-3.openstacklocal A\nexample.test\n3.0.0.10.in-addr.arpa ptr\n",
        )
        .unwrap();
        assert_eq!(
            q,
            vec![
                ("host-10-0-0-3.openstacklocal".to_string(), RecordType::A),
                ("example.test".to_string(), RecordType::A),
                ("3.0.0.10.in-addr.arpa".to_string(), RecordType::PTR),
            ]
        );
        assert!(parse_queries("x.test BOGUS\n").is_err());
        assert!(parse_queries("\n# nothing\n").is_err());
    }

    #[test]
    fn queries_are_encoded_with_recursion_desired_and_parse_back() {
        let b = encode("host-10-0-0-3.openstacklocal", RecordType::A).unwrap();
        let m = Message::from_vec(&b).unwrap();
        assert!(m.metadata.recursion_desired);
        assert_eq!(m.queries.len(), 1);
        assert_eq!(m.queries[0].query_type(), RecordType::A);
    }

    /// Against a small server on loopback that answers every other query: the answered ones
    /// are counted with their code and latency, the others as lost after the timeout.
    #[test]
    fn answers_are_matched_and_silence_is_counted_as_lost() {
        let srv = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = match srv.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        srv.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let st = stop.clone();
        let server = std::thread::spawn(move || {
            let mut b = [0u8; 1500];
            let mut n = 0u64;
            while !st.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok((len, from)) = srv.recv_from(&mut b) {
                    n += 1;
                    if n.is_multiple_of(2) {
                        b[2] |= 0x80; // a response
                        b[3] = (b[3] & 0xf0) | 3; // NXDOMAIN
                        let _ = srv.send_to(&b[..len], from);
                    }
                }
            }
        });
        let cfg = DnsConfig {
            server: addr,
            queries: parse_queries("a.test A\nb.test AAAA\n").unwrap(),
            rate: 200,
            window: 100,
            duration: Duration::from_millis(500),
            timeout: Duration::from_millis(200),
            sockets: 2,
            spin: false,
        };
        let r = run(&cfg).unwrap();
        // at a fixed rate it waits in the kernel between queries, not on its core
        assert!(
            r.cpu_s < 0.5 * r.elapsed.as_secs_f64(),
            "the generator spun: {r:?}"
        );
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        server.join().unwrap();
        assert!(r.sent >= 90 && r.sent <= 110, "{r:?}");
        assert_eq!(r.answered + r.lost, r.sent, "{r:?}");
        assert!(
            r.answered * 2 >= r.sent - 2 && r.answered * 2 <= r.sent + 2,
            "{r:?}"
        );
        assert_eq!(r.rcodes[3], r.answered);
        assert_eq!(r.latency.len() as u64, r.answered);
    }
}
