//! qdhcp's protocol core: validates client messages, decides the RFC 2131 answer as a typed
//! reply, and says how that reply is encoded (the dataplane encodes it just before sending). It never touches a socket, a clock, a file or a database: time and state are arguments.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod decide;
pub mod frontdoor;
pub mod log;
pub mod options;
pub mod reply;
pub mod types;
pub mod v6;

pub use decide::{
    decide, renew_from_durable, time_left, Context, Decision, Ignored, Lease, LeaseChange,
    LeaseView, Outcome, Policy,
};
pub use frontdoor::SentOptions;
pub use frontdoor::{parse, ClientMsg, Inbound, Malformed};
pub use log::LogLine;
pub use options::{OptionError, OptionSet};
pub use reply::{LeaseTimes, Reply, ReplyKind, ReplyOptions};
pub use types::{ClientId, ClientMatch, Conditional, Mac, NetworkTable, Reservation, Subnet};

#[cfg(test)]
mod tests;
