//! Creating, updating and deleting networks, subnets and ports: bodies read and checked (bulk
//! too, all or nothing), ownership, and the operation run on a blocking thread through the
//! control plane.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use qdhcp_registry::requests::{NetworkReq, PortReq, SubnetReq};
use qdhcp_registry::{Caller, ObjectId, Registry, RegistryError};
use serde_json::{json, Value};

use crate::resources::*;
use crate::{ApiError, ApiState, MAX_BODY};
use qdhcp_control::ControlError;

/// Reads the body (413 past `MAX_BODY`), parses JSON (400 naming the problem), and checks the
/// attributes against what the resource takes (400 naming unknown ones).
pub(crate) async fn body_objects(
    body: Body,
    res: Res,
    update: bool,
) -> Result<(Vec<Value>, bool), ApiError> {
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

pub(crate) fn typed<T: serde::de::DeserializeOwned>(v: Value, res: Res) -> Result<T, ApiError> {
    serde_json::from_value(v)
        .map_err(|e| ApiError::bad(format!("Invalid input for {}: {e}", res.singular())))
}

pub(crate) async fn create(
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
            Res::Subnet => Create::Subnet(typed(o, res)?),
            Res::Port => Create::Port(typed(o, res)?),
        });
    }
    // a subnet or port only on a network the caller can see (the policy check, made before
    // the write as Neutron's API layer makes it)
    let reg = st.control.read();
    for r in &reqs {
        if let Create::Subnet(SubnetReq { network_id, .. })
        | Create::Port(PortReq { network_id, .. }) = r
        {
            network_visible(&reg, &caller, network_id.as_deref())?;
        }
    }
    drop(reg);
    let who = caller.clone();
    let written = st
        .control
        .submit(move |reg, env| create_all(reg, reqs.clone(), &who, env))
        .await?;
    // rendered as stored, from the registry the write was published in
    let mut vals: Vec<Value> = written
        .value
        .iter()
        .filter_map(|id| render_one(&written.registry, res, id.as_str(), st.dns_domain()))
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
#[derive(Clone)]
pub(crate) enum Create {
    Network(NetworkReq),
    Subnet(SubnetReq),
    Port(PortReq),
}

/// Creates every object of a request in one operation: all or nothing, as Neutron's bulk
/// create. When one fails, the error is the answer and the writer drops the whole write
/// (those made before it with it).
pub(crate) fn create_all(
    reg: &mut Registry,
    reqs: Vec<Create>,
    caller: &Caller,
    env: &mut dyn qdhcp_registry::Env,
) -> Result<(Vec<ObjectId>, qdhcp_registry::Outcome), RegistryError> {
    let mut made = Vec::with_capacity(reqs.len());
    let mut out = qdhcp_registry::Outcome::default();
    for r in reqs {
        let (id, o) = match r {
            Create::Network(r) => reg
                .create_network(r, caller, env)
                .map(|(n, o)| (ObjectId::from(n.id), o)),
            Create::Subnet(r) => reg
                .create_subnet(r, caller, env)
                .map(|(s, o)| (ObjectId::from(s.id), o)),
            Create::Port(r) => reg
                .create_port(r, caller, env)
                .map(|(p, o)| (ObjectId::from(p.id), o)),
        }?;
        made.push(id);
        out.changes.extend(o.changes);
        out.effects.extend(o.effects);
    }
    Ok((made, out))
}

/// A subnet or port may only be created on a network the caller can see (404 otherwise).
pub(crate) fn network_visible(
    reg: &Registry,
    caller: &Caller,
    net: Option<&str>,
) -> Result<(), RegistryError> {
    let Some(n) = net else { return Ok(()) };
    if owner_of(reg, Res::Network, n)
        .is_some_and(|(project, net)| may_see(reg, caller, Res::Network, project, net))
    {
        Ok(())
    } else {
        Err(RegistryError::NetworkNotFound(n.into()))
    }
}

/// Only the owner (or an admin) may change or delete an object; others get 404, as if it were
/// not there. Read on a blocking thread (see [`crate::blocking`]).
pub(crate) async fn check_owner(
    st: &Arc<ApiState>,
    caller: &Caller,
    res: Res,
    id: &str,
) -> Result<(), ApiError> {
    let project = {
        let (st, id) = (st.clone(), id.to_string());
        crate::blocking(move || owner_of(&st.control.read(), res, &id).map(|(p, _)| p.to_string()))
            .await
    };
    let project = project.ok_or_else(|| res.not_found(id))?;
    if caller.is_admin || project == caller.project_id {
        Ok(())
    } else {
        Err(res.not_found(id))
    }
}

pub(crate) async fn update(
    State(st): State<Arc<ApiState>>,
    Path((collection, id)): Path<(String, String)>,
    c: Option<axum::Extension<Caller>>,
    body: Body,
) -> Result<Response, ApiError> {
    let res = Res::from_collection(&collection)?;
    let caller = caller_of(c);
    check_owner(&st, &caller, res, &id).await?;
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
    let written = st
        .control
        .submit(move |reg, env| {
            let out = match req.clone() {
                Create::Network(r) => reg.update_network(&oid, r, env).map(|(_, o)| o),
                Create::Subnet(r) => reg.update_subnet(&oid, r, env).map(|(_, o)| o),
                Create::Port(r) => reg.update_port(&oid, r, env).map(|(_, o)| o),
            }?;
            Ok(((), out))
        })
        .await?;
    let v = render_one(&written.registry, res, &id, st.dns_domain())
        .map(|v| for_caller(v, &caller))
        .ok_or_else(|| res.not_found(&id))?;
    Ok(Json(json!({ res.singular(): v })).into_response())
}

pub(crate) async fn delete(
    State(st): State<Arc<ApiState>>,
    Path((collection, id)): Path<(String, String)>,
    c: Option<axum::Extension<Caller>>,
) -> Result<Response, ApiError> {
    let res = Res::from_collection(&collection)?;
    let caller = caller_of(c);
    check_owner(&st, &caller, res, &id).await?;
    st.control
        .submit(move |reg, env| {
            match res {
                Res::Network => reg.delete_network(&id),
                Res::Subnet => reg.delete_subnet(&id, env),
                Res::Port => reg.delete_port(&id),
            }
            .map(|o| ((), o))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
