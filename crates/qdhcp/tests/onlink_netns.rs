//! Clients on the link, as VMs are: `qdhcp loadgen --link` sends each simulated client's
//! broadcast DISCOVER and REQUEST as an Ethernet frame from its own MAC onto the network's
//! bridge and takes the replies off it (RFC 2131 §4.1: unicast to yiaddr at chaddr), and a
//! real client on the same bridge cross-checks what the generator saw.

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::*;

const SERVER: &str = "10.9.0.1";
const CLIENTS: u32 = 2000;

fn mac(i: u32) -> String {
    format!(
        "fa:16:3e:{:02x}:{:02x}:{:02x}",
        (i >> 16) & 255,
        (i >> 8) & 255,
        i & 255
    )
}

fn ip(i: u32) -> String {
    format!("10.9.{}.{}", 1 + i / 250, 1 + i % 250)
}

/// `qdhcp dnsmasq` with Neutron's flags on 10.9.0.0/16, quiet, with no per-client rate limit
/// (thousands of clients at once), and `n` reservations: client i is `mac(i)` → `ip(i)`.
fn serve(n: u32) -> (Topo, Proc) {
    let t = Topo::new(&format!("{SERVER}/16"));
    let mut s = neutron_args(&t, "10.9.0.0", "255.255.0.0", 86400);
    s.args.push("--dhcp-lease-max=10000".into());
    s.args.push("--qdhcp-client-rate=0".into());
    s.args.retain(|a| a != "--log-dhcp");
    s.args.push("--quiet-dhcp".into());
    let hosts: String = (0..n)
        .map(|i| format!("{},host-{i},{}\n", mac(i), ip(i)))
        .collect();
    std::fs::write(&s.host, hosts).unwrap();
    std::fs::write(&s.opts, "").unwrap();
    let srv = start_dnsmasq(&t, &s);
    (t, srv)
}

/// More clients than the kernel's neighbour table holds (1,024 entries by default, shared by
/// every namespace) boot at once on one link, and every one gets its reserved address, with
/// no neighbour entry left behind: replies to clients without an address leave as frames to
/// their MAC, not through ARP injection. With injection about half of them got nothing.
#[test]
fn two_thousand_clients_booting_at_once_on_one_link_all_get_their_reservations() {
    if !netns_available("on-link load") {
        return;
    }
    require_tool("udhcpc");
    // one reservation more than there are simulated clients: the real client's
    let (mut t, _srv) = serve(CLIENTS + 1);

    let record = t.path("acked");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.host_ns,
            qdhcp_bin(),
            "loadgen",
            "--link",
            "qtbr",
        ])
        .args([
            "--clients",
            &CLIENTS.to_string(),
            "--rate",
            &CLIENTS.to_string(),
        ])
        .args([
            "--duration",
            "1",
            "--timeout-ms",
            "3000",
            "--json",
            "--record",
        ])
        .arg(&record)
        .output()
        .expect("run loadgen");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("loadgen report ({e}): {out:?}"));
    assert_eq!(report["acks"], CLIENTS, "every client acked: {report}");
    assert_eq!(report["drops"], 0, "{report}");
    assert_eq!(report["naks"], 0, "{report}");
    assert_eq!(report["wrong_link"], 0, "{report}");

    // Each client got its own reservation.
    let acked: HashMap<String, String> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect();
    assert_eq!(acked.len(), CLIENTS as usize);
    for i in 0..CLIENTS {
        assert_eq!(acked.get(&mac(i)), Some(&ip(i)), "client {i}");
    }

    // The server's namespace holds no neighbour entry for them.
    let neigh = Command::new("ip")
        .args(["-n", &t.srv_ns, "neigh", "show"])
        .output()
        .unwrap();
    let entries = String::from_utf8_lossy(&neigh.stdout)
        .lines()
        .filter(|l| l.contains("10.9."))
        .count();
    assert_eq!(entries, 0, "{}", String::from_utf8_lossy(&neigh.stdout));

    // A real client on the same link, without the broadcast flag, gets its reservation the
    // same way (its OFFER and ACK are frames to its MAC).
    let vm = t.vm(&mac(CLIENTS));
    let env = udhcpc(&t, &vm, 5).expect("udhcpc got a lease");
    assert_eq!(env.get("ip"), Some(&ip(CLIENTS)));
    assert_eq!(env.get("serverid").map(String::as_str), Some(SERVER));
}

/// Five thousand clients on one link take their leases and renew them all within a second or
/// two, by unicast to the server as RENEWING clients do: every renewal is ACKed (to ciaddr at
/// the client's hardware address, not through a neighbour entry per client, which overflowed
/// the kernel's table before), none is NAKed, no address changes.
#[test]
fn five_thousand_clients_renewing_at_once_are_all_acked() {
    const CLIENTS: u32 = 5000;
    if !netns_available("on-link renewals") {
        return;
    }
    let (t, _srv) = serve(CLIENTS);

    // bound within the first second, each renews one second after its ACK, for 5 seconds
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.host_ns,
            qdhcp_bin(),
            "loadgen",
            "--mode",
            "keep",
        ])
        .args(["--link", "qtbr", "--clients", &CLIENTS.to_string()])
        .args([
            "--rate",
            &CLIENTS.to_string(),
            "--renew-after",
            "1",
            "--duration",
            "5",
        ])
        .output()
        .expect("run loadgen");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("loadgen report ({e}): {out:?}"));
    assert_eq!(r["bound"], CLIENTS, "{r}");
    assert!(
        r["renewed"].as_u64().unwrap() >= u64::from(CLIENTS),
        "every client renewed at least once: {r}"
    );
    assert_eq!(r["naks"], 0, "{r}");
    assert_eq!(r["expired"], 0, "{r}");
    assert_eq!(r["address_changes"], 0, "{r}");
    assert_eq!(r["bound_at_end"], CLIENTS, "{r}");
}
