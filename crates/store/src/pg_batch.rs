//! A batch of registry changes as the columns of PostgreSQL statements (`pg::apply_here` sends
//! each table's rows as arrays, whatever the batch's size), and the value a unique violation
//! names.

use qdhcp_registry::{Change, Kind, Registry};

use crate::{body_of, kind_name};

/// One batch as the columns of its statements.
#[derive(Default)]
pub(crate) struct Rows {
    /// Objects written: kind, id, body.
    pub(crate) put: (Vec<&'static str>, Vec<String>, Vec<String>),
    /// Objects deleted: kind, id.
    pub(crate) gone: (Vec<&'static str>, Vec<String>),
    /// Every port written or deleted: what it held is released.
    pub(crate) ports: Vec<String>,
    /// What the ports written hold now: network, MAC, port.
    pub(crate) macs: (Vec<String>, Vec<String>, Vec<String>),
    /// Subnet, address, port.
    pub(crate) ips: (Vec<String>, Vec<String>, Vec<String>),
}

impl Rows {
    /// Each object's last change in `changes`, read from the registry as it is now.
    pub(crate) fn of(reg: &Registry, changes: &[Change]) -> Rows {
        let mut last: std::collections::HashMap<(Kind, &str), bool> = Default::default();
        let mut order = Vec::new();
        for c in changes {
            let (key, put) = match c {
                Change::Put(k, id) => ((*k, id.as_str()), true),
                Change::Delete(k, id) => ((*k, id.as_str()), false),
            };
            if last.insert(key, put).is_none() {
                order.push(key);
            }
        }
        let mut r = Rows::default();
        for key @ (k, id) in order {
            let put = last[&key];
            if k == Kind::Port {
                r.ports.push(id.to_string());
            }
            if !put {
                r.gone.0.push(kind_name(k));
                r.gone.1.push(id.to_string());
                continue;
            }
            // an object the registry no longer holds was deleted by a later change
            let Some(body) = body_of(reg, k, id) else {
                continue;
            };
            r.put.0.push(kind_name(k));
            r.put.1.push(id.to_string());
            r.put.2.push(body);
            if let (Kind::Port, Some(p)) = (k, reg.port(id)) {
                r.macs.0.push(p.network_id.to_string());
                r.macs.1.push(p.mac_address.to_string());
                r.macs.2.push(p.id.to_string());
                for f in &p.fixed_ips {
                    r.ips.0.push(f.subnet_id.to_string());
                    r.ips.1.push(f.ip_address.to_string());
                    r.ips.2.push(p.id.to_string());
                }
            }
        }
        r
    }
}

/// The value a unique violation names: `Key (subnet_id, ip)=(…, 10.0.0.5) already exists.`
/// gives `10.0.0.5`.
pub(crate) fn conflicting_value(detail: &str) -> Option<String> {
    let values = detail.split_once(")=(")?.1;
    let values = &values[..values.rfind(')')?];
    Some(values.rsplit(", ").next()?.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_unique_violation_names_the_value_taken() {
        assert_eq!(
            super::conflicting_value("Key (subnet_id, ip)=(2f4a-51, 10.0.0.5) already exists.")
                .as_deref(),
            Some("10.0.0.5")
        );
        assert_eq!(
            super::conflicting_value(
                "Key (network_id, mac)=(n1, fa:16:3e:00:00:01) already exists."
            )
            .as_deref(),
            Some("fa:16:3e:00:00:01")
        );
        assert_eq!(super::conflicting_value("something else"), None);
    }
}
