//! The DHCPv6 server core (RFC 8415), beside the DHCPv4 one and as pure: the front door
//! (`frontdoor.rs`), the link's subnets and hosts (`table.rs`), options as configured
//! (`options.rs`), leases (`lease.rs`), the decision (`decide.rs`), the reply's encoding
//! (`reply.rs`) and its log lines (`log.rs`).

pub mod decide;
pub mod frontdoor;
pub mod lease;
pub mod log;
pub mod options;
pub mod reply;
pub mod table;

pub use decide::{
    decide6, Change6, Context6, Decision6, Ignored6, Lease6, LeaseView6, Outcome6, Reply6,
};
pub use frontdoor::{
    parse6, Duid, IaAddr, IaNa, Inbound6, Malformed6, Msg6, Relay, HOP_COUNT_LIMIT,
};
pub use log::Log6;
pub use options::Options6;
pub use table::{Host6, Subnet6, Table6};

#[cfg(test)]
mod tests;
