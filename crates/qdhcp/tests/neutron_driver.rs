//! Neutron's own DHCP driver (`neutron.agent.linux.dhcp.Dnsmasq` from the `neutron` package,
//! installed by `scripts/neutron-venv`) driven as the DHCP agent drives it, with real clients
//! in namespaces: `crates/qdhcp/tests/neutron/driver_suite.py`. It runs once against the real
//! dnsmasq as the control (a check failing there is the suite's, not qdhcp's), then against
//! `qdhcp dnsmasq` through a wrapper named `dnsmasq`, as an operator would install it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's python, or why the suite cannot run.
fn neutron_python() -> Option<PathBuf> {
    let py = repo().join(".venv-neutron/bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import neutron.agent.linux.dhcp"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Some(py);
    }
    let why = "Neutron is not installed in .venv-neutron (scripts/neutron-venv installs it)";
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("SKIPPED neutron driver suite: {why}; runs in CI");
    None
}

/// Runs the suite against `dnsmasq`; returns (passed, failed, output).
fn suite(py: &Path, dnsmasq: &Path) -> (usize, usize, String) {
    let out = Command::new("timeout")
        .arg("900")
        .arg(py)
        .arg(repo().join("crates/qdhcp/tests/neutron/driver_suite.py"))
        .arg("--dnsmasq")
        .arg(dnsmasq)
        .output()
        .expect("run the driver suite");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // the suite's last line: "N passed, M failed"
    let counts = text
        .lines()
        .rev()
        .find_map(|l| {
            let (p, f) = l.trim().split_once(" passed, ")?;
            Some((p.parse().ok()?, f.strip_suffix(" failed")?.parse().ok()?))
        })
        .unwrap_or((0, usize::MAX));
    (counts.0, counts.1, text)
}

#[test]
fn neutrons_dnsmasq_driver_runs_every_step_against_qdhcp_and_the_real_dnsmasq() {
    if !netns_available("neutron driver suite") {
        return;
    }
    for tool in [
        "dhclient",
        "udhcpc",
        "dhcp_release",
        "dnsmasq",
        "dig",
        "iptables",
    ] {
        require_tool(tool);
    }
    let Some(py) = neutron_python() else { return };

    let (cp, cf, control) = suite(&py, Path::new("/usr/sbin/dnsmasq"));
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("dnsmasq");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec {} dnsmasq \"$@\"\n", qdhcp_bin()),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (qp, qf, qdhcp) = suite(&py, &wrapper);

    let failures = |t: &str| {
        t.lines()
            .filter(|l| l.starts_with("FAIL"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    println!("--- control: the real dnsmasq ---\n{control}\n--- qdhcp dnsmasq ---\n{qdhcp}");
    assert!(
        cf == 0 && cp > 100,
        "the control run failed ({cp} passed, {cf} failed): the suite, not qdhcp, is wrong\n{}",
        failures(&control)
    );
    assert!(
        qf == 0 && qp > 100,
        "qdhcp under Neutron's driver: {qp} passed, {qf} failed\n{}",
        failures(&qdhcp)
    );
}
