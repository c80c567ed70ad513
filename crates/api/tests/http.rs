//! The API over HTTP (in process): Neutron shapes, filters, errors, auth, metrics.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use qdhcp_api::auth::{Auth, Tokens};
use qdhcp_api::{router, ApiState};
use qdhcp_control::{Control, NoDhcp};
use qdhcp_store::Store;
use serde_json::{json, Value};
use tower::ServiceExt;

struct Api {
    app: axum::Router,
    _dir: tempfile::TempDir,
}

fn api(auth: Auth) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
    let control = Arc::new(Control::open(store, Arc::new(NoDhcp)).unwrap());
    Api {
        app: router(ApiState::new(control, auth, None)),
        _dir: dir,
    }
}

impl Api {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "127.0.0.1:9696");
        if let Some(t) = token {
            b = b.header("x-auth-token", t);
        }
        let req = match body {
            Some(v) => b
                .header("content-type", "application/json")
                .body(Body::from(v.to_string()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }
    async fn raw(&self, method: &str, uri: &str, body: &'static str) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::from(body))
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

async fn walkthrough(a: &Api) -> (String, String, String) {
    let (s, n) = a
        .call("POST", "/v2.0/networks", Some(json!({"network": {"name": "flat_net", "provider:network_type": "flat", "provider:physical_network": "physnet1"}})), None)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{n}");
    let net = n["network"]["id"].as_str().unwrap().to_string();
    assert_eq!(n["network"]["provider:physical_network"], "physnet1");
    assert_eq!(n["network"]["revision_number"], 1);
    let (s, sub) = a
        .call("POST", "/v2.0/subnets", Some(json!({"subnet": {"name": "flat_subnet", "network_id": net, "ip_version": 4, "cidr": "172.16.1.0/24", "gateway_ip": "172.16.1.1",
            "allocation_pools": [{"start": "172.16.1.100", "end": "172.16.1.200"}]}})), None)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{sub}");
    let subnet = sub["subnet"]["id"].as_str().unwrap().to_string();
    let (s, p) = a
        .call("POST", "/v2.0/ports", Some(json!({"port": {"name": "cirros-vm1-port", "network_id": net, "fixed_ips": [{"subnet_id": subnet, "ip_address": "172.16.1.103"}]}})), None)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(p["port"]["fixed_ips"][0]["ip_address"], "172.16.1.103");
    assert!(p["port"]["mac_address"]
        .as_str()
        .unwrap()
        .starts_with("fa:16:3e:"));
    (net, subnet, p["port"]["id"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn version_discovery_points_at_v2() {
    let a = api(Auth::NoAuth);
    let (s, v) = a.call("GET", "/", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["versions"][0]["id"], "v2.0");
    assert_eq!(
        v["versions"][0]["links"][0]["href"],
        "http://127.0.0.1:9696/v2.0/"
    );
    let (s, v) = a.call("GET", "/v2.0/", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["resources"].as_array().unwrap().len(), 3);
    let (s, v) = a.call("GET", "/v2.0/extensions", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["alias"] == "extra_dhcp_opt"));
}

#[tokio::test]
async fn walkthrough_then_list_filters_fields_show_update_delete() {
    let a = api(Auth::NoAuth);
    let (net, subnet, port) = walkthrough(&a).await;
    // the DHCP port exists too
    let (_, v) = a
        .call("GET", "/v2.0/ports?device_owner=network:dhcp", None, None)
        .await;
    assert_eq!(v["ports"].as_array().unwrap().len(), 1);
    assert_eq!(v["ports"][0]["fixed_ips"][0]["ip_address"], "172.16.1.100");
    // name lookup as the CLI does: GET by name is 404, then ?name=
    let (s, v) = a
        .call("GET", "/v2.0/ports/cirros-vm1-port", None, None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["NeutronError"]["type"], "PortNotFound");
    let (_, v) = a
        .call("GET", "/v2.0/ports?name=cirros-vm1-port", None, None)
        .await;
    assert_eq!(v["ports"][0]["id"], port.as_str());
    let (_, v) = a
        .call(
            "GET",
            "/v2.0/ports?fixed_ips=ip_address%3D172.16.1.103",
            None,
            None,
        )
        .await;
    assert_eq!(v["ports"].as_array().unwrap().len(), 1);
    let (_, v) = a
        .call(
            "GET",
            &format!("/v2.0/ports?network_id={net}&fields=id&fields=mac_address"),
            None,
            None,
        )
        .await;
    let first = v["ports"][0].as_object().unwrap();
    assert_eq!(first.len(), 2, "{first:?}");
    let (_, v) = a
        .call("GET", &format!("/v2.0/subnets/{subnet}"), None, None)
        .await;
    assert_eq!(v["subnet"]["allocation_pools"][0]["start"], "172.16.1.100");
    let (_, v) = a
        .call("GET", &format!("/v2.0/networks/{net}"), None, None)
        .await;
    assert_eq!(v["network"]["subnets"][0], subnet.as_str());
    let (s, v) = a
        .call(
            "PUT",
            &format!("/v2.0/ports/{port}"),
            Some(json!({"port": {"name": "renamed"}})),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["port"]["name"], "renamed");
    assert_eq!(v["port"]["revision_number"], 2);
    let (s, v) = a
        .call("DELETE", &format!("/v2.0/networks/{net}"), None, None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(v["NeutronError"]["type"], "NetworkInUse");
    let (s, _) = a
        .call("DELETE", &format!("/v2.0/ports/{port}"), None, None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = a
        .call("DELETE", &format!("/v2.0/networks/{net}"), None, None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, v) = a.call("GET", "/v2.0/ports", None, None).await;
    assert_eq!(v["ports"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn conflicts_and_bad_input_get_neutron_errors() {
    let a = api(Auth::NoAuth);
    let (net, subnet, _) = walkthrough(&a).await;
    let (s, v) = a
        .call("POST", "/v2.0/ports", Some(json!({"port": {"network_id": net, "fixed_ips": [{"subnet_id": subnet, "ip_address": "172.16.1.103"}]}})), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(v["NeutronError"]["type"], "IpAddressAlreadyAllocated");
    let (s, v) = a.raw("POST", "/v2.0/ports", "{not json").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["NeutronError"]["message"]
        .as_str()
        .unwrap()
        .contains("Malformed request body"));
    let (s, v) = a
        .call(
            "POST",
            "/v2.0/ports",
            Some(json!({"port": {"network_id": net, "frobnicate": 1}})),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["NeutronError"]["message"]
        .as_str()
        .unwrap()
        .contains("frobnicate"));
    let (s, v) = a
        .call(
            "POST",
            "/v2.0/subnets",
            Some(json!({"subnet": {"network_id": net, "cidr": "bogus"}})),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["NeutronError"]["message"]
        .as_str()
        .unwrap()
        .contains("cidr"));
    let (s, v) = a
        .call(
            "POST",
            "/v2.0/ports",
            Some(json!({"port": {"network_id": "nope"}})),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["NeutronError"]["type"], "NetworkNotFound");
    let big = "x".repeat(2 << 20);
    let big: &'static str =
        Box::leak(format!("{{\"port\": {{\"name\": \"{big}\"}}}}").into_boxed_str());
    let (s, v) = a.raw("POST", "/v2.0/ports", big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(v["NeutronError"]["type"], "HTTPRequestEntityTooLarge");
    let (s, _) = a.call("GET", "/v2.0/routers", None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // nothing was written by the rejected requests
    let (_, v) = a.call("GET", "/v2.0/ports", None, None).await;
    assert_eq!(v["ports"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn exhausted_pool_is_409_ip_address_generation_failure() {
    let a = api(Auth::NoAuth);
    let (_, n) = a
        .call(
            "POST",
            "/v2.0/networks",
            Some(json!({"network": {"name": "n"}})),
            None,
        )
        .await;
    let net = n["network"]["id"].as_str().unwrap().to_string();
    let (s, _) = a
        .call(
            "POST",
            "/v2.0/subnets",
            Some(json!({"subnet": {"network_id": net, "cidr": "10.9.0.0/29", "ip_version": 4}})),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    // /29: .2-.6 in the pool, one taken by the DHCP port
    for _ in 0..4 {
        let (s, _) = a
            .call(
                "POST",
                "/v2.0/ports",
                Some(json!({"port": {"network_id": net}})),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (s, v) = a
        .call(
            "POST",
            "/v2.0/ports",
            Some(json!({"port": {"network_id": net}})),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(v["NeutronError"]["type"], "IpAddressGenerationFailure");
}

#[tokio::test]
async fn tokens_separate_projects_and_unauthenticated_gets_401() {
    let t = Tokens::parse(
        "tok-admin admin-proj admin\ntok-a proj-a member\ntok-b proj-b member\n",
        "t",
    )
    .unwrap();
    let a = api(Auth::Tokens(t));
    let (s, v) = a.call("GET", "/v2.0/networks", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["NeutronError"]["type"], "HTTPUnauthorized");
    let (s, _) = a.call("GET", "/v2.0/networks", None, Some("wrong")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, n) = a
        .call(
            "POST",
            "/v2.0/networks",
            Some(json!({"network": {"name": "a-net"}})),
            Some("tok-a"),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(n["network"]["project_id"], "proj-a");
    let id = n["network"]["id"].as_str().unwrap();
    let (_, v) = a.call("GET", "/v2.0/networks", None, Some("tok-b")).await;
    assert_eq!(
        v["networks"].as_array().unwrap().len(),
        0,
        "b does not see a's network"
    );
    let (s, _) = a
        .call("GET", &format!("/v2.0/networks/{id}"), None, Some("tok-b"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "404, not 403");
    let (s, _) = a
        .call(
            "DELETE",
            &format!("/v2.0/networks/{id}"),
            None,
            Some("tok-b"),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, v) = a
        .call("GET", "/v2.0/networks", None, Some("tok-admin"))
        .await;
    assert_eq!(v["networks"].as_array().unwrap().len(), 1, "admin sees all");
    let (s, _) = a
        .call(
            "POST",
            "/v2.0/networks",
            Some(json!({"network": {"name": "x", "project_id": "proj-b"}})),
            Some("tok-a"),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn metrics_count_requests_and_pool_use() {
    let a = api(Auth::NoAuth);
    walkthrough(&a).await;
    let req = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .unwrap();
    let resp = a.app.clone().oneshot(req).await.unwrap();
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(text.contains("qdhcp_api_requests_total{route=\"/v2.0/{collection}\",method=\"POST\",status=\"201\"} 3"), "{text}");
    assert!(text.contains("qdhcp_pool_addresses_used{"), "{text}");
    assert!(text.contains("} 2\n"), "DHCP port + VM port: {text}");
}

#[tokio::test]
async fn openapi_document_is_served_and_describes_every_route() {
    let a = api(Auth::NoAuth);
    let (s, v) = a.call("GET", "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["openapi"], "3.0.3");
    for p in [
        "/",
        "/v2.0/",
        "/v2.0/extensions",
        "/v2.0/networks",
        "/v2.0/networks/{id}",
        "/v2.0/subnets",
        "/v2.0/subnets/{id}",
        "/v2.0/ports",
        "/v2.0/ports/{id}",
        "/metrics",
        "/healthz",
        "/readyz",
        "/v2.0/leases",
    ] {
        assert!(v["paths"][p].is_object(), "{p} missing");
    }
}

#[tokio::test]
async fn tenant_networks_get_vxlan_segments_and_exhaustion_is_503_no_network_available() {
    use qdhcp_registry::segments::SegmentConfig;
    let dir = tempfile::tempdir().unwrap();
    let segments = SegmentConfig {
        vlan_ranges: SegmentConfig::parse_vlan_ranges("physnet1:100:199").unwrap(),
        vni_ranges: SegmentConfig::parse_vni_ranges("7:8").unwrap(),
        tenant_types: vec![qdhcp_registry::NetworkType::Vxlan],
    };
    let open = || {
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        let control =
            Arc::new(Control::open_with(store, Arc::new(NoDhcp), segments.clone()).unwrap());
        router(ApiState::new(control, Auth::NoAuth, None))
    };
    let a = Api {
        app: open(),
        _dir: tempfile::tempdir().unwrap(),
    };
    for vni in [7, 8] {
        let (s, n) = a
            .call(
                "POST",
                "/v2.0/networks",
                Some(json!({"network": {"name": "t"}})),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{n}");
        assert_eq!(n["network"]["provider:network_type"], "vxlan");
        assert_eq!(n["network"]["provider:segmentation_id"], vni);
    }
    let (s, e) = a
        .call(
            "POST",
            "/v2.0/networks",
            Some(json!({"network": {"name": "t"}})),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(e["NeutronError"]["type"], "NoNetworkAvailable");
    let (s, e) = a
        .call("POST", "/v2.0/networks", Some(json!({"network": {"provider:network_type": "vlan", "provider:physical_network": "physnet1", "provider:segmentation_id": 150}})), None)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    let (s, e) = a
        .call("POST", "/v2.0/networks", Some(json!({"network": {"provider:network_type": "vlan", "provider:physical_network": "physnet1", "provider:segmentation_id": 150}})), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(e["NeutronError"]["type"], "VlanIdInUse");
    // segments survive a restart: a fresh control plane on the same database
    let b = Api {
        app: open(),
        _dir: tempfile::tempdir().unwrap(),
    };
    let (s, e) = b
        .call(
            "POST",
            "/v2.0/networks",
            Some(json!({"network": {"name": "t"}})),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{e}");
    let (_, list) = b.call("GET", "/v2.0/networks", None, None).await;
    assert_eq!(list["networks"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn provider_attributes_are_shown_to_admins_only() {
    let t = Tokens::parse("tok-admin admin-proj admin\ntok-a proj-a member\n", "t").unwrap();
    let a = api(Auth::Tokens(t));
    let (s, n) = a
        .call(
            "POST",
            "/v2.0/networks",
            Some(json!({"network": {"name": "a-net"}})),
            Some("tok-a"),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(n["network"].get("provider:network_type").is_none(), "{n}");
    let id = n["network"]["id"].as_str().unwrap().to_string();
    let (_, v) = a
        .call("GET", &format!("/v2.0/networks/{id}"), None, Some("tok-a"))
        .await;
    assert!(
        v["network"].get("provider:segmentation_id").is_none(),
        "{v}"
    );
    let (_, v) = a.call("GET", "/v2.0/networks", None, Some("tok-a")).await;
    assert!(
        v["networks"][0].get("provider:physical_network").is_none(),
        "{v}"
    );
    let (_, v) = a
        .call(
            "GET",
            &format!("/v2.0/networks/{id}"),
            None,
            Some("tok-admin"),
        )
        .await;
    assert_eq!(v["network"]["provider:network_type"], "flat", "{v}");
}

/// A bulk create is all or nothing, as in Neutron: when the third of three ports asks for an
/// address already taken, none of them is created (nor stored), the answer is that 409, and
/// the addresses the first two took are free again; a bulk that is valid creates them all.
#[tokio::test]
async fn a_bulk_create_is_all_or_nothing() {
    let a = api(Auth::NoAuth);
    let (net, subnet, _) = walkthrough(&a).await;
    let port = |name: &str, ip: &str| json!({"name": name, "network_id": net, "fixed_ips": [{"subnet_id": subnet, "ip_address": ip}]});
    let (s, v) = a
        .call(
            "POST",
            "/v2.0/ports",
            Some(json!({"ports": [port("b1", "172.16.1.150"), port("b2", "172.16.1.151"), port("b3", "172.16.1.103")]})),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["NeutronError"]["type"], "IpAddressAlreadyAllocated");
    let (_, ports) = a
        .call("GET", &format!("/v2.0/ports?network_id={net}"), None, None)
        .await;
    let names: Vec<&str> = ports["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .filter(|n| n.starts_with('b'))
        .collect();
    assert!(names.is_empty(), "half a bulk stayed: {names:?}");
    let (s, v) = a
        .call(
            "POST",
            "/v2.0/ports",
            Some(json!({"ports": [port("b1", "172.16.1.150"), port("b2", "172.16.1.151")]})),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["ports"].as_array().unwrap().len(), 2);
    // a bulk of networks whose second is invalid leaves no network either
    let (_, before) = a.call("GET", "/v2.0/networks", None, None).await;
    let (s, _) = a
        .call(
            "POST",
            "/v2.0/networks",
            Some(json!({"networks": [{"name": "ok"}, {"name": "bad", "provider:network_type": "gre"}]})),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, after) = a.call("GET", "/v2.0/networks", None, None).await;
    assert_eq!(
        before["networks"].as_array().unwrap().len(),
        after["networks"].as_array().unwrap().len()
    );
}

/// Writes sent at once are stored together by the writer (group commit) and each gets its
/// own answer: 40 concurrent port creates all succeed with distinct addresses, one among them
/// that asks for a taken address gets its 409 alone, and everything answered 201 is in the
/// database after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_stored_together_and_answered_each() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    let control = Arc::new(Control::open(Store::open(&db).unwrap(), Arc::new(NoDhcp)).unwrap());
    let a = Arc::new(Api {
        app: router(ApiState::new(control, Auth::NoAuth, None)),
        _dir: tempfile::tempdir().unwrap(),
    });
    let (net, subnet, _) = walkthrough(&a).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let a = a.clone();
        let body = if i == 17 {
            json!({"port": {"network_id": net, "name": "dup", "fixed_ips": [{"subnet_id": subnet, "ip_address": "172.16.1.103"}]}})
        } else {
            json!({"port": {"network_id": net, "name": format!("c{i}")}})
        };
        tasks.push(tokio::spawn(async move {
            a.call("POST", "/v2.0/ports", Some(body), None).await
        }));
    }
    let mut ips = std::collections::HashSet::new();
    let mut conflicts = 0;
    for t in tasks {
        let (s, v) = t.await.unwrap();
        match s {
            StatusCode::CREATED => {
                assert!(ips.insert(v["port"]["fixed_ips"][0]["ip_address"].to_string()));
            }
            StatusCode::CONFLICT => {
                assert_eq!(v["NeutronError"]["type"], "IpAddressAlreadyAllocated");
                conflicts += 1;
            }
            other => panic!("{other}: {v}"),
        }
    }
    assert_eq!((ips.len(), conflicts), (39, 1));
    drop(a);
    let back = Store::open(&db).unwrap().load().unwrap();
    let stored = back
        .ports()
        .filter(|p| p.name.starts_with('c') && p.name[1..].parse::<u32>().is_ok())
        .count();
    assert_eq!(stored, 39, "every port answered 201 is stored");
}

/// A shared network, as Neutron's policy shows it to other projects: they see it and its
/// subnets, may put their ports on it, but see none of the owner's ports, may not delete it,
/// and never see a port's binding details; an admin sees everything.
#[tokio::test]
async fn a_shared_network_is_seen_and_used_by_others_but_not_its_ports() {
    let t = Tokens::parse(
        "tok-admin admin-proj admin\ntok-a proj-a member\ntok-b proj-b member\n",
        "t",
    )
    .unwrap();
    let a = api(Auth::Tokens(t));
    let (s, n) = a
        .call(
            "POST",
            "/v2.0/networks",
            Some(json!({"network": {"name": "public", "shared": true}})),
            Some("tok-admin"),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{n}");
    let net = n["network"]["id"].as_str().unwrap().to_string();
    let (s, _) = a
        .call(
            "POST",
            "/v2.0/subnets",
            Some(json!({"subnet": {"network_id": net, "cidr": "10.5.0.0/24", "ip_version": 4}})),
            Some("tok-admin"),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, pa) = a
        .call(
            "POST",
            "/v2.0/ports",
            Some(json!({"port": {"network_id": net, "name": "a-vm"}})),
            Some("tok-a"),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "a member may use a shared network: {pa}"
    );
    assert!(
        pa["port"].get("binding:host_id").is_none(),
        "admin-only attribute"
    );
    let (_, v) = a.call("GET", "/v2.0/networks", None, Some("tok-b")).await;
    assert_eq!(v["networks"][0]["id"], net.as_str());
    let (_, v) = a.call("GET", "/v2.0/subnets", None, Some("tok-b")).await;
    assert_eq!(v["subnets"].as_array().unwrap().len(), 1);
    let (s, _) = a
        .call("GET", &format!("/v2.0/networks/{net}"), None, Some("tok-b"))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = a.call("GET", "/v2.0/ports", None, Some("tok-b")).await;
    assert_eq!(
        v["ports"].as_array().unwrap().len(),
        0,
        "b sees neither a's port nor the DHCP port: {v}"
    );
    let pid = pa["port"]["id"].as_str().unwrap();
    let (s, _) = a
        .call("GET", &format!("/v2.0/ports/{pid}"), None, Some("tok-b"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = a
        .call(
            "DELETE",
            &format!("/v2.0/networks/{net}"),
            None,
            Some("tok-b"),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "only its owner or an admin deletes it"
    );
    let (_, v) = a.call("GET", "/v2.0/ports", None, Some("tok-admin")).await;
    assert_eq!(
        v["ports"].as_array().unwrap().len(),
        2,
        "a's port and the DHCP port"
    );
    assert!(v["ports"][0].get("binding:host_id").is_some());
}

/// Three leases on two networks, as the serve wiring hands them to the API.
fn lease_rows() -> Vec<Value> {
    let row = |id: &str, net: &str, sub: &str, ip: &str, mac: &str, state: &str| {
        json!({"id": id, "ip_address": ip, "mac_address": mac, "network_id": net, "subnet_id": sub,
               "port_id": "p-".to_string() + mac, "ip_version": 4, "state": state,
               "granted_at": "2026-12-07T00:00:00Z", "expires_at": "2026-12-08T00:00:00Z", "host": "node-a"})
    };
    vec![
        row(
            "n1:10.0.0.5",
            "n1",
            "s1",
            "10.0.0.5",
            "fa:16:3e:00:00:05",
            "bound",
        ),
        row(
            "n1:10.0.0.6",
            "n1",
            "s1",
            "10.0.0.6",
            "fa:16:3e:00:00:06",
            "offered",
        ),
        row(
            "n2:10.1.0.7",
            "n2",
            "s2",
            "10.1.0.7",
            "fa:16:3e:00:00:07",
            "declined",
        ),
    ]
}

#[tokio::test]
async fn leases_list_filters_pages_and_is_for_admins_only() {
    let t = Tokens::parse("tok-admin admin-proj admin\ntok-a proj-a member\n", "t").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
    let control = Arc::new(Control::open(store, Arc::new(NoDhcp)).unwrap());
    let state = ApiState::new(control, Auth::Tokens(t), None);
    state.set_leases(Arc::new(lease_rows));
    let a = Api {
        app: router(state),
        _dir: dir,
    };
    let ips = |v: &Value| -> Vec<String> {
        v["leases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ip_address"].as_str().unwrap().to_string())
            .collect()
    };
    let admin = Some("tok-admin");
    let (s, v) = a.call("GET", "/v2.0/leases", None, admin).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ips(&v), ["10.0.0.5", "10.0.0.6", "10.1.0.7"]);
    for (q, want) in [
        ("network_id=n1", vec!["10.0.0.5", "10.0.0.6"]),
        ("subnet_id=s2", vec!["10.1.0.7"]),
        ("mac_address=fa:16:3e:00:00:06", vec!["10.0.0.6"]),
        ("ip_address=10.0.0.5", vec!["10.0.0.5"]),
        ("state=declined", vec!["10.1.0.7"]),
        ("state=bound&state=offered", vec!["10.0.0.5", "10.0.0.6"]),
        ("network_id=n1&state=bound", vec!["10.0.0.5"]),
        (
            "sort_key=ip_address&sort_dir=desc",
            vec!["10.1.0.7", "10.0.0.6", "10.0.0.5"],
        ),
    ] {
        let (s, v) = a
            .call("GET", &format!("/v2.0/leases?{q}"), None, admin)
            .await;
        assert_eq!(s, StatusCode::OK, "{q}");
        assert_eq!(ips(&v), want, "{q}");
    }
    // fields=
    let (_, v) = a
        .call(
            "GET",
            "/v2.0/leases?fields=ip_address&fields=state",
            None,
            admin,
        )
        .await;
    assert_eq!(
        v["leases"][0],
        json!({"ip_address": "10.0.0.5", "state": "bound"})
    );
    // paging: limit, the next link, and the page after the marker
    let (_, v) = a.call("GET", "/v2.0/leases?limit=2", None, admin).await;
    assert_eq!(ips(&v), ["10.0.0.5", "10.0.0.6"]);
    let next = v["leases_links"][0]["href"].as_str().unwrap();
    assert!(
        next.ends_with("/v2.0/leases?limit=2&marker=n1:10.0.0.6"),
        "{next}"
    );
    let (_, v) = a
        .call(
            "GET",
            "/v2.0/leases?limit=2&marker=n1:10.0.0.6",
            None,
            admin,
        )
        .await;
    assert_eq!(ips(&v), ["10.1.0.7"]);
    assert!(v.get("leases_links").is_none());
    // bad paging input is a Neutron error
    let (s, v) = a.call("GET", "/v2.0/leases?limit=x", None, admin).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["NeutronError"]["type"], "HTTPBadRequest", "{v}");
    // members see none; strangers are 401
    let (s, v) = a.call("GET", "/v2.0/leases", None, Some("tok-a")).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"leases": []})));
    let (s, _) = a.call("GET", "/v2.0/leases", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // listed as an extension
    let (_, v) = a
        .call("GET", "/v2.0/extensions/qdhcp-leases", None, admin)
        .await;
    assert_eq!(v["extension"]["alias"], "qdhcp-leases", "{v}");
}
