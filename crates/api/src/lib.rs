//! qdhcp's Neutron Networking API v2.0 subset: version discovery, extensions, and
//! create/list/show/update/delete of networks, subnets and ports, with Neutron's JSON shapes,
//! list filters, `fields=`, and errors as `{"NeutronError": {type, message, detail}}`.
//! HTTP only: rules live in the registry, storage in the store.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agents;
pub mod auth;
mod discovery;
pub mod health;
pub mod leases;
pub mod render;
mod resources;
mod writes;

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use qdhcp_registry::{Caller, RegistryError};
use serde_json::json;

use crate::auth::{Auth, NOAUTH_PROJECT};
use crate::discovery::{extension, extensions, resources, versions};
use crate::resources::{list, show};
use crate::writes::{create, delete, update};
use qdhcp_control::{Control, ControlError};

/// Largest request body accepted; larger ones get 413.
pub const MAX_BODY: usize = 1 << 20;

/// The other parts' metrics (the DHCP dataplane's and DNS counters): at each scrape they put
/// their collectors into the one registry `/metrics` is encoded from.
pub type MetricsSource = Arc<dyn Fn(&mut prometheus_client::registry::Registry) + Send + Sync>;

/// Shared state of the HTTP handlers.
pub struct ApiState {
    /// The control plane.
    pub control: Arc<Control>,
    /// How callers are authenticated.
    pub auth: Auth,
    /// DHCP metrics provider.
    pub metrics: Option<MetricsSource>,
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// Seconds without a heartbeat after which a node is shown down (`--node-down-time`).
    node_down: std::sync::atomic::AtomicU64,
    /// The domain ports' `dns_assignment` names are under (set once at start).
    dns_domain: std::sync::OnceLock<String>,
    /// Which networks scheduled here are not served, for `/readyz` (set once at start).
    unserved: std::sync::OnceLock<health::Unserved>,
    /// This node's leases, for `/v2.0/leases` (set once at start).
    leases: std::sync::OnceLock<leases::LeasesSource>,
}

impl ApiState {
    /// Tells `/v2.0/leases` where this node's leases are.
    pub fn set_leases(&self, f: leases::LeasesSource) {
        let _ = self.leases.set(f);
    }

    /// Tells `/readyz` how to find the networks scheduled here that are not served.
    pub fn set_unserved(&self, f: health::Unserved) {
        let _ = self.unserved.set(f);
    }

    /// Sets the domain ports' names are under (Neutron's `dns_domain`; empty: none). Only the
    /// first call counts; `openstacklocal` until then.
    pub fn set_dns_domain(&self, domain: &str) {
        let _ = self.dns_domain.set(render::dns_domain_of(domain));
    }

    /// The domain ports' names are under, with its trailing dot (empty: none).
    pub fn dns_domain(&self) -> &str {
        self.dns_domain
            .get()
            .map_or("openstacklocal.", String::as_str)
    }

    /// Sets the seconds without a heartbeat after which a node is shown down.
    pub fn set_node_down_secs(&self, secs: u64) {
        self.node_down
            .store(secs, std::sync::atomic::Ordering::Relaxed);
    }

