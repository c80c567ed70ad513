//! qdhcp's Neutron Networking API v2.0 subset: version discovery, extensions, and
//! create/list/show/update/delete of networks, subnets and ports, with Neutron's JSON shapes,
//! list filters, `fields=`, and errors as `{"NeutronError": {type, message, detail}}`.
//! HTTP only: rules live in the registry, storage in the store.

pub mod agents;
pub mod auth;
pub mod control;
pub mod render;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::{to_bytes, Body};
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use qdhcp_registry::requests::{NetworkReq, PortReq, SubnetReq};
use qdhcp_registry::{Caller, Registry, RegistryError};
use serde_json::{json, Map, Value};

use crate::auth::{Auth, NOAUTH_PROJECT};
use crate::control::{Control, ControlError};

/// Largest request body accepted; larger ones get 413.
pub const MAX_BODY: usize = 1 << 20;

/// Extra metrics text appended to `/metrics` (the DHCP dataplane's counters).
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

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
}

impl ApiState {
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
                let (kind, message) = if what == "mac" {
                    ("MacAddressInUse", format!("Unable to complete operation for network. The mac address {value} is in use."))
                } else {
                    ("IpAddressAlreadyAllocated", format!("IP address {value} already allocated in subnet (by another node meanwhile); try again."))
                };
                ApiError::new(409, kind, message)
            }
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
        .route("/v2.0/{collection}", get(list).post(create))
        .route(
            "/v2.0/{collection}/{id}",
            get(show).put(update).delete(delete),
        )
        .route("/metrics", get(metrics))
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
    let open = matches!(route.as_str(), "/" | "/metrics" | "/openapi.json");
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
    *st.requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_insert(0) += 1;
    resp
}

fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:9696");
    format!("http://{host}")
}

async fn versions(headers: HeaderMap) -> Response {
    let base = base_url(&headers);
    Json(json!({"versions": [{
        "id": "v2.0",
        "status": "CURRENT",
        "links": [{"href": format!("{base}/v2.0/"), "rel": "self"}],
    }]}))
    .into_response()
}

async fn resources(headers: HeaderMap) -> Response {
    let base = base_url(&headers);
    let r: Vec<Value> = [("network", "networks"), ("subnet", "subnets"), ("port", "ports")]
        .iter()
        .map(|(n, c)| json!({"name": n, "collection": c, "links": [{"href": format!("{base}/v2.0/{c}"), "rel": "self"}]}))
        .collect();
    Json(json!({"resources": r})).into_response()
}

const EXTENSIONS: &[(&str, &str, &str)] = &[
    ("provider", "Provider Network", "Expose mapping of virtual networks to physical networks"),
    ("extra_dhcp_opt", "Neutron Extra DHCP options", "Extra options configuration for DHCP. For example PXE boot options to DHCP clients can be specified (e.g. tftp-server, server-ip-address, bootfile-name)"),
    ("project-id", "project_id field enabled", "Extension that indicates that project_id field is enabled."),
    ("standard-attr-revisions", "Resource revision numbers", "This extension will display the revision number of neutron resources."),
    ("standard-attr-timestamp", "Resource timestamps", "Adds created_at and updated_at fields to all Neutron resources that have Neutron standard attributes."),
    ("standard-attr-description", "standard-attr-description", "Extension to add descriptions to standard attributes"),
    ("binding", "Port Binding", "Expose port bindings of a virtual port to external application"),
    ("dns-integration", "DNS Integration", "Provides integration with DNS."),
    ("agent", "agent", "The agent management extension."),
    ("dhcp_agent_scheduler", "DHCP Agent Scheduler", "Schedule networks among dhcp agents"),
];

fn ext_json(alias: &str, name: &str, desc: &str) -> Value {
    json!({"alias": alias, "name": name, "description": desc, "updated": "2026-11-25T00:00:00-00:00", "links": []})
}

async fn extensions() -> Response {
    let v: Vec<Value> = EXTENSIONS
        .iter()
        .map(|(a, n, d)| ext_json(a, n, d))
        .collect();
    Json(json!({"extensions": v})).into_response()
}

