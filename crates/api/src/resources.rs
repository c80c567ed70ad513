//! Reading networks, subnets and ports: the three collections as one kind (`Res`), who may see
//! what (projects, shared networks, admin-only attributes), and list filters, `fields=`,
//! sorting and paging as Neutron does them.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use qdhcp_registry::{Caller, Registry, RegistryError};
use serde_json::{json, Map, Value};

use crate::auth::NOAUTH_PROJECT;
use crate::discovery::base_url;
use crate::render;
use crate::{ApiError, ApiState};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Res {
    Network,
    Subnet,
    Port,
}

impl Res {
    pub(crate) fn from_collection(c: &str) -> Result<Res, ApiError> {
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
    pub(crate) fn singular(self) -> &'static str {
        match self {
            Res::Network => "network",
            Res::Subnet => "subnet",
            Res::Port => "port",
        }
    }
    pub(crate) fn plural(self) -> &'static str {
        match self {
            Res::Network => "networks",
            Res::Subnet => "subnets",
            Res::Port => "ports",
        }
    }
    pub(crate) fn not_found(self, id: &str) -> ApiError {
        match self {
            Res::Network => RegistryError::NetworkNotFound(id.into()).into(),
            Res::Subnet => RegistryError::SubnetNotFound(id.into()).into(),
            Res::Port => RegistryError::PortNotFound(id.into()).into(),
        }
    }
    /// Attributes a client may send: settable ones, and ones accepted and ignored.
    pub(crate) fn accepted(self, update: bool) -> &'static [&'static str] {
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

pub(crate) fn caller_of(req_caller: Option<axum::Extension<Caller>>) -> Caller {
    req_caller.map(|c| c.0).unwrap_or(Caller {
        project_id: NOAUTH_PROJECT.into(),
        is_admin: true,
    })
}

/// Whether `caller` may see an object of `project` on network `net` (Neutron's policy, on
/// typed values: admins see all; owners their own; anyone a shared network and its subnets).
pub(crate) fn may_see(reg: &Registry, caller: &Caller, res: Res, project: &str, net: &str) -> bool {
    caller.is_admin
        || project == caller.project_id
        || (res != Res::Port && reg.network(net).is_some_and(|n| n.shared))
}

/// The project and network of an object, if it exists.
pub(crate) fn owner_of<'a>(reg: &'a Registry, res: Res, id: &str) -> Option<(&'a str, &'a str)> {
    match res {
        Res::Network => reg
            .network(id)
            .map(|n| (n.project_id.as_str(), n.id.as_str())),
        Res::Subnet => reg
            .subnet(id)
            .map(|s| (s.project_id.as_str(), s.network_id.as_str())),
        Res::Port => reg
            .port(id)
            .map(|p| (p.project_id.as_str(), p.network_id.as_str())),
    }
}

/// Every object of a collection `caller` may see, rendered (only those).
pub(crate) fn render_visible(
    reg: &Registry,
    caller: &Caller,
    res: Res,
    domain: &str,
) -> Vec<Value> {
    let see = |project: &str, net: &str| may_see(reg, caller, res, project, net);
    match res {
        Res::Network => reg
            .networks()
            .filter(|n| see(&n.project_id, &n.id))
            .map(|n| render::network(reg, n))
            .collect(),
        Res::Subnet => reg
            .subnets()
            .filter(|s| see(&s.project_id, &s.network_id))
            .map(|s| render::subnet(reg, s))
            .collect(),
        Res::Port => reg
            .ports()
            .filter(|p| see(&p.project_id, &p.network_id))
            .map(|p| render::port(reg, p, domain))
            .collect(),
    }
}

/// Attributes Neutron's policy shows to admins only.
pub(crate) const ADMIN_ONLY: [&str; 4] = [
    "binding:host_id",
    "binding:vif_type",
    "binding:vif_details",
    "binding:profile",
];

/// Neutron's policy: a network's `provider:*` attributes and a port's binding details are for
/// admins only.
pub(crate) fn for_caller(mut v: Value, caller: &Caller) -> Value {
    if !caller.is_admin {
        if let Some(o) = v.as_object_mut() {
            o.retain(|k, _| !k.starts_with("provider:") && !ADMIN_ONLY.contains(&k.as_str()));
        }
    }
    v
}

pub(crate) fn render_one(reg: &Registry, res: Res, id: &str, domain: &str) -> Option<Value> {
    match res {
        Res::Network => reg.network(id).map(|n| render::network(reg, n)),
        Res::Subnet => reg.subnet(id).map(|s| render::subnet(reg, s)),
        Res::Port => reg.port(id).map(|p| render::port(reg, p, domain)),
    }
}

/// Parses a query string into pairs; a malformed one is a 400.
pub(crate) fn query_pairs(q: Option<String>) -> Result<Vec<(String, String)>, ApiError> {
    match q {
        None => Ok(vec![]),
        Some(q) => serde_urlencoded::from_str::<Vec<(String, String)>>(&q)
            .map_err(|e| ApiError::bad(format!("Invalid query string: {e}"))),
    }
}

