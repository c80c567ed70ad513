//! qdhcp's dataplane: the I/O edge around the pure protocol core. Owns the sockets (one per
//! interface), reply delivery (RFC 2131 §4.1), the lease table and its durable journal.

mod commit;
pub mod delivery;
pub mod exposition;
pub mod journal;
pub mod leases;
mod linkout;
pub mod listener;
pub mod metrics;
pub mod priority;
pub mod privileges;
pub mod server;
mod serving;
mod writer;

pub use server::{now_secs, Dataplane, Network, ReloadStats, ServeOptions};
