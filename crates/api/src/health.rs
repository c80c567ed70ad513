//! Health and readiness for service managers and orchestrators: `/healthz` says the process
//! answers; `/readyz` says it serves (the database reachable, the registry loaded, every
//! network scheduled on this node listening), 503 with the failing checks otherwise.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::{blocking, ApiState};

/// Networks scheduled on this node that are not served (asked at each `/readyz`).
pub type Unserved = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// `GET /readyz`: 200 when every check holds, 503 naming those that do not.
pub async fn readyz(State(st): State<Arc<ApiState>>) -> Response {
    let checked = {
        let st = st.clone();
        blocking(move || {
            let database = st.control.nodes().map(|_| ()).map_err(|e| e.to_string());
            let reg = st.control.read();
            let networks = reg.networks().count();
            let unserved = st.unserved.get().map(|f| f()).unwrap_or_default();
            (database, networks, unserved)
        })
        .await
    };
    let (database, networks, unserved) = checked;
    let ready = database.is_ok() && unserved.is_empty();
    let body = json!({
        "ready": ready,
        "checks": {
            "database": match &database {
                Ok(()) => json!({"ok": true}),
                Err(e) => json!({"ok": false, "error": e}),
            },
            "registry": {"ok": true, "networks": networks},
            "networks_serving": {"ok": unserved.is_empty(), "not_serving": unserved},
        }
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
