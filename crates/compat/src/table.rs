//! Turns a dnsmasq configuration plus host and opts lines into the reservation table that the
//! dataplane serves. Tags work as in dnsmasq: `set:subnet-<id>` on a range selects subnet
//! options, `set:port-<id>` on a host selects that port's extra options.

use ahash::{HashMap, HashSet};

use qdhcp_protocol::{ClientMatch, Conditional, NetworkTable, OptionSet, Reservation, Subnet};

use crate::cmdline::DnsmasqConfig;
use crate::files::{parse_host, parse_opt, HostLine, OptLine};

/// A built table and what was skipped, for the log.
#[derive(Debug)]
pub struct Built {
    /// The table to serve.
    pub table: NetworkTable,
    /// One line per configuration problem (the rest still applies).
    pub warnings: Vec<String>,
}

/// What a host line needs from the rest of the configuration to become a reservation: the
/// ranges and the options by tag. Kept after a build so that a reload adding a few host lines
/// can turn just those lines into reservations.
#[derive(Debug, Clone)]
pub struct HostContext {
    ranges: Vec<(ipnet::Ipv4Net, Option<String>)>,
    by_host_tag: HashMap<String, Vec<OptLine>>,
    /// Tags set by what a client's message shows (`--dhcp-match`, `--dhcp-userclass`).
    matches: HashMap<String, Vec<ClientMatch>>,
}

impl HostContext {
    /// Whether options are configured for hosts carrying `tag`.
    pub fn has_options_for(&self, tag: &str) -> bool {
        self.by_host_tag.contains_key(tag)
    }

    /// The reservation for one host line, or why it is not served.
    pub fn reservation(
        &self,
        h: HostLine,
        warnings: &mut Vec<String>,
    ) -> Result<Reservation, String> {
        let Some(ip) = h.ip else {
            return Err(format!(
                "host {} has no IPv4 address: not served (static ranges only)",
                h.mac.map(|m| m.to_string()).unwrap_or_else(|| "?".into())
            ));
        };
        let mut host_opts = OptionSet::default();
        // options that also name a client-match tag (Neutron's `tag:port-…,tag:ipxe,…`),
        // grouped by their conditions
        let mut conditional: Vec<Conditional> = Vec::new();
        if !h.tags.is_empty() {
            let subnet_tag = self
                .ranges
                .iter()
                .find(|(net, _)| net.contains(&ip))
                .and_then(|(_, t)| t.as_ref());
            for t in &h.tags {
                for o in self.by_host_tag.get(t.as_str()).into_iter().flatten() {
                    let mut when: Vec<ClientMatch> = Vec::new();
                    let applies = o.tags.iter().all(|ot| {
                        if h.tags.contains(ot) || subnet_tag == Some(ot) {
                            return true;
                        }
                        match self.matches.get(ot) {
                            Some(m) => {
                                when.extend(m.iter().cloned());
                                true
                            }
                            None => false,
                        }
                    });
                    if !applies {
                        continue;
                    }
                    let target = if when.is_empty() {
                        &mut host_opts
                    } else {
                        let i = match conditional.iter().position(|c| c.when == when) {
                            Some(i) => i,
                            None => {
                                conditional.push(Conditional {
                                    when,
                                    options: OptionSet::default(),
                                });
                                conditional.len() - 1
                            }
                        };
                        &mut conditional[i].options
                    };
                    if let Err(e) = target.set_text(o.code, &o.value, o.force) {
                        warnings.push(e.to_string());
                    }
                }
            }
        }
        Ok(Reservation {
            mac: h.mac,
            client_id: h.client_id,
            ip,
            hostname: h.hostname,
            options: host_opts,
            conditional,
        })
    }
}

/// Builds the network table from the command line, host-file lines and opts-file lines.
pub fn build_table(cfg: &DnsmasqConfig, file_hosts: Vec<HostLine>, file_opts: &[OptLine]) -> Built {
    build_with_context(cfg, file_hosts, file_opts).0
}

