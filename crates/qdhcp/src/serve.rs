//! `qdhcp serve`: the whole system in one process. The Neutron-compatible API and registry
//! (SQLite under the state directory), and the DHCP dataplane for every network with a
//! DHCP-enabled subnet, each in its own namespace `qdhcp-<network>` on `ns-<port>`, whose
//! `tap<port>` peer is on the bridge that `bridge_mappings` names. A port change reaches that
//! network's reservation table in place, before the API call returns.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use qdhcp_api::auth::{Auth, Tokens};
use qdhcp_api::{router, ApiState};
use qdhcp_control::Control;
use qdhcp_dataplane::{now_secs, Dataplane};
use qdhcp_plumbing::open_netns;
use qdhcp_protocol::Policy;
use qdhcp_store::Store;

use crate::logging;
use qdhcp_agent::DhcpSync;

pub use crate::serve_config::{
    resolve, serve_options, DnsConfig, ServeArgs, ServeConfig, VxlanConfig,
};

/// Every network holds a few descriptors (its DHCP socket, its DNS sockets, its namespace),
/// so ten thousand networks need more than the usual soft limit of 1,024: the soft limit is
/// raised to the hard one, and the hard one (as root) to the kernel's `nr_open`.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    let want = nr_open.max(hard);
    if setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return;
    }
    if soft < hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Runs `qdhcp serve`; returns the exit code.
pub fn run(args: &ServeArgs) -> i32 {
    let cfg = match resolve(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("qdhcp serve: {e:#}");
            return 2;
        }
    };
    if let Some(ns) = &cfg.netns {
        let entered = open_netns(ns)
            .map_err(anyhow::Error::from)
            .and_then(|f| qdhcp_netns::enter_for_good(&f).map_err(Into::into));
        if let Err(e) = entered {
            eprintln!("qdhcp serve: cannot enter namespace {ns}: {e:#}");
            return 1;
        }
    }
    let sink = match &cfg.log_file {
        Some(p) => logging::sink_for(Some(&p.display().to_string()), false),
        None => logging::sink_for(Some("-"), true),
    };
    match sink {
        Ok(s) => logging::init(s, "qdhcp-dhcp", "qdhcp"),
        Err(e) => {
            eprintln!("qdhcp serve: {e:#}");
            return 1;
        }
    }
    raise_open_files_limit();
    if qdhcp_plumbing::netns_dir_is_slave() {
        // started under `ip netns exec`: its private mount namespace would keep the DHCP
        // namespaces from everyone else (as it does for `ip netns add` run there)
        match qdhcp_plumbing::bind_in_parent_mount_namespace() {
            Ok(true) => tracing::info!(
                "started in a mount namespace of its own (ip netns exec?): DHCP namespaces are bound in the mount namespace of the process that started qdhcp (pid {}), where `ip netns` sees them",
                nix::unistd::getppid()
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                "{} in this process is a slave mount (started under `ip netns exec`?) and the starting process's mount namespace cannot be entered ({e}): the DHCP namespaces cannot be entered from outside this process; use --netns NAME, which enters only the network namespace",
                qdhcp_plumbing::NETNS_DIR
            ),
        }
    }
    match serve(cfg) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("qdhcp serve: {e:#}");
            1
        }
    }
}

fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    let auth = match &cfg.tokens_file {
        Some(p) => Auth::Tokens(Tokens::load(p)?),
        None if cfg.listen.ip().is_loopback() => Auth::NoAuth,
        None => anyhow::bail!(
            "listening on {} needs --tokens-file: only loopback may run without authentication",
            cfg.listen
        ),
    };
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("cannot create state dir {}", cfg.state_dir.display()))?;
    let store = match &cfg.database {
        Some(url) => Store::open_url(url)?,
        None => Store::open(&cfg.state_dir.join("qdhcp.sqlite"))?,
    };
    let policy = Policy {
        decline_quarantine_secs: 600,
        default_router_self: false,
        default_dns_self: false,
        lease_max: None,
        trust_unrelayed_option82: false,
    };
    let dp = Dataplane::open(
        &cfg.state_dir.join("leases.journal"),
        policy,
        serve_options(&cfg),
    )
    .map_err(|e| {
        anyhow::anyhow!("{e} (fix or move the file away to start with an empty lease table)")
    })?;
    let sync = Arc::new(DhcpSync::new(dp.clone(), cfg.agent()));
    sync.start_metadata()?;
    let control = Arc::new(Control::open_with(
        store,
        sync.clone(),
        cfg.segments.clone(),
    )?);
    // metadata requests read the registry as published at the moment they arrive
    let published = Arc::downgrade(&control);
    sync.set_registry(Arc::new(move || published.upgrade().map(|c| c.read())));
    // This node's heartbeat first: the scheduler places networks on live nodes, this one too.
    control.set_nodes_per_network(cfg.nodes_per_network)?;
    qdhcp_control::nodes::start_heartbeats(&control, &cfg.node, cfg.node_down_secs)?;
    // Serve at once every network whose namespace survived (a restart), then check and repair
    // every network's plumbing in the background, one network at a time, while the API runs.
    let t0 = std::time::Instant::now();
    let (served, mut left) = {
        let reg = control.read();
        sync.serve_existing(&reg)
    };
    if served > 0 {
        tracing::info!(
            "{served} networks served again in {} ms; checking their plumbing in the background",
            t0.elapsed().as_millis()
        );
    }
    {
        let reg = control.read();
        let known: std::collections::HashSet<String> = left.iter().cloned().collect();
        left.extend(
            reg.networks()
                .map(|n| n.id.to_string())
                .filter(|id| !known.contains(id)),
        );
    }
    let reconcile = control.clone();
    let stale = sync.clone();
    std::thread::Builder::new()
        .name("reconcile".into())
        .spawn(move || {
            let t0 = std::time::Instant::now();
            let n = reconcile.sync_each(left);
            let removed = stale.remove_stale(&reconcile);
            if !removed.is_empty() {
                tracing::info!(
                    "removed what networks deleted meanwhile left behind: {}",
                    removed.join(", ")
                );
            }
            tracing::info!(
                "plumbing of {n} networks checked in {} ms",
                t0.elapsed().as_millis()
            );
        })?;

    let house = dp.clone();
    std::thread::Builder::new()
        .name("housekeeping".into())
        .spawn(move || {
            // Compaction's encoding and writing never delay a reply (see `priority`).
            qdhcp_dataplane::priority::lower_to_idle();
            loop {
                std::thread::sleep(Duration::from_secs(1));
                if house.stopping() {
                    break;
                }
                house.housekeeping(now_secs());
            }
        })?;

    let mdp = dp.clone();
    let msync = sync.clone();
    let metrics: qdhcp_api::MetricsSource = Arc::new(move |registry| {
        mdp.register_metrics(registry);
        qdhcp_dns::server::register_metrics(&msync.dns_servers(), registry);
        if let Some(m) = msync.metadata() {
            m.register_metrics(registry);
        }
    });
    // writes through other nodes' APIs reach this node's tables (PostgreSQL's LISTEN/NOTIFY)
    control.watch()?;
    let state = ApiState::new(control, auth, Some(metrics));
    state.set_node_down_secs(cfg.node_down_secs);
    state.set_dns_domain(cfg.dhcp.domain.as_deref().unwrap_or(""));
    let (lsync, lcontrol) = (sync.clone(), Arc::downgrade(&state.control));
    state.set_leases(Arc::new(move || match lcontrol.upgrade() {
        Some(c) => lsync.lease_rows(&c.read()),
        None => Vec::new(),
    }));
    let (rsync, rcontrol) = (sync.clone(), Arc::downgrade(&state.control));
    state.set_unserved(Arc::new(move || match rcontrol.upgrade() {
        Some(c) => rsync.unserved(&c.read()),
        None => Vec::new(),
    }));
    // One async worker answers HTTP; one blocking thread runs the writes (they queue on the
    // registry lock anyway): threads stay few however many networks or requests there are.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.listen))?;
        tracing::info!("started, qdhcp version {}: Neutron API on http://{}/ , state in {}", env!("CARGO_PKG_VERSION"), cfg.listen, cfg.state_dir.display());
        // systemd's Type=notify: `systemctl start` returns now, with the API up and every
        // network that survived a restart served
        if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
            tracing::warn!("cannot tell the service manager we are ready: {e}");
        }
        axum::serve(listener, router(state))
            .with_graceful_shutdown(async {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {},
                }
            })
            .await?;
        Ok::<(), anyhow::Error>(())
    })?;
    tracing::info!("exiting: stopping DHCP");
    dp.shutdown_and_compact();
    Ok(())
}
