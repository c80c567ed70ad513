//! Behaviour tests of the decision core: every branch of `decide`, replies decoded back with
//! dhcproto, plus a property test that arbitrary bytes never panic the packet path.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder};
use proptest::prelude::*;

use crate::frontdoor::tests::packet;
use crate::*;

const SERVER: Ipv4Addr = Ipv4Addr::new(172, 16, 1, 2);
const VM: [u8; 6] = [0xfa, 0x16, 0x3e, 0x11, 0x22, 0x33];
const STRANGER: [u8; 6] = [0xfa, 0x16, 0x3e, 0x99, 0x99, 0x99];
const NOW: u64 = 1_700_000_000;

fn table() -> NetworkTable {
    let mut opts = OptionSet::default();
    opts.set_text(3, "172.16.1.1", false).unwrap();
    opts.set_text(6, "8.8.8.8", false).unwrap();
    opts.set_text(26, "1450", true).unwrap();
    opts.set_text(
        121,
        "169.254.169.254/32,172.16.1.2,0.0.0.0/0,172.16.1.1",
        false,
    )
    .unwrap();
    let subnet = Subnet {
        net: "172.16.1.0/24".parse().unwrap(),
        lease_secs: Some(86400),
        options: opts,
    };
    let r = Reservation {
        mac: Some(Mac(VM)),
        client_id: None,
        ip: Ipv4Addr::new(172, 16, 1, 103),
        hostname: Some("host-172-16-1-103".into()),
        options: OptionSet::default(),
        conditional: Vec::new(),
    };
    let mut t = NetworkTable::new(vec![subnet], vec![r]);
    t.domain = Some("openstacklocal".into());
    t
}

#[derive(Default)]
struct Leases {
    by_mac: HashMap<Mac, Lease>,
    declined: Vec<(Mac, Ipv4Addr, u64)>,
}

impl LeaseView for Leases {
    fn lease(&self, mac: Mac) -> Option<&Lease> {
        self.by_mac.get(&mac)
    }
    fn declined(&self, mac: Mac, ip: Ipv4Addr, now: u64) -> bool {
        self.declined
            .iter()
            .any(|&(m, i, until)| m == mac && i == ip && now < until)
    }
    fn count(&self) -> usize {
        self.by_mac.len()
    }
}

fn run(p: &[u8], leases: &Leases) -> Decision {
    let t = table();
    let policy = Policy::default();
    let ctx = Context {
        iface: "ns-test",
        server_id: SERVER,
        table: &t,
        policy: &policy,
    };
    let m = parse(p).expect("test packet parses");
    decide(&m, &ctx, leases, NOW)
}

/// Decides `p` against table `t` with the default policy and no leases.
fn run_on(t: &NetworkTable, p: &[u8]) -> Decision {
    let policy = Policy::default();
    let ctx = Context {
        iface: "ns-test",
        server_id: SERVER,
        table: t,
        policy: &policy,
    };
    decide(
        &parse(p).expect("test packet parses"),
        &ctx,
        &Leases::default(),
        NOW,
    )
}

fn reply_of(d: &Decision) -> Message {
    let r = d.reply.as_ref().expect("a reply");
    Message::decode(&mut Decoder::new(&r.encode())).unwrap()
}

fn ip(s: &str) -> [u8; 4] {
    s.parse::<Ipv4Addr>().unwrap().octets()
}

/// Option codes in the order they appear on the wire.
fn wire_order(bytes: &[u8]) -> Vec<u8> {
    let mut i = 240;
    let mut out = vec![];
    while i < bytes.len() && bytes[i] != 255 {
        if bytes[i] == 0 {
            i += 1;
            continue;
        }
        out.push(bytes[i]);
        i += 2 + bytes[i + 1] as usize;
    }
    out
}