    /// Seconds without a heartbeat after which a node is shown down.
    pub fn node_down_secs(&self) -> u64 {
        self.node_down.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Builds the state.
    pub fn new(control: Arc<Control>, auth: Auth, metrics: Option<MetricsSource>) -> Arc<Self> {
        Arc::new(ApiState {
            node_down: std::sync::atomic::AtomicU64::new(30),
            dns_domain: std::sync::OnceLock::new(),
            unserved: std::sync::OnceLock::new(),
            leases: std::sync::OnceLock::new(),
            control,
            auth,
            metrics,
            requests: Mutex::new(BTreeMap::new()),
        })
    }
}

/// A Neutron-style error response.
pub struct ApiError {
    status: StatusCode,
    kind: String,
    message: String,
}

impl ApiError {
    /// Builds an error with Neutron's `type`.
    pub fn new(status: u16, kind: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            kind: kind.into(),
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(400, "HTTPBadRequest", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({"NeutronError": {"type": self.kind, "message": self.message, "detail": ""}});
        (self.status, Json(body)).into_response()
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        ApiError::new(e.status(), e.kind(), e.to_string())
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Registry(r) => r.into(),
            ControlError::Store(qdhcp_store::StoreError::Conflict { what, value }) => {
                let (kind, message) = if what == qdhcp_store::Taken::Mac {
                    ("MacAddressInUse", format!("Unable to complete operation for network. The mac address {value} is in use."))
                } else {
                    ("IpAddressAlreadyAllocated", format!("IP address {value} already allocated in subnet (by another node meanwhile); try again."))
                };
                ApiError::new(409, kind, message)
            }
            ControlError::Stopped | ControlError::Start(_) => ApiError::new(
                503,
                "ServiceUnavailable",
                "The service is stopping; nothing was changed.",
            ),
            ControlError::Failed => ApiError::new(
                500,
                "HTTPInternalServerError",
                "Request Failed: internal server error; nothing was changed.",
            ),
            ControlError::Store(s) if s.is_unavailable() => {
                tracing::error!("{s}");
                ApiError::new(
                    503,
                    "ServiceUnavailable",
                    "The database is unavailable; nothing was changed. Try again.",
                )
            }
            ControlError::Store(s) => {
                tracing::error!("{s}");
                ApiError::new(
                    500,
                    "HTTPInternalServerError",
                    "Request Failed: internal server error while storing the change.",
                )
            }
        }
    }
}

/// The routes.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/", get(versions))
        .route("/v2.0", get(resources))
        .route("/v2.0/", get(resources))
        .route("/v2.0/extensions", get(extensions))
        .route("/v2.0/extensions/{alias}", get(extension))
        .route("/v2.0/agents", get(agents::list))
        .route("/v2.0/agents/{id}", get(agents::show))
        .route("/v2.0/agents/{id}/dhcp-networks", get(agents::networks_of))
        .route("/v2.0/networks/{id}/dhcp-agents", get(agents::agents_of))
        .route("/v2.0/leases", get(leases::list))
        .route("/v2.0/{collection}", get(list).post(create))
        .route(
            "/v2.0/{collection}/{id}",
            get(show).put(update).delete(delete),
        )
        .route("/metrics", get(metrics))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(openapi))
        .fallback(|| async {
            ApiError::new(404, "HTTPNotFound", "The resource could not be found.")
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_and_auth,
        ))
        .with_state(state)
}

/// Counts requests by route and status; rejects unauthenticated ones when tokens are on.
async fn count_and_auth(State(st): State<Arc<ApiState>>, mut req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let open = matches!(
        route.as_str(),
        "/" | "/metrics" | "/openapi.json" | "/healthz" | "/readyz"
    );
    let caller = match &st.auth {
        Auth::NoAuth => Some(Caller {
            project_id: NOAUTH_PROJECT.into(),
            is_admin: true,
        }),
        Auth::Tokens(t) => req
            .headers()
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .and_then(|tok| t.caller(tok).cloned()),
    };
    let resp = match caller {
        Some(c) => {
            req.extensions_mut().insert(c);
            next.run(req).await
        }
        None if open => next.run(req).await,
        None => ApiError::new(
            401,
            "HTTPUnauthorized",
            "Authentication required: a valid X-Auth-Token header is needed.",
        )
        .into_response(),
    };
    let key = (route, method, resp.status().as_u16());
    *st.requests.lock().entry(key).or_insert(0) += 1;
    resp
}

/// The OpenAPI 3 description of this API (what schemathesis tests against).
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([("content-type", "application/json")], OPENAPI).into_response()
}

