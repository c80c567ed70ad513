//! dnsmasq's command line (and `--conf-file`), as Neutron's DHCP agent builds it. getopt_long
//! rules: `--opt=value`, `--opt value`, `-x value`, `-xvalue`. Flags that only matter to
//! dnsmasq's DNS side are accepted and reported so the caller can warn once.

use std::path::PathBuf;

use ipnet::Ipv4Net;

mod values;
use values::*;

/// A command-line or conf-file error, naming the flag.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    /// A flag dnsmasq does not have.
    #[error("unrecognized option '{0}'")]
    Unknown(String),
    /// A flag that needs a value got none.
    #[error("option '--{0}' requires an argument")]
    MissingValue(String),
    /// A value that does not parse.
    #[error("bad value for --{flag}: {why}")]
    BadValue {
        /// The flag.
        flag: String,
        /// What is wrong.
        why: String,
    },
    /// `--conf-file` could not be read.
    #[error("cannot read conf-file {path}: {why}")]
    ConfFile {
        /// The file.
        path: String,
        /// The OS error.
        why: String,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Arity {
    None,
    Required,
    Optional,
}

/// What a flag does for qdhcp.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Dhcp,
    DnsOnly,
}

/// (long name, short letter, arity, role). The DHCP-relevant subset of `dnsmasq --help` plus
/// every flag Neutron passes.
const FLAGS: &[(&str, Option<char>, Arity, Role)] = &[
    ("no-hosts", Some('h'), Arity::None, Role::DnsOnly),
    ("no-resolv", Some('R'), Arity::None, Role::DnsOnly),
    ("strict-order", Some('o'), Arity::None, Role::DnsOnly),
    ("addn-hosts", Some('H'), Arity::Required, Role::DnsOnly),
    ("server", Some('S'), Arity::Required, Role::DnsOnly),
    ("local", None, Arity::Required, Role::DnsOnly),
    ("log-queries", Some('q'), Arity::Optional, Role::DnsOnly),
    ("cache-size", Some('c'), Arity::Required, Role::DnsOnly),
    ("dns-forward-max", None, Arity::Required, Role::DnsOnly),
    ("local-service", None, Arity::Optional, Role::DnsOnly),
    ("filterwin2k", Some('f'), Arity::None, Role::DnsOnly),
    ("domain-needed", None, Arity::None, Role::DnsOnly),
    ("bogus-priv", None, Arity::None, Role::DnsOnly),
    ("expand-hosts", None, Arity::None, Role::DnsOnly),
    ("txt-record", Some('Y'), Arity::Required, Role::DnsOnly),
    ("version", Some('v'), Arity::None, Role::Dhcp),
    ("help", Some('w'), Arity::Optional, Role::Dhcp),
    ("port", Some('p'), Arity::Required, Role::Dhcp),
    ("pid-file", Some('x'), Arity::Optional, Role::Dhcp),
    ("dhcp-hostsfile", None, Arity::Required, Role::Dhcp),
    ("dhcp-hostsdir", None, Arity::Required, Role::Dhcp),
    ("dhcp-optsfile", None, Arity::Required, Role::Dhcp),
    ("dhcp-leasefile", Some('l'), Arity::Required, Role::Dhcp),
    ("dhcp-range", Some('F'), Arity::Required, Role::Dhcp),
    ("dhcp-host", Some('G'), Arity::Required, Role::Dhcp),
    ("dhcp-option", Some('O'), Arity::Required, Role::Dhcp),
    ("dhcp-option-force", None, Arity::Required, Role::Dhcp),
    ("dhcp-match", None, Arity::Required, Role::Dhcp),
    ("dhcp-userclass", Some('j'), Arity::Required, Role::Dhcp),
    ("dhcp-vendorclass", Some('U'), Arity::Required, Role::Dhcp),
    ("dhcp-ignore", None, Arity::Required, Role::Dhcp),
    ("dhcp-lease-max", Some('X'), Arity::Required, Role::Dhcp),
    ("dhcp-authoritative", Some('K'), Arity::None, Role::Dhcp),
    ("dhcp-broadcast", None, Arity::Optional, Role::Dhcp),
    ("dhcp-sequential-ip", None, Arity::None, Role::Dhcp),
    ("dhcp-rapid-commit", None, Arity::None, Role::Dhcp),
    ("dhcp-script", None, Arity::Required, Role::Dhcp),
    ("dhcp-client-update", None, Arity::None, Role::Dhcp),
    ("dhcp-fqdn", None, Arity::None, Role::Dhcp),
    ("domain", Some('s'), Arity::Required, Role::Dhcp),
    ("interface", Some('i'), Arity::Required, Role::Dhcp),
    ("except-interface", Some('I'), Arity::Required, Role::Dhcp),
    ("bridge-interface", None, Arity::Required, Role::Dhcp),
    ("bind-interfaces", Some('z'), Arity::None, Role::Dhcp),
    ("bind-dynamic", None, Arity::None, Role::Dhcp),
    ("listen-address", Some('a'), Arity::Required, Role::Dhcp),
    ("conf-file", Some('C'), Arity::Required, Role::Dhcp),
    ("conf-dir", Some('7'), Arity::Required, Role::Dhcp),
    ("keep-in-foreground", Some('k'), Arity::None, Role::Dhcp),
    ("no-daemon", Some('d'), Arity::None, Role::Dhcp),
    ("log-dhcp", None, Arity::None, Role::Dhcp),
    ("quiet-dhcp", None, Arity::None, Role::Dhcp),
    ("log-facility", Some('8'), Arity::Required, Role::Dhcp),
    ("log-async", None, Arity::Optional, Role::Dhcp),
    ("user", Some('u'), Arity::Required, Role::Dhcp),
    ("group", Some('g'), Arity::Required, Role::Dhcp),
    ("enable-ra", None, Arity::None, Role::Dhcp),
    ("ra-param", None, Arity::Required, Role::Dhcp),
    ("leasefile-ro", None, Arity::None, Role::Dhcp),
    ("test", None, Arity::None, Role::Dhcp),
    (
        "qdhcp-decline-quarantine",
        None,
        Arity::Required,
        Role::Dhcp,
    ),
    ("qdhcp-client-rate", None, Arity::Required, Role::Dhcp),
    ("qdhcp-trust-option82", None, Arity::None, Role::Dhcp),
    ("qdhcp-realtime", None, Arity::None, Role::Dhcp),
    ("qdhcp-dns-rate", None, Arity::Required, Role::Dhcp),
    ("qdhcp-commit-interval", None, Arity::Required, Role::Dhcp),
];

