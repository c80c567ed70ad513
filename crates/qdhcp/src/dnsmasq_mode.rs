//! `qdhcp dnsmasq`: a drop-in for the dnsmasq that Neutron's DHCP agent runs. Same command
//! line, same host/opts/leases files, SIGHUP re-reads the files and applies only the
//! difference while serving continues. Wiring only: parsing is in `qdhcp-compat`, serving in
//! `qdhcp-dataplane`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use qdhcp_compat::files::parse_leases;
use qdhcp_compat::{parse_args, DnsmasqConfig};
use qdhcp_dataplane::listener::iface_addrs;
use qdhcp_dataplane::{now_secs, Dataplane, ServeOptions};
use qdhcp_dataplane::{priority, privileges};
use qdhcp_protocol::Policy;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};

use crate::daemon::{daemonize, Ready};
use crate::dnsmasq_dns;
use crate::dnsmasq_ifaces::{listen_on, open_sockets, start_listeners, wanted_ifaces};
use crate::dnsmasq_leases::{lease_from_line, LeaseExport};
use crate::dnsmasq_tables::{load_table, reload};
use crate::dnsmasq_v6;
use crate::logging;

/// dnsmasq's default leases file.
const DEFAULT_LEASEFILE: &str = "/var/lib/misc/dnsmasq.leases";
/// The one network a dnsmasq instance serves, as named in the journal.
const NET: &str = "default";

/// Runs the dnsmasq-compatible server; returns the process exit code.
pub fn run(args: &[String]) -> i32 {
    let cfg = match parse_args(args, |p| std::fs::read_to_string(p)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("qdhcp dnsmasq: bad command line options: {e}");
            return 1;
        }
    };
    if cfg.version {
        print!("{}", version_banner());
        return 0;
    }
    if cfg.help {
        println!("Usage: qdhcp dnsmasq [options]: dnsmasq's DHCP command line, as Neutron's DHCP agent passes it.");
        println!(
            "Accepted flags: {}",
            qdhcp_compat::cmdline::flag_names().join(" ")
        );
        return 0;
    }
    if cfg.test_only {
        return match load_table(&cfg) {
            Ok(loaded) => {
                for w in loaded.warnings {
                    eprintln!("qdhcp dnsmasq: {w}");
                }
                println!("qdhcp dnsmasq: syntax check OK.");
                0
            }
            Err(e) => {
                eprintln!("qdhcp dnsmasq: {e:#}");
                1
            }
        };
    }
    let foreground = cfg.keep_in_foreground || cfg.no_daemon;
    let ready = if foreground {
        Ready::foreground()
    } else {
        match daemonize() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("qdhcp dnsmasq: cannot daemonize: {e}");
                return 1;
            }
        }
    };
    let sink = match logging::sink_for(cfg.log_facility.as_deref(), cfg.no_daemon) {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("{e:#}");
            ready.fail(&msg);
            eprintln!("qdhcp dnsmasq: {msg}");
            return 1;
        }
    };
    logging::init(sink, "dnsmasq-dhcp", "dnsmasq");
    match serve(&cfg, ready) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("FAILED to start up: {e:#}");
            eprintln!("qdhcp dnsmasq: {e:#}");
            1
        }
    }
}

/// The dnsmasq release whose command line, files and behaviour qdhcp's dnsmasq mode follows.
pub const DNSMASQ_COMPAT_VERSION: &str = "2.90";

/// `--version`: dnsmasq's banner shape, so that version checks that parse it (Neutron's
/// `dnsmasq_version_supported` looks for `version N.N`) accept it, then qdhcp's own version.
pub fn version_banner() -> String {
    format!(
        "Dnsmasq version {DNSMASQ_COMPAT_VERSION} compatible: qdhcp version {}\n\
         Compile time options: IPv4 IPv6 DHCP DHCPv6 no-TFTP no-DNSSEC no-scripts\n\
         qdhcp serves DHCPv4 and DHCPv6 from dnsmasq's command line and files; it is not dnsmasq.\n",
        env!("CARGO_PKG_VERSION")
    )
}

