//! The metadata service of `qdhcp serve`: one [`Service`] for the process (mode, limits, the
//! pooled client to Nova, counters), one [`Site`] per network (its listener on
//! 169.254.169.254:80 in the network's namespace and its connections), all served by the
//! given event loops: no thread and no process per network.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use qdhcp_reactor::{Reactor, Source, SourceId, Turn};
use qdhcp_registry::Registry;
use socket2::{Domain, Protocol, Socket, Type};

use crate::answer::Mode;
use crate::conn::Conn;
use crate::limit::RateLimit;
use crate::metrics::SiteCounters;
use crate::upstream::{Upstream, UpstreamConfig};

/// The metadata address, where Neutron's agent serves it.
pub const METADATA_V4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 169, 254);
/// The IPv6 metadata address, on networks with an IPv6 subnet (Neutron's `METADATA_V6_IP`).
pub const METADATA_V6: std::net::Ipv6Addr =
    std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0xa9fe, 0xa9fe);

/// [`METADATA_V6`] with the prefix Neutron's agent adds it with (`fe80::a9fe:a9fe/64`).
pub fn metadata_v6_net() -> ipnet::IpNet {
    ipnet::IpNet::V6(ipnet::Ipv6Net::new(METADATA_V6, 64).unwrap_or_default())
}

/// Open connections one network may hold; past it new ones are closed at once.
pub const CONNECTIONS_PER_NETWORK: usize = 256;
/// Connections accepted per listener turn.
const ACCEPT_BUDGET: usize = 32;

/// The registry as it is now (`None` before the control plane is up).
pub type RegistryView = Arc<dyn Fn() -> Option<Arc<Registry>> + Send + Sync>;

/// How the service answers, from the node's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Built-in or proxy (with the shared secret).
    pub mode: Mode,
    /// Nova, in proxy mode.
    pub upstream: Option<UpstreamConfig>,
    /// `dhcp_domain`, for host names in built-in answers.
    pub domain: Option<String>,
    /// Requests per source per `rate_window`; 0: no limit.
    pub rate_limit: u32,
    /// The rate's window.
    pub rate_window: Duration,
    /// How long a request's head may take to arrive, and a kept-alive connection may idle.
    pub client_timeout: Duration,
}

/// The process's metadata service.
pub struct Service {
    pub(crate) settings: Settings,
    pub(crate) upstream: Option<Upstream>,
    pub(crate) loops: Arc<Reactor>,
    registry: OnceLock<RegistryView>,
    pub(crate) sites: Mutex<BTreeMap<String, Arc<Site>>>,
    pub(crate) upstream_latency: prometheus_client::metrics::histogram::Histogram,
    /// Malformed-request log lines this second (at most 10 a second are written).
    pub(crate) bad_logged: (AtomicU64, AtomicU64),
}

impl Service {
    /// A service answering as `settings` say, on `loops`.
    pub fn new(settings: Settings, loops: Arc<Reactor>) -> anyhow::Result<Arc<Service>> {
        let upstream = match (&settings.mode, &settings.upstream) {
            (Mode::Proxy { .. }, Some(u)) => Some(Upstream::new(u)?),
            (Mode::Proxy { .. }, None) => anyhow::bail!("proxy mode needs Nova's URL"),
            (Mode::Builtin, _) => None,
        };
        Ok(Arc::new(Service {
            settings,
            upstream,
            loops,
            registry: OnceLock::new(),
            sites: Mutex::new(BTreeMap::new()),
            upstream_latency: prometheus_client::metrics::histogram::Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            bad_logged: (AtomicU64::new(0), AtomicU64::new(0)),
        }))
    }

    /// Where requests read the registry from (set once the control plane is open; until
    /// then requests get 503).
    pub fn set_registry(&self, view: RegistryView) {
        let _ = self.registry.set(view);
    }

    pub(crate) fn registry(&self) -> Option<Arc<Registry>> {
        self.registry.get().and_then(|v| v())
    }

