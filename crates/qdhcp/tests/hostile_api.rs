//! Hostile API input: schemathesis (property-based, from the served OpenAPI document) against
//! a running `qdhcp serve`, in a test namespace. Zero 5xx responses and zero schema
//! violations, or the test fails with schemathesis's report.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::serve::Host;
use common::*;

fn schemathesis_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv-osc/bin/schemathesis")
}

#[test]
fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    if !netns_available("schemathesis") {
        return;
    }
    if !schemathesis_bin().exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "schemathesis missing at {:?}: scripts/test-all installs it",
            schemathesis_bin()
        );
        eprintln!("SKIPPED schemathesis: not installed (scripts/test-all installs it)");
        return;
    }
    let h = Host::new("a", 3600);
    let _srv = h.start();
    let out = Command::new("ip")
        .args(["netns", "exec", &h.ns])
        .arg(schemathesis_bin())
        .args([
            "run",
            "http://127.0.0.1:9696/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "40",
            "--seed",
            "4242",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    let log = std::fs::read_to_string(h.log()).unwrap_or_default();
    assert!(
        !log.contains("panicked"),
        "server log shows a panic:\n{log}"
    );
}
