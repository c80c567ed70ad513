//! qdhcp's registry: the control-plane model (networks, subnets, ports), IPAM, validation,
//! and what DHCP serves for each network. Pure: the caller persists and applies the changes
//! each operation returns.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod dhcp;
pub mod dhcp6;
mod dhcp_ports;
pub mod error;
mod feed;
mod ids;
mod index;
pub mod ipv6;
pub mod model;
mod networks;
mod ports;
pub mod registry;
pub mod requests;
mod scheduling;
pub mod segments;
mod subnets;

pub use error::RegistryError;
pub use feed::{effects_between, Stored};
pub use model::*;
pub use registry::{Caller, Change, Effect, Env, Kind, ObjectId, Outcome, Registry};
pub use scheduling::Scheduling;

#[cfg(test)]
mod feed_tests;
#[cfg(test)]
mod ipam_tests;
#[cfg(test)]
mod ipv6_tests;
#[cfg(test)]
mod scheduler_tests;
#[cfg(test)]
mod tests;
