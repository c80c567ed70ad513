//! Instance metadata at 169.254.169.254 in each DHCP namespace, as Neutron's DHCP agent serves
//! it on isolated networks (see docs/METADATA.md): requests are read (`request`), decided in
//! one place (`answer`: refused, answered from the registry in Nova's formats (`nova`), or
//! forwarded to Nova with the headers Nova verifies (`sign`)), rate-limited per source
//! (`limit`) and written back (`response`). The core is pure; the sockets live in `serve`
//! (the listener and connections on the event loops) and `upstream` (the pooled client to
//! Nova).
#![forbid(unsafe_code)]

pub mod answer;
mod conn;
pub mod limit;
mod metrics;
pub mod nova;
pub mod request;
pub mod response;
pub mod serve;
pub mod sign;
pub mod upstream;

pub use answer::{decide, Asked, Decision, Forward, Mode, Why};
pub use request::{parse, Parsed, Request};
pub use response::Response;
pub use serve::{
    metadata_v6_net, open_listener, RegistryView, Service, Settings, Site, METADATA_V4, METADATA_V6,
};
pub use upstream::UpstreamConfig;

#[cfg(test)]
mod tests;