async fn extension(Path(alias): Path<String>) -> Response {
    match EXTENSIONS.iter().find(|(a, _, _)| *a == alias) {
        Some((a, n, d)) => Json(json!({"extension": ext_json(a, n, d)})).into_response(),
        None => ApiError::new(
            404,
            "HTTPNotFound",
            format!("Extension with alias {alias} does not exist"),
        )
        .into_response(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Res {
    Network,
    Subnet,
    Port,
}

impl Res {
    fn from_collection(c: &str) -> Result<Res, ApiError> {
        match c.trim_end_matches(".json") {
            "networks" => Ok(Res::Network),
            "subnets" => Ok(Res::Subnet),
            "ports" => Ok(Res::Port),
            _ => Err(ApiError::new(
                404,
                "HTTPNotFound",
                "The resource could not be found.",
            )),
        }
    }
    fn singular(self) -> &'static str {
        match self {
            Res::Network => "network",
            Res::Subnet => "subnet",
            Res::Port => "port",
        }
    }
    fn plural(self) -> &'static str {
        match self {
            Res::Network => "networks",
            Res::Subnet => "subnets",
            Res::Port => "ports",
        }
    }
    fn not_found(self, id: &str) -> ApiError {
        match self {
            Res::Network => RegistryError::NetworkNotFound(id.into()).into(),
            Res::Subnet => RegistryError::SubnetNotFound(id.into()).into(),
            Res::Port => RegistryError::PortNotFound(id.into()).into(),
        }
    }
    /// Attributes a client may send: settable ones, and ones accepted and ignored.
    fn accepted(self, update: bool) -> &'static [&'static str] {
        match (self, update) {
            (Res::Network, false) => &[
                "name",
                "admin_state_up",
                "mtu",
                "shared",
                "provider:network_type",
                "provider:physical_network",
                "provider:segmentation_id",
                "description",
                "project_id",
                "tenant_id",
                "tags",
                "availability_zone_hints",
                "port_security_enabled",
                "router:external",
                "is_default",
                "qos_policy_id",
                "dns_domain",
            ],
            (Res::Network, true) => &[
                "name",
                "admin_state_up",
                "mtu",
                "shared",
                "description",
                "port_security_enabled",
                "qos_policy_id",
                "dns_domain",
                "router:external",
                "is_default",
            ],
            (Res::Subnet, false) => &[
                "name",
                "network_id",
                "cidr",
                "ip_version",
                "gateway_ip",
                "allocation_pools",
                "dns_nameservers",
                "host_routes",
                "enable_dhcp",
                "description",
                "project_id",
                "tenant_id",
                "tags",
                "ipv6_ra_mode",
                "ipv6_address_mode",
                "subnetpool_id",
                "use_default_subnetpool",
                "prefixlen",
                "service_types",
                "segment_id",
                "dns_publish_fixed_ip",
            ],
            (Res::Subnet, true) => &[
                "name",
                "gateway_ip",
                "allocation_pools",
                "dns_nameservers",
                "host_routes",
                "enable_dhcp",
                "description",
                "service_types",
                "segment_id",
                "dns_publish_fixed_ip",
            ],
            (Res::Port, false) => &[
                "name",
                "network_id",
                "mac_address",
                "fixed_ips",
                "admin_state_up",
                "device_id",
                "device_owner",
                "extra_dhcp_opts",
                "dns_name",
                "description",
                "project_id",
                "tenant_id",
                "tags",
                "security_groups",
                "port_security_enabled",
                "allowed_address_pairs",
                "binding:host_id",
                "binding:vnic_type",
                "binding:profile",
                "qos_policy_id",
                "dns_domain",
                "propagate_uplink_status",
                "numa_affinity_policy",
            ],
            (Res::Port, true) => &[
                "name",
                "mac_address",
                "fixed_ips",
                "admin_state_up",
                "device_id",
                "device_owner",
                "extra_dhcp_opts",
                "dns_name",
                "description",
                "security_groups",
                "port_security_enabled",
                "allowed_address_pairs",
                "binding:host_id",
                "binding:vnic_type",
                "binding:profile",
                "qos_policy_id",
                "dns_domain",
                "propagate_uplink_status",
                "numa_affinity_policy",
            ],
        }
    }
}

fn caller_of(req_caller: Option<axum::Extension<Caller>>) -> Caller {
    req_caller.map(|c| c.0).unwrap_or(Caller {
        project_id: NOAUTH_PROJECT.into(),
        is_admin: true,
    })
}

/// Whether `caller` may see an object of `project` (admins see all; shared networks are visible).
fn visible(reg: &Registry, caller: &Caller, res: Res, v: &Value) -> bool {
    if caller.is_admin {
        return true;
    }
    let own = v.get("project_id").and_then(Value::as_str) == Some(caller.project_id.as_str());
    if own {
        return true;
    }
    let net_id = match res {
        Res::Network => v.get("id"),
        _ => v.get("network_id"),
    }
    .and_then(Value::as_str)
    .unwrap_or("");
    res != Res::Port && reg.network(net_id).is_some_and(|n| n.shared)
}

