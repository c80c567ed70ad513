//! The command line as Neutron's DHCP agent and operators write it.

use super::*;

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

#[test]
fn neutron_command_line_parses() {
    let line = "--no-hosts --no-resolv --pid-file=/d/pid --dhcp-hostsfile=/d/host \
        --addn-hosts=/d/addn_hosts --dhcp-optsfile=/d/opts --dhcp-leasefile=/d/leases \
        --dhcp-match=set:ipxe,175 --dhcp-userclass=set:ipxe6,iPXE --local-service \
        --bind-dynamic --interface=ns-19a0ed3d-fe --except-interface=lo \
        --dhcp-range=set:subnet-abc,172.16.1.0,static,255.255.255.0,86400s \
        --dhcp-option-force=option:mtu,1450 --dhcp-lease-max=256 \
        --dhcp-option-force=option:T1,43200s --conf-file=/dev/null \
        --domain=openstacklocal --log-facility=/d/log --log-dhcp -k";
    let c = parse_args(&args(line), |_| unreachable!()).unwrap();
    assert_eq!(c.hostsfiles, vec![PathBuf::from("/d/host")]);
    assert_eq!(c.optsfiles, vec![PathBuf::from("/d/opts")]);
    assert_eq!(c.leasefile, Some(PathBuf::from("/d/leases")));
    assert_eq!(c.pid_file, Some(PathBuf::from("/d/pid")));
    assert_eq!(
        c.ranges,
        vec![DhcpRange {
            tag: Some("subnet-abc".into()),
            net: "172.16.1.0/24".parse().unwrap(),
            lease_secs: Some(86400)
        }]
    );
    assert_eq!(c.force_options, vec!["option:mtu,1450", "option:T1,43200s"]);
    assert_eq!(c.interfaces, vec!["ns-19a0ed3d-fe"]);
    assert_eq!(c.except_interfaces, vec!["lo"]);
    assert_eq!(c.domain.as_deref(), Some("openstacklocal"));
    assert_eq!(c.lease_max, Some(256));
    assert!(c.keep_in_foreground && c.log_dhcp);
    assert_eq!(c.log_facility.as_deref(), Some("/d/log"));
    assert!(c.ignored.is_empty(), "{:?}", c.ignored);
    assert!(c.no_hosts && c.no_resolv && c.local_service);
    assert_eq!(c.addn_hosts, vec![PathBuf::from("/d/addn_hosts")]);
}

#[test]
fn short_and_separate_value_forms_parse() {
    let c = parse_args(
        &args("-k -d -i ns-a -z -F set:t,10.0.0.0,static,255.0.0.0,infinite -x/p"),
        |_| unreachable!(),
    )
    .unwrap();
    assert!(c.keep_in_foreground && c.no_daemon);
    assert_eq!(c.interfaces, vec!["ns-a"]);
    assert_eq!(c.ranges[0].lease_secs, None);
    assert_eq!(c.ranges[0].net.to_string(), "10.0.0.0/8");
    assert_eq!(c.pid_file, Some(PathBuf::from("/p")));
}

#[test]
fn conf_file_lines_are_flags() {
    let c = parse_args(&args("--conf-file=/etc/x.conf"), |p| {
        assert_eq!(p, "/etc/x.conf");
        Ok("# comment\ndomain=example.org\ndhcp-range=10.1.0.0,static,255.255.0.0,10m\nbind-interfaces\n".into())
    })
    .unwrap();
    assert_eq!(c.domain.as_deref(), Some("example.org"));
    assert_eq!(c.ranges[0].lease_secs, Some(600));
}

#[test]
fn qdhcp_own_flags_parse() {
    let c = parse_args(
        &args("--qdhcp-client-rate=0 --qdhcp-trust-option82 --qdhcp-decline-quarantine=60 --qdhcp-realtime"),
        |_| unreachable!(),
    )
    .unwrap();
    assert_eq!(c.client_rate, Some(0));
    assert!(c.trust_option82);
    assert!(c.realtime);
    assert_eq!(c.decline_quarantine, Some(60));
    assert_eq!(c.commit_interval_us, None);
}

#[test]
fn the_commit_interval_is_microseconds_up_to_a_second() {
    let c = parse_args(&args("--qdhcp-commit-interval=2000"), |_| unreachable!()).unwrap();
    assert_eq!(c.commit_interval_us, Some(2000));
    for bad in [
        "--qdhcp-commit-interval=2ms",
        "--qdhcp-commit-interval=1000001",
    ] {
        let e = parse_args(&args(bad), |_| unreachable!()).unwrap_err();
        assert!(e.to_string().contains("microseconds"), "{bad}: {e}");
    }
}