pub(crate) fn scalar_matches(v: &Value, want: &str) -> bool {
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
pub(crate) fn matches_filters(v: &Value, filters: &BTreeMap<String, Vec<String>>) -> bool {
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

pub(crate) fn keep_fields(v: Value, fields: &[String]) -> Value {
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

pub(crate) const NON_FILTERS: &[&str] = &[
    "fields",
    "limit",
    "marker",
    "sort_key",
    "sort_dir",
    "page_reverse",
    "verbose",
];

/// A list request's filters, `fields=`, sorting and paging, as Neutron reads them.
pub(crate) struct ListParams {
    filters: BTreeMap<String, Vec<String>>,
    fields: Vec<String>,
    limit: Option<usize>,
    marker: Option<String>,
    sort: Vec<(String, bool)>,
}

impl ListParams {
    pub(crate) fn parse(q: Option<String>) -> Result<ListParams, ApiError> {
        let mut p = ListParams {
            filters: BTreeMap::new(),
            fields: Vec::new(),
            limit: None,
            marker: None,
            sort: Vec::new(),
        };
        let mut dirs: Vec<bool> = Vec::new();
        for (k, v) in query_pairs(q)? {
            match k.as_str() {
                "fields" => p.fields.extend(v.split(',').map(str::to_string)),
                "limit" => p.limit = Some(v.parse().map_err(|_| ApiError::bad(format!("Invalid input for limit. Reason: '{v}' is not an integer.")))?),
                "marker" => p.marker = Some(v),
                "sort_key" => p.sort.push((v, true)),
                "sort_dir" => dirs.push(match v.as_str() {
                    "asc" => true,
                    "desc" => false,
                    _ => return Err(ApiError::bad(format!("Invalid input for sort_dir. Reason: '{v}' is not a valid value, use asc or desc."))),
                }),
                k if NON_FILTERS.contains(&k) => {}
                _ => p.filters.entry(k).or_default().push(v),
            }
        }
        for (i, d) in dirs.into_iter().enumerate() {
            if let Some(s) = p.sort.get_mut(i) {
                s.1 = d;
            }
        }
        Ok(p)
    }

    /// The body of a list of `plural`: `items` filtered, sorted, paged (with the `next` link)
    /// and cut to the fields asked for.
    pub(crate) fn apply(&self, items: Vec<Value>, headers: &HeaderMap, plural: &str) -> Value {
        let mut items: Vec<Value> = items
            .into_iter()
            .filter(|v| matches_filters(v, &self.filters))
            .collect();
        if !self.sort.is_empty() {
            items.sort_by(|a, b| {
                for (k, asc) in &self.sort {
                    let o = cmp_json(a.get(k), b.get(k));
                    let o = if *asc { o } else { o.reverse() };
                    if o != std::cmp::Ordering::Equal {
                        return o;
                    }
                }
                std::cmp::Ordering::Equal
            });
        }
        if let Some(m) = &self.marker {
            if let Some(pos) = items
                .iter()
                .position(|v| v.get("id").and_then(Value::as_str) == Some(m.as_str()))
            {
                items.drain(..=pos);
            }
        }
        let mut body = Map::new();
        if let Some(l) = self.limit.filter(|l| *l > 0) {
            if items.len() > l {
                items.truncate(l);
                let last = items
                    .last()
                    .and_then(|v| v.get("id"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let base = base_url(headers);
                body.insert(
                    format!("{plural}_links"),
                    json!([{"rel": "next", "href": format!("{base}/v2.0/{plural}?limit={l}&marker={last}")}]),
                );
            }
        }
        let items: Vec<Value> = items
            .into_iter()
            .map(|v| keep_fields(v, &self.fields))
            .collect();
        body.insert(plural.into(), Value::Array(items));
        Value::Object(body)
    }
}

pub(crate) async fn list(
    State(st): State<Arc<ApiState>>,
    Path(collection): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    c: Option<axum::Extension<Caller>>,
) -> Result<Response, ApiError> {
    let res = Res::from_collection(&collection)?;
    let caller = caller_of(c);
    let params = ListParams::parse(q)?;
    let visible = {
        let (st, caller) = (st.clone(), caller.clone());
        crate::blocking(move || render_visible(&st.control.read(), &caller, res, st.dns_domain()))
            .await
    };
    let items: Vec<Value> = visible
        .into_iter()
        .map(|v| for_caller(v, &caller))
        .collect();
    Ok(Json(params.apply(items, &headers, res.plural())).into_response())
}

pub(crate) fn cmp_json(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(std::cmp::Ordering::Equal),
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
        (a, b) => a.is_some().cmp(&b.is_some()),
    }
}

pub(crate) async fn show(
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
    let found = {
        let (st, caller, id) = (st.clone(), caller.clone(), id.clone());
        crate::blocking(move || {
            let reg = st.control.read();
            owner_of(&reg, res, &id)
                .filter(|(project, net)| may_see(&reg, &caller, res, project, net))
                .and_then(|_| render_one(&reg, res, &id, st.dns_domain()))
        })
        .await
    };
    let v = found
        .map(|v| for_caller(v, &caller))
        .ok_or_else(|| res.not_found(&id))?;
    Ok(Json(json!({ res.singular(): keep_fields(v, &fields) })).into_response())
}
