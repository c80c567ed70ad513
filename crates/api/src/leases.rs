//! `GET /v2.0/leases`: every lease this node holds, with Neutron's list conventions (filters
//! such as `network_id`, `mac_address`, `ip_address`, `state`; `fields`, sorting, paging).
//! Admin only (Neutron's rule for agents): others get an empty list.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use qdhcp_registry::Caller;
use serde_json::Value;

use crate::resources::{caller_of, ListParams};
use crate::{ApiError, ApiState};

/// The node's leases as the API shows them, one object each (asked at each request).
pub type LeasesSource = Arc<dyn Fn() -> Vec<Value> + Send + Sync>;

/// `GET /v2.0/leases`.
pub async fn list(
    State(st): State<Arc<ApiState>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    c: Option<axum::Extension<Caller>>,
) -> Result<Response, ApiError> {
    let params = ListParams::parse(q)?;
    let items = if caller_of(c).is_admin {
        let st = st.clone();
        crate::blocking(move || st.leases.get().map(|f| f()).unwrap_or_default()).await
    } else {
        Vec::new()
    };
    Ok(Json(params.apply(items, &headers, "leases")).into_response())
}
