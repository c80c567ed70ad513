//! The API on PostgreSQL through an outage: while the server is down, writes fail with 503 and
//! a Neutron error body and nothing is half-applied; once it is back, the next write succeeds
//! and what was refused does not exist.

#[path = "../../store/tests/support/pg_server.rs"]
mod pg_server;
#[path = "support/call.rs"]
mod support;

use std::sync::Arc;

use axum::http::StatusCode;
use pg_server::Pg;
use qdhcp_api::auth::Auth;
use qdhcp_api::{router, ApiState};
use qdhcp_control::{Control, NoDhcp};
use qdhcp_store::Store;
use serde_json::json;
use support::call;

#[tokio::test]
async fn writes_get_503_while_the_database_is_down_and_succeed_once_it_is_back() {
    let Some(pg) = Pg::start() else { return };
    let store = Store::open_url(&pg.url()).unwrap();
    let control = Arc::new(Control::open(store, Arc::new(NoDhcp)).unwrap());
    let app = router(ApiState::new(control, Auth::NoAuth, None));
    let net = |name: &str| Some(json!({"network": {"name": name}}));
    let (s, _) = call(&app, "POST", "/v2.0/networks", net("before")).await;
    assert_eq!(s, StatusCode::CREATED);

    pg.stop();
    let (s, e) = call(&app, "POST", "/v2.0/networks", net("during")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{e}");
    assert_eq!(e["NeutronError"]["type"], "ServiceUnavailable");
    let (s, _) = call(&app, "POST", "/v2.0/networks", net("during-2")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);

    pg.restart();
    let (s, e) = call(&app, "POST", "/v2.0/networks", net("after")).await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    let (_, list) = call(&app, "GET", "/v2.0/networks", None).await;
    let mut names: Vec<&str> = list["networks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["after", "before"], "nothing refused was kept");
}