/// The API's own metrics at scrape time, handed to `prometheus-client` as a collector.
#[derive(Debug)]
struct ApiSnapshot {
    requests: Vec<((String, String, u16), u64)>,
    /// (subnet, network, used, total) per subnet.
    pools: Vec<(String, String, u64, u64)>,
    /// Every node in the database and whether its heartbeats say it is alive.
    nodes: Vec<(String, bool)>,
    /// The revision the published registry holds, and the database's (when reachable).
    revisions: (i64, Option<i64>),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
struct PoolLabels {
    subnet: String,
    network: String,
}

impl prometheus_client::collector::Collector for ApiSnapshot {
    fn encode(
        &self,
        mut e: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::MetricType;
        let mut f = e.encode_descriptor(
            "qdhcp_api_requests",
            "API requests by route, method and status",
            None,
            MetricType::Counter,
        )?;
        for ((route, method, status), n) in &self.requests {
            let l = RequestLabels {
                route: route.clone(),
                method: method.clone(),
                status: *status,
            };
            ConstCounter::new(*n).encode(f.encode_family(&l)?)?;
        }
        let mut f = e.encode_descriptor(
            "qdhcp_node_up",
            "Whether a node's heartbeats in the database are younger than the down time",
            None,
            MetricType::Gauge,
        )?;
        for (node, up) in &self.nodes {
            ConstGauge::new(i64::from(*up))
                .encode(f.encode_family(&NodeLabel { node: node.clone() })?)?;
        }
        let f = e.encode_descriptor(
            "qdhcp_registry_revision",
            "The database revision this node's registry holds",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.revisions.0).encode(f)?;
        if let Some(db) = self.revisions.1 {
            let f = e.encode_descriptor(
                "qdhcp_database_revision",
                "The database's revision (ahead of qdhcp_registry_revision while the change feed has other nodes' writes to apply)",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(db).encode(f)?;
        }
        for (name, help, used) in [
            (
                "qdhcp_pool_addresses_used",
                "Addresses allocated in a subnet",
                true,
            ),
            (
                "qdhcp_pool_addresses_total",
                "Addresses in a subnet's allocation pools",
                false,
            ),
        ] {
            let mut f = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (subnet, network, u, t) in &self.pools {
                let l = PoolLabels {
                    subnet: subnet.clone(),
                    network: network.clone(),
                };
                ConstGauge::new((if used { *u } else { *t }) as i64)
                    .encode(f.encode_family(&l)?)?;
            }
        }
        Ok(())
    }
}

/// Runs `f` on a blocking thread. The registry lock is held across a write's commit and the
/// store blocks on its database: an async worker waits for neither, or a few slow commits would
/// hold every worker and no request at all would be answered (docs/ARCHITECTURE.md, "The walk
/// of an API call").
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => match e.try_into_panic() {
            Ok(p) => std::panic::resume_unwind(p),
            Err(e) => panic!("a blocking API task did not finish: {e}"),
        },
    }
}

async fn metrics(State(st): State<Arc<ApiState>>) -> Response {
    let requests: Vec<((String, String, u16), u64)> = st
        .requests
        .lock()
        .iter()
        .map(|((route, method, status), n)| ((route.to_string(), method.to_string(), *status), *n))
        .collect();
    let pools = {
        let st = st.clone();
        blocking(move || {
            let reg = st.control.read();
            reg.subnets()
                .map(|s| {
                    let total: u64 = s
                        .allocation_pools
                        .iter()
                        .map(|p| match p.v4_range() {
                            Some((start, end)) => u64::from(end) - u64::from(start) + 1,
                            // an IPv6 pool: as many as fit the gauge
                            None => match (p.start, p.end) {
                                (IpAddr::V6(a), IpAddr::V6(b)) => {
                                    u64::try_from((u128::from(b) - u128::from(a)).saturating_add(1))
                                        .unwrap_or(u64::MAX)
                                }
                                _ => 0,
                            },
                        })
                        .fold(0u64, u64::saturating_add);
                    (
                        s.id.to_string(),
                        s.network_id.to_string(),
                        reg.used_in(&s.id) as u64,
                        total,
                    )
                })
                .collect()
        })
        .await
    };
    // one registry, encoded once: the API's collector and every other part's
    let (nodes, revisions) = {
        let st = st.clone();
        blocking(move || {
            let now = agents::now();
            let nodes = st
                .control
                .nodes()
                .map(|rows| {
                    rows.iter()
                        .map(|n| (n.host.clone(), n.alive(now, st.node_down_secs())))
                        .collect()
                })
                .unwrap_or_default();
            let revisions = (st.control.revision(), st.control.database_revision().ok());
            (nodes, revisions)
        })
        .await
    };
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(ApiSnapshot {
        requests,
        pools,
        nodes,
        revisions,
    }));
    if let Some(m) = &st.metrics {
        m(&mut registry);
    }
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    // text format 0.0.4 has no end mark
    if let Some(body) = out.strip_suffix("# EOF\n") {
        out.truncate(body.len());
    }
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}