#[test]
fn discover_from_reserved_mac_gets_offer_with_every_option() {
    let p = packet(
        1,
        VM,
        &[(55, &[1, 121, 3, 6, 15, 26, 12, 28, 51, 58, 59, 54])],
    );
    let d = run(&p, &Leases::default());
    let m = reply_of(&d);
    assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(m.yiaddr(), Ipv4Addr::new(172, 16, 1, 103));
    assert_eq!(m.xid(), 0x1234_5678);
    let o = m.opts();
    assert_eq!(
        o.get(OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask([255, 255, 255, 0].into()))
    );
    assert_eq!(
        o.get(OptionCode::Router),
        Some(&DhcpOption::Router(vec![ip("172.16.1.1").into()]))
    );
    assert_eq!(
        o.get(OptionCode::DomainNameServer),
        Some(&DhcpOption::DomainNameServer(vec![ip("8.8.8.8").into()]))
    );
    assert_eq!(
        o.get(OptionCode::DomainName),
        Some(&DhcpOption::DomainName("openstacklocal".into()))
    );
    assert_eq!(
        o.get(OptionCode::InterfaceMtu),
        Some(&DhcpOption::InterfaceMtu(1450))
    );
    assert_eq!(
        o.get(OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(86400))
    );
    assert_eq!(
        o.get(OptionCode::Renewal),
        Some(&DhcpOption::Renewal(43200))
    );
    assert_eq!(
        o.get(OptionCode::Rebinding),
        Some(&DhcpOption::Rebinding(75600))
    );
    assert_eq!(
        o.get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(
        o.get(OptionCode::Hostname),
        Some(&DhcpOption::Hostname("host-172-16-1-103".into()))
    );
    assert_eq!(
        o.get(OptionCode::BroadcastAddr),
        Some(&DhcpOption::BroadcastAddr(ip("172.16.1.255").into()))
    );
    match o.get(OptionCode::ClasslessStaticRoute) {
        Some(DhcpOption::ClasslessStaticRoute(r)) => {
            assert_eq!(r[0], ("169.254.169.254/32".parse().unwrap(), SERVER));
            assert_eq!(
                r[1],
                ("0.0.0.0/0".parse().unwrap(), ip("172.16.1.1").into())
            );
        }
        other => panic!("no 121: {other:?}"),
    }
    assert!(d.lease.is_none(), "an OFFER binds nothing");
    assert_eq!(
        d.received.render("ns-test").to_string(),
        "DHCPDISCOVER(ns-test) fa:16:3e:11:22:33"
    );
    assert_eq!(
        d.sent.unwrap().render("ns-test").to_string(),
        "DHCPOFFER(ns-test) 172.16.1.103 fa:16:3e:11:22:33"
    );
}

#[test]
fn options_follow_the_parameter_request_list_order() {
    let p = packet(1, VM, &[(55, &[121, 15, 6, 3, 1])]);
    let d = run(&p, &Leases::default());
    let order = wire_order(&d.reply.unwrap().encode());
    // fixed head: type, server id, lease times; mask first; then the client's order; forced MTU last
    assert_eq!(order, vec![53, 54, 51, 58, 59, 1, 121, 15, 6, 3, 26]);
}

#[test]
fn replies_are_padded_to_bootp_minimum_and_respect_max_size() {
    let p = packet(1, VM, &[(55, &[1])]);
    let d = run(&p, &Leases::default());
    assert!(d.reply.unwrap().encode().len() >= 300);
    // a client limited to 576 bytes never gets more, however much is configured
    let mut t = table();
    let mut big = OptionSet::default();
    for code in 200..230u8 {
        big.set_text(code, &"x".repeat(200), false).unwrap();
    }
    for (code, w) in big.iter() {
        t.subnets[0].options.insert(code, w.clone());
    }
    let prl: Vec<u8> = (200..230).collect();
    let p = packet(1, VM, &[(55, &prl), (57, &[1, 0])]);
    let d = run_on(&t, &p);
    let bytes = d.reply.unwrap().encode();
    assert!(bytes.len() <= 576, "{}", bytes.len());
    assert_eq!(*bytes.iter().rev().find(|&&b| b != 0).unwrap(), 255);
}

#[test]
fn discover_from_unknown_mac_gets_no_reply_and_logs_no_address() {
    let d = run(&packet(1, STRANGER, &[]), &Leases::default());
    assert!(d.reply.is_none());
    assert_eq!(
        d.received.render("ns-x").to_string(),
        "DHCPDISCOVER(ns-x) fa:16:3e:99:99:99 no address available"
    );
}

#[test]
fn discover_by_reserved_client_id_gets_offer_and_id_is_echoed() {
    let mut t = table();
    t.upsert(Reservation {
        mac: None,
        client_id: Some(ClientId(vec![0xff, 1, 2, 3])),
        ip: Ipv4Addr::new(172, 16, 1, 150),
        hostname: None,
        options: OptionSet::default(),
        conditional: Vec::new(),
    });
    let p = packet(1, STRANGER, &[(61, &[0xff, 1, 2, 3])]);
    let d = run_on(&t, &p);
    let m = reply_of(&d);
    assert_eq!(m.yiaddr(), Ipv4Addr::new(172, 16, 1, 150));
    assert_eq!(
        m.opts().get(OptionCode::ClientIdentifier),
        Some(&DhcpOption::ClientIdentifier(vec![0xff, 1, 2, 3]))
    );
}

#[test]
fn selecting_request_for_us_gets_ack_and_binds_lease() {
    let p = packet(3, VM, &[(54, &ip("172.16.1.2")), (50, &ip("172.16.1.103"))]);
    let d = run(&p, &Leases::default());
    assert_eq!(reply_of(&d).opts().msg_type(), Some(MessageType::Ack));
    match d.lease {
        Some(LeaseChange::Bind(l)) => {
            assert_eq!(l.ip, Ipv4Addr::new(172, 16, 1, 103));
            assert_eq!(l.expires, Some(NOW + 86400));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        d.sent.unwrap().render("ns-x").to_string(),
        "DHCPACK(ns-x) 172.16.1.103 fa:16:3e:11:22:33 host-172-16-1-103"
    );
    assert_eq!(
        d.received.render("ns-x").to_string(),
        "DHCPREQUEST(ns-x) 172.16.1.103 fa:16:3e:11:22:33"
    );
}

#[test]
fn request_with_foreign_server_id_is_dropped() {
    let p = packet(3, VM, &[(54, &ip("172.16.1.3")), (50, &ip("172.16.1.103"))]);
    let d = run(&p, &Leases::default());
    assert!(d.reply.is_none());
    assert!(d.lease.is_none());
}

#[test]
fn selecting_request_for_other_address_gets_nak() {
    let p = packet(3, VM, &[(54, &ip("172.16.1.2")), (50, &ip("172.16.1.104"))]);
    let d = run(&p, &Leases::default());
    assert_eq!(reply_of(&d).opts().msg_type(), Some(MessageType::Nak));
    let p = packet(
        3,
        STRANGER,
        &[(54, &ip("172.16.1.2")), (50, &ip("172.16.1.104"))],
    );
    assert_eq!(
        reply_of(&run(&p, &Leases::default())).opts().msg_type(),
        Some(MessageType::Nak)
    );
}

#[test]
fn init_reboot_with_right_address_gets_ack() {
    let p = packet(3, VM, &[(50, &ip("172.16.1.103"))]);
    let d = run(&p, &Leases::default());
    assert_eq!(reply_of(&d).opts().msg_type(), Some(MessageType::Ack));
}

#[test]
fn init_reboot_of_known_client_with_wrong_address_gets_nak_at_once() {
    let p = packet(3, VM, &[(50, &ip("10.9.9.9"))]);
    let d = run(&p, &Leases::default());
    let m = reply_of(&d);
    assert_eq!(m.opts().msg_type(), Some(MessageType::Nak));
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(m.opts().get(OptionCode::AddressLeaseTime).is_none());
    assert_eq!(d.sent.unwrap().note.as_deref(), Some("wrong address"));
}

#[test]
fn init_reboot_of_unknown_client_is_silent() {
    let p = packet(3, STRANGER, &[(50, &ip("172.16.1.150"))]);
    assert!(run(&p, &Leases::default()).reply.is_none());
}

fn with_ciaddr(mut p: Vec<u8>, a: &str) -> Vec<u8> {
    p[12..16].copy_from_slice(&ip(a));
    p
}

#[test]
fn renewing_with_reserved_address_gets_ack_echoing_ciaddr() {
    let p = with_ciaddr(packet(3, VM, &[]), "172.16.1.103");
    let d = run(&p, &Leases::default());
    let m = reply_of(&d);
    assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(m.ciaddr(), Ipv4Addr::new(172, 16, 1, 103));
    assert_eq!(m.yiaddr(), Ipv4Addr::new(172, 16, 1, 103));
    assert!(matches!(d.lease, Some(LeaseChange::Bind(_))));
}

#[test]
fn renewing_with_other_address_gets_nak() {
    let p = with_ciaddr(packet(3, VM, &[]), "172.16.1.104");
    assert_eq!(
        reply_of(&run(&p, &Leases::default())).opts().msg_type(),
        Some(MessageType::Nak)
    );
}

#[test]
fn renew_after_port_delete_gets_nak() {
    // no reservation for this MAC any more, but the address is in our subnet
    let p = with_ciaddr(packet(3, STRANGER, &[]), "172.16.1.103");
    let d = run(&p, &Leases::default());
    assert_eq!(reply_of(&d).opts().msg_type(), Some(MessageType::Nak));
    assert_eq!(d.sent.unwrap().note.as_deref(), Some("lease not found"));
}

#[test]
fn renewing_address_outside_our_subnets_is_silent() {
    let p = with_ciaddr(packet(3, STRANGER, &[]), "10.1.1.1");
    assert!(run(&p, &Leases::default()).reply.is_none());
}

#[test]
fn request_without_requested_ip_is_ignored() {
    assert!(run(
        &packet(3, VM, &[(54, &ip("172.16.1.2"))]),
        &Leases::default()
    )
    .reply
    .is_none());
    assert!(run(&packet(3, VM, &[]), &Leases::default()).reply.is_none());
}

#[test]
fn decline_quarantines_address_for_that_client() {
    let p = packet(4, VM, &[(54, &ip("172.16.1.2")), (50, &ip("172.16.1.103"))]);
    let d = run(&p, &Leases::default());
    assert!(d.reply.is_none());
    let Some(LeaseChange::Decline { mac, ip: a, until }) = d.lease else {
        panic!("{:?}", d.lease)
    };
    assert_eq!(
        (mac, a, until),
        (Mac(VM), Ipv4Addr::new(172, 16, 1, 103), NOW + 600)
    );
    let leases = Leases {
        declined: vec![(mac, a, until)],
        ..Default::default()
    };
    let d = run(&packet(1, VM, &[]), &leases);
    assert!(d.reply.is_none(), "no offer while quarantined");
    assert_eq!(d.received.note.as_deref(), Some("no address available"));
    let p = packet(3, VM, &[(50, &ip("172.16.1.103"))]);
    assert_eq!(
        reply_of(&run(&p, &leases)).opts().msg_type(),
        Some(MessageType::Nak)
    );
}

#[test]
fn forged_decline_for_another_clients_address_is_ignored() {
    let p = packet(4, STRANGER, &[(50, &ip("172.16.1.103"))]);
    let d = run(&p, &Leases::default());
    assert!(d.lease.is_none());
    assert_eq!(
        d.received.note.as_deref(),
        Some("not this client's address, ignored")
    );
}

#[test]
fn release_ends_the_lease() {
    let p = with_ciaddr(packet(7, VM, &[(54, &ip("172.16.1.2"))]), "172.16.1.103");
    let d = run(&p, &Leases::default());
    assert!(d.reply.is_none());
    assert_eq!(
        d.lease,
        Some(LeaseChange::Release {
            mac: Mac(VM),
            ip: Ipv4Addr::new(172, 16, 1, 103)
        })
    );
    assert_eq!(
        d.received.render("i").to_string(),
        "DHCPRELEASE(i) 172.16.1.103 fa:16:3e:11:22:33"
    );
}

#[test]
fn forged_release_with_other_chaddr_is_ignored() {
    let p = with_ciaddr(packet(7, STRANGER, &[]), "172.16.1.103");
    let d = run(&p, &Leases::default());
    assert!(d.lease.is_none());
    assert_eq!(d.received.note.as_deref(), Some("unknown lease"));
    let p = with_ciaddr(packet(7, VM, &[(54, &ip("172.16.1.9"))]), "172.16.1.103");
    assert!(run(&p, &Leases::default()).lease.is_none());
}

#[test]
fn inform_gets_options_without_address_or_lease_time() {
    let p = with_ciaddr(packet(8, STRANGER, &[(55, &[1, 3, 6, 51])]), "172.16.1.77");
    let d = run(&p, &Leases::default());
    let m = reply_of(&d);
    assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(m.ciaddr(), Ipv4Addr::new(172, 16, 1, 77));
    assert!(m.opts().get(OptionCode::AddressLeaseTime).is_none());
    assert!(m.opts().get(OptionCode::Router).is_some());
    assert!(d.lease.is_none());
}

#[test]
fn host_options_override_subnet_options() {
    let mut t = table();
    let mut host = OptionSet::default();
    host.set_text(6, "9.9.9.9", false).unwrap();
    let mut r = t.reservations()[0].clone();
    r.options = host;
    t.upsert(r);
    let d = run_on(&t, &packet(1, VM, &[(55, &[6])]));
    assert_eq!(
        reply_of(&d).opts().get(OptionCode::DomainNameServer),
        Some(&DhcpOption::DomainNameServer(vec![ip("9.9.9.9").into()]))
    );
}

#[test]
fn infinite_lease_has_no_expiry_and_no_t1_t2() {
    let mut t = table();
    t.subnets[0].lease_secs = None;
    let p = packet(3, VM, &[(50, &ip("172.16.1.103"))]);
    let d = run_on(&t, &p);
    let m = reply_of(&d);
    assert_eq!(
        m.opts().get(OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(u32::MAX))
    );
    assert!(m.opts().get(OptionCode::Renewal).is_none());
    assert!(matches!(
        d.lease,
        Some(LeaseChange::Bind(Lease { expires: None, .. }))
    ));
}

#[test]
fn full_lease_table_refuses_new_clients_but_keeps_serving_holders() {
    let t = table();
    let policy = Policy {
        lease_max: Some(1),
        ..Policy::default()
    };
    let ctx = Context {
        iface: "i",
        server_id: SERVER,
        table: &t,
        policy: &policy,
    };
    let other = Mac([0xfa, 0x16, 0x3e, 0, 0, 0x42]);
    let mut leases = Leases::default();
    leases.by_mac.insert(
        other,
        Lease {
            mac: other,
            client_id: None,
            ip: Ipv4Addr::new(172, 16, 1, 9),
            expires: None,
            hostname: None,
        },
    );
    let d = decide(&parse(&packet(1, VM, &[])).unwrap(), &ctx, &leases, NOW);
    assert!(d.reply.is_none());
    assert_eq!(
        d.received.note.as_deref(),
        Some("no address available: lease limit reached")
    );
    // typed for the counters: a refusal at the lease limit is a refusal for want of addresses
    // (the dataplane compared the note with "no address available" and missed it)
    assert_eq!(
        d.outcome,
        crate::Outcome::Ignored(crate::Ignored::LeaseLimit)
    );
    let p = packet(3, VM, &[(50, &ip("172.16.1.103"))]);
    let d = decide(&parse(&p).unwrap(), &ctx, &leases, NOW);
    assert_eq!(reply_of(&d).opts().msg_type(), Some(MessageType::Nak));
    // the holder renews fine
    leases.by_mac.clear();
    leases.by_mac.insert(
        Mac(VM),
        Lease {
            mac: Mac(VM),
            client_id: None,
            ip: Ipv4Addr::new(172, 16, 1, 103),
            expires: None,
            hostname: None,
        },
    );
    let d = decide(
        &parse(&with_ciaddr(packet(3, VM, &[]), "172.16.1.103")).unwrap(),
        &ctx,
        &leases,
        NOW,
    );
    assert_eq!(reply_of(&d).opts().msg_type(), Some(MessageType::Ack));
}

#[test]
fn option_82_from_a_client_without_relay_is_ignored_unless_trusted() {
    let p = packet(1, VM, &[(82, &[1, 3, b'a', b'b', b'c'])]);
    let d = run(&p, &Leases::default());
    assert!(d.reply.is_none());
    assert_eq!(
        d.received.note.as_deref(),
        Some("option 82 without a relay, ignored")
    );
    let t = table();
    let policy = Policy {
        trust_unrelayed_option82: true,
        ..Policy::default()
    };
    let ctx = Context {
        iface: "i",
        server_id: SERVER,
        table: &t,
        policy: &policy,
    };
    assert!(decide(&parse(&p).unwrap(), &ctx, &Leases::default(), NOW)
        .reply
        .is_some());
}

#[test]
fn relay_agent_information_is_echoed_last() {
    let mut p = packet(1, VM, &[(82, &[1, 3, b'a', b'b', b'c'])]);
    p[24..28].copy_from_slice(&ip("172.16.1.1"));
    let bytes = run(&p, &Leases::default()).reply.unwrap().encode();
    assert_eq!(*wire_order(&bytes).last().unwrap(), 82);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]
    /// Arbitrary bytes never panic the front door or the decision.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let t = table();
        let policy = Policy::default();
        let ctx = Context { iface: "i", server_id: SERVER, table: &t, policy: &policy };
        if let Ok(m) = parse(&bytes) {
            let _ = decide(&m, &ctx, &Leases::default(), NOW);
        }
    }

    /// Valid headers with arbitrary option areas never panic either, and any reply is
    /// well-formed: at least 300 bytes and decodable.
    #[test]
    fn arbitrary_options_never_panic(
        mt in 1u8..9, opts in proptest::collection::vec(any::<u8>(), 0..400), mac in any::<[u8; 6]>()
    ) {
        let mut p = packet(mt, mac, &[]);
        p.pop();
        p.extend_from_slice(&opts);
        let t = table();
        let policy = Policy::default();
        let ctx = Context { iface: "i", server_id: SERVER, table: &t, policy: &policy };
        if let Ok(m) = parse(&p) {
            let d = decide(&m, &ctx, &Leases::default(), NOW);
            if let Some(r) = d.reply {
                let bytes = r.encode();
                prop_assert!(bytes.len() >= 300);
                prop_assert!(Message::decode(&mut Decoder::new(&bytes)).is_ok());
            }
        }
    }
}

