//! Tenant VXLAN networks, plumbed as Neutron's linuxbridge agent does, reached from another
//! host: a "compute host" namespace joined to qdhcp's host namespace by an underlay veth, with
//! `vxlan-<vni>` devices (same VNI, group and port) in bridges, and VMs behind them that take
//! their addresses with ISC dhclient. Two networks with the same CIDR and addresses on
//! different VNIs each serve only their own VMs.

mod common;

use std::process::Command;
use std::time::Duration;

use common::serve::Host;
use common::*;
use serde_json::{json, Value};

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn links(ns: &str) -> String {
    let o = Command::new("ip")
        .args(["-n", ns, "-o", "link"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The compute host: a namespace on the underlay, a bridge per VNI, VMs behind them.
struct Compute {
    ns: String,
}

impl Drop for Compute {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

impl Compute {
    /// `vxlan-<vni>` in bridge `qtcb<vni>`, over the underlay, as the linuxbridge agent.
    fn segment(&self, vni: u32, under: &str) {
        let br = format!("qtcb{vni}");
        let vx = format!("vxlan-{vni}");
        ip(&["-n", &self.ns, "link", "add", &br, "type", "bridge"]);
        ip(&["-n", &self.ns, "link", "set", &br, "up"]);
        ip(&[
            "-n",
            &self.ns,
            "link",
            "add",
            &vx,
            "type",
            "vxlan",
            "id",
            &vni.to_string(),
            "group",
            "224.0.0.1",
            "dev",
            under,
            "local",
            "10.77.0.2",
            "dstport",
            "0",
        ]);
        ip(&["-n", &self.ns, "link", "set", &vx, "master", &br, "up"]);
    }

    /// A VM namespace with `mac`, plugged into the bridge of `vni`.
    fn vm(&self, name: &str, vni: u32, mac: &str) -> Vm {
        let ns = format!("{}{name}", self.ns);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let tap = format!("qtct{name}");
        ip(&[
            "-n", &self.ns, "link", "add", &tap, "type", "veth", "peer", "name", "qteth0", "netns",
            &ns,
        ]);
        ip(&[
            "-n",
            &self.ns,
            "link",
            "set",
            &tap,
            "master",
            &format!("qtcb{vni}"),
            "up",
        ]);
        ip(&["-n", &ns, "link", "set", "qteth0", "address", mac, "up"]);
        Vm {
            ns,
            iface: "qteth0".into(),
            mac: mac.into(),
        }
    }
}

#[test]
fn vms_on_another_host_get_their_addresses_over_vxlan_and_same_cidr_networks_stay_apart() {
    if !netns_available("vxlan") {
        return;
    }
    require_tool("dhclient");
    let h = Host::new("v", 60);
    let id = format!("{:04x}", std::process::id() & 0xffff);
    let c = Compute {
        ns: format!("qtc{id}"),
    };
    let _ = Command::new("ip").args(["netns", "del", &c.ns]).output();
    ip(&["netns", "add", &c.ns]);
    ip(&["-n", &c.ns, "link", "set", "lo", "up"]);
    // the underlay between qdhcp's host and the compute host
    let (uh, uc) = (format!("qtuh{id}"), format!("qtuc{id}"));
    ip(&[
        "-n", &h.ns, "link", "add", &uh, "type", "veth", "peer", "name", &uc, "netns", &c.ns,
    ]);
    ip(&["-n", &h.ns, "addr", "add", "10.77.0.1/24", "dev", &uh]);
    ip(&["-n", &h.ns, "link", "set", &uh, "up"]);
    ip(&["-n", &c.ns, "addr", "add", "10.77.0.2/24", "dev", &uc]);
    ip(&["-n", &c.ns, "link", "set", &uc, "up"]);
    let args = ["--local-ip", "10.77.0.1", "--vni-ranges", "100:199"];
    let mut srv = h.start_with(&args);

    // two tenant networks, the same CIDR and the same address for one port each
    let mut nets: Vec<(String, u64, String)> = Vec::new();
    for (name, mac) in [("a", "fa:16:3e:00:0a:0a"), ("b", "fa:16:3e:00:0b:0b")] {
        let (s, n) = h.http(
            "POST",
            "/v2.0/networks",
            Some(&json!({"network": {"name": name}})),
        );
        assert_eq!(s, 201, "{n}");
        assert_eq!(n["network"]["provider:network_type"], "vxlan");
        let net = n["network"]["id"].as_str().unwrap().to_string();
        let vni = n["network"]["provider:segmentation_id"].as_u64().unwrap();
        let (s, sub) = h.http(
            "POST",
            "/v2.0/subnets",
            Some(&json!({"subnet": {"network_id": net, "cidr": "172.16.5.0/24", "ip_version": 4}})),
        );
        assert_eq!(s, 201, "{sub}");
        let (s, p): (u16, Value) = h.http("POST", "/v2.0/ports", Some(&json!({"port": {"network_id": net, "mac_address": mac, "fixed_ips": [{"ip_address": "172.16.5.50"}]}})));
        assert_eq!(s, 201, "{p}");
        nets.push((net, vni, mac.to_string()));
    }
    assert_eq!((nets[0].1, nets[1].1), (100, 101));
    let host_links = links(&h.ns);
    for (net, vni, _) in &nets {
        assert!(host_links.contains(&format!("vxlan-{vni}")), "{host_links}");
        assert!(
            host_links.contains(&format!("brq{}", &net[..11])),
            "{host_links}"
        );
    }
    c.segment(100, &uc);
    c.segment(101, &uc);

    let vm_a = c.vm("a", 100, &nets[0].2);
    let _a = common::NetnsGuard(vm_a.ns.clone());
    let vm_b = c.vm("b", 101, &nets[1].2);
    let _b = common::NetnsGuard(vm_b.ns.clone());
    for vm in [&vm_a, &vm_b] {
        let dir = tempfile::tempdir().unwrap();
        let (ok, d) = dhclient_at(dir.path(), vm, 20);
        assert!(
            ok,
            "{}: {}",
            vm.ns,
            std::fs::read_to_string(h.log()).unwrap_or_default()
        );
        let bound = d.wait_reason("BOUND", 1, Duration::from_secs(5));
        assert_eq!(bound["new_ip_address"], "172.16.5.50", "{bound:?}");
        d.release();
    }
    // kill -9 and restart: the segments are reconciled, nothing duplicated, still served
    srv.kill9();
    let _srv = h.start_with(&args);
    let after = links(&h.ns);
    for (net, vni, _) in &nets {
        assert_eq!(
            after.matches(&format!("vxlan-{vni}:")).count(),
            1,
            "{after}"
        );
        assert_eq!(
            after.matches(&format!("brq{}:", &net[..11])).count(),
            1,
            "{after}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let (ok, d) = dhclient_at(dir.path(), &vm_a, 20);
    assert!(
        ok,
        "after the restart: {}",
        std::fs::read_to_string(h.log()).unwrap_or_default()
    );
    d.release();

    // network b's port plugged into network a's segment: a's server does not know it
    let stray = c.vm("s", 100, &nets[1].2);
    let _s = common::NetnsGuard(stray.ns.clone());
    let dir = tempfile::tempdir().unwrap();
    let (ok, _d) = dhclient_at(dir.path(), &stray, 4);
    assert!(!ok, "a VM of network b got a lease on network a's segment");

    // deleting a network removes its bridge and vxlan device
    for (net, _, _) in &nets {
        let (_, ports) = h.http("GET", &format!("/v2.0/ports?network_id={net}"), None);
        for p in ports["ports"].as_array().unwrap() {
            if p["device_owner"] != "network:dhcp" {
                let pid = p["id"].as_str().unwrap();
                assert_eq!(h.http("DELETE", &format!("/v2.0/ports/{pid}"), None).0, 204);
            }
        }
        let (s, v) = h.http("DELETE", &format!("/v2.0/networks/{net}"), None);
        assert_eq!(s, 204, "{v}");
    }
    let host_links = links(&h.ns);
    assert!(!host_links.contains("vxlan-10"), "{host_links}");
    assert!(!host_links.contains("brq"), "{host_links}");
}

/// What networks deleted while qdhcp was down left behind goes at the next start: a DHCP
/// namespace of no network, a segment bridge of no network holding only its `vxlan-<vni>`.
/// A bridge of no network that still holds something else (a VM's tap) stays, as do the
/// known network's namespace, bridge and device.
#[test]
fn a_restart_removes_namespaces_and_segments_of_networks_that_are_gone() {
    if !netns_available("stale segments") {
        return;
    }
    let h = Host::new("s", 60);
    let id = format!("{:04x}", std::process::id() & 0xffff);
    let under = format!("qtus{id}");
    ip(&[
        "-n",
        &h.ns,
        "link",
        "add",
        &under,
        "type",
        "veth",
        "peer",
        "name",
        &format!("qtup{id}"),
    ]);
    ip(&["-n", &h.ns, "addr", "add", "10.78.0.1/24", "dev", &under]);
    ip(&["-n", &h.ns, "link", "set", &under, "up"]);
    let args = ["--local-ip", "10.78.0.1", "--vni-ranges", "300:399"];
    let mut srv = h.start_with(&args);
    let (s, n) = h.http(
        "POST",
        "/v2.0/networks",
        Some(&json!({"network": {"name": "kept"}})),
    );
    assert_eq!(s, 201, "{n}");
    let net = n["network"]["id"].as_str().unwrap().to_string();
    let (s, sub) = h.http(
        "POST",
        "/v2.0/subnets",
        Some(&json!({"subnet": {"network_id": net, "cidr": "172.16.9.0/24", "ip_version": 4}})),
    );
    assert_eq!(s, 201, "{sub}");
    srv.kill9();

    // leftovers of networks that are gone, named as qdhcp names its own
    let stale_ns = format!("{}deadbeef", h.prefix);
    ip(&["netns", "add", &stale_ns]);
    for (br, dev) in [
        ("brqdeadbeef-00", "vxlan-390"),
        ("brqdeadbeef-01", "vxlan-391"),
    ] {
        ip(&["-n", &h.ns, "link", "add", br, "type", "bridge"]);
        ip(&[
            "-n",
            &h.ns,
            "link",
            "add",
            dev,
            "type",
            "vxlan",
            "id",
            &dev[6..],
            "dstport",
            "0",
            "group",
            "224.0.0.1",
            "dev",
            &under,
        ]);
        ip(&["-n", &h.ns, "link", "set", dev, "master", br]);
    }
    // the second also holds a VM's tap: not only a segment, so it stays
    ip(&[
        "-n", &h.ns, "link", "add", "qttapvm", "type", "veth", "peer", "name", "qttapvm1",
    ]);
    ip(&[
        "-n",
        &h.ns,
        "link",
        "set",
        "qttapvm",
        "master",
        "brqdeadbeef-01",
    ]);

    let _srv = h.start_with(&args);
    h.wait_log("removed what networks deleted meanwhile left behind");
    let l = links(&h.ns);
    assert!(
        !l.contains("brqdeadbeef-00") && !l.contains("vxlan-390"),
        "{l}"
    );
    assert!(
        l.contains("brqdeadbeef-01") && l.contains("vxlan-391") && l.contains("qttapvm"),
        "{l}"
    );
    assert!(
        l.contains(&format!("brq{}", &net[..11])) && l.contains("vxlan-300"),
        "{l}"
    );
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(!list.contains(&stale_ns), "{list}");
    let kept: String = net.chars().take(15 - h.prefix.len()).collect();
    assert!(list.contains(&format!("{}{kept}", h.prefix)), "{list}");
}