/// The longest wait between lease-journal commits accepted: a second, past which replies would
/// wait longer than clients retransmit.
pub const MAX_COMMIT_INTERVAL_US: u32 = 1_000_000;

/// The commit interval when none is given: 2 ms. On this project's VMs every flush takes time
/// from every CPU, and commits 2 ms apart cut the OFFER and ADVERTISE tails and raised the
/// DHCPv6 peak (bench/DHCPV6.md, bench/CAUSES.md); at a low rate nothing waits.
pub const DEFAULT_COMMIT_INTERVAL_US: u32 = 2_000;

/// Every long flag accepted, for `--help`.
pub fn flag_names() -> Vec<String> {
    FLAGS.iter().map(|f| format!("--{}", f.0)).collect()
}

/// One `--dhcp-range`: qdhcp serves static ranges (reservations only), as Neutron uses.
#[derive(Debug, Clone, PartialEq)]
pub struct DhcpRange {
    /// The tag this range sets (`set:subnet-<id>`), used by opts-file lines.
    pub tag: Option<String>,
    /// The subnet.
    pub net: Ipv4Net,
    /// Lease seconds; `None` is infinite. dnsmasq's default is one hour.
    pub lease_secs: Option<u32>,
}

/// One DHCPv6 `--dhcp-range` (`set:subnet-<id>,2001:db8::,static,64,86400s`, Neutron's form
/// for dhcpv6-stateful and dhcpv6-stateless subnets alike).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpRange6 {
    /// The tag this range sets.
    pub tag: Option<String>,
    /// The subnet.
    pub net: ipnet::Ipv6Net,
    /// Lease seconds; `None` is infinite.
    pub lease_secs: Option<u32>,
}

