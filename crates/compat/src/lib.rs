//! Compatibility with the dnsmasq that Neutron's DHCP agent runs: its command line, and the
//! host, opts and leases files the agent writes. Parsing only: turns text into validated
//! configuration and reservation tables; no sockets and no signals here.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cmdline;
pub mod files;
pub mod leases6;
pub mod reload;
pub mod table;
pub mod table6;

pub use cmdline::{parse_args, CmdlineError, DhcpRange, DhcpRange6, DnsmasqConfig};
pub use files::{parse_hosts, parse_leases, parse_opts, FileError, HostLine, LeaseLine, OptLine};
pub use table::{build_table, build_with_context, Built, HostContext};
pub use table6::build_table6;