/// Attributes Neutron's policy shows to admins only.
const ADMIN_ONLY: [&str; 4] = [
    "binding:host_id",
    "binding:vif_type",
    "binding:vif_details",
    "binding:profile",
];

/// Neutron's policy: a network's `provider:*` attributes and a port's binding details are for
/// admins only.
fn for_caller(mut v: Value, caller: &Caller) -> Value {
    if !caller.is_admin {
        if let Some(o) = v.as_object_mut() {
            o.retain(|k, _| !k.starts_with("provider:") && !ADMIN_ONLY.contains(&k.as_str()));
        }
    }
    v
}

fn render_one(reg: &Registry, res: Res, id: &str) -> Option<Value> {
    match res {
        Res::Network => reg.network(id).map(|n| render::network(reg, n)),
        Res::Subnet => reg.subnet(id).map(|s| render::subnet(reg, s)),
        Res::Port => reg.port(id).map(|p| render::port(reg, p)),
    }
}

fn render_all(reg: &Registry, res: Res) -> Vec<Value> {
    match res {
        Res::Network => reg.networks().map(|n| render::network(reg, n)).collect(),
        Res::Subnet => reg.subnets().map(|s| render::subnet(reg, s)).collect(),
        Res::Port => reg.ports().map(|p| render::port(reg, p)).collect(),
    }
}

/// Parses a query string into pairs; a malformed one is a 400.
fn query_pairs(q: Option<String>) -> Result<Vec<(String, String)>, ApiError> {
    match q {
        None => Ok(vec![]),
        Some(q) => serde_urlencoded::from_str::<Vec<(String, String)>>(&q)
            .map_err(|e| ApiError::bad(format!("Invalid query string: {e}"))),
    }
}

fn scalar_matches(v: &Value, want: &str) -> bool {
    match v {
        Value::String(s) => s == want,
        Value::Bool(b) => want.eq_ignore_ascii_case(if *b { "true" } else { "false" }),
        Value::Number(n) => n.to_string() == want,
        Value::Null => want.is_empty() || want == "None",
        Value::Array(a) => a.iter().any(|x| scalar_matches(x, want)),
        Value::Object(_) => false,
    }
}

/// Neutron's list filters: every attribute by equality (repeated keys OR), `fixed_ips` by
/// `ip_address=`/`subnet_id=`.
fn matches_filters(v: &Value, filters: &BTreeMap<String, Vec<String>>) -> bool {
    filters.iter().all(|(k, wants)| {
        if k == "fixed_ips" {
            let ips = v
                .get("fixed_ips")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            return wants.iter().any(|w| {
                let (fk, fv) = w.split_once('=').unwrap_or(("ip_address", w));
                ips.iter()
                    .any(|ip| ip.get(fk).is_some_and(|x| scalar_matches(x, fv)))
            });
        }
        match v.get(k) {
            Some(x) => wants.iter().any(|w| scalar_matches(x, w)),
            None => true,
        }
    })
}

fn keep_fields(v: Value, fields: &[String]) -> Value {
    if fields.is_empty() {
        return v;
    }
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(k, _)| fields.iter().any(|f| f == k))
                .collect(),
        ),
        other => other,
    }
}

const NON_FILTERS: &[&str] = &[
    "fields",
    "limit",
    "marker",
    "sort_key",
    "sort_dir",
    "page_reverse",
    "verbose",
];

