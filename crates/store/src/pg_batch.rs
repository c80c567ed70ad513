//! A batch of registry changes as the columns of PostgreSQL statements (`pg::apply_here` sends
//! each table's rows as arrays, whatever the batch's size), and the value a unique violation
//! names.

use qdhcp_registry::{Kind, Stored};

use crate::rows::{kind_name, row_of, Row};
use crate::StoreError;

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
    /// The rows of what one batch changed ([`qdhcp_registry::Registry::stored`]: each object
    /// once, as it is after the batch, or gone).
    pub(crate) fn of(changed: &[Stored]) -> Result<Rows, StoreError> {
        let mut r = Rows::default();
        for o in changed {
            match row_of(o)? {
                Row::Gone(k, id) => {
                    if k == Kind::Port {
                        r.ports.push(id.to_string());
                    }
                    r.gone.0.push(kind_name(k));
                    r.gone.1.push(id.to_string());
                }
                Row::Put(k, id, body) => {
                    r.put.0.push(kind_name(k));
                    r.put.1.push(id.to_string());
                    r.put.2.push(body);
                }
            }
            if let Stored::Port(p) = o {
                r.ports.push(p.id.to_string());
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
        Ok(r)
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
