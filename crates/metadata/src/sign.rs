//! The headers Nova's metadata API trusts, built afresh for each forwarded request as
//! Neutron's metadata agent builds them (`neutron/agent/metadata/agent.py`): nothing the VM
//! sent is passed on.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// `X-Instance-ID-Signature`: hex HMAC-SHA256 of the instance id keyed with the shared secret,
/// as Nova checks it.
pub fn sign_instance_id(secret: &[u8], instance_id: &str) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(instance_id.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The whole header set of a request to Nova for the VM at `source` on the port of
/// `instance_id` in `project_id`.
pub fn upstream_headers(
    secret: &[u8],
    source: std::net::IpAddr,
    instance_id: &str,
    project_id: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("X-Forwarded-For", source.to_string()),
        ("X-Instance-ID", instance_id.to_string()),
        ("X-Tenant-ID", project_id.to_string()),
        (
            "X-Instance-ID-Signature",
            sign_instance_id(secret, instance_id),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_rfc_4231s_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign_instance_id(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_header_set_is_exactly_the_four_nova_checks() {
        let h = upstream_headers(b"s", "10.0.0.5".parse().unwrap(), "vm-1", "proj");
        let names: Vec<&str> = h.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "X-Forwarded-For",
                "X-Instance-ID",
                "X-Tenant-ID",
                "X-Instance-ID-Signature"
            ]
        );
        assert_eq!(h[0].1, "10.0.0.5");
        assert_eq!(h[3].1, sign_instance_id(b"s", "vm-1"));
    }
}
