//! `qdhcp loadgen`: the command line of the load generator in `qdhcp-loadgen`.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use qdhcp_loadgen::{client_of, run as run_load, Config, Mode};

/// `qdhcp loadgen` flags.
#[derive(clap::Args, Debug)]
pub struct LoadgenArgs {
    /// Server address (port 67).
    #[arg(long, default_value = "127.0.0.1")]
    pub server: Ipv4Addr,
    /// Our relay address (giaddr); replies come to it on port 67.
    #[arg(long, default_value = "127.0.0.2")]
    pub giaddr: Ipv4Addr,
    /// Device the relay socket is bound to.
    #[arg(long, default_value = "lo")]
    pub device: String,
    /// Number of distinct clients (MACs fa:16:3e:…, counting from --first-client).
    #[arg(long, default_value_t = 1000)]
    pub clients: u32,
    /// Index of the first client MAC.
    #[arg(long, default_value_t = 0)]
    pub first_client: u32,
    /// Exchanges started per second; 0 = as fast as the window allows.
    #[arg(long, default_value_t = 0)]
    pub rate: u32,
    /// Seconds to start new exchanges.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Most exchanges in flight.
    #[arg(long, default_value_t = 4096)]
    pub window: usize,
    /// Milliseconds after which a missing reply is a drop.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// Send a client identifier (01:<mac>).
    #[arg(long)]
    pub client_id: bool,
    /// dora, discover, renew (renews every `mac ip` line of --renew-from), keep (on the
    /// link: clients that keep their leases, renewing at T1 and rebinding at T2, for
    /// --duration seconds; the first leases are taken at --rate a second), or dns (queries
    /// from --queries to --server port --dns-port, --rate a second or --window outstanding),
    /// or dhcpv6 (SOLICIT/ADVERTISE/REQUEST/REPLY as a relay from --relay6 to --server6, or
    /// with --link as the clients on the link, from their EUI-64 link-local addresses).
    #[arg(long, default_value = "dora")]
    pub mode: String,
    /// File of `mac ip …` lines to renew (a --record file).
    #[arg(long)]
    pub renew_from: Option<PathBuf>,
    /// Append `mac ip lease_end` for every ACK to this file (`mac address` for every REPLY in
    /// --mode dhcpv6).
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// One `sendmmsg` per batch instead of one segmented `sendmsg` (UDP_SEGMENT).
    #[arg(long)]
    pub no_gso: bool,
    /// Busy-poll for replies instead of waiting in poll: exact reply times, and the server
    /// never pays to wake us; takes a whole core (benchmarks pin it to its own).
    #[arg(long)]
    pub spin: bool,
    /// Be the clients on the link instead of a relay: send their broadcast frames on these
    /// interfaces (veth ends facing the server, or bridges its ports are on; comma-separated
    /// or repeated), client i on link i modulo their number.
    #[arg(long = "link", value_delimiter = ',')]
    pub links: Vec<String>,
    /// A file of link names, one per line (for a thousand networks' bridges).
    #[arg(long)]
    pub links_from: Option<PathBuf>,
    /// --mode keep: write one JSON line a second here (who holds how many clients, NAKs,
    /// expiries and address changes so far).
    #[arg(long)]
    pub series: Option<PathBuf>,
    /// --mode keep: renew this many seconds after each ACK instead of at T1 (many renewals
    /// at once without waiting half a lease).
    #[arg(long)]
    pub renew_after: Option<f64>,
    /// --mode dns: dnsperf's data file (`name TYPE` per line), sent round and round.
    #[arg(long)]
    pub queries: Option<PathBuf>,
    /// --mode dns: the server's port.
    #[arg(long, default_value_t = 53)]
    pub dns_port: u16,
    /// --mode dns: source sockets the queries are spread over (dnsperf's -c).
    #[arg(long, default_value_t = 4)]
    pub sockets: usize,
    /// --mode dhcpv6: the server's address (port 547).
    #[arg(long, default_value = "::1")]
    pub server6: std::net::Ipv6Addr,
    /// --mode dhcpv6: our relay address (replies come to it on port 547).
    #[arg(long, default_value = "::1")]
    pub relay6: std::net::Ipv6Addr,
    /// --mode dhcpv6: the link-address in each RELAY-FORW (an address of the served subnet).
    #[arg(long, default_value = "2001:db8:1::1")]
    pub link6: std::net::Ipv6Addr,
    /// --mode dhcpv6: write `<advertise|reply> <sent µs> <latency µs>` for every reply slower
    /// than --slow-us to this file (stalls of the machine show as runs of them).
    #[arg(long)]
    pub slow_log: Option<PathBuf>,
    /// The threshold of --slow-log, in microseconds.
    #[arg(long, default_value_t = 500)]
    pub slow_us: u64,
}

