//! `qdhcp`: parse the command line, run the chosen mode.

use clap::{Parser, Subcommand};

/// DHCP for cloud networks, the way OpenStack Neutron does it.
#[derive(Parser)]
#[command(name = "qdhcp", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The whole system: Neutron-compatible API with IPAM (SQLite), namespace plumbing, and
    /// the DHCP server for every network, all in this process.
    Serve(Box<qdhcp::serve::ServeArgs>),
    /// Load generator: simulated clients doing DORA or renewals as a relay agent (giaddr),
    /// batched with sendmmsg/recvmmsg; reports exchanges/s, drops and latency percentiles.
    Loadgen(Box<qdhcp::loadgen_cmd::LoadgenArgs>),
    /// Lists leases: from a running `qdhcp serve` (`GET /v2.0/leases`) or a `qdhcp dnsmasq`
    /// leases file, as a table or JSON.
    Leases(Box<qdhcp::leases_cmd::LeasesArgs>),
    /// Drop-in for the dnsmasq that Neutron's DHCP agent runs: takes dnsmasq's command line
    /// (`--dhcp-hostsfile`, `--dhcp-optsfile`, `--dhcp-range=…,static,…`, …) and its files.
    #[command(disable_help_flag = true)]
    Dnsmasq {
        /// dnsmasq arguments, exactly as Neutron passes them.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Dnsmasq { args } => qdhcp::dnsmasq_mode::run(&args),
        Cmd::Serve(a) => qdhcp::serve::run(&a),
        Cmd::Loadgen(a) => qdhcp::loadgen_cmd::run(&a),
        Cmd::Leases(a) => qdhcp::leases_cmd::run(&a),
    };
    std::process::exit(code);
}
