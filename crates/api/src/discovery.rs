//! Version discovery and extensions, as Neutron lists them: what a client (the OpenStack
//! CLI, Neutron's own code) asks before anything else.

use axum::extract::Path;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::ApiError;

pub(crate) fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:9696");
    format!("http://{host}")
}

pub(crate) async fn versions(headers: HeaderMap) -> Response {
    let base = base_url(&headers);
    Json(json!({"versions": [{
        "id": "v2.0",
        "status": "CURRENT",
        "links": [{"href": format!("{base}/v2.0/"), "rel": "self"}],
    }]}))
    .into_response()
}

pub(crate) async fn resources(headers: HeaderMap) -> Response {
    let base = base_url(&headers);
    let r: Vec<Value> = [("network", "networks"), ("subnet", "subnets"), ("port", "ports")]
        .iter()
        .map(|(n, c)| json!({"name": n, "collection": c, "links": [{"href": format!("{base}/v2.0/{c}"), "rel": "self"}]}))
        .collect();
    Json(json!({"resources": r})).into_response()
}

pub(crate) const EXTENSIONS: &[(&str, &str, &str)] = &[
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
    ("qdhcp-leases", "DHCP leases", "qdhcp extension: GET /v2.0/leases lists the leases the serving node holds (offered, bound, expired, released, declined), admin only."),
];

pub(crate) fn ext_json(alias: &str, name: &str, desc: &str) -> Value {
    json!({"alias": alias, "name": name, "description": desc, "updated": "2026-11-25T00:00:00-00:00", "links": []})
}

pub(crate) async fn extensions() -> Response {
    let v: Vec<Value> = EXTENSIONS
        .iter()
        .map(|(a, n, d)| ext_json(a, n, d))
        .collect();
    Json(json!({"extensions": v})).into_response()
}

pub(crate) async fn extension(Path(alias): Path<String>) -> Response {
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