/// Everything from the command line that matters to DHCP service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DnsmasqConfig {
    /// `--dhcp-hostsfile`.
    pub hostsfiles: Vec<PathBuf>,
    /// `--dhcp-optsfile`.
    pub optsfiles: Vec<PathBuf>,
    /// `--dhcp-leasefile`.
    pub leasefile: Option<PathBuf>,
    /// `--dhcp-range`.
    pub ranges: Vec<DhcpRange>,
    /// `--dhcp-range` for DHCPv6.
    pub ranges6: Vec<DhcpRange6>,
    /// `--dhcp-rapid-commit`: a SOLICIT asking for Rapid Commit gets its REPLY at once.
    pub rapid_commit: bool,
    /// `--dhcp-host` lines given directly.
    pub hosts: Vec<String>,
    /// `--dhcp-option` lines given directly.
    pub options: Vec<String>,
    /// `--dhcp-option-force` lines: sent even when not requested.
    pub force_options: Vec<String>,
    /// `--domain`.
    pub domain: Option<String>,
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
    /// `--interface`.
    pub interfaces: Vec<String>,
    /// `--except-interface`.
    pub except_interfaces: Vec<String>,
    /// `--dhcp-lease-max` (dnsmasq's default 1000).
    pub lease_max: Option<u32>,
    /// `--log-facility`: a file path, `-` for stderr, or a syslog facility name.
    pub log_facility: Option<String>,
    /// `--log-dhcp`: extra detail per packet.
    pub log_dhcp: bool,
    /// `--quiet-dhcp`: no per-packet lines.
    pub quiet_dhcp: bool,
    /// `--dhcp-broadcast`: always broadcast replies.
    pub dhcp_broadcast: bool,
    /// `-k`: stay in the foreground.
    pub keep_in_foreground: bool,
    /// `-d`: stay in the foreground, log to stderr.
    pub no_daemon: bool,
    /// `--port=0` disables DNS, so we do not offer ourselves as DNS server.
    pub dns_port: Option<u16>,
    /// `--test`: check the configuration and exit.
    pub test_only: bool,
    /// Seconds a declined address is withheld (qdhcp extension).
    pub decline_quarantine: Option<u64>,
    /// Messages one client may send per second, 0 = unlimited (qdhcp extension).
    pub client_rate: Option<u16>,
    /// Accept option 82 from clients that no relay forwarded (qdhcp extension).
    pub trust_option82: bool,
    /// Serving threads at real-time priority, SCHED_FIFO (qdhcp extension).
    pub realtime: bool,
    /// Least microseconds between the starts of two lease-journal commits (qdhcp extension).
    pub commit_interval_us: Option<u32>,
    /// DNS queries one client may send per second, 0 = unlimited (qdhcp extension).
    pub dns_rate: Option<u32>,
    /// `--dhcp-match` and `--dhcp-userclass`: tags set by what the client's message shows.
    pub client_matches: Vec<(String, qdhcp_protocol::ClientMatch)>,
    /// `--user`: whom to run as once the sockets are open (dnsmasq's default is `nobody`).
    pub user: Option<String>,
    /// `--group`: the group to run as (default: the user's primary group).
    pub group: Option<String>,
    /// `-v`/`--version`: print the version banner and exit.
    pub version: bool,
    /// `-w`/`--help`: print the accepted flags and exit.
    pub help: bool,
    /// `--addn-hosts`: more hosts files (Neutron's: `<ip> <fqdn> <name>` per port).
    pub addn_hosts: Vec<PathBuf>,
    /// `--no-hosts`: do not read /etc/hosts.
    pub no_hosts: bool,
    /// `--no-resolv`: do not take upstream servers from /etc/resolv.conf.
    pub no_resolv: bool,
    /// `--server=IP[#PORT]`: upstream servers (`None`: an empty `--server=`, which names none).
    pub servers: Vec<Option<std::net::SocketAddr>>,
    /// `--cache-size`: forwarded answers kept (dnsmasq's default 150).
    pub cache_size: Option<usize>,
    /// `--log-queries`: a line per DNS query and answer.
    pub log_queries: bool,
    /// `--local-service`: DNS answers only for clients of the local subnets.
    pub local_service: bool,
    /// `--txt-record=NAME[,TEXT…]`: TXT records answered locally.
    pub txt_records: Vec<String>,
    /// What was accepted but is not served (IPv6 ranges), for one warning line.
    pub not_served: Vec<String>,
    /// DNS flags that were accepted and have no effect, for one warning line.
    pub ignored: Vec<String>,
}

