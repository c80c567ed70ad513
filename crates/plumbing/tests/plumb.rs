//! Plumbing against the kernel, inside a test-made `qt…` host namespace: plug twice
//! (idempotent), check with iproute2, unplug. Needs root; in CI it must run.

use std::process::Command;

use qdhcp_plumbing::*;

fn can_run() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "plumbing test needs root in CI"
    );
    eprintln!("SKIPPED plumbing test: needs root");
    false
}

fn ip(args: &[&str]) -> String {
    let o = Command::new("ip").args(args).output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn plug_creates_namespace_veth_bridge_port_and_address_idempotently() {
    if !can_run() {
        return;
    }
    let id = std::process::id() % 100_000;
    let host = format!("qtplh{id}");
    let dhcp_ns = format!("qtpld{id}");
    let _ = Command::new("ip").args(["netns", "del", &host]).output();
    assert!(Command::new("ip")
        .args(["netns", "add", &host])
        .status()
        .unwrap()
        .success());
    let plug_spec = DhcpPlug {
        netns: dhcp_ns.clone(),
        tap: "tap0123456789a".into(),
        inner: "ns-0123456789a".into(),
        bridge: Some("qtbr-test".into()),
        mac: [0xfa, 0x16, 0x3e, 1, 2, 3],
        addrs: vec!["172.16.1.100/24".parse().unwrap()],
    };
    let hostf = open_netns(&host).unwrap();
    let spec = plug_spec.clone();
    let r = std::thread::spawn(move || {
        nix::sched::setns(hostf, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        plug(&spec).and_then(|_| plug(&spec))
    })
    .join()
    .unwrap();
    let inner = ip(&["-n", &dhcp_ns, "addr", "show", "ns-0123456789a"]);
    let tap = ip(&["-n", &host, "link", "show", "tap0123456789a"]);
    let ok_netns = netns_exists(&dhcp_ns);
    delete_netns(&dhcp_ns).unwrap();
    let gone = !netns_exists(&dhcp_ns);
    let tap_after = ip(&["-n", &host, "link", "show", "tap0123456789a"]);
    let _ = Command::new("ip").args(["netns", "del", &host]).status();
    r.unwrap();
    assert!(ok_netns);
    assert!(inner.contains("inet 172.16.1.100/24"), "{inner}");
    assert!(inner.contains("fa:16:3e:01:02:03"), "{inner}");
    assert!(inner.contains("UP"), "{inner}");
    assert!(tap.contains("master qtbr-test"), "{tap}");
    assert_eq!(
        inner.matches("inet 172.16.1.100").count(),
        1,
        "idempotent: one address"
    );
    assert!(gone);
    assert!(
        tap_after.is_empty(),
        "deleting the namespace removes the pair: {tap_after}"
    );
}