async fn list(
    State(st): State<Arc<ApiState>>,
    Path(collection): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    c: Option<axum::Extension<Caller>>,
) -> Result<Response, ApiError> {
    let res = Res::from_collection(&collection)?;
    let caller = caller_of(c);
    let pairs = query_pairs(q)?;
    let mut filters: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut fields = Vec::new();
    let mut limit: Option<usize> = None;
    let mut marker: Option<String> = None;
    let mut sort: Vec<(String, bool)> = Vec::new();
    let mut dirs: Vec<bool> = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "fields" => fields.extend(v.split(',').map(str::to_string)),
            "limit" => limit = Some(v.parse().map_err(|_| ApiError::bad(format!("Invalid input for limit. Reason: '{v}' is not an integer.")))?),
            "marker" => marker = Some(v),
            "sort_key" => sort.push((v, true)),
            "sort_dir" => dirs.push(match v.as_str() {
                "asc" => true,
                "desc" => false,
                _ => return Err(ApiError::bad(format!("Invalid input for sort_dir. Reason: '{v}' is not a valid value, use asc or desc."))),
            }),
            k if NON_FILTERS.contains(&k) => {}
            _ => filters.entry(k).or_default().push(v),
        }
    }
    for (i, d) in dirs.into_iter().enumerate() {
        if let Some(s) = sort.get_mut(i) {
            s.1 = d;
        }
    }
    let mut items: Vec<Value> = {
        let reg = st.control.read();
        render_all(&reg, res)
            .into_iter()
            .filter(|v| visible(&reg, &caller, res, v))
            .map(|v| for_caller(v, &caller))
            .filter(|v| matches_filters(v, &filters))
            .collect()
    };
    if !sort.is_empty() {
        items.sort_by(|a, b| {
            for (k, asc) in &sort {
                let o = cmp_json(a.get(k), b.get(k));
                let o = if *asc { o } else { o.reverse() };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            std::cmp::Ordering::Equal
        });
    }
    if let Some(m) = &marker {
        if let Some(pos) = items
            .iter()
            .position(|v| v.get("id").and_then(Value::as_str) == Some(m.as_str()))
        {
            items.drain(..=pos);
        }
    }
    let mut body = Map::new();
    if let Some(l) = limit.filter(|l| *l > 0) {
        if items.len() > l {
            items.truncate(l);
            let last = items
                .last()
                .and_then(|v| v.get("id"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let base = base_url(&headers);
            body.insert(
                format!("{}_links", res.plural()),
                json!([{"rel": "next", "href": format!("{base}/v2.0/{}?limit={l}&marker={last}", res.plural())}]),
            );
        }
    }
    let items: Vec<Value> = items.into_iter().map(|v| keep_fields(v, &fields)).collect();
    body.insert(res.plural().into(), Value::Array(items));
    Ok(Json(Value::Object(body)).into_response())
}

fn cmp_json(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(std::cmp::Ordering::Equal),
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
        (a, b) => a.is_some().cmp(&b.is_some()),
    }
}

async fn show(
    State(st): State<Arc<ApiState>>,
    Path((collection, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    c: Option<axum::Extension<Caller>>,
) -> Result<Response, ApiError> {
    let res = Res::from_collection(&collection)?;
    let caller = caller_of(c);
    let fields: Vec<String> = query_pairs(q)?
        .into_iter()
        .filter(|(k, _)| k == "fields")
        .flat_map(|(_, v)| v.split(',').map(str::to_string).collect::<Vec<_>>())
        .collect();
    let reg = st.control.read();
    let v = render_one(&reg, res, &id)
        .filter(|v| visible(&reg, &caller, res, v))
        .map(|v| for_caller(v, &caller))
        .ok_or_else(|| res.not_found(&id))?;
    Ok(Json(json!({ res.singular(): keep_fields(v, &fields) })).into_response())
}

/// Reads the body (413 past `MAX_BODY`), parses JSON (400 naming the problem), and checks the
/// attributes against what the resource takes (400 naming unknown ones).
async fn body_objects(body: Body, res: Res, update: bool) -> Result<(Vec<Value>, bool), ApiError> {
    let bytes = to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::new(
            413,
            "HTTPRequestEntityTooLarge",
            format!("Request body is larger than {MAX_BODY} bytes."),
        )
    })?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad(format!("Malformed request body: {e}")))?;
    let (objs, bulk) = match (v.get(res.singular()), v.get(res.plural())) {
        (Some(o), _) => (vec![o.clone()], false),
        (None, Some(Value::Array(a))) if !update => (a.clone(), true),
        _ => {
            return Err(ApiError::bad(format!(
                "Resource body required: expected a '{}' object.",
                res.singular()
            )))
        }
    };
    for o in &objs {
        let Some(m) = o.as_object() else {
            return Err(ApiError::bad(format!(
                "Invalid input: '{}' must be an object.",
                res.singular()
            )));
        };
        let unknown: Vec<&String> = m
            .keys()
            .filter(|k| !res.accepted(update).contains(&k.as_str()))
            .collect();
        if !unknown.is_empty() {
            let names: Vec<&str> = unknown.iter().map(|s| s.as_str()).collect();
            return Err(ApiError::bad(format!(
                "Unrecognized attribute(s) '{}'",
                names.join(", ")
            )));
        }
    }
    Ok((objs, bulk))
}