/// Parses dnsmasq arguments (without the program name). `read_file` loads `--conf-file`s.
pub fn parse_args<F>(args: &[String], mut read_file: F) -> Result<DnsmasqConfig, CmdlineError>
where
    F: FnMut(&str) -> std::io::Result<String>,
{
    let mut cfg = DnsmasqConfig::default();
    let mut pairs: Vec<(String, Option<String>)> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        // getopt leaves an empty argument unparsed and dnsmasq never looks at it; Neutron puts
        // one in its command line where `--no-resolv` would go.
        if a.is_empty() {
            continue;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let &(lname, _, arity, _) = FLAGS
                .iter()
                .find(|f| f.0 == name)
                .ok_or_else(|| CmdlineError::Unknown(a.clone()))?;
            let value = match (arity, inline) {
                (Arity::None, Some(_)) => {
                    return Err(CmdlineError::BadValue {
                        flag: lname.into(),
                        why: "takes no value".into(),
                    })
                }
                (Arity::None, None) => None,
                (_, Some(v)) => Some(v),
                (Arity::Required, None) => {
                    let v = args
                        .get(i)
                        .ok_or_else(|| CmdlineError::MissingValue(lname.into()))?;
                    i += 1;
                    Some(v.clone())
                }
                (Arity::Optional, None) => None,
            };
            pairs.push((lname.to_string(), value));
        } else if let Some(shorts) = a.strip_prefix('-').filter(|s| !s.is_empty()) {
            let chars: Vec<char> = shorts.chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                let &(lname, _, arity, _) = FLAGS
                    .iter()
                    .find(|f| f.1 == Some(c))
                    .ok_or_else(|| CmdlineError::Unknown(format!("-{c}")))?;
                j += 1;
                if arity == Arity::None {
                    pairs.push((lname.into(), None));
                    continue;
                }
                let rest: String = chars[j..].iter().collect();
                let value = if !rest.is_empty() {
                    Some(rest)
                } else if arity == Arity::Required {
                    let v = args
                        .get(i)
                        .ok_or_else(|| CmdlineError::MissingValue(lname.into()))?;
                    i += 1;
                    Some(v.clone())
                } else {
                    None
                };
                pairs.push((lname.into(), value));
                break;
            }
        } else {
            return Err(CmdlineError::Unknown(a.clone()));
        }
    }
    for (name, value) in pairs {
        apply(&mut cfg, &name, value, &mut read_file, 0)?;
    }
    Ok(cfg)
}

