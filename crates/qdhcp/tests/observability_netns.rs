//! The Grafana dashboard (`deploy/grafana/qdhcp.json`) and the alert rules
//! (`deploy/prometheus/qdhcp-rules.yml`) name only what qdhcp exports: a `qdhcp serve` with
//! traffic of every kind (a lease by dhclient, a malformed datagram, DNS by dig, metadata
//! through the proxy to a Nova stand-in) is scraped, and every metric each expression names
//! must have samples carrying every label the expression selects or groups by. The rules
//! themselves pass `promtool check rules` and `promtool test rules`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::serve::Host;
use common::*;
use serde_json::{json, Value};

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// Every PromQL expression of the dashboard and of the rules.
fn expressions() -> Vec<String> {
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy().join("grafana/qdhcp.json")).unwrap(),
    )
    .unwrap();
    let mut exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 12, "the dashboard has its panels");
    // the rules file: each `expr:` (one line, or a `|` block of indented lines)
    let rules = std::fs::read_to_string(deploy().join("prometheus/qdhcp-rules.yml")).unwrap();
    let mut lines = rules.lines().peekable();
    while let Some(l) = lines.next() {
        let t = l.trim_start();
        let Some(rest) = t.strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest == "|" {
            let indent = l.len() - t.len();
            let mut block = String::new();
            while let Some(n) = lines.peek() {
                if n.len() - n.trim_start().len() <= indent {
                    break;
                }
                block.push_str(lines.next().unwrap().trim());
                block.push(' ');
            }
            exprs.push(block);
        } else {
            exprs.push(rest.to_string());
        }
    }
    exprs
}

/// The metric names an expression reads, and the labels it selects or groups by.
fn names_and_labels(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let bytes = expr.as_bytes();
    let word = |i: usize| {
        let mut j = i;
        while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
            j += 1;
        }
        j
    };
    let mut names = BTreeSet::new();
    let mut labels = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        if expr[i..].starts_with("qdhcp_")
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
        {
            let j = word(i);
            names.insert(expr[i..j].to_string());
            i = j;
            continue;
        }
        if bytes[i] == b'{' {
            let end = expr[i..].find('}').map(|e| i + e).unwrap_or(bytes.len());
            for part in expr[i + 1..end].split(',') {
                let l: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !l.is_empty() {
                    labels.insert(l);
                }
            }
            i = end;
            continue;
        }
        if expr[i..].starts_with("by (") || expr[i..].starts_with("by(") {
            let open = i + expr[i..].find('(').unwrap();
            let end = open + expr[open..].find(')').unwrap();
            for l in expr[open + 1..end].split(',') {
                labels.insert(l.trim().to_string());
            }
            i = end;
            continue;
        }
        i += 1;
    }
    // added by Prometheus (instance, job) or the histogram itself (le)
    for l in ["instance", "job", "le"] {
        labels.remove(l);
    }
    (names, labels)
}

/// The label names seen on each sample name in a scrape.
fn scraped(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for l in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = l.find(['{', ' ']).unwrap_or(l.len());
        let e = out.entry(l[..name_end].to_string()).or_default();
        if l.as_bytes().get(name_end) == Some(&b'{') {
            let end = l.rfind('}').unwrap();
            for kv in l[name_end + 1..end].split("\",") {
                if let Some((k, _)) = kv.split_once('=') {
                    e.insert(k.trim().to_string());
                }
            }
        }
    }
    out
}

#[test]
fn every_metric_and_label_in_the_dashboard_and_the_rules_is_exported() {
    if !netns_available("observability") {
        return;
    }
    require_tool("dhclient");
    require_tool("dig");
    require_tool("curl");
    let mut h = Host::new("b", 600);
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("nova.jsonl");
    let _nova = common::nova::nova_standin(&h, 8775, &record, None);
    let _srv = h.start_with(&[
        "--nova-metadata-url",
        "http://127.0.0.1:8775",
        "--metadata-proxy-shared-secret",
        "s3cret",
    ]);
    let (s, n) = h.http("POST", "/v2.0/networks", Some(&json!({"network": {"name": "o", "provider:network_type": "flat", "provider:physical_network": "physnet1"}})));
    assert_eq!(s, 201, "{n}");
    let net = n["network"]["id"].as_str().unwrap().to_string();
    let (s, _) = h.http("POST", "/v2.0/subnets", Some(&json!({"subnet": {"network_id": net, "cidr": "172.16.1.0/24", "ip_version": 4, "allocation_pools": [{"start": "172.16.1.100", "end": "172.16.1.200"}]}})));
    assert_eq!(s, 201);
    let (s, p) = h.http("POST", "/v2.0/ports", Some(&json!({"port": {"network_id": net, "device_id": "vm-o", "fixed_ips": [{"ip_address": "172.16.1.103"}]}})));
    assert_eq!(s, 201);
    let vm = h.vm(p["port"]["mac_address"].as_str().unwrap());
    let (ok, _d) = dhclient_at(dir.path(), &vm, 20);
    assert!(ok);
    sh(&[
        "ip",
        "-n",
        &vm.ns,
        "route",
        "replace",
        "169.254.169.254/32",
        "via",
        "172.16.1.100",
    ]);
    let run = |args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", &vm.ns])
            .args(args)
            .output()
            .unwrap()
    };
    // a datagram too short to be DHCP: a drop by reason
    let o = run(&["python3", "-c", "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'x', ('172.16.1.100', 67))"]);
    assert!(o.status.success(), "{o:?}");
    let o = run(&[
        "dig",
        "+tries=2",
        "+time=1",
        "@172.16.1.100",
        "host-172-16-1-103.openstacklocal",
    ]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("172.16.1.103"),
        "{o:?}"
    );
    let t0 = Instant::now();
    while !run(&[
        "curl",
        "-sf",
        "-m",
        "5",
        "http://169.254.169.254/openstack/latest/meta_data.json",
    ])
    .status
    .success()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "metadata through the proxy"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, text) = h.http_text("/metrics");
    let seen = scraped(&text);
    let mut problems = Vec::new();
    for expr in expressions() {
        let (names, labels) = names_and_labels(&expr);
        assert!(!names.is_empty(), "no qdhcp metric in {expr}");
        for name in &names {
            match seen.get(name) {
                None => problems.push(format!("{name} is not exported (in `{expr}`)")),
                Some(have) => {
                    for l in &labels {
                        if !have.contains(l) {
                            problems.push(format!(
                                "{name} has no label {l} (in `{expr}`); it has {have:?}"
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\nscrape:\n{text}",
        problems.join("\n")
    );
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    if Command::new("promtool").arg("--version").output().is_err() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "promtool is missing (Debian's prometheus package; scripts/test-all installs it)"
            );
        }
        eprintln!(
            "SKIPPED promtool: not installed (scripts/test-all installs Debian's prometheus)"
        );
        return;
    }
    let dir = deploy().join("prometheus");
    for args in [
        vec!["check", "rules", "qdhcp-rules.yml"],
        vec!["test", "rules", "qdhcp-rules.test.yml"],
    ] {
        let o = Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // every alert of the rules has a unit test
    let rules = std::fs::read_to_string(dir.join("qdhcp-rules.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("qdhcp-rules.test.yml")).unwrap();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "{alert} has no unit test"
        );
    }
}
