//! The DHCPv6 side of a dnsmasq configuration: `--dhcp-range`s for IPv6 become the link's
//! subnets, `tag:dhcpv6` host lines its hosts (keyed by MAC, several lines of one MAC merged
//! as dnsmasq merges them), `option6:` lines their options by tag, as for DHCPv4.

use ahash::{HashMap, HashSet};
use std::net::Ipv6Addr;

use qdhcp_protocol::v6::{Host6, Options6, Subnet6, Table6};
use qdhcp_protocol::Mac;

use crate::cmdline::DnsmasqConfig;
use crate::files::{parse_host6, parse_opt6, HostLine6, OptLine6};

/// Builds the DHCPv6 table from the command line, host-file lines and opts-file lines; returns
/// it with one warning per line that could not be used.
pub fn build_table6(
    cfg: &DnsmasqConfig,
    file_hosts: Vec<HostLine6>,
    file_opts: &[OptLine6],
) -> (Table6, Vec<String>) {
    let mut warnings = Vec::new();
    let mut opts: Vec<OptLine6> = Vec::new();
    for l in cfg.options.iter().chain(&cfg.force_options) {
        match parse_opt6(l) {
            Ok(Some(o)) => opts.push(o),
            Ok(None) => {}
            Err(e) => warnings.push(format!("--dhcp-option: {e}")),
        }
    }
    opts.extend(file_opts.iter().cloned());

    let range_tags: HashSet<&str> = cfg
        .ranges6
        .iter()
        .filter_map(|r| r.tag.as_deref())
        .collect();
    let mut subnets: Vec<Subnet6> = cfg
        .ranges6
        .iter()
        .map(|r| Subnet6 {
            net: r.net,
            lease_secs: r.lease_secs.unwrap_or(u32::MAX),
            options: Options6::default(),
        })
        .collect();
    let mut global = Options6::default();
    let mut by_host_tag: HashMap<&str, Vec<&OptLine6>> = HashMap::default();
    for o in &opts {
        let set = |target: &mut Options6, warnings: &mut Vec<String>| {
            if let Err(e) = target.set_text(o.code, &o.value) {
                warnings.push(e.to_string());
            }
        };
        if o.tags.is_empty() {
            set(&mut global, &mut warnings);
        } else if o.tags.iter().all(|t| range_tags.contains(t.as_str())) {
            for (r, s) in cfg.ranges6.iter().zip(subnets.iter_mut()) {
                if r.tag.as_ref().is_some_and(|t| o.tags.contains(t)) {
                    set(&mut s.options, &mut warnings);
                }
            }
        } else if let Some(t) = o.tags.iter().find(|t| !range_tags.contains(t.as_str())) {
            by_host_tag.entry(t.as_str()).or_default().push(o);
        }
    }

    let mut lines: Vec<HostLine6> = Vec::new();
    for h in &cfg.hosts {
        match parse_host6(h) {
            Ok(Some(h)) => lines.push(h),
            Ok(None) => {}
            Err(e) => warnings.push(format!("--dhcp-host: {e}")),
        }
    }
    lines.extend(file_hosts);

    // one host per MAC; an address reserved for one MAC only (a later line reusing it is
    // ignored, as for DHCPv4)
    let mut hosts: HashMap<Mac, Host6> = HashMap::default();
    let mut tags_of: HashMap<Mac, Vec<String>> = HashMap::default();
    let mut owner: HashMap<Ipv6Addr, Mac> = HashMap::default();
    for l in lines {
        let Some(mac) = l.mac else { continue };
        let h = hosts.entry(mac).or_insert_with(|| Host6 {
            mac,
            addrs: Vec::new(),
            hostname: None,
            options: Options6::default(),
        });
        for a in l.addrs {
            match owner.get(&a) {
                Some(m) if *m != mac => {
                    warnings.push(format!("duplicate IPv6 address {a} for {mac}: ignored"));
                    continue;
                }
                Some(_) => {}
                None => {
                    owner.insert(a, mac);
                }
            }
            if !h.addrs.contains(&a) {
                h.addrs.push(a);
            }
        }
        if h.hostname.is_none() {
            h.hostname = l.hostname;
        }
        tags_of.entry(mac).or_default().extend(l.tags);
    }
    for (mac, tags) in &tags_of {
        let Some(h) = hosts.get_mut(mac) else {
            continue;
        };
        for t in tags {
            for o in by_host_tag.get(t.as_str()).into_iter().flatten() {
                if o.tags
                    .iter()
                    .all(|ot| tags.contains(ot) || range_tags.contains(ot.as_str()))
                {
                    if let Err(e) = h.options.set_text(o.code, &o.value) {
                        warnings.push(e.to_string());
                    }
                }
            }
        }
    }
    let mut table = Table6::new(subnets, hosts.into_values());
    table.global = global;
    table.set_domain(cfg.domain.as_deref());
    table.rapid_commit = cfg.rapid_commit;
    table.default_dns_self = cfg.dns_port != Some(0);
    (table, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::parse_args;
    use crate::files::{parse_hosts, parse_hosts6, parse_opts, parse_opts6};

    fn cfg(line: &str) -> DnsmasqConfig {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        parse_args(&args, |_| unreachable!()).unwrap()
    }

    /// What Neutron's driver writes for a dual-stack network: an IPv4, a dhcpv6-stateful and
    /// a dhcpv6-stateless subnet, a port on all three with an IPv6 boot option.
    const HOSTS: &str = "\
fa:16:3e:7a:06:03,host-10-0-0-3.openstacklocal.,10.0.0.3,set:port-p1
fa:16:3e:7a:06:03,tag:dhcpv6,host-2001-db8-6--103.openstacklocal,[2001:db8:6::103],set:port-p1
fa:16:3e:7a:06:03,tag:dhcpv6,set:port-p1
fa:16:3e:7a:06:04,tag:dhcpv6,host-2001-db8-6--104.openstacklocal,[2001:db8:6::104],[2001:db8:6::204]
fa:16:3e:7a:06:05,tag:dhcpv6,host-2001-db8-6--104.openstacklocal,[2001:db8:6::104]
";
    const OPTS: &str = "\
tag:subnet-v4,option:router,10.0.0.1
tag:subnet-v6a,option6:dns-server,[2001:db8:6::53]
tag:subnet-v6a,option6:domain-search,openstacklocal
tag:subnet-v6b,option6:dns-server
tag:port-p1,option:bootfile-name,pxelinux.0
tag:port-p1,option6:bootfile-url,http://[2001:db8:6::1]/boot.ipxe
tag:port-p1,option6:60,a,b
";

    #[test]
    fn neutrons_dual_stack_files_make_a_v6_table_and_the_v4_table_skips_v6_lines() {
        let c = cfg(
            "--dhcp-range=set:subnet-v4,10.0.0.0,static,255.255.255.0,86400s \
            --dhcp-range=set:subnet-v6a,2001:db8:6::,static,64,86400s \
            --dhcp-range=set:subnet-v6b,2001:db8:7::,static,64,86400s --domain=openstacklocal",
        );
        let (h6, e6) = parse_hosts6(HOSTS);
        assert!(e6.is_empty(), "{e6:?}");
        let (o6, oe) = parse_opts6(OPTS);
        assert!(oe.is_empty(), "{oe:?}");
        let (t, warnings) = build_table6(&c, h6, &o6);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("duplicate IPv6 address 2001:db8:6::104"));
        assert_eq!(t.subnets.len(), 2);
        assert_eq!(t.subnets[0].lease_secs, 86400);
        assert_eq!(
            t.subnets[1].options.get(23),
            Some(None),
            "configured to send none"
        );
        let h = t.host("fa:16:3e:7a:06:03".parse().unwrap()).unwrap();
        assert_eq!(
            h.addrs,
            vec!["2001:db8:6::103".parse::<Ipv6Addr>().unwrap()]
        );
        assert_eq!(h.short_name(), Some("host-2001-db8-6--103"));
        assert!(matches!(h.options.get(59), Some(Some(_))));
        assert!(matches!(h.options.get(60), Some(Some(_))));
        let h4 = t.host("fa:16:3e:7a:06:04".parse().unwrap()).unwrap();
        assert_eq!(
            h4.addrs.len(),
            2,
            "Neutron's addr6 list: several addresses on one line"
        );
        assert!(t
            .host("fa:16:3e:7a:06:05".parse().unwrap())
            .unwrap()
            .addrs
            .is_empty());
        // DHCPv4 sees only the IPv4 line, without a warning for the DHCPv6 ones
        let (h4, e4) = parse_hosts(HOSTS);
        assert!(e4.is_empty(), "{e4:?}");
        let (o4, _) = parse_opts(OPTS);
        let b = crate::build_table(&c, h4, &o4);
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
        assert_eq!(b.table.reservations().len(), 1);
    }
}
