//! The event loops under `qdhcp serve` (issue 13, point 3): many networks on one loop thread,
//! one of them flooded, and a VM on another still gets its lease; the thread count does not
//! grow with the networks.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::serve::Host;
use common::*;
use serde_json::{json, Value};

/// `qdhcp_dhcp_packets_in_total` of one network and type, from /metrics.
fn received(h: &Host, net: &str, kind: &str) -> u64 {
    let (_, text) = h.http_text("/metrics");
    let key = format!("qdhcp_dhcp_packets_in_total{{network=\"{net}\",type=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

fn create(h: &Host, what: &str, body: Value) -> Value {
    let (s, v) = h.http("POST", &format!("/v2.0/{what}s"), Some(&body));
    assert_eq!(s, 201, "{what}: {v}");
    v[what].clone()
}

#[test]
fn a_flood_on_one_network_does_not_keep_a_vm_on_another_from_its_lease() {
    if !netns_available("event loop flood") {
        return;
    }
    require_tool("dhclient");
    let mut h = Host::new("e", 60);
    h.mappings = "physnet1:qtbr,physnet2:qtbr2".into();
    // one loop thread: the flooded network and the VM's share it
    let srv = h.start_with(&["--dhcp-threads", "1"]);
    let idle_networks = 40;
    for i in 0..idle_networks {
        let n = create(
            &h,
            "network",
            json!({"network": {"name": format!("idle{i}"), "provider:network_type": "local"}}),
        );
        create(
            &h,
            "subnet",
            json!({"subnet": {"network_id": n["id"], "cidr": format!("10.{}.{}.0/24", 100 + i / 200, i % 200), "ip_version": 4}}),
        );
    }
    let flooded = create(
        &h,
        "network",
        json!({"network": {"name": "flooded", "provider:network_type": "flat", "provider:physical_network": "physnet2"}}),
    );
    let flooded_id = flooded["id"].as_str().unwrap().to_string();
    create(
        &h,
        "subnet",
        json!({"subnet": {"network_id": flooded_id, "cidr": "10.9.0.0/24", "ip_version": 4, "allocation_pools": [{"start": "10.9.0.100", "end": "10.9.0.200"}]}}),
    );
    let quiet = create(
        &h,
        "network",
        json!({"network": {"name": "quiet", "provider:network_type": "flat", "provider:physical_network": "physnet1"}}),
    );
    create(
        &h,
        "subnet",
        json!({"subnet": {"network_id": quiet["id"], "cidr": "172.16.1.0/24", "ip_version": 4, "allocation_pools": [{"start": "172.16.1.100", "end": "172.16.1.200"}]}}),
    );
    let port = create(
        &h,
        "port",
        json!({"port": {"network_id": quiet["id"], "name": "vm", "fixed_ips": [{"ip_address": "172.16.1.103"}]}}),
    );
    let mac = port["mac_address"].as_str().unwrap().to_string();
    // every network is served from the one loop: no thread per network
    let threads = threads_of(srv.pid());
    let cores = std::thread::available_parallelism().unwrap().get();
    assert!(
        threads <= cores + 8,
        "{threads} threads for {} networks",
        idle_networks + 2
    );

    // The flooder: a relay agent on the flooded network sending DISCOVERs from unknown MACs
    // as fast as it can (each costs the server a parse and a decision, and gets no answer).
    let flooder = h.vm_on("qtbr2", "fa:16:3e:99:00:01");
    let o = Command::new("ip")
        .args([
            "-n",
            &flooder.ns,
            "addr",
            "add",
            "10.9.0.50/24",
            "dev",
            &flooder.iface,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut flood = Proc {
        child: Command::new("ip")
            .args(["netns", "exec", &flooder.ns, qdhcp_bin(), "loadgen"])
            .args([
                "--server",
                "10.9.0.100",
                "--giaddr",
                "10.9.0.50",
                "--device",
            ])
            .arg(&flooder.iface)
            .args([
                "--mode",
                "discover",
                "--clients",
                "1000000",
                "--first-client",
                "5000000",
                "--duration",
                "60",
                "--window",
                "65536",
                "--timeout-ms",
                "50",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    };
    let t0 = Instant::now();
    while received(&h, &flooded_id, "discover") < 20_000 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the flood does not reach the server: {}",
            std::fs::read_to_string(h.log()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = received(&h, &flooded_id, "discover");

    let vm = h.vm(&mac);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (ok, d) = dhclient_at(dir.path(), &vm, 20);
    let took = started.elapsed();
    let during = received(&h, &flooded_id, "discover") - before;
    flood.kill9();
    assert!(ok, "no lease under the flood");
    let bound = d.wait_reason("BOUND", 1, Duration::from_secs(5));
    assert_eq!(bound["new_ip_address"], "172.16.1.103", "{bound:?}");
    // the flood went on while the VM got its lease, and the lease came at once
    assert!(
        during > 1000,
        "only {during} flood DISCOVERs during the exchange"
    );
    assert!(
        took < Duration::from_secs(5),
        "the lease took {took:?} under the flood"
    );
    eprintln!(
        "lease in {took:?} with {during} flood DISCOVERs served meanwhile; {threads} threads"
    );
}
