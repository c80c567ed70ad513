//! The node's leases as operators read them (`GET /v2.0/leases`, `qdhcp leases`): every lease
//! of every network this node serves, with the subnet and port it belongs to, plus the
//! addresses recently offered, released or declined.

use chrono::DateTime;
use qdhcp_dataplane::network::RecentKind;
use qdhcp_dataplane::Dataplane;
use qdhcp_registry::Registry;
use serde_json::{json, Value};

/// Neutron's timestamp format.
fn stamp(secs: Option<u64>) -> Value {
    secs.and_then(|s| DateTime::from_timestamp(i64::try_from(s).ok()?, 0))
        .map(|t| Value::String(t.format("%Y-%m-%dT%H:%M:%SZ").to_string()))
        .unwrap_or(Value::Null)
}

/// Every lease of the networks `dp` serves, at `now` (seconds since the epoch); `lease_secs`
/// is the lease time granted, from which `granted_at` is told (`expires_at` − lease time).
pub fn lease_rows(
    dp: &Dataplane,
    reg: &Registry,
    node: &str,
    lease_secs: u32,
    now: u64,
) -> Vec<Value> {
    let mut rows = Vec::new();
    for n in reg.networks() {
        let subnet_of = |ip: std::net::IpAddr| {
            reg.subnets_of(&n.id)
                .find(|s| s.cidr.contains(&ip))
                .map(|s| s.id.to_string())
        };
        let port_of = |mac: qdhcp_protocol::Mac| {
            reg.ports_of(&n.id)
                .find(|p| p.mac_address == mac)
                .map(|p| p.id.to_string())
        };
        let row = |ip: std::net::IpAddr,
                   mac: qdhcp_protocol::Mac,
                   state: &str,
                   granted: Option<u64>,
                   expires: Option<u64>| {
            json!({
                "id": format!("{}:{ip}", n.id.as_str()),
                "ip_address": ip.to_string(),
                "mac_address": mac.to_string(),
                "network_id": n.id.as_str(),
                "subnet_id": subnet_of(ip),
                "port_id": port_of(mac),
                "ip_version": if ip.is_ipv4() { 4 } else { 6 },
                "state": state,
                "granted_at": stamp(granted),
                "expires_at": stamp(expires),
                "host": node,
            })
        };
        // DHCPv6 leases, with the client's DUID and IAID
        if let Some(net6) = dp.network6(&n.id) {
            let leases = net6.copy_leases(Clone::clone, || {});
            for l in leases {
                let state = if l.expires.is_some_and(|e| e <= now) {
                    "expired"
                } else {
                    "bound"
                };
                let granted = l.expires.map(|e| e.saturating_sub(u64::from(lease_secs)));
                let mut r = row(l.addr.into(), l.mac, state, granted, l.expires);
                r["client_duid"] = json!(l.duid.to_string());
                r["iaid"] = json!(l.iaid);
                rows.push(r);
            }
        }
        let Some(net) = dp.network(&n.id) else {
            continue;
        };
        let (bound, declined): (Vec<_>, Vec<_>) = {
            let t = net.leases();
            (t.leases().cloned().collect(), t.quarantines().collect())
        };
        for l in &bound {
            let state = if l.expires.is_some_and(|e| e <= now) {
                "expired"
            } else {
                "bound"
            };
            let granted = l.expires.map(|e| e.saturating_sub(u64::from(lease_secs)));
            rows.push(row(l.ip.into(), l.mac, state, granted, l.expires));
        }
        for (mac, ip, until) in declined {
            rows.push(row(ip.into(), mac, "declined", None, Some(until)));
        }
        for (mac, kind, ip, at) in net.recent() {
            // a lease since then says more than the offer before it
            if bound.iter().any(|l| l.mac == mac && l.ip == ip) {
                continue;
            }
            let state = match kind {
                RecentKind::Offered => "offered",
                RecentKind::Released => "released",
            };
            rows.push(row(ip.into(), mac, state, Some(at), None));
        }
    }
    rows.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    rows
}