/// The links of --link and --links-from; Err is the exit code after an error said.
fn links(a: &LoadgenArgs) -> Result<Vec<String>, i32> {
    let mut links = a.links.clone();
    if let Some(p) = &a.links_from {
        match std::fs::read_to_string(p) {
            Ok(t) => links.extend(
                t.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string),
            ),
            Err(e) => {
                eprintln!("qdhcp loadgen: cannot read {}: {e}", p.display());
                return Err(2);
            }
        }
    }
    Ok(links)
}

/// `--mode dhcpv6`: SOLICIT/ADVERTISE/REQUEST/REPLY through a relay, or from the clients on
/// the links given ([`qdhcp_loadgen::v6`]).
fn run_dhcpv6(a: &LoadgenArgs) -> i32 {
    let links = match links(a) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let cfg = qdhcp_loadgen::v6::Config6 {
        server: std::net::SocketAddrV6::new(a.server6, 547, 0, 0),
        relay: a.relay6,
        link: a.link6,
        device: Some(a.device.clone()).filter(|d| !d.is_empty()),
        clients: a.clients,
        first_client: a.first_client,
        rate: a.rate,
        duration: Duration::from_secs_f64(a.duration),
        window: a.window,
        timeout: Duration::from_millis(a.timeout_ms),
        spin: a.spin,
        record: a.record.clone(),
        links,
        slow_log: a
            .slow_log
            .clone()
            .map(|p| (p, Duration::from_micros(a.slow_us))),
    };
    match qdhcp_loadgen::v6::run6(&cfg) {
        Ok(r) if a.json => {
            println!("{}", r.json(Mode::Dora, a.rate));
            0
        }
        Ok(r) => {
            let p = |l: &qdhcp_loadgen::Latencies, q| {
                l.percentile(q)
                    .map(|v| format!("{v}us"))
                    .unwrap_or_else(|| "-".into())
            };
            println!(
                "started {} advertises {} replies {} refusals {} drops {} ({:.2}%) in {:.2}s: {:.0}/s; SOLICIT->ADVERTISE p50 {} p99 {}; REQUEST->REPLY p50 {} p99 {}",
                r.started, r.offers, r.acks, r.naks, r.drops, r.drop_pct(), r.elapsed.as_secs_f64(), r.rate(Mode::Dora),
                p(&r.offer_latency, 50.0), p(&r.offer_latency, 99.0), p(&r.ack_latency, 50.0), p(&r.ack_latency, 99.0)
            );
            0
        }
        Err(e) => {
            eprintln!("qdhcp loadgen: {e}");
            1
        }
    }
}

/// `--mode dns`: the DNS query generator ([`qdhcp_loadgen::dns`]).
fn run_dns(a: &LoadgenArgs) -> i32 {
    let Some(p) = &a.queries else {
        eprintln!("qdhcp loadgen: --mode dns needs --queries FILE (name TYPE per line)");
        return 2;
    };
    let queries = match std::fs::read_to_string(p)
        .map_err(|e| e.to_string())
        .and_then(|t| qdhcp_loadgen::dns::parse_queries(&t))
    {
        Ok(q) => q,
        Err(e) => {
            eprintln!("qdhcp loadgen: {}: {e}", p.display());
            return 2;
        }
    };
    let cfg = qdhcp_loadgen::dns::DnsConfig {
        server: SocketAddrV4::new(a.server, a.dns_port),
        queries,
        rate: a.rate,
        window: a.window,
        duration: Duration::from_secs_f64(a.duration),
        timeout: Duration::from_millis(a.timeout_ms),
        sockets: a.sockets,
        spin: a.spin,
    };
    match qdhcp_loadgen::dns::run(&cfg) {
        Ok(r) if a.json => {
            println!("{}", r.json(a.rate));
            0
        }
        Ok(r) => {
            let p = |q| r.latency.percentile(q).unwrap_or(0);
            println!(
                "sent {} answered {} lost {} ({:.1} answered/s; NOERROR {}, NXDOMAIN {}, SERVFAIL {}, REFUSED {}); latency p50 {} us, p99 {} us, max {} us; generator CPU {:.0}%",
                r.sent, r.answered, r.lost, r.rate(), r.rcodes[0], r.rcodes[3], r.rcodes[2], r.rcodes[5],
                p(50.0), p(99.0), p(100.0), 100.0 * r.cpu_s / r.elapsed.as_secs_f64().max(1e-9)
            );
            0
        }
        Err(e) => {
            eprintln!("qdhcp loadgen: {e}");
            1
        }
    }
}