fn leasefile(cfg: &DnsmasqConfig) -> PathBuf {
    cfg.leasefile
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LEASEFILE))
}

fn journal_path(leasefile: &Path) -> PathBuf {
    let mut s = leasefile.as_os_str().to_owned();
    s.push(".journal");
    PathBuf::from(s)
}

fn serve(cfg: &DnsmasqConfig, ready: Ready) -> anyhow::Result<()> {
    warn_set_aside(cfg);
    let (server, signals) = match start_serving(cfg) {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("{e:#}");
            ready.fail(&msg);
            anyhow::bail!(msg);
        }
    };
    server.log_started();
    ready.ok();
    server.run(cfg, signals)
}

/// Says once which options are accepted without effect and what is not served.
fn warn_set_aside(cfg: &DnsmasqConfig) {
    if !cfg.ignored.is_empty() {
        tracing::warn!(
            "DNS options accepted without effect in qdhcp: {}",
            cfg.ignored
                .iter()
                .map(|f| format!("--{f}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if !cfg.not_served.is_empty() {
        tracing::warn!(
            "not served (qdhcp serves static DHCPv4 and DHCPv6 ranges, no router advertisements): {}",
            cfg.not_served.join(" ")
        );
    }
}

/// A running dnsmasq-mode server: its dataplane and networks, the leases file it writes, what
/// the next SIGHUP diffs against, the interfaces served, its DNS.
struct Server {
    dp: std::sync::Arc<Dataplane>,
    net: std::sync::Arc<qdhcp_dataplane::Network>,
    net6: Option<std::sync::Arc<qdhcp_dataplane::v6::Net6>>,
    applied: qdhcp_compat::reload::Applied,
    leasefile: PathBuf,
    export: LeaseExport,
    /// Wakes the leases-file thread (a lease went away, or shutdown).
    stop_wake: std::sync::mpsc::SyncSender<()>,
    export_wake: std::sync::mpsc::Receiver<()>,
    serving: HashSet<String>,
    serving6: HashSet<String>,
    dns: Option<parking_lot::Mutex<dnsmasq_dns::DnsSide>>,
    dropped: Option<privileges::Target>,
}

/// The sockets opened as root, served once the dataplane has started.
struct Sockets {
    v4: Vec<(String, socket2::Socket)>,
    v6: Vec<(String, socket2::Socket)>,
    dns: dnsmasq_dns::Opened,
}

/// Everything up to serving: what needs root is opened first, with one thread (credentials are
/// per thread); then root is given up; then the journal writer and the listeners start.
fn start_serving(cfg: &DnsmasqConfig) -> anyhow::Result<(Server, signal_hook::iterator::Signals)> {
    let (mut s, sockets) = open_as_root(cfg)?;
    s.dropped = drop_privileges(cfg, &mut s.export)?;
    s.export.update(&s.net, now_secs(), true);
    // Handlers first: a SIGHUP sent as soon as "DHCP listening" is logged (Neutron reloads
    // right after it starts us) must be queued, not kill the process by its default action.
    let signals = signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT, SIGUSR1])?;
    s.dp.start()?;
    listen_on(&s.dp, &s.net, sockets.v4, &mut s.serving)?;
    if let Some(n6) = &s.net6 {
        dnsmasq_v6::listen_on6(&s.dp, n6, sockets.v6, &mut s.serving6)?;
    }
    if let Some(d) = &s.dns {
        lock(d).serve(sockets.dns)?;
    }
    Ok((s, signals))
}

/// As root: the tables, the dataplane with the leases recovered and taken from the leases
/// file, every socket, the pid file.
fn open_as_root(cfg: &DnsmasqConfig) -> anyhow::Result<(Server, Sockets)> {
    let loaded = load_table(cfg)?;
    let (table, table6, applied) = (loaded.table, loaded.table6, loaded.applied);
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let leasefile = leasefile(cfg);
    let policy = Policy {
        decline_quarantine_secs: cfg.decline_quarantine.unwrap_or(600),
        default_router_self: true,
        default_dns_self: cfg.dns_port != Some(0),
        // dnsmasq's default limit is 1000 leases
        lease_max: Some(cfg.lease_max.unwrap_or(1000) as usize),
        trust_unrelayed_option82: cfg.trust_option82,
    };
    let opts = ServeOptions {
        always_broadcast: cfg.dhcp_broadcast,
        log_xid: cfg.log_dhcp,
        quiet: cfg.quiet_dhcp,
        client_rate: cfg
            .client_rate
            .unwrap_or(qdhcp_dataplane::MacLimiter::PER_SECOND),
        realtime: cfg.realtime,
        // one interface: one event loop serves it
        loops: 1,
        commit_interval: std::time::Duration::from_micros(
            cfg.commit_interval_us
                .unwrap_or(qdhcp_compat::cmdline::DEFAULT_COMMIT_INTERVAL_US)
                .into(),
        ),
    };
    // Until the privilege drop the process has one thread: the journal writer and the
    // listeners start after it (credentials are per thread).
    let dp = Dataplane::open_unstarted(&journal_path(&leasefile), policy, opts).map_err(|e| {
        anyhow::anyhow!("{e} (fix or move the file away to start with an empty lease table)")
    })?;
    let hosts = table.reservations().len();
    let net = dp.add_network(NET, table);
    // Neutron pre-seeds the leases file (`0 <mac> <ip> * *`) at spawn: take what the journal lacks.
    if let Ok(text) = std::fs::read_to_string(&leasefile) {
        let (lines, errs) = parse_leases(&text);
        for e in errs {
            tracing::warn!("{}: {e}", leasefile.display());
        }
        let seeded = dp.seed_leases(&net, lines.into_iter().map(lease_from_line).collect());
        if seeded > 0 {
            tracing::info!("{seeded} lease(s) taken from {}", leasefile.display());
        }
    }
    for p in &cfg.hostsfiles {
        tracing::info!(target: "dhcp", "read {} - {hosts} addresses", p.display());
    }
    // Compacted now, while files beside the journal can still be created: after the drop the
    // directory (Neutron's, owned by root) is not writable.
    let live = net.leases().len();
    dp.compact_if_grown(live, 1_000);

    let (stop_wake, export_wake) = std::sync::mpsc::sync_channel(1);
    // DHCPv6 when the command line has an IPv6 range: our DUID kept in the leases file
    let net6 = (!table6.is_empty()).then(|| {
        let duid = dnsmasq_v6::server_duid(&leasefile, &wanted_ifaces(cfg), now_secs());
        let n6 = dp.add_network6(NET, table6, duid);
        n6.leases().wake_on_removal(stop_wake.clone());
        let seeded = dnsmasq_v6::seed_from_leasefile(&n6, &leasefile);
        if seeded > 0 {
            tracing::info!(
                "{seeded} DHCPv6 lease(s) taken from {}",
                leasefile.display()
            );
        }
        n6
    });
    let export = LeaseExport::new(&net, net6.clone(), leasefile.clone(), stop_wake.clone());

    let serving: HashSet<String> = HashSet::new();
    let v4 = open_sockets(cfg, &serving)?;
    let serving6: HashSet<String> = HashSet::new();
    let v6 = match &net6 {
        Some(_) => dnsmasq_v6::open_sockets6(&wanted_ifaces(cfg), &serving6)?,
        None => Vec::new(),
    };
    let dns_ifaces = wanted_ifaces(cfg);
    let own: Vec<std::net::IpAddr> = dns_ifaces
        .iter()
        .flat_map(|i| iface_addrs(i))
        .map(|n| std::net::IpAddr::V4(n.addr()))
        .collect();
    let (dns, dns_sockets) = match dnsmasq_dns::open(cfg, &dns_ifaces, &own)? {
        Some((side, opened)) => (Some(parking_lot::Mutex::new(side)), opened),
        None => (None, Default::default()),
    };
    if let Some(p) = &cfg.pid_file {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .map_err(|e| anyhow::anyhow!("cannot write pid file {}: {e}", p.display()))?;
    }
    let server = Server {
        dp,
        net,
        net6,
        applied,
        leasefile,
        export,
        stop_wake,
        export_wake,
        serving,
        serving6,
        dns,
        dropped: None,
    };
    Ok((
        server,
        Sockets {
            v4,
            v6,
            dns: dns_sockets,
        },
    ))
}

impl Server {
    /// The start-up lines dnsmasq writes once it serves.
    fn log_started(&self) {
        if let Some(t) = &self.dropped {
            tracing::info!(
                "running as user {} (uid {}, gid {}), keeping only CAP_NET_ADMIN, CAP_NET_RAW, CAP_NET_BIND_SERVICE, CAP_SYS_NICE",
                t.user, t.uid, t.gid
            );
        }
        tracing::info!(
            "started, qdhcp version {} (dnsmasq compatible), DHCP on {}",
            env!("CARGO_PKG_VERSION"),
            if self.serving.is_empty() {
                "no interface yet".to_string()
            } else {
                self.serving.iter().cloned().collect::<Vec<_>>().join(", ")
            }
        );
        for s in &self.net.table().subnets {
            tracing::info!(target: "dhcp", "DHCP, static leases only on {}, lease time {}", s.net.network(),
                s.lease_secs.map(|l| format!("{l}s")).unwrap_or_else(|| "infinite".into()));
        }
        if let Some(n6) = &self.net6 {
            dnsmasq_v6::log_ranges(&n6.table());
            tracing::info!(target: "dhcp", "DHCPv6 server DUID {}", n6.server_id());
        }
    }

    /// Serves until SIGTERM or SIGINT: SIGHUP reloads, SIGUSR1 logs the counters; housekeeping
    /// and the leases file on threads of their own; then shuts down.
    fn run(
        self,
        cfg: &DnsmasqConfig,
        mut signals: signal_hook::iterator::Signals,
    ) -> anyhow::Result<()> {
        let Server {
            dp,
            net,
            net6,
            mut applied,
            leasefile,
            export,
            stop_wake,
            export_wake,
            serving,
            mut serving6,
            dns,
            dropped: _,
        } = self;
        // signals arrive on a thread of their own so that a SIGHUP is acted on at once, not at
        // the next tick of a polling loop (their handlers were installed before the first
        // listener started)
        let (sig_tx, sig_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if sig_tx.send(sig).is_err() {
                        break;
                    }
                }
            })?;
        // Housekeeping (reaping, compaction, new interfaces) and the leases file run on threads of
        // their own so that a SIGHUP never waits behind them, and at idle priority so that their
        // work (compaction encodes and writes megabytes; the leases file formats 100,000 lines every
        // second) yields to the serving threads. Where they hold a serving lock they run at normal
        // priority (see `priority`).
        let (stop_house, house_stop) = std::sync::mpsc::channel::<()>();
        let export_stop = std::sync::atomic::AtomicBool::new(false);
        let (export_stop, wake_rx) = (&export_stop, export_wake);
        let mut export = std::thread::scope(|sc| {
            let (dp, net, dns, net6) = (&dp, &net, &dns, &net6);
            std::thread::Builder::new()
                .name("housekeeping".into())
                .spawn_scoped(sc, move || {
                    priority::lower_to_idle();
                    let mut serving = serving;
                    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                        house_stop.recv_timeout(Duration::from_secs(1))
                    {
                        dp.housekeeping(now_secs());
                        if let Err(e) = start_listeners(cfg, dp, net, &mut serving) {
                            tracing::warn!("{e:#}");
                        }
                        if let Some(n6) = net6 {
                            let opened = dnsmasq_v6::open_sockets6(&wanted_ifaces(cfg), &serving6);
                            if let Err(e) = opened
                                .and_then(|o| dnsmasq_v6::listen_on6(dp, n6, o, &mut serving6))
                            {
                                tracing::warn!("{e:#}");
                            }
                        }
                        if let Some(d) = dns {
                            let mut d = lock(d);
                            let opened = d.open_new(&wanted_ifaces(cfg));
                            if let Err(e) = opened.and_then(|o| d.serve(o)) {
                                tracing::warn!("{e:#}");
                            }
                        }
                    }
                })
                .expect("cannot start the housekeeping thread");
            let exporter = std::thread::Builder::new()
                .name("leases-file".into())
                .spawn_scoped(sc, move || {
                    priority::lower_to_idle();
                    let mut export = export;
                    // once a second, and at once when a lease goes away (see LeaseExport::new)
                    loop {
                        let _ = wake_rx.recv_timeout(Duration::from_secs(1));
                        if export_stop.load(std::sync::atomic::Ordering::SeqCst) {
                            break;
                        }
                        export.update(net, now_secs(), false);
                    }
                    export
                })
                .expect("cannot start the leases-file thread");
            loop {
                match sig_rx.recv() {
                    Ok(SIGHUP) => {
                        reload(cfg, dp, net, net6.as_deref(), &mut applied);
                        if let Some(d) = dns {
                            lock(d).reload(cfg);
                        }
                    }
                    Ok(SIGUSR1) => {
                        tracing::info!(target: "dhcp", "{}", dp.stats_line());
                        if let Some(d) = dns {
                            tracing::info!(target: "dns", "{}", lock(d).server.stats_line());
                        }
                    }
                    Ok(SIGTERM | SIGINT) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            drop(stop_house);
            export_stop.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = stop_wake.try_send(());
            exporter.join().expect("leases file thread")
        });
        tracing::info!("exiting on receipt of SIGTERM");
        if let Some(d) = &dns {
            lock(d).server.stop();
        }
        // Neutron's restart() and disable() remove the pid file right after the signal, then
        // start a new instance (which writes its own pid file once it holds the journal this one
        // still holds) or remove the whole directory. An instance whose pid file is gone or names
        // another process has been replaced: it writes, renames and removes nothing, so that it
        // neither deletes the new instance's pid file nor recreates files in a directory being
        // removed. Every ACKed lease is in the journal already.
        // No compaction on the way out: the next start compacts before it serves, and nothing
        // is created here while Neutron may be removing the directory.
        if owns_its_files(cfg.pid_file.as_deref(), &leasefile) {
            dp.shutdown();
            export.update(&net, now_secs(), true);
            if let Some(p) = &cfg.pid_file {
                let _ = std::fs::remove_file(p);
            }
        } else {
            dp.shutdown();
            tracing::info!("replaced: pid file or directory gone, leaving the files as they are");
        }
        Ok(())
    }
}

fn lock<T>(m: &parking_lot::Mutex<T>) -> parking_lot::MutexGuard<'_, T> {
    m.lock()
}