/// As [`build_table`], also returning the context for turning later host lines into
/// reservations the same way.
pub fn build_with_context(
    cfg: &DnsmasqConfig,
    file_hosts: Vec<HostLine>,
    file_opts: &[OptLine],
) -> (Built, HostContext) {
    let mut warnings = Vec::new();

    // Options from the command line come first; file lines override them, as on reload.
    let mut opts: Vec<OptLine> = Vec::new();
    for (lines, force) in [(&cfg.options, false), (&cfg.force_options, true)] {
        for l in lines {
            match parse_opt(l, force) {
                Ok(Some(o)) => opts.push(o),
                Ok(None) => {}
                Err(e) => warnings.push(format!(
                    "--dhcp-option{}: {e}",
                    if force { "-force" } else { "" }
                )),
            }
        }
    }
    opts.extend(file_opts.iter().cloned());

    let range_tags: HashSet<&str> = cfg.ranges.iter().filter_map(|r| r.tag.as_deref()).collect();
    let mut matches: HashMap<String, Vec<ClientMatch>> = HashMap::default();
    for (tag, m) in &cfg.client_matches {
        matches.entry(tag.clone()).or_default().push(m.clone());
    }
    let mut global = OptionSet::default();
    let mut subnets: Vec<Subnet> = cfg
        .ranges
        .iter()
        .map(|r| Subnet {
            net: r.net,
            lease_secs: r.lease_secs,
            options: OptionSet::default(),
        })
        .collect();
    let mut by_host_tag: HashMap<String, Vec<OptLine>> = HashMap::default();

    for o in &opts {
        if o.tags.is_empty() {
            if let Err(e) = global.set_text(o.code, &o.value, o.force) {
                warnings.push(e.to_string());
            }
        } else if o.tags.iter().all(|t| range_tags.contains(t.as_str())) {
            for (r, s) in cfg.ranges.iter().zip(subnets.iter_mut()) {
                if r.tag.as_ref().is_some_and(|t| o.tags.contains(t)) {
                    if let Err(e) = s.options.set_text(o.code, &o.value, o.force) {
                        warnings.push(e.to_string());
                    }
                }
            }
        } else if let Some(t) = o
            .tags
            .iter()
            .find(|t| !range_tags.contains(t.as_str()) && !matches.contains_key(t.as_str()))
            .or_else(|| o.tags.iter().find(|t| !range_tags.contains(t.as_str())))
        {
            by_host_tag.entry(t.clone()).or_default().push(o.clone());
        }
    }
    let ctx = HostContext {
        ranges: cfg.ranges.iter().map(|r| (r.net, r.tag.clone())).collect(),
        by_host_tag,
        matches,
    };

    let mut hosts: Vec<HostLine> = Vec::with_capacity(cfg.hosts.len() + file_hosts.len());
    for h in &cfg.hosts {
        match parse_host(h) {
            Ok(Some(h)) => hosts.push(h),
            Ok(None) => {}
            Err(e) => warnings.push(format!("--dhcp-host: {e}")),
        }
    }
    hosts.extend(file_hosts);

    let mut reservations = Vec::with_capacity(hosts.len());
    let mut used_tags: HashSet<String> = HashSet::default();
    // An address is reserved for one client only; a later line reusing it is ignored, as
    // dnsmasq does ("duplicate IP address"), so one address is never handed to two MACs.
    type Owner = (
        Option<qdhcp_protocol::Mac>,
        Option<qdhcp_protocol::ClientId>,
    );
    let mut ip_owner: HashMap<std::net::Ipv4Addr, Owner> = HashMap::default();
    ip_owner.reserve(hosts.len());
    for h in hosts {
        if h.ignore {
            continue;
        }
        if let Some(ip) = h.ip {
            let who = (h.mac, h.client_id.clone());
            match ip_owner.get(&ip) {
                Some(owner) if *owner != who => {
                    warnings.push(format!(
                        "duplicate IP address {ip} for {}: line ignored",
                        h.mac.map(|m| m.to_string()).unwrap_or_else(|| "?".into())
                    ));
                    continue;
                }
                Some(_) => {}
                None => {
                    ip_owner.insert(ip, who);
                }
            }
        }
        for t in &h.tags {
            if !used_tags.contains(t) {
                used_tags.insert(t.clone());
            }
        }
        match ctx.reservation(h, &mut warnings) {
            Ok(r) => reservations.push(r),
            Err(w) => warnings.push(w),
        }
    }
    let mut unmatched: Vec<&str> = ctx
        .by_host_tag
        .keys()
        .filter(|t| !used_tags.contains(*t))
        .map(String::as_str)
        .collect();
    if !unmatched.is_empty() {
        unmatched.sort_unstable();
        warnings.push(format!(
            "options for tags set by no host or range ignored: {}",
            unmatched.join(", ")
        ));
    }

    let mut table = NetworkTable::new(subnets, reservations);
    table.global_options = global;
    table.domain = cfg.domain.clone();
    (Built { table, warnings }, ctx)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::cmdline::parse_args;
    use crate::files::{parse_hosts, parse_opts};
    use qdhcp_protocol::Mac;

    #[test]
    fn an_address_reserved_twice_goes_to_the_first_client_only() {
        let args: Vec<String> = vec!["--dhcp-range=10.0.0.0,static,255.0.0.0".into()];
        let cfg = parse_args(&args, |_| unreachable!()).unwrap();
        let (hosts, _) = parse_hosts("fa:16:3e:00:00:fd,a,10.1.0.254\nfa:16:3e:00:00:fe,b,10.1.0.254\nfa:16:3e:00:00:fd,a,10.1.0.254\n");
        let b = build_table(&cfg, hosts, &[]);
        assert_eq!(b.table.reservations().len(), 1);
        assert_eq!(
            b.table.reservations()[0].mac.unwrap().to_string(),
            "fa:16:3e:00:00:fd"
        );
        assert_eq!(b.warnings.len(), 1, "{:?}", b.warnings);
        assert!(b.warnings[0].contains("duplicate IP address 10.1.0.254"));
    }

    #[test]
    fn subnet_port_and_forced_options_land_where_tags_say() {
        let args: Vec<String> = "--dhcp-range=set:subnet-a,172.16.1.0,static,255.255.255.0,86400s \
            --dhcp-option-force=option:mtu,1450 --domain=openstacklocal"
            .split_whitespace()
            .map(String::from)
            .collect();
        let cfg = parse_args(&args, |_| unreachable!()).unwrap();
        let (hosts, _) = parse_hosts(
            "fa:16:3e:00:00:01,host-172-16-1-103.openstacklocal.,172.16.1.103\n\
             fa:16:3e:00:00:02,set:port-p2,host-172-16-1-104.openstacklocal.,172.16.1.104\n",
        );
        let (opts, _) = parse_opts(
            "tag:subnet-a,option:router,172.16.1.1\n\
             tag:port-p2,option:dns-server,9.9.9.9\n\
             tag:ipxe,option:bootfile-name,x\n",
        );
        let b = build_table(&cfg, hosts, &opts);
        assert_eq!(b.warnings.len(), 1, "{:?}", b.warnings);
        assert!(b.warnings[0].contains("ipxe"));
        let t = b.table;
        assert!(t.subnets[0].options.contains(3));
        assert!(t.global_options.get(26).unwrap().force);
        assert_eq!(t.domain.as_deref(), Some("openstacklocal"));
        let m2: Mac = "fa:16:3e:00:00:02".parse().unwrap();
        let r2 = t.lookup(m2, None).unwrap();
        assert_eq!(r2.ip, Ipv4Addr::new(172, 16, 1, 104));
        assert!(r2.options.contains(6));
        let m1: Mac = "fa:16:3e:00:00:01".parse().unwrap();
        assert!(!t.lookup(m1, None).unwrap().options.contains(6));
    }

    #[test]
    fn dhcp_match_tags_make_conditional_host_options() {
        let args: Vec<String> = "--dhcp-range=set:subnet-a,172.16.1.0,static,255.255.255.0,86400s \
            --dhcp-match=set:ipxe,175 --dhcp-userclass=set:ipxe6,iPXE"
            .split_whitespace()
            .map(String::from)
            .collect();
        let cfg = parse_args(&args, |_| unreachable!()).unwrap();
        let (hosts, _) = parse_hosts(
            "fa:16:3e:00:00:02,host-172-16-1-104.openstacklocal.,172.16.1.104,set:port-p2\n",
        );
        let (opts, _) = parse_opts(
            "tag:port-p2,option:bootfile-name,pxelinux.0\n\
             tag:port-p2,tag:ipxe,option:bootfile-name,http://172.16.1.9/boot.ipxe\n",
        );
        let b = build_table(&cfg, hosts, &opts);
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
        let r = b
            .table
            .lookup("fa:16:3e:00:00:02".parse().unwrap(), None)
            .unwrap();
        assert!(r.options.contains(67));
        assert_eq!(r.conditional.len(), 1);
        assert_eq!(r.conditional[0].when, vec![ClientMatch::SentOption(175)]);
        assert!(r.conditional[0].options.contains(67));
    }
}