fn typed<T: serde::de::DeserializeOwned>(v: Value, res: Res) -> Result<T, ApiError> {
    serde_json::from_value(v)
        .map_err(|e| ApiError::bad(format!("Invalid input for {}: {e}", res.singular())))
}

async fn create(
    State(st): State<Arc<ApiState>>,
    Path(collection): Path<String>,
    c: Option<axum::Extension<Caller>>,
    body: Body,
) -> Result<Response, ApiError> {
    let res = Res::from_collection(&collection)?;
    let caller = caller_of(c);
    let (objs, bulk) = body_objects(body, res, false).await?;
    // every object is read and checked before anything is created
    let mut reqs = Vec::with_capacity(objs.len());
    for o in objs {
        reqs.push(match res {
            Res::Network => Create::Network(typed(o, res)?),
            Res::Subnet => {
                let r: SubnetReq = typed(o, res)?;
                network_visible(&st, &caller, r.network_id.as_deref())?;
                Create::Subnet(r)
            }
            Res::Port => {
                let r: PortReq = typed(o, res)?;
                network_visible(&st, &caller, r.network_id.as_deref())?;
                Create::Port(r)
            }
        });
    }
    let who = caller.clone();
    let created = blocking(&st, move |control| {
        control.mutate(|reg, env| create_all(reg, reqs, &who, env))
    })
    .await?;
    let reg = st.control.read();
    let mut vals: Vec<Value> = created
        .iter()
        .filter_map(|id| render_one(&reg, res, id))
        .map(|v| for_caller(v, &caller))
        .collect();
    let body = if bulk {
        json!({ res.plural(): vals })
    } else {
        json!({ res.singular(): vals.pop().unwrap_or(Value::Null) })
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// One object of a create or update request, checked and typed.
enum Create {
    Network(NetworkReq),
    Subnet(SubnetReq),
    Port(PortReq),
}

/// Creates every object of a request in one operation: all or nothing, as Neutron's bulk
/// create. When one fails, those made before it are deleted again from memory (nothing was
/// stored yet) and the error is the answer.
fn create_all(
    reg: &mut Registry,
    reqs: Vec<Create>,
    caller: &Caller,
    env: &mut dyn qdhcp_registry::Env,
) -> Result<(Vec<String>, qdhcp_registry::Outcome), RegistryError> {
    let mut made: Vec<(Res, String)> = Vec::new();
    let mut out = qdhcp_registry::Outcome::default();
    for r in reqs {
        let one = match r {
            Create::Network(r) => reg
                .create_network(r, caller, env)
                .map(|(n, o)| (Res::Network, n.id, o)),
            Create::Subnet(r) => reg
                .create_subnet(r, caller, env)
                .map(|(s, o)| (Res::Subnet, s.id, o)),
            Create::Port(r) => reg
                .create_port(r, caller, env)
                .map(|(p, o)| (Res::Port, p.id, o)),
        };
        match one {
            Ok((res, id, o)) => {
                made.push((res, id));
                out.changes.extend(o.changes);
                out.effects.extend(o.effects);
            }
            Err(e) => {
                for (res, id) in made.iter().rev() {
                    let _ = match res {
                        Res::Network => reg.delete_network(id).map(drop),
                        Res::Subnet => reg.delete_subnet(id, env).map(drop),
                        Res::Port => reg.delete_port(id).map(drop),
                    };
                }
                return Err(e);
            }
        }
    }
    Ok((made.into_iter().map(|(_, id)| id).collect(), out))
}

/// Runs a control-plane operation on a blocking thread: its database commit and the namespace
/// plumbing it triggers never hold up the API's async workers.
async fn blocking<T: Send + 'static>(
    st: &Arc<ApiState>,
    f: impl FnOnce(&Control) -> Result<T, ControlError> + Send + 'static,
) -> Result<T, ApiError> {
    let st = st.clone();
    tokio::task::spawn_blocking(move || f(&st.control))
        .await
        .map_err(|e| ApiError::new(500, "HTTPInternalServerError", format!("{e}")))?
        .map_err(ApiError::from)
}

/// A subnet or port may only be created on a network the caller can see (404 otherwise).
fn network_visible(st: &ApiState, caller: &Caller, net: Option<&str>) -> Result<(), ApiError> {
    let Some(n) = net else { return Ok(()) };
    let reg = st.control.read();
    let v = reg.network(n).map(|x| render::network(&reg, x));
    if v.is_some_and(|v| visible(&reg, caller, Res::Network, &v)) {
        Ok(())
    } else {
        Err(Res::Network.not_found(n))
    }
}

fn check_owner(st: &ApiState, caller: &Caller, res: Res, id: &str) -> Result<(), ApiError> {
    let reg = st.control.read();
    let v = render_one(&reg, res, id).ok_or_else(|| res.not_found(id))?;
    let own = caller.is_admin
        || v.get("project_id").and_then(Value::as_str) == Some(caller.project_id.as_str());
    if own {
        Ok(())
    } else {
        Err(res.not_found(id))
    }
}

async fn update(
    State(st): State<Arc<ApiState>>,
    Path((collection, id)): Path<(String, String)>,
    c: Option<axum::Extension<Caller>>,
    body: Body,
) -> Result<Response, ApiError> {
    let res = Res::from_collection(&collection)?;
    let caller = caller_of(c);
    check_owner(&st, &caller, res, &id)?;
    let (mut objs, _) = body_objects(body, res, true).await?;
    let o = objs.pop().unwrap_or(Value::Null);
    let req = match res {
        Res::Network => Create::Network(typed(o, res)?),
        Res::Subnet => Create::Subnet(typed(o, res)?),
        Res::Port => {
            let r: PortReq = typed(o, res)?;
            if r.binding_host_id.is_some() && !caller.is_admin {
                return Err(ApiError::from(ControlError::Registry(
                    RegistryError::PolicyNotAuthorized(
                        "(rule:update_port and rule:update_port:binding:host_id)".into(),
                    ),
                )));
            }
            Create::Port(r)
        }
    };
    let oid = id.clone();
    blocking(&st, move |control| {
        control.mutate(|reg, env| {
            match req {
                Create::Network(r) => reg.update_network(&oid, r, env).map(|(_, o)| o),
                Create::Subnet(r) => reg.update_subnet(&oid, r, env).map(|(_, o)| o),
                Create::Port(r) => reg.update_port(&oid, r, env).map(|(_, o)| o),
            }
            .map(|o| ((), o))
        })
    })
    .await?;
    let reg = st.control.read();
    let v = render_one(&reg, res, &id).ok_or_else(|| res.not_found(&id))?;
    Ok(Json(json!({ res.singular(): for_caller(v, &caller) })).into_response())
}

async fn delete(
    State(st): State<Arc<ApiState>>,
    Path((collection, id)): Path<(String, String)>,
    c: Option<axum::Extension<Caller>>,
) -> Result<Response, ApiError> {
    let res = Res::from_collection(&collection)?;
    let caller = caller_of(c);
    check_owner(&st, &caller, res, &id)?;
    blocking(&st, move |control| {
        control.mutate(|reg, env| {
            match res {
                Res::Network => reg.delete_network(&id),
                Res::Subnet => reg.delete_subnet(&id, env),
                Res::Port => reg.delete_port(&id),
            }
            .map(|o| ((), o))
        })
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The OpenAPI 3 description of this API (what schemathesis tests against).
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([("content-type", "application/json")], OPENAPI).into_response()
}

async fn metrics(State(st): State<Arc<ApiState>>) -> Response {
    let mut out = String::new();
    out.push_str("# HELP qdhcp_api_requests_total API requests by route, method and status.\n# TYPE qdhcp_api_requests_total counter\n");
    for ((route, method, status), n) in st.requests.lock().unwrap_or_else(|p| p.into_inner()).iter()
    {
        out.push_str(&format!("qdhcp_api_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}\n"));
    }
    {
        let reg = st.control.read();
        out.push_str("# HELP qdhcp_pool_addresses_used Addresses allocated in a subnet.\n# TYPE qdhcp_pool_addresses_used gauge\n");
        out.push_str("# HELP qdhcp_pool_addresses_total Addresses in a subnet's allocation pools.\n# TYPE qdhcp_pool_addresses_total gauge\n");
        for s in reg.subnets() {
            let total: u64 = s
                .allocation_pools
                .iter()
                .map(|p| u64::from(u32::from(p.end)) - u64::from(u32::from(p.start)) + 1)
                .sum();
            out.push_str(&format!(
                "qdhcp_pool_addresses_used{{subnet=\"{}\",network=\"{}\"}} {}\n",
                s.id,
                s.network_id,
                reg.used_in(&s.id)
            ));
            out.push_str(&format!(
                "qdhcp_pool_addresses_total{{subnet=\"{}\",network=\"{}\"}} {total}\n",
                s.id, s.network_id
            ));
        }
    }
    if let Some(m) = &st.metrics {
        out.push_str(&m());
    }
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}
