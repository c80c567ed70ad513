//! The API's async workers never wait for a database commit: while the writer's commit is
//! held up (another session holds the row every write updates first), port creates queue for
//! the writer without taking a worker each, so a request that needs no registry still answers.
//! Before, each create checked its network under the registry lock on the worker: two creates
//! took both workers until the commit ended.

#[path = "../../store/tests/support/pg_server.rs"]
mod pg_server;
#[path = "support/call.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use pg_server::Pg;
use qdhcp_api::auth::Auth;
use qdhcp_api::{router, ApiState};
use qdhcp_control::{Control, NoDhcp};
use qdhcp_store::Store;
use serde_json::json;
use support::call;

/// The API on a fresh PostgreSQL registry, with one network: the app and the network's id.
async fn app_with_network(pg: &Pg) -> (axum::Router, String) {
    let store = Store::open_url(&pg.url()).unwrap();
    let control = Arc::new(Control::open(store, Arc::new(NoDhcp)).unwrap());
    let app = router(ApiState::new(control, Auth::NoAuth, None));
    let (s, net) = call(
        &app,
        "POST",
        "/v2.0/networks",
        Some(json!({"network": {"name": "n"}})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let net = net["network"]["id"].as_str().unwrap().to_string();
    (app, net)
}

/// Another session takes the row every write updates first and holds it until told to let
/// go (a send on the returned channel); returns once it holds it.
fn hold_revision_row(pg: &Pg) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let (held, is_held) = std::sync::mpsc::channel::<()>();
    let url = pg.url();
    let holder = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut tx = c.transaction().unwrap();
        tx.query_one("SELECT n FROM revision WHERE id = 1 FOR UPDATE", &[])
            .unwrap();
        held.send(()).unwrap();
        let _ = wait.recv();
        tx.commit().unwrap();
    });
    is_held.recv().unwrap();
    (go, holder)
}

/// Whether `task` ends within `limit`, watched from the calling thread (not a worker: with
/// both workers blocked, tokio's own timers would not fire either).
fn finished_within<T>(task: &tokio::task::JoinHandle<T>, limit: Duration) -> bool {
    let t0 = std::time::Instant::now();
    while !task.is_finished() && t0.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(10));
    }
    task.is_finished()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_waiting_for_a_commit_leave_the_workers_free() {
    let Some(pg) = Pg::start() else { return };
    let (app, net) = app_with_network(&pg).await;

    // another session holds the revision row until told to let go
    let (go, holder) = hold_revision_row(&pg);

    let create = || {
        let app = app.clone();
        let body = json!({"port": {"network_id": net}});
        tokio::spawn(async move { call(&app, "POST", "/v2.0/ports", Some(body)).await })
    };
    // the first reaches the writer, which waits for the row in its commit
    let mut creates = vec![create()];
    std::thread::sleep(Duration::from_millis(300));
    // these come while that commit waits
    creates.extend((0..3).map(|_| create()));
    std::thread::sleep(Duration::from_millis(300));
    for c in &creates {
        assert!(!c.is_finished(), "the creates wait for the commit");
    }
    let probe = {
        let app = app.clone();
        tokio::spawn(async move { call(&app, "GET", "/", None).await })
    };
    let answered = finished_within(&probe, Duration::from_secs(2));

    go.send(()).unwrap();
    holder.join().unwrap();
    for c in creates {
        let (s, v) = c.await.unwrap();
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    assert!(
        answered,
        "a request needing no registry answers while creates wait for a commit"
    );
    assert_eq!(probe.await.unwrap().0, StatusCode::OK);
}

/// Reads come from the registry as committed, which nobody holds across a commit: while a
/// port create waits on a held commit, a list of ports answers at once, without that port;
/// once the commit ends, the port is listed. Before, the writer held the registry lock across
/// its commit and every read waited for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_answer_from_what_is_committed_while_a_commit_waits() {
    let Some(pg) = Pg::start() else { return };
    let (app, net) = app_with_network(&pg).await;

    let (go, holder) = hold_revision_row(&pg);

    let create = {
        let app = app.clone();
        let body = json!({"port": {"network_id": net, "name": "pending"}});
        tokio::spawn(async move { call(&app, "POST", "/v2.0/ports", Some(body)).await })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(!create.is_finished(), "the create waits for the commit");
    let list = format!("/v2.0/ports?network_id={net}");
    let probe = {
        let (app, list) = (app.clone(), list.clone());
        tokio::spawn(async move { call(&app, "GET", &list, None).await })
    };
    let answered = finished_within(&probe, Duration::from_secs(2));

    go.send(()).unwrap();
    holder.join().unwrap();
    let (s, v) = create.await.unwrap();
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(
        answered,
        "a read answers while a create waits for its commit"
    );
    let (s, during) = probe.await.unwrap();
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        during["ports"].as_array().unwrap().len(),
        0,
        "what is not committed is not shown: {during}"
    );
    let (_, after) = call(&app, "GET", &list, None).await;
    let names: Vec<&str> = after["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["pending"]);
}