#[test]
fn conditional_host_options_go_only_to_clients_that_match() {
    // Neutron's `tag:port-…,tag:ipxe,option:bootfile-name,…` with `--dhcp-match=set:ipxe,175`
    let mut t = table();
    let mut r = t.lookup(Mac(VM), None).unwrap().clone();
    r.options.set_text(67, "pxelinux.0", false).unwrap();
    let mut ipxe = OptionSet::default();
    ipxe.set_text(67, "http://172.16.1.9/boot.ipxe", false)
        .unwrap();
    r.conditional = vec![Conditional {
        when: vec![ClientMatch::SentOption(175)],
        options: ipxe,
    }];
    t.upsert(r);
    let policy = Policy::default();
    let ctx = Context {
        iface: "ns-test",
        server_id: SERVER,
        table: &t,
        policy: &policy,
    };
    let bootfile = |p: &[u8]| {
        let d = decide(&parse(p).unwrap(), &ctx, &Leases::default(), NOW);
        match reply_of(&d).opts().get(OptionCode::BootfileName) {
            Some(DhcpOption::BootfileName(b)) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("no bootfile: {other:?}"),
        }
    };
    let plain = packet(1, VM, &[(55, &[1, 3, 67])]);
    let from_ipxe = packet(1, VM, &[(55, &[1, 3, 67]), (175, &[1, 1, 1])]);
    assert_eq!(bootfile(&plain), "pxelinux.0");
    assert_eq!(bootfile(&from_ipxe), "http://172.16.1.9/boot.ipxe");
    // user class matches look inside option 77
    let m = parse(&packet(1, VM, &[(77, b"\x04iPXE")])).unwrap();
    assert!(ClientMatch::UserClass(b"iPXE".to_vec()).matches(&m));
    assert!(!ClientMatch::UserClass(b"gPXE".to_vec()).matches(&m));
    assert!(!ClientMatch::SentOption(175).matches(&m));
}

