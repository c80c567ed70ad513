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

/// A test's "host" namespace, made anew (one a failed run left is removed first).
fn fresh_host_netns(name: &str) -> String {
    let _ = Command::new("ip").args(["netns", "del", name]).output();
    assert!(Command::new("ip")
        .args(["netns", "add", name])
        .status()
        .unwrap()
        .success());
    name.to_string()
}

#[test]
fn plug_creates_namespace_veth_bridge_port_and_address_idempotently() {
    if !can_run() {
        return;
    }
    let id = std::process::id() % 100_000;
    let host = fresh_host_netns(&format!("qtplh{id}"));
    let dhcp_ns = format!("qtpld{id}");
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
    let tap = ip(&["-n", &host, "-d", "link", "show", "tap0123456789a"]);
    let inner_d = ip(&["-n", &dhcp_ns, "-d", "link", "show", "ns-0123456789a"]);
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
    // made with one queue each way (no cut, no RCU grace period to wait for)
    for end in [&tap, &inner_d] {
        assert!(
            end.contains("numtxqueues 1 numrxqueues 1"),
            "one queue each way: {end}"
        );
    }
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

/// iproute2's rule (`ip netns add`): `/var/run/netns` is made a shared mount point first, so a
/// namespace created later reaches the mount namespaces cloned from this one in between (a
/// container or an `ip netns exec` started before the network was). Played in a mount
/// namespace of the test's own where `/var/run/netns` is a plain directory, as on a fresh host.
#[test]
fn namespaces_created_later_reach_mount_namespaces_cloned_before() {
    if !can_run() {
        return;
    }
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    let id = std::process::id() % 100_000;
    let (first, later) = (format!("qtmsa{id}"), format!("qtmsb{id}"));
    std::thread::spawn(move || {
        // this thread's own mount namespace: nothing here reaches the test host's
        unshare(CloneFlags::CLONE_NEWNS).unwrap();
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .unwrap();
        while umount2(NETNS_DIR, MntFlags::MNT_DETACH).is_ok() {}
        create_netns(&first).unwrap();
        // a mount namespace cloned from this one, keeping its propagation (a container with
        // /run/netns shared, or `ip netns exec`)
        let mut watcher = Command::new("unshare")
            .args(["--mount", "--propagation", "unchanged", "sleep", "30"])
            .spawn()
            .unwrap();
        let pid = watcher.id();
        let own = std::fs::read_link("/proc/thread-self/ns/mnt").unwrap();
        let t0 = std::time::Instant::now();
        while std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
            .ok()
            .as_ref()
            == Some(&own)
            || std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "sleep\n"
        {
            assert!(t0.elapsed().as_secs() < 5, "unshare did not start");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        create_netns(&later).unwrap();
        let enters = |ns: &str| {
            Command::new("nsenter")
                .args([
                    "-t",
                    &pid.to_string(),
                    "-m",
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "true",
                ])
                .output()
                .unwrap()
        };
        let (seen_first, seen_later) = (enters(&first), enters(&later));
        let _ = delete_netns(&first);
        let _ = delete_netns(&later);
        let _ = watcher.kill();
        let _ = watcher.wait();
        assert!(seen_first.status.success(), "{seen_first:?}");
        assert!(
            seen_later.status.success(),
            "a namespace created after the clone is not there: {}",
            String::from_utf8_lossy(&seen_later.stderr)
        );
    })
    .join()
    .unwrap();
}

fn netns_inode(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn a_thread_visiting_another_namespace_comes_back_to_its_own() {
    if !can_run() {
        return;
    }
    let id = std::process::id() % 100_000;
    let host = fresh_host_netns(&format!("qtplv{id}"));
    let other = format!("qtplw{id}");
    let hostf = open_netns(&host).unwrap();
    let o = other.clone();
    let seen = std::thread::spawn(move || {
        nix::sched::setns(hostf, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let home = netns_inode("/proc/thread-self/ns/net");
        create_netns(&o).unwrap();
        ensure_bridge("qtbrvisit").unwrap();
        let has_bridge = |ns: Option<&str>| {
            in_netns(ns, |h| async move {
                Ok(link_index(&h, "qtbrvisit").await?.is_some())
            })
            .unwrap()
        };
        let before = has_bridge(None);
        let there = has_bridge(Some(&o));
        let after = has_bridge(None);
        let inside = within_netns(&o, || netns_inode("/proc/thread-self/ns/net")).unwrap();
        let back = netns_inode("/proc/thread-self/ns/net");
        delete_netns(&o).unwrap();
        (before, there, after, inside, home, back)
    })
    .join();
    let other_ino = netns_inode(&format!("/proc/{}/ns/net", std::process::id()));
    let _ = Command::new("ip").args(["netns", "del", &host]).output();
    let (before, there, after, inside, home, back) = seen.unwrap();
    assert!(
        before && after,
        "the bridge is seen from the thread's own namespace"
    );
    assert!(!there, "the other namespace has no such bridge");
    assert_ne!(inside, home, "within_netns runs in the other namespace");
    assert_eq!(back, home, "and the thread is back afterwards");
    assert_ne!(home, other_ino);
}