/// Runs the generator; returns the exit code.
pub fn run(a: &LoadgenArgs) -> i32 {
    if a.mode == "dhcpv6" {
        return run_dhcpv6(a);
    }
    let mode = match a.mode.as_str() {
        "dns" => return run_dns(a),
        "keep" => Mode::Dora,
        "dora" => Mode::Dora,
        "discover" => Mode::Discover,
        "renew" => Mode::Renew,
        m => {
            eprintln!(
                "qdhcp loadgen: unknown --mode {m} (dora, discover, renew, keep, dns, dhcpv6)"
            );
            return 2;
        }
    };
    let mut renew_from = Vec::new();
    if let Some(p) = &a.renew_from {
        let text = match std::fs::read_to_string(p) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("qdhcp loadgen: cannot read {}: {e}", p.display());
                return 2;
            }
        };
        for l in text.lines() {
            let mut f = l.split_whitespace();
            if let (Some(Some(c)), Some(Ok(ip))) = (
                f.next().map(client_of),
                f.next().map(str::parse::<Ipv4Addr>),
            ) {
                renew_from.push((c, ip));
            }
        }
    }
    let links = match links(a) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let cfg = Config {
        server: SocketAddrV4::new(a.server, 67),
        giaddr: a.giaddr,
        device: Some(a.device.clone()).filter(|d| !d.is_empty()),
        clients: a.clients,
        first_client: a.first_client,
        rate: a.rate,
        duration: Duration::from_secs_f64(a.duration),
        window: a.window,
        timeout: Duration::from_millis(a.timeout_ms),
        client_id: a.client_id,
        mode,
        renew_from,
        record: a.record.clone(),
        gso: !a.no_gso,
        spin: a.spin,
        links,
        renew_after: a.renew_after.map(Duration::from_secs_f64),
    };
    if a.mode == "keep" {
        return match qdhcp_loadgen::keep::run_keep(&cfg, a.series.as_deref()) {
            Ok(r) => {
                println!("{}", r.json());
                0
            }
            Err(e) => {
                eprintln!("qdhcp loadgen: {e}");
                1
            }
        };
    }
    match run_load(&cfg) {
        Ok(r) => {
            if a.json {
                println!("{}", r.json(mode, a.rate));
            } else {
                let p = |l: &qdhcp_loadgen::Latencies, q| {
                    l.percentile(q)
                        .map(|v| format!("{v}us"))
                        .unwrap_or_else(|| "-".into())
                };
                println!(
                    "started {} offers {} acks {} naks {} drops {} ({:.2}%){} in {:.2}s: {:.0}/s; DISCOVER->OFFER p50 {} p99 {}; REQUEST->ACK p50 {} p99 {}",
                    r.started, r.offers, r.acks, r.naks, r.drops, r.drop_pct(),
                    if r.wrong_link > 0 { format!(" wrong-link {}", r.wrong_link) } else { String::new() },
                    r.elapsed.as_secs_f64(), r.rate(mode),
                    p(&r.offer_latency, 50.0), p(&r.offer_latency, 99.0), p(&r.ack_latency, 50.0), p(&r.ack_latency, 99.0)
                );
            }
            0
        }
        Err(e) => {
            eprintln!("qdhcp loadgen: {e}");
            1
        }
    }
}
