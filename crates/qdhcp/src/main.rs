//! `qdhcp`: parse the command line, run the chosen mode.

use clap::{CommandFactory, Parser, Subcommand};

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
    /// Writes the man pages (`DIR/man`) and shell completions (`DIR/completions`) made from
    /// these definitions: the package build runs it, so they never drift from `--help`.
    #[command(hide = true)]
    GenerateAssets {
        /// Where to write them.
        dir: std::path::PathBuf,
    },
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
        Cmd::GenerateAssets { dir } => match generate_assets(&dir) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("qdhcp generate-assets {}: {e}", dir.display());
                1
            }
        },
    };
    std::process::exit(code);
}

/// The man pages (one per subcommand) and bash, zsh and fish completions.
fn generate_assets(dir: &std::path::Path) -> std::io::Result<()> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd.clone(), &man)?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "qdhcp", &completions)?;
    }
    Ok(())
}