/// True while this process is still the one its pid file names (or there is no pid file) and
/// the directory of its leases file still exists.
fn owns_its_files(pid_file: Option<&Path>, leasefile: &Path) -> bool {
    let dir_present = match leasefile.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.is_dir(),
        None => true,
    };
    let pid_is_ours = match pid_file {
        None => true,
        Some(p) => {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
                == Some(std::process::id())
        }
    };
    dir_present && pid_is_ours
}

/// Gives up root as dnsmasq does (`--user`, default `nobody`; `--group`, default the user's
/// primary group) once sockets and files are open, keeping only the capabilities the packet
/// path needs (see `qdhcp_dataplane::privileges`). Not root, or `--user=root`: nothing to drop.
fn drop_privileges(
    cfg: &DnsmasqConfig,
    export: &mut LeaseExport,
) -> anyhow::Result<Option<privileges::Target>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let target = privileges::resolve(
        cfg.user.as_deref().unwrap_or("nobody"),
        cfg.group.as_deref(),
    )?;
    if target.uid == 0 {
        return Ok(None);
    }
    // The leases file's directory is not writable after the drop: it is rewritten in place
    // through a descriptor opened now, as dnsmasq does.
    export.keep_open()?;
    privileges::drop_to(&target, &privileges::packet_path_caps())?;
    Ok(Some(target))
}