fn apply<F>(
    cfg: &mut DnsmasqConfig,
    name: &str,
    value: Option<String>,
    read_file: &mut F,
    depth: u32,
) -> Result<(), CmdlineError>
where
    F: FnMut(&str) -> std::io::Result<String>,
{
    let role = FLAGS
        .iter()
        .find(|f| f.0 == name)
        .map(|f| f.3)
        .ok_or_else(|| CmdlineError::Unknown(format!("--{name}")))?;
    let bad = |why: String| CmdlineError::BadValue {
        flag: name.to_string(),
        why,
    };
    let v = value.clone().unwrap_or_default();
    if role == Role::DnsOnly {
        // the DNS side qdhcp serves; the rest is accepted and named in one warning
        match name {
            "addn-hosts" => cfg.addn_hosts.push(v.into()),
            "no-hosts" => cfg.no_hosts = true,
            "no-resolv" => cfg.no_resolv = true,
            "server" => cfg.servers.push(parse_server(&v).map_err(bad)?),
            "cache-size" => {
                cfg.cache_size = Some(
                    v.parse()
                        .map_err(|_| bad(format!("{v:?} is not a number")))?,
                )
            }
            "log-queries" => cfg.log_queries = true,
            "local-service" => cfg.local_service = true,
            "txt-record" => cfg.txt_records.push(v),
            _ => cfg.ignored.push(name.to_string()),
        }
        return Ok(());
    }
    match name {
        "dhcp-hostsfile" => cfg.hostsfiles.push(v.into()),
        "dhcp-optsfile" => cfg.optsfiles.push(v.into()),
        "dhcp-leasefile" => cfg.leasefile = Some(v.into()),
        "dhcp-range" => {
            if is_ipv6_range(&v) {
                match parse_range6(&v) {
                    Ok(r) => cfg.ranges6.push(r),
                    // router-advertisement modes: Neutron's L3 agent runs radvd, not us
                    Err(e) => cfg.not_served.push(format!("--dhcp-range={v} ({e})")),
                }
            } else {
                cfg.ranges.push(parse_range(&v).map_err(bad)?);
            }
        }
        "dhcp-host" => cfg.hosts.push(v),
        "dhcp-option" => cfg.options.push(v),
        "dhcp-option-force" => cfg.force_options.push(v),
        "domain" => {
            // `--domain=example.com[,subnet]`: the subnet form is not needed by Neutron.
            let d = v.split(',').next().unwrap_or("").trim();
            if !d.is_empty() {
                cfg.domain = Some(d.to_string());
            }
        }
        "pid-file" => cfg.pid_file = value.filter(|v| !v.is_empty()).map(Into::into),
        "interface" => cfg.interfaces.extend(v.split(',').map(str::to_string)),
        "except-interface" => cfg
            .except_interfaces
            .extend(v.split(',').map(str::to_string)),
        "dhcp-lease-max" => {
            cfg.lease_max = Some(
                v.parse()
                    .map_err(|_| bad(format!("{v:?} is not a number")))?,
            )
        }
        "log-facility" => cfg.log_facility = Some(v),
        "log-dhcp" => cfg.log_dhcp = true,
        "quiet-dhcp" => cfg.quiet_dhcp = true,
        "dhcp-broadcast" => cfg.dhcp_broadcast = true,
        "dhcp-rapid-commit" => cfg.rapid_commit = true,
        "keep-in-foreground" => cfg.keep_in_foreground = true,
        "no-daemon" => cfg.no_daemon = true,
        "test" => cfg.test_only = true,
        "dhcp-match" => cfg.client_matches.push(parse_match(&v).map_err(bad)?),
        "dhcp-userclass" => {
            let (tag, class) = set_tag(&v)?;
            cfg.client_matches.push((
                tag,
                qdhcp_protocol::ClientMatch::UserClass(class.as_bytes().to_vec()),
            ));
        }
        "version" => cfg.version = true,
        "help" => cfg.help = true,
        "user" => cfg.user = Some(v),
        "group" => cfg.group = Some(v),
        "port" => cfg.dns_port = Some(v.parse().map_err(|_| bad(format!("{v:?} is not a port")))?),
        "qdhcp-trust-option82" => cfg.trust_option82 = true,
        "qdhcp-realtime" => cfg.realtime = true,
        "qdhcp-dns-rate" => {
            cfg.dns_rate = Some(
                v.parse()
                    .map_err(|_| bad(format!("{v:?} is not a number")))?,
            )
        }
        "qdhcp-commit-interval" => {
            cfg.commit_interval_us = Some(
                v.parse()
                    .ok()
                    .filter(|us| *us <= MAX_COMMIT_INTERVAL_US)
                    .ok_or_else(|| bad(format!("{v:?} is not microseconds 0-1000000")))?,
            )
        }
        "qdhcp-client-rate" => {
            cfg.client_rate = Some(
                v.parse()
                    .map_err(|_| bad(format!("{v:?} is not a number 0-65535")))?,
            )
        }
        "qdhcp-decline-quarantine" => {
            cfg.decline_quarantine = Some(
                v.parse()
                    .map_err(|_| bad(format!("{v:?} is not seconds")))?,
            )
        }
        "conf-file" if v != "/dev/null" && !v.is_empty() => {
            if depth > 4 {
                return Err(bad("conf-file nested too deep".into()));
            }
            let text = read_file(&v).map_err(|e| CmdlineError::ConfFile {
                path: v.clone(),
                why: e.to_string(),
            })?;
            for line in text.lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (n, val) = match line.split_once('=') {
                    Some((n, val)) => (n.trim(), Some(val.trim().to_string())),
                    None => (line, None),
                };
                apply(cfg, n, val, read_file, depth + 1)?;
            }
        }
        // Accepted; no effect on a static, reservation-only server.
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests;