    /// The mode's label (`builtin` or `proxy`).
    pub fn mode(&self) -> &'static str {
        self.settings.mode.label()
    }

    /// Serves `listener` (opened in the network's namespace) for network `network_id`, on
    /// interface `iface`; replaces a site the network had.
    pub fn serve(
        self: &Arc<Self>,
        network_id: &str,
        iface: &str,
        listener: TcpListener,
    ) -> io::Result<Arc<Site>> {
        listener.set_nonblocking(true)?;
        let site = Arc::new(Site {
            service: Arc::downgrade(self),
            network_id: network_id.to_string(),
            iface: iface.to_string(),
            limiter: Mutex::new(RateLimit::new(
                self.settings.rate_limit,
                self.settings.rate_window,
            )),
            open: AtomicUsize::new(0),
            conns: Mutex::new(HashSet::new()),
            listeners: Mutex::new(Vec::new()),
            counters: SiteCounters::default(),
        });
        site.add(&self.loops, listener)?;
        if let Some(old) = self
            .sites
            .lock()
            .insert(network_id.to_string(), site.clone())
        {
            old.stop(&self.loops);
        }
        Ok(site)
    }

    /// Serves another listener (the IPv6 address beside the IPv4 one) for a network that has
    /// a site; `false` when it has none.
    pub fn also_serve(&self, network_id: &str, listener: TcpListener) -> io::Result<bool> {
        listener.set_nonblocking(true)?;
        let site = self.sites.lock().get(network_id).cloned();
        match site {
            Some(site) => site.add(&self.loops, listener).map(|()| true),
            None => Ok(false),
        }
    }

    /// Whether the network's site listens on `addr`.
    pub fn listens_on(&self, network_id: &str, addr: &SocketAddr) -> bool {
        let site = self.sites.lock().get(network_id).cloned();
        site.is_some_and(|s| s.listeners.lock().iter().any(|(a, _)| a.ip() == addr.ip()))
    }

    /// Stops the network's site: its listener and every connection closed.
    pub fn stop(&self, network_id: &str) {
        let site = self.sites.lock().remove(network_id);
        if let Some(site) = site {
            site.stop(&self.loops);
        }
    }

    /// Whether the network has a site.
    pub fn serves(&self, network_id: &str) -> bool {
        self.sites.lock().contains_key(network_id)
    }

    /// Writes at most ten malformed-request lines a second.
    pub(crate) fn may_log_bad(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let (sec, n) = &self.bad_logged;
        if sec.swap(now, Ordering::Relaxed) != now {
            n.store(0, Ordering::Relaxed);
        }
        n.fetch_add(1, Ordering::Relaxed) < 10
    }
}

/// One network's metadata listener and its connections.
pub struct Site {
    pub(crate) service: std::sync::Weak<Service>,
    /// The network.
    pub network_id: String,
    /// The DHCP interface it listens on.
    pub iface: String,
    pub(crate) limiter: Mutex<RateLimit>,
    pub(crate) open: AtomicUsize,
    pub(crate) conns: Mutex<HashSet<SourceId>>,
    /// Its listening sockets on the loops, by address.
    listeners: Mutex<Vec<(SocketAddr, SourceId)>>,
    pub(crate) counters: SiteCounters,
}

impl Site {
    /// Puts `listener` on the loops for this site.
    fn add(self: &Arc<Self>, loops: &Reactor, listener: TcpListener) -> io::Result<()> {
        let addr = listener.local_addr()?;
        let id = loops.add(Box::new(Accept {
            site: self.clone(),
            listener,
        }));
        self.listeners.lock().push((addr, id));
        Ok(())
    }

    fn stop(&self, loops: &Reactor) {
        for (_, id) in self.listeners.lock().drain(..) {
            loops.remove(id);
        }
        let conns: Vec<SourceId> = self.conns.lock().drain().collect();
        for c in conns {
            loops.remove(c);
        }
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// Opens the listener on `addr` (call it inside the network's namespace: a socket keeps the
/// namespace it was made in), bound to `iface`.
pub fn open_listener(addr: SocketAddr, iface: &str) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind_device(Some(iface.as_bytes()))?;
    if addr.is_ipv6() {
        // fe80::a9fe:a9fe is added with duplicate address detection, as Neutron adds it:
        // tentative for a second or so, when a plain bind fails; it answers once detection
        // is done (and stays silent on the node whose copy detection failed)
        s.set_freebind_ipv6(true)?;
    }
    s.bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("metadata {addr} on {iface}: {e}")))?;
    s.listen(128)?;
    Ok(s.into())
}

/// A network's listening socket on the loops.
struct Accept {
    site: Arc<Site>,
    listener: TcpListener,
}

impl Source for Accept {
    fn fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    fn ready(&mut self) -> Turn {
        let Some(service) = self.site.service.upgrade() else {
            return Turn::Drained;
        };
        for _ in 0..ACCEPT_BUDGET {
            let (stream, peer) = match self.listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Turn::Drained,
            };
            if self.site.open.load(Ordering::Relaxed) >= CONNECTIONS_PER_NETWORK {
                self.site.counters.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = stream.set_nodelay(true);
            self.site.open.fetch_add(1, Ordering::Relaxed);
            let site = self.site.clone();
            let timeout = service.settings.client_timeout;
            service.loops.add_with(|id| {
                // known before its first turn, so that its end (on any loop) forgets it
                site.conns.lock().insert(id);
                Box::new(Conn::new(stream, peer.ip(), site, id, timeout))
            });
        }
        Turn::More
    }
}
