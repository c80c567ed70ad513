//! qdhcp's dataplane: the I/O edge around the pure protocol core. Owns the sockets (one per
//! interface), reply delivery (RFC 2131 §4.1), the lease table and its durable journal.

mod clock;
mod commit;
pub mod delivery;
pub mod exposition;
pub mod journal;
pub mod leases;
pub mod limits;
mod linkout;
pub mod listener;
pub mod metrics;
pub mod network;
pub mod options;
pub mod priority;
pub mod privileges;
mod send;
pub mod server;
mod serving;
mod shared;
pub mod v6;
mod writer;

pub use clock::now_secs;
pub use limits::MacLimiter;
pub use network::{Network, ReloadStats};
pub use options::{ServeOptions, BATCH};
pub use server::Dataplane;
