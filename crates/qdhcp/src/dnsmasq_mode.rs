//! `qdhcp dnsmasq`: a drop-in for the dnsmasq that Neutron's DHCP agent runs. Same command
//! line, same host/opts/leases files, SIGHUP re-reads the files and applies only the
//! difference while serving continues. Wiring only: parsing is in `qdhcp-compat`, serving in
//! `qdhcp-dataplane`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use qdhcp_compat::files::{format_leases, parse_hosts, parse_leases, parse_opts, LeaseLine};
use qdhcp_compat::{build_table, parse_args, DnsmasqConfig};
use qdhcp_dataplane::listener::{iface_addrs, iface_names, open_dhcp_socket};
use qdhcp_dataplane::{now_secs, Dataplane, Network, ServeOptions};
use qdhcp_protocol::{Lease, NetworkTable, Policy};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};

use crate::daemon::{daemonize, Ready};
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
    if cfg.test_only {
        return match load_table(&cfg) {
            Ok((_, warnings)) => {
                for w in warnings {
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

fn read_optional(p: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
}

/// Reads the hosts and opts files and builds the table; an unreadable file is an error (the
/// caller keeps the previous table on reload).
fn load_table(cfg: &DnsmasqConfig) -> anyhow::Result<(NetworkTable, Vec<String>)> {
    let mut hosts = Vec::new();
    let mut opts = Vec::new();
    let mut warnings = Vec::new();
    for p in &cfg.hostsfiles {
        let (h, errs) = parse_hosts(&read_optional(p)?);
        hosts.extend(h);
        warnings.extend(errs.iter().map(|e| format!("{}: {e}", p.display())));
    }
    for p in &cfg.optsfiles {
        let (o, errs) = parse_opts(&read_optional(p)?);
        opts.extend(o);
        warnings.extend(errs.iter().map(|e| format!("{}: {e}", p.display())));
    }
    let built = build_table(cfg, &hosts, &opts);
    warnings.extend(built.warnings);
    Ok((built.table, warnings))
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

/// Interfaces to serve now: `--interface` ones that exist, else every one but lo and
/// `--except-interface` ones.
fn wanted_ifaces(cfg: &DnsmasqConfig) -> Vec<String> {
    let present = iface_names();
    present
        .into_iter()
        .filter(|i| {
            if cfg.interfaces.is_empty() {
                i != "lo" && !cfg.except_interfaces.contains(i)
            } else {
                cfg.interfaces
                    .iter()
                    .any(|w| w == i || (w.ends_with('*') && i.starts_with(w.trim_end_matches('*'))))
                    && !cfg.except_interfaces.contains(i)
            }
        })
        .filter(|i| !iface_addrs(i).is_empty())
        .collect()
}

fn serve(cfg: &DnsmasqConfig, ready: Ready) -> anyhow::Result<()> {
    if !cfg.ignored.is_empty() {
        tracing::warn!(
            "DNS options ignored (qdhcp serves DHCP only): {}",
            cfg.ignored
                .iter()
                .map(|f| format!("--{f}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    let (table, warnings) = match load_table(cfg) {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("{e:#}");
            ready.fail(&msg);
            anyhow::bail!(msg);
        }
    };
    for w in &warnings {
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
            .unwrap_or(qdhcp_dataplane::server::MacLimiter::PER_SECOND),
    };
    let dp = match Dataplane::open(&journal_path(&leasefile), policy, opts) {
        Ok(d) => d,
        Err(e) => {
            let msg = format!("{e} (fix or move the file away to start with an empty lease table)");
            ready.fail(&msg);
            anyhow::bail!(msg);
        }
    };
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

    let mut serving: HashSet<String> = HashSet::new();
    let started = start_listeners(cfg, &dp, &net, &mut serving);
    if let Err(e) = started {
        let msg = format!("{e:#}");
        ready.fail(&msg);
        anyhow::bail!(msg);
    }
    if let Some(p) = &cfg.pid_file {
        if let Err(e) = std::fs::write(p, format!("{}\n", std::process::id())) {
            let msg = format!("cannot write pid file {}: {e}", p.display());
            ready.fail(&msg);
            anyhow::bail!(msg);
        }
    }
    tracing::info!(
        "started, qdhcp version {} (dnsmasq compatible), DHCP on {}",
        env!("CARGO_PKG_VERSION"),
        if serving.is_empty() {
            "no interface yet".to_string()
        } else {
            serving.iter().cloned().collect::<Vec<_>>().join(", ")
        }
    );
    for s in &net.table().subnets {
        tracing::info!(target: "dhcp", "DHCP, static leases only on {}, lease time {}", s.net.network(),
            s.lease_secs.map(|l| format!("{l}s")).unwrap_or_else(|| "infinite".into()));
    }
    ready.ok();

    let signals = signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT, SIGUSR1])?;
    let mut signals = signals;
    let mut last_house = Instant::now();
    'main: loop {
        for sig in signals.pending() {
            match sig {
                SIGHUP => reload(cfg, &dp, &net),
                SIGUSR1 => tracing::info!(target: "dhcp", "{}", dp.stats_line()),
                SIGTERM | SIGINT => break 'main,
                _ => {}
            }
        }
        if last_house.elapsed() >= Duration::from_secs(1) {
            last_house = Instant::now();
            dp.housekeeping(now_secs());
            export_leases(&net, &leasefile);
            if let Err(e) = start_listeners(cfg, &dp, &net, &mut serving) {
                tracing::warn!("{e:#}");
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::info!("exiting on receipt of SIGTERM");
    dp.shutdown();
    force_export(&net, &leasefile);
    if let Some(p) = &cfg.pid_file {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

fn start_listeners(
    cfg: &DnsmasqConfig,
    dp: &Arc<Dataplane>,
    net: &Arc<Network>,
    serving: &mut HashSet<String>,
) -> anyhow::Result<()> {
    for iface in wanted_ifaces(cfg) {
        if serving.contains(&iface) {
            continue;
        }
        let sock = open_dhcp_socket(&iface)?;
        dp.listen(net.clone(), &iface, &iface, sock, None)?;
        tracing::info!("DHCP listening on {iface}");
        serving.insert(iface);
    }
    Ok(())
}

fn reload(cfg: &DnsmasqConfig, dp: &Dataplane, net: &Network) {
    let t0 = Instant::now();
    match load_table(cfg) {
        Ok((table, warnings)) => {
            for w in &warnings {
                tracing::warn!("{w}");
            }
            let n = table.reservations().len();
            let s = dp.reload(net, table);
            for p in &cfg.hostsfiles {
                tracing::info!(target: "dhcp", "read {} - {n} addresses", p.display());
            }
            tracing::info!(
                target: "dhcp",
                "reload: {} added, {} removed, {} changed, {} unchanged, {} lease(s) revoked, in {:.1} ms",
                s.added, s.removed, s.changed, s.unchanged, s.revoked, t0.elapsed().as_secs_f64() * 1000.0
            );
        }
        Err(e) => tracing::error!("reload failed, keeping the previous tables: {e:#}"),
    }
}

fn lease_from_line(l: LeaseLine) -> Lease {
    Lease {
        mac: l.mac,
        client_id: l.client_id,
        ip: l.ip,
        expires: (l.expiry != 0).then_some(l.expiry),
        hostname: l.hostname,
    }
}

fn export_leases(net: &Network, path: &Path) {
    let dirty = std::mem::take(&mut net.leases().dirty);
    if dirty {
        force_export(net, path);
    }
}

/// Writes dnsmasq's leases file (a view for Neutron; the journal is what is durable).
fn force_export(net: &Network, path: &Path) {
    let mut lines: Vec<LeaseLine> = net
        .leases()
        .leases()
        .map(|l| LeaseLine {
            expiry: l.expires.unwrap_or(0),
            mac: l.mac,
            ip: l.ip,
            hostname: l.hostname.clone(),
            client_id: l.client_id.clone(),
        })
        .collect();
    lines.sort_by_key(|l| l.ip);
    let tmp = path.with_extension("qdhcp-tmp");
    let res = std::fs::write(&tmp, format_leases(&lines)).and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = res {
        tracing::warn!("cannot write leases file {}: {e}", path.display());
    }
}
