//! Neutron's agent API for qdhcp's nodes (see docs/ARCHITECTURE.md, "Nodes"): each node is
//! shown as a `DHCP agent`, alive while its heartbeats in the database are younger than the
//! down time, so that `openstack network agent list` (and `--network NET`) work. A node hosts
//! the networks that have a DHCP port bound to it (the scheduler's binding, see
//! `qdhcp_registry::Scheduling`); an unbound DHCP port is served by every node.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::NaiveDateTime;
use qdhcp_registry::{Caller, Registry, RegistryError};
use qdhcp_store::{NodeRow, NODE_TIME};
use serde_json::{json, Value};

use crate::resources::caller_of;
use crate::{ApiError, ApiState};

fn agent_json(n: &NodeRow, reg: &Registry, now: NaiveDateTime, down_secs: u64) -> Value {
    let networks = reg
        .networks()
        .filter(|x| reg.dhcp_port_for(&x.id, &n.host).is_some())
        .count();
    json!({
        "id": n.id,
        "agent_type": "DHCP agent",
        "binary": "neutron-dhcp-agent",
        "topic": "dhcp_agent",
        "host": n.host,
        "admin_state_up": true,
        "alive": n.alive(now, down_secs),
        "heartbeat_timestamp": n.heartbeat_at.format(NODE_TIME).to_string(),
        "started_at": n.started_at.format(NODE_TIME).to_string(),
        "created_at": n.started_at.format(NODE_TIME).to_string(),
        "availability_zone": "nova",
        "description": null,
        "resources_synced": null,
        "ha_state": null,
        "configurations": {
            "dhcp_driver": "qdhcp",
            "networks": networks,
            "subnets": reg.subnets().count(),
            "ports": reg.ports().count(),
            "dhcp_lease_duration": null,
            "log_agent_heartbeats": false,
        },
    })
}

pub(crate) fn now() -> NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

fn nodes(st: &ApiState) -> Result<Vec<NodeRow>, ApiError> {
    st.control
        .nodes()
        .map_err(|e| ApiError::from(qdhcp_control::ControlError::Store(e)))
}

/// Agents are for admins (Neutron's policy `get_agent: rule:admin_only`): others see none.
fn admin(c: &Caller) -> bool {
    c.is_admin
}

/// `GET /v2.0/agents`.
pub async fn list(
    State(st): State<Arc<ApiState>>,
    c: Option<axum::Extension<Caller>>,
) -> Result<Response, ApiError> {
    if !admin(&caller_of(c)) {
        return Ok(Json(json!({"agents": []})).into_response());
    }
    // the nodes come from the database and the registry lock may be held by a commit
    crate::blocking(move || {
        let rows = nodes(&st)?;
        let reg = st.control.read();
        let t = now();
        let v: Vec<Value> = rows
            .iter()
            .map(|n| agent_json(n, &reg, t, st.node_down_secs()))
            .collect();
        Ok(Json(json!({"agents": v})).into_response())
    })
    .await
}

fn find(st: &ApiState, c: Option<axum::Extension<Caller>>, id: &str) -> Result<NodeRow, ApiError> {
    let not_found = || {
        ApiError::new(
            404,
            "AgentNotFound",
            format!("Agent {id} could not be found."),
        )
    };
    if !admin(&caller_of(c)) {
        return Err(not_found());
    }
    nodes(st)?
        .into_iter()
        .find(|n| n.id == id)
        .ok_or_else(not_found)
}

/// `GET /v2.0/agents/{id}`.
pub async fn show(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    c: Option<axum::Extension<Caller>>,
) -> Result<Response, ApiError> {
    crate::blocking(move || {
        let n = find(&st, c, &id)?;
        let reg = st.control.read();
        Ok(
            Json(json!({"agent": agent_json(&n, &reg, now(), st.node_down_secs())}))
                .into_response(),
        )
    })
    .await
}

/// `GET /v2.0/agents/{id}/dhcp-networks`: the networks the node serves.
pub async fn networks_of(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    c: Option<axum::Extension<Caller>>,
) -> Result<Response, ApiError> {
    crate::blocking(move || {
        let node = find(&st, c, &id)?;
        let reg = st.control.read();
        let v: Vec<Value> = reg
            .networks()
            .filter(|n| reg.dhcp_port_for(&n.id, &node.host).is_some())
            .map(|n| crate::render::network(&reg, n))
            .collect();
        Ok(Json(json!({"networks": v})).into_response())
    })
    .await
}

/// `GET /v2.0/networks/{id}/dhcp-agents`: the nodes hosting the network, alive or not (as
/// Neutron shows a dead agent until its network is moved).
pub async fn agents_of(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    c: Option<axum::Extension<Caller>>,
) -> Result<Response, ApiError> {
    crate::blocking(move || {
        let caller = caller_of(c);
        {
            let reg = st.control.read();
            if reg.network(&id).is_none() {
                return Err(RegistryError::NetworkNotFound(id).into());
            }
        }
        if !admin(&caller) {
            return Ok(Json(json!({"agents": []})).into_response());
        }
        let rows = nodes(&st)?;
        let reg = st.control.read();
        let t = now();
        let v: Vec<Value> = rows
            .iter()
            .filter(|n| reg.dhcp_port_for(&id, &n.host).is_some())
            .map(|n| agent_json(n, &reg, t, st.node_down_secs()))
            .collect();
        Ok(Json(json!({"agents": v})).into_response())
    })
    .await
}