#[test]
fn empty_argument_is_skipped_as_dnsmasq_does() {
    // Neutron with dnsmasq_local_resolv=True and no dnsmasq_dns_servers
    let a: Vec<String> = ["--no-hosts", "", "--pid-file=/d/pid", "--txt-record=a,b"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let c = parse_args(&a, |_| unreachable!()).unwrap();
    assert_eq!(c.pid_file, Some(PathBuf::from("/d/pid")));
    assert!(c.ignored.is_empty(), "{:?}", c.ignored);
    assert_eq!(c.txt_records, vec!["a,b"]);
    assert!(c.no_hosts);
}

#[test]
fn dns_flags_neutron_passes_are_kept() {
    let c = parse_args(
        &args("--server=10.0.0.1 --server=10.0.0.2#5353 --cache-size=0 --log-queries --port=5300"),
        |_| unreachable!(),
    )
    .unwrap();
    assert_eq!(
        c.servers,
        vec![
            Some("10.0.0.1:53".parse().unwrap()),
            Some("10.0.0.2:5353".parse().unwrap())
        ]
    );
    assert_eq!(
        (c.cache_size, c.log_queries, c.dns_port),
        (Some(0), true, Some(5300))
    );
    assert!(parse_args(&args("--server=/corp/10.0.0.1"), |_| unreachable!()).is_err());
}

#[test]
fn a_dual_stack_networks_ipv6_range_is_served_and_ra_modes_are_set_aside() {
    let c = parse_args(
        &args(
            "--dhcp-range=set:subnet-4,172.16.1.0,static,255.255.255.0,86400s \
               --dhcp-range=set:subnet-6,fd00:1::,static,64,86400s \
               --dhcp-range=set:subnet-7,2001:db8:7::,static,48,2h \
               --dhcp-range=fd00:9::,ra-only --dhcp-rapid-commit",
        ),
        |_| unreachable!(),
    )
    .unwrap();
    assert_eq!(c.ranges.len(), 1);
    assert_eq!(c.ranges6.len(), 2);
    assert_eq!(c.ranges6[0].tag.as_deref(), Some("subnet-6"));
    assert_eq!(c.ranges6[0].net, "fd00:1::/64".parse().unwrap());
    assert_eq!(c.ranges6[0].lease_secs, Some(86400));
    assert_eq!(c.ranges6[1].net, "2001:db8:7::/48".parse().unwrap());
    assert_eq!(c.ranges6[1].lease_secs, Some(7200));
    assert!(c.rapid_commit);
    assert_eq!(c.not_served.len(), 1);
    assert!(c.not_served[0].contains("ra-only"), "{:?}", c.not_served);
}

#[test]
fn version_and_user_flags_parse() {
    assert!(
        parse_args(&args("--version"), |_| unreachable!())
            .unwrap()
            .version
    );
    assert!(parse_args(&args("-v"), |_| unreachable!()).unwrap().version);
    let c = parse_args(&args("--user=dnsmasq -g nogroup"), |_| unreachable!()).unwrap();
    assert_eq!(c.user.as_deref(), Some("dnsmasq"));
    assert_eq!(c.group.as_deref(), Some("nogroup"));
}

#[test]
fn bad_flags_are_named() {
    assert_eq!(
        parse_args(&args("--frobnicate"), |_| unreachable!()).unwrap_err(),
        CmdlineError::Unknown("--frobnicate".into())
    );
    assert_eq!(
        parse_args(&args("--dhcp-range"), |_| unreachable!()).unwrap_err(),
        CmdlineError::MissingValue("dhcp-range".into())
    );
    let e = parse_args(
        &args("--dhcp-range=10.0.0.10,10.0.0.20,12h"),
        |_| unreachable!(),
    )
    .unwrap_err();
    assert!(matches!(e, CmdlineError::BadValue { .. }), "{e:?}");
    let e = parse_args(
        &args("--dhcp-range=10.0.0.0,static,255.0.255.0"),
        |_| unreachable!(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("not a netmask"), "{e}");
    let e = parse_args(&args("--conf-file=/nope"), |_| {
        Err(std::io::Error::other("gone"))
    })
    .unwrap_err();
    assert!(matches!(e, CmdlineError::ConfFile { .. }));
}