/// The fallback when a lease change cannot be made durable, decided by the core: a renewal of
/// the lease the client durably holds gets an ACK for the time that lease has left (T1 and T2
/// from it), and nothing else gets an answer.
#[test]
fn a_renewal_of_a_durable_lease_is_answered_with_the_time_it_has_left() {
    let durable = |expires: Option<u64>, at: &str| Lease {
        mac: Mac(VM),
        client_id: None,
        ip: at.parse().unwrap(),
        expires,
        hostname: None,
    };
    let req = packet(3, VM, &[(50, &ip("172.16.1.103"))]);
    let decided = run(&req, &Leases::default());
    assert_eq!(decided.outcome, Outcome::Acked);
    let ack = decided.reply.expect("an ACK decided");
    let r = renew_from_durable(&ack, Some(&durable(Some(NOW + 600), "172.16.1.103")), NOW)
        .expect("an ACK");
    assert_eq!(r.kind, ReplyKind::Ack);
    // only the lease times change
    assert_eq!(
        Reply {
            lease: ack.lease,
            ..r.clone()
        },
        ack
    );
    let msg = Message::decode(&mut Decoder::new(&r.encode())).unwrap();
    assert_eq!(msg.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(msg.yiaddr(), Ipv4Addr::new(172, 16, 1, 103));
    let o = msg.opts();
    assert_eq!(
        o.get(OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(600))
    );
    assert_eq!(o.get(OptionCode::Renewal), Some(&DhcpOption::Renewal(300)));
    assert_eq!(
        o.get(OptionCode::Rebinding),
        Some(&DhcpOption::Rebinding(525))
    );
    // an infinite lease stays infinite, without T1 and T2
    let r = renew_from_durable(&ack, Some(&durable(None, "172.16.1.103")), NOW).unwrap();
    let msg = Message::decode(&mut Decoder::new(&r.encode())).unwrap();
    assert_eq!(
        msg.opts().get(OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(u32::MAX))
    );
    assert_eq!(msg.opts().get(OptionCode::Renewal), None);
    // expired, another address, no durable lease, or not an ACK with a lease: nothing
    assert!(renew_from_durable(&ack, Some(&durable(Some(NOW + 1), "172.16.1.103")), NOW).is_none());
    assert!(
        renew_from_durable(&ack, Some(&durable(Some(NOW + 600), "172.16.1.104")), NOW).is_none()
    );
    assert!(renew_from_durable(&ack, None, NOW).is_none());
    let offer = run(&packet(1, VM, &[]), &Leases::default()).reply.unwrap();
    assert!(
        renew_from_durable(&offer, Some(&durable(Some(NOW + 600), "172.16.1.103")), NOW).is_none()
    );
}

/// Configured T1 and T2 (Neutron forces both) are numbers in the typed reply and on the wire.
#[test]
fn configured_t1_and_t2_are_sent_as_configured() {
    let mut t = table();
    t.subnets[0].options.set_text(58, "100", true).unwrap();
    t.subnets[0].options.set_text(59, "200", true).unwrap();
    let d = run_on(&t, &packet(1, VM, &[]));
    let r = d.reply.unwrap();
    let times = r.lease.unwrap();
    assert_eq!((times.t1(), times.t2()), (Some(100), Some(200)));
    let msg = Message::decode(&mut Decoder::new(&r.encode())).unwrap();
    assert_eq!(
        msg.opts().get(OptionCode::Renewal),
        Some(&DhcpOption::Renewal(100))
    );
    assert_eq!(
        msg.opts().get(OptionCode::Rebinding),
        Some(&DhcpOption::Rebinding(200))
    );
    // neither is repeated among the other options
    assert!(!r.options.codes().contains(&58));
}
