//! The `qdhcp` program's pieces: command modes, logging and daemonizing. `main` only picks
//! the mode.

pub mod daemon;
pub mod dnsmasq_dns;
mod dnsmasq_ifaces;
mod dnsmasq_leases;
pub mod dnsmasq_mode;
mod dnsmasq_tables;
mod dnsmasq_v6;
pub mod leases_cmd;
pub mod loadgen_cmd;
pub mod logging;
pub mod serve;
pub mod serve_config;
pub mod serve_metadata;
