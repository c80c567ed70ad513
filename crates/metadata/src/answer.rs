//! **The one place** where a VM's request becomes an answer: refused, answered from the
//! registry (built-in mode) or forwarded to Nova with the headers Nova verifies (proxy mode).
//! Pure: the registry, the source address and the mode are inputs.

use std::net::IpAddr;

use qdhcp_registry::{Port, Registry};

use crate::nova::{self, Instance};
use crate::request::{Method, Request};
use crate::response::Response;
use crate::sign::upstream_headers;

/// Where answers come from.
#[derive(Clone)]
pub enum Mode {
    /// From the registry, in Nova's formats.
    Builtin,
    /// From Nova, with requests signed with the shared secret.
    Proxy {
        /// `metadata_proxy_shared_secret`.
        secret: std::sync::Arc<[u8]>,
    },
}

impl Mode {
    /// Its label in logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Mode::Builtin => "builtin",
            Mode::Proxy { .. } => "proxy",
        }
    }
}

impl std::fmt::Debug for Mode {
    // the secret is never shown
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// What a request is about: the network whose namespace it reached, who sent it.
pub struct Asked<'a> {
    /// The registry at the request.
    pub reg: &'a Registry,
    /// The network of the namespace the request reached.
    pub network_id: &'a str,
    /// The VM's address (the connection's peer).
    pub source: IpAddr,
    /// `dhcp_domain`, for host names.
    pub domain: Option<&'a str>,
}

/// A request for Nova, with the header set built afresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The VM's method.
    pub method: Method,
    /// The VM's path and query, unchanged.
    pub path_and_query: String,
    /// Exactly the headers Nova verifies.
    pub headers: Vec<(&'static str, String)>,
    /// The VM's body (a password upload).
    pub body: Vec<u8>,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Answer at once.
    Respond(Response),
    /// Ask Nova; its answer goes back to the VM.
    Forward(Forward),
}

/// Why a request was answered as it was, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Answered from the registry.
    Served,
    /// Forwarded to Nova.
    Forwarded,
    /// No port of the network holds the source address.
    NoPort,
    /// The port has no device_id.
    NoInstance,
    /// A method the service does not take.
    Method,
    /// Over the source's request rate.
    Limited,
}

impl Why {
    /// Its name in the log line.
    pub fn label(self) -> &'static str {
        match self {
            Why::Served => "served",
            Why::Forwarded => "forwarded",
            Why::NoPort => "no port holds the address",
            Why::NoInstance => "the port has no device_id",
            Why::Method => "method not allowed",
            Why::Limited => "over the rate limit",
        }
    }
}

/// The port of `network_id` that holds `source`; for an IPv6 link-local source (a VM asking
/// `[fe80::a9fe:a9fe]`), the port whose MAC its EUI-64 interface id carries, as Neutron's
/// metadata agent finds it.
pub fn port_of<'r>(reg: &'r Registry, network_id: &'r str, source: IpAddr) -> Option<&'r Port> {
    if let Some(mac) = mac_of_link_local(source) {
        return reg.ports_of(network_id).find(|p| p.mac_address.0 == mac);
    }
    reg.ports_of(network_id)
        .find(|p| p.fixed_ips.iter().any(|f| f.ip_address == source))
}

/// The MAC in an EUI-64 link-local address (`fe80::f816:3eff:fe7a:603` →
/// `fa:16:3e:7a:06:03`); `None` for any other address.
pub fn mac_of_link_local(ip: IpAddr) -> Option<[u8; 6]> {
    let IpAddr::V6(a) = ip else {
        return None;
    };
    if !a.is_unicast_link_local() {
        return None;
    }
    let o = a.octets();
    if o[11] != 0xff || o[12] != 0xfe {
        return None;
    }
    Some([o[8] ^ 0x02, o[9], o[10], o[13], o[14], o[15]])
}

/// Decides what `req` gets.
pub fn decide(req: &Request, asked: &Asked, mode: &Mode) -> (Decision, Why) {
    let allowed = match mode {
        Mode::Builtin => matches!(req.method, Method::Get | Method::Head),
        Mode::Proxy { .. } => matches!(req.method, Method::Get | Method::Head | Method::Post),
    };
    if !allowed {
        let mut r = Response::error(405);
        r.allow = Some(match mode {
            Mode::Builtin => "GET, HEAD",
            Mode::Proxy { .. } => "GET, HEAD, POST",
        });
        return (Decision::Respond(r), Why::Method);
    }
    let Some(port) = port_of(asked.reg, asked.network_id, asked.source) else {
        return (Decision::Respond(Response::error(404)), Why::NoPort);
    };
    if port.device_id.is_empty() {
        return (Decision::Respond(Response::error(404)), Why::NoInstance);
    }
    match mode {
        Mode::Proxy { secret } => (
            Decision::Forward(Forward {
                method: req.method,
                path_and_query: req.path_and_query(),
                headers: upstream_headers(
                    secret,
                    asked.source,
                    &port.device_id,
                    port.project_id.as_str(),
                ),
                body: req.body.clone(),
            }),
            Why::Forwarded,
        ),
        Mode::Builtin => {
            let inst = Instance {
                reg: asked.reg,
                port,
                domain: asked.domain,
            };
            (
                Decision::Respond(nova::answer(&inst, &req.path)),
                Why::Served,
            )
        }
    }
}
