use std::collections::HashMap;
use std::net::Ipv6Addr;

use dhcproto::v6::{
    DhcpOption, DhcpOptions, IAAddr, Message, MessageType, OptionCode, Status, IANA, ORO,
};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use proptest::prelude::*;

use super::*;
use crate::types::Mac;

const MAC: Mac = Mac([0xfa, 0x16, 0x3e, 0x7a, 0x06, 0x03]);

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn client_duid() -> Duid {
    Duid::llt(1000, Mac([0x52, 0x54, 0, 0, 0, 1]))
}

fn server_duid() -> Duid {
    Duid::llt(2000, Mac([0xfa, 0x16, 0x3e, 0, 0, 0xfe]))
}

fn table() -> Table6 {
    let mut stateful = Subnet6 {
        net: "2001:db8:6::/64".parse().unwrap(),
        lease_secs: 86400,
        options: Options6::default(),
    };
    stateful.options.set_text(23, "[2001:db8:6::53]").unwrap();
    stateful.options.set_text(24, "openstacklocal").unwrap();
    let mut stateless = Subnet6 {
        net: "2001:db8:7::/64".parse().unwrap(),
        lease_secs: 86400,
        options: Options6::default(),
    };
    stateless.options.set_text(23, "[2001:db8:7::53]").unwrap();
    let mut host = Host6 {
        mac: MAC,
        addrs: vec![a("2001:db8:6::103")],
        hostname: Some("host-2001-db8-6--103.openstacklocal".into()),
        options: Options6::default(),
    };
    host.options
        .set_text(59, "http://[2001:db8:6::1]/boot.ipxe")
        .unwrap();
    Table6::new(vec![stateful, stateless], [host])
}

#[derive(Default)]
struct Leases(HashMap<Ipv6Addr, Lease6>);

impl LeaseView6 for Leases {
    fn by_addr(&self, addr: Ipv6Addr) -> Option<&Lease6> {
        self.0.get(&addr)
    }
}

impl Leases {
    fn apply(&mut self, ch: &[Change6]) {
        for c in ch {
            match c {
                Change6::Bind(l) => {
                    self.0.insert(l.addr, l.clone());
                }
                Change6::Release { addr, .. } | Change6::Decline { addr, .. } => {
                    self.0.remove(addr);
                }
            }
        }
    }
}

/// A client's message as a client encodes it.
fn msg(kind: MessageType, server: bool, ias: Vec<(u32, Vec<Ipv6Addr>)>, oro: &[u16]) -> Vec<u8> {
    let mut m = Message::new_with_id(kind, [1, 2, 3]);
    let o = m.opts_mut();
    o.insert(DhcpOption::ClientId(client_duid().0));
    if server {
        o.insert(DhcpOption::ServerId(server_duid().0));
    }
    o.insert(DhcpOption::ElapsedTime(0));
    if !oro.is_empty() {
        o.insert(DhcpOption::ORO(ORO {
            opts: oro.iter().map(|c| OptionCode::from(*c)).collect(),
        }));
    }
    for (iaid, addrs) in ias {
        let mut inner = DhcpOptions::new();
        for ad in addrs {
            inner.insert(DhcpOption::IAAddr(IAAddr {
                addr: ad,
                preferred_life: 0,
                valid_life: 0,
                opts: DhcpOptions::new(),
            }));
        }
        o.insert(DhcpOption::IANA(IANA {
            id: iaid,
            t1: 0,
            t2: 0,
            opts: inner,
        }));
    }
    let mut buf = Vec::new();
    m.encode(&mut Encoder::new(&mut buf)).unwrap();
    buf
}

fn run(bytes: &[u8], t: &Table6, mac: Option<Mac>, leases: &Leases) -> Decision6<'static> {
    // the reply borrows the message's relays; a test's few messages may live to its end
    let m: &'static Inbound6 = Box::leak(Box::new(parse6(bytes).unwrap()));
    let sid = server_duid();
    let own = [a("2001:db8:6::2")];
    let ctx = Context6 {
        table: t,
        server_id: &sid,
        mac,
        source: a("fe80::5054:ff:fe00:1"),
        own_addrs: &own,
        now: 1_000,
        log: true,
    };
    decide6(m, &ctx, leases)
}

fn reply(d: &Decision6) -> Message {
    let mut out = Vec::new();
    d.reply.as_ref().expect("a reply").encode_into(&mut out);
    Message::decode(&mut Decoder::new(&out)).unwrap()
}

fn ia_of(m: &Message) -> &IANA {
    match m.opts().get(OptionCode::IANA) {
        Some(DhcpOption::IANA(ia)) => ia,
        o => panic!("no IA_NA: {o:?}"),
    }
}

fn status_of(o: &DhcpOptions) -> Option<Status> {
    match o.get(OptionCode::StatusCode) {
        Some(DhcpOption::StatusCode(s)) => Some(s.status),
        _ => None,
    }
}

#[test]
fn a_solicit_from_a_known_mac_is_advertised_its_address_and_the_options_it_asks_for() {
    let t = table();
    let d = run(
        &msg(MessageType::Solicit, false, vec![(7, vec![])], &[23, 24]),
        &t,
        Some(MAC),
        &Leases::default(),
    );
    assert_eq!(d.outcome, Outcome6::Advertised);
    assert!(d.changes.is_empty(), "an ADVERTISE binds nothing");
    let r = reply(&d);
    assert_eq!(r.msg_type(), MessageType::Advertise);
    assert_eq!(r.xid(), [1, 2, 3]);
    let ia = ia_of(&r);
    assert_eq!((ia.id, ia.t1, ia.t2), (7, 43200, 75600));
    let Some(DhcpOption::IAAddr(ad)) = ia.opts.get(OptionCode::IAAddr) else {
        panic!()
    };
    assert_eq!(
        (ad.addr, ad.preferred_life, ad.valid_life),
        (a("2001:db8:6::103"), 86400, 86400)
    );
    assert_eq!(
        r.opts().get(OptionCode::ServerId),
        Some(&DhcpOption::ServerId(server_duid().0))
    );
    assert_eq!(
        r.opts().get(OptionCode::ClientId),
        Some(&DhcpOption::ClientId(client_duid().0))
    );
    assert_eq!(
        r.opts().get(OptionCode::DomainNameServers),
        Some(&DhcpOption::DomainNameServers(vec![a("2001:db8:6::53")]))
    );
    assert!(r.opts().get(OptionCode::DomainSearchList).is_some());
    assert!(r.opts().get(OptionCode::RapidCommit).is_none());
    // not asked for: the port's bootfile-url stays home
    assert!(r.opts().get(OptionCode::from(59)).is_none());
    let sent = d.sent.unwrap();
    assert_eq!(
        sent.render("ns-1").to_string(),
        format!(
            "DHCPADVERTISE(ns-1) 2001:db8:6::103 {} host-2001-db8-6--103",
            client_duid()
        )
    );
    assert_eq!(
        d.received.unwrap().render("ns-1").to_string(),
        format!("DHCPSOLICIT(ns-1) {}", client_duid())
    );
}

#[test]
fn lifetimes_are_the_lesser_of_the_clients_request_and_the_lease_time() {
    let t = table();
    let mut m = Message::decode(&mut Decoder::new(&msg(
        MessageType::Solicit,
        false,
        vec![],
        &[],
    )))
    .unwrap();
    let mut inner = DhcpOptions::new();
    inner.insert(DhcpOption::IAAddr(IAAddr {
        addr: a("2001:db8:6::103"),
        preferred_life: 600,
        valid_life: 1000,
        opts: DhcpOptions::new(),
    }));
    m.opts_mut().insert(DhcpOption::IANA(IANA {
        id: 1,
        t1: 0,
        t2: 0,
        opts: inner,
    }));
    let mut buf = Vec::new();
    m.encode(&mut Encoder::new(&mut buf)).unwrap();
    let r = reply(&run(&buf, &t, Some(MAC), &Leases::default()));
    let ia = ia_of(&r);
    let Some(DhcpOption::IAAddr(ad)) = ia.opts.get(OptionCode::IAAddr) else {
        panic!()
    };
    assert_eq!((ad.preferred_life, ad.valid_life), (600, 1000));
    assert_eq!(
        (ia.t1, ia.t2),
        (300, 525),
        "1/2 and 7/8 of the preferred lifetime"
    );
    // preferred above valid: the client's lifetimes are ignored (RFC 8415 §21.6)
    let mut inner = DhcpOptions::new();
    inner.insert(DhcpOption::IAAddr(IAAddr {
        addr: a("2001:db8:6::103"),
        preferred_life: 2000,
        valid_life: 1000,
        opts: DhcpOptions::new(),
    }));
    m.opts_mut().remove(OptionCode::IANA);
    m.opts_mut().insert(DhcpOption::IANA(IANA {
        id: 1,
        t1: 0,
        t2: 0,
        opts: inner,
    }));
    let mut buf = Vec::new();
    m.encode(&mut Encoder::new(&mut buf)).unwrap();
    let r = reply(&run(&buf, &t, Some(MAC), &Leases::default()));
    assert_eq!((ia_of(&r).t1, ia_of(&r).t2), (43200, 75600));
}

#[test]
fn a_stateless_port_beside_a_stateful_one_gets_the_stateless_subnets_options() {
    let mut t = table();
    let other = Mac([0xfa, 0x16, 0x3e, 0, 0, 0x42]);
    t.upsert(Host6 {
        mac: other,
        addrs: vec![],
        hostname: None,
        options: Options6::default(),
    });
    let r = reply(&run(
        &msg(MessageType::InformationRequest, false, vec![], &[23]),
        &t,
        Some(other),
        &Leases::default(),
    ));
    assert_eq!(
        r.opts().get(OptionCode::DomainNameServers),
        Some(&DhcpOption::DomainNameServers(vec![a("2001:db8:7::53")]))
    );
    // once the stateful port is gone, neither subnet holds an address: which one is unknown,
    // and (as dnsmasq) neither's options are sent
    t.remove_mac(MAC);
    let r = reply(&run(
        &msg(MessageType::InformationRequest, false, vec![], &[23]),
        &t,
        Some(other),
        &Leases::default(),
    ));
    assert_eq!(r.opts().get(OptionCode::DomainNameServers), None);
}

#[test]
fn rapid_commit_binds_at_once_only_where_the_table_allows_it() {
    let mut t = table();
    let mut m = Message::decode(&mut Decoder::new(&msg(
        MessageType::Solicit,
        false,
        vec![(7, vec![])],
        &[],
    )))
    .unwrap();
    m.opts_mut().insert(DhcpOption::RapidCommit);
    let mut buf = Vec::new();
    m.encode(&mut Encoder::new(&mut buf)).unwrap();
    let d = run(&buf, &t, Some(MAC), &Leases::default());
    assert_eq!(reply(&d).msg_type(), MessageType::Advertise);
    t.rapid_commit = true;
    let d = run(&buf, &t, Some(MAC), &Leases::default());
    let r = reply(&d);
    assert_eq!(r.msg_type(), MessageType::Reply);
    assert!(r.opts().get(OptionCode::RapidCommit).is_some());
    assert_eq!(d.outcome, Outcome6::Bound);
    assert!(
        matches!(&d.changes[..], [Change6::Bind(l)] if l.addr == a("2001:db8:6::103") && l.expires == Some(1_000 + 86400) && l.iaid == 7)
    );
}

#[test]
fn an_unknown_mac_is_advertised_no_addresses_and_no_ia() {
    let t = table();
    for mac in [Some(Mac([2, 0, 0, 0, 0, 9])), None] {
        let d = run(
            &msg(MessageType::Solicit, false, vec![(7, vec![])], &[]),
            &t,
            mac,
            &Leases::default(),
        );
        assert_eq!(d.outcome, Outcome6::NoAddrs);
        let r = reply(&d);
        assert_eq!(r.msg_type(), MessageType::Advertise);
        assert!(r.opts().get(OptionCode::IANA).is_none());
        assert_eq!(status_of(r.opts()), Some(Status::NoAddrsAvail));
    }
}

#[test]
fn request_renew_and_release_follow_the_server_id_and_the_holder() {
    let t = table();
    let mut leases = Leases::default();
    let other = Duid(vec![0, 3, 0, 1, 9, 9, 9, 9, 9, 9]);
    let other_sid = Duid(vec![0, 3, 0, 1, 1, 1, 1, 1, 1, 1]);
    // a REQUEST naming another server, or none, is not ours to answer
    let mut m = parse6(&msg(MessageType::Request, true, vec![(7, vec![])], &[])).unwrap();
    m.server_id = Some(other_sid);
    let sid = server_duid();
    let ctx = Context6 {
        table: &t,
        server_id: &sid,
        mac: Some(MAC),
        source: a("fe80::1"),
        own_addrs: &[],
        now: 1_000,
        log: true,
    };
    assert_eq!(
        decide6(&m, &ctx, &leases).outcome,
        Outcome6::Ignored(Ignored6::NotForUs)
    );
    m.server_id = None;
    assert_eq!(
        decide6(&m, &ctx, &leases).outcome,
        Outcome6::Ignored(Ignored6::NoServerId)
    );

    let d = run(
        &msg(MessageType::Request, true, vec![(7, vec![])], &[]),
        &t,
        Some(MAC),
        &leases,
    );
    assert_eq!(d.outcome, Outcome6::Bound);
    assert_eq!(reply(&d).msg_type(), MessageType::Reply);
    leases.apply(&d.changes);
    assert_eq!(leases.0[&a("2001:db8:6::103")].duid, client_duid());

    // a RELEASE naming another DUID frees nothing: NoBinding inside its IA
    let mut m = parse6(&msg(
        MessageType::Release,
        true,
        vec![(7, vec![a("2001:db8:6::103")])],
        &[],
    ))
    .unwrap();
    m.client_id = Some(other);
    let d = decide6(&m, &ctx, &leases);
    assert!(d.changes.is_empty());
    let r = reply(&d);
    assert_eq!(status_of(r.opts()), Some(Status::Success));
    assert_eq!(status_of(&ia_of(&r).opts), Some(Status::NoBinding));

    // the holder's RELEASE frees it
    let d = run(
        &msg(
            MessageType::Release,
            true,
            vec![(7, vec![a("2001:db8:6::103")])],
            &[],
        ),
        &t,
        None,
        &leases,
    );
    assert_eq!(d.outcome, Outcome6::Released);
    assert!(matches!(&d.changes[..], [Change6::Release { iaid: 7, .. }]));
    let r = reply(&d);
    assert_eq!(status_of(r.opts()), Some(Status::Success));
    assert!(r.opts().get(OptionCode::IANA).is_none());
}

#[test]
fn a_renew_for_a_removed_port_gets_no_binding_with_zero_times() {
    let mut t = table();
    t.remove_mac(MAC);
    let d = run(
        &msg(
            MessageType::Renew,
            true,
            vec![(7, vec![a("2001:db8:6::103")])],
            &[],
        ),
        &t,
        Some(MAC),
        &Leases::default(),
    );
    assert_eq!(d.outcome, Outcome6::NoBinding);
    let r = reply(&d);
    let ia = ia_of(&r);
    assert_eq!((ia.t1, ia.t2), (0, 0));
    assert_eq!(status_of(&ia.opts), Some(Status::NoBinding));
}

#[test]
fn a_renew_after_re_addressing_gets_the_new_address_and_the_old_one_with_lifetime_zero() {
    let mut t = table();
    let mut h = t.host(MAC).unwrap().clone();
    h.addrs = vec![a("2001:db8:6::200")];
    t.upsert(h);
    let d = run(
        &msg(
            MessageType::Renew,
            true,
            vec![(7, vec![a("2001:db8:6::103")])],
            &[],
        ),
        &t,
        Some(MAC),
        &Leases::default(),
    );
    assert_eq!(d.outcome, Outcome6::Bound);
    let r = reply(&d);
    let got: Vec<(Ipv6Addr, u32)> = ia_of(&r)
        .opts
        .iter()
        .filter_map(|o| match o {
            DhcpOption::IAAddr(x) => Some((x.addr, x.valid_life)),
            _ => None,
        })
        .collect();
    assert!(got.contains(&(a("2001:db8:6::200"), 86400)), "{got:?}");
    assert!(got.contains(&(a("2001:db8:6::103"), 0)), "{got:?}");
}

#[test]
fn confirm_says_not_on_link_for_an_address_off_every_subnet() {
    let t = table();
    let d = run(
        &msg(
            MessageType::Confirm,
            false,
            vec![(7, vec![a("2001:db8:6::103")])],
            &[],
        ),
        &t,
        None,
        &Leases::default(),
    );
    assert_eq!(status_of(reply(&d).opts()), Some(Status::Success));
    let d = run(
        &msg(
            MessageType::Confirm,
            false,
            vec![(7, vec![a("2001:db8:99::1")])],
            &[],
        ),
        &t,
        None,
        &Leases::default(),
    );
    assert_eq!(status_of(reply(&d).opts()), Some(Status::NotOnLink));
    let d = run(
        &msg(MessageType::Confirm, false, vec![], &[]),
        &t,
        None,
        &Leases::default(),
    );
    assert_eq!(d.outcome, Outcome6::Ignored(Ignored6::NothingToConfirm));
}

#[test]
fn an_information_request_gets_the_stateless_subnets_options_where_dnsmasq_sends_none() {
    let mut t = table();
    // a stateless port: a host line without an address
    t.upsert(Host6 {
        mac: MAC,
        addrs: vec![],
        hostname: None,
        options: Options6::default(),
    });
    let mut m = parse6(&msg(
        MessageType::InformationRequest,
        false,
        vec![],
        &[23, 59],
    ))
    .unwrap();
    m.client_id = None;
    let sid = server_duid();
    let ctx = Context6 {
        table: &t,
        server_id: &sid,
        mac: Some(MAC),
        source: a("fe80::1"),
        own_addrs: &[],
        now: 0,
        log: true,
    };
    let d = decide6(&m, &ctx, &Leases::default());
    assert_eq!(d.outcome, Outcome6::Informed);
    let r = reply(&d);
    assert!(r.opts().get(OptionCode::IANA).is_none());
    // the host has an address on neither subnet; its source is link-local: two subnets, so
    // the one without its addresses is ambiguous… unless it is the only one without
    assert_eq!(r.opts().get(OptionCode::DomainNameServers), None);
    // a source address tells the subnet
    let ctx = Context6 {
        source: a("2001:db8:7::5054:ff:fe00:1"),
        ..ctx
    };
    let r = reply(&decide6(&m, &ctx, &Leases::default()));
    assert_eq!(
        r.opts().get(OptionCode::DomainNameServers),
        Some(&DhcpOption::DomainNameServers(vec![a("2001:db8:7::53")]))
    );
    // a dual-stack port holding a stateful address: the other subnet is its stateless one
    let t = table();
    let ctx = Context6 {
        table: &t,
        source: a("fe80::1"),
        ..ctx
    };
    let r = reply(&decide6(&m, &ctx, &Leases::default()));
    assert!(r.opts().get(OptionCode::DomainNameServers).is_some());
    assert!(
        r.opts().get(OptionCode::from(59)).is_some(),
        "the port's bootfile-url, asked for"
    );
}

#[test]
fn dns_server_unspecified_stands_for_our_own_address() {
    let mut t = table();
    t.subnets[0].options.set_text(23, "[::]").unwrap();
    let r = reply(&run(
        &msg(MessageType::Solicit, false, vec![(1, vec![])], &[23]),
        &t,
        Some(MAC),
        &Leases::default(),
    ));
    assert_eq!(
        r.opts().get(OptionCode::DomainNameServers),
        Some(&DhcpOption::DomainNameServers(vec![a("2001:db8:6::2")]))
    );
    // an empty value: configured to send nothing
    t.subnets[0].options.set_text(23, "").unwrap();
    let r = reply(&run(
        &msg(MessageType::Solicit, false, vec![(1, vec![])], &[23]),
        &t,
        Some(MAC),
        &Leases::default(),
    ));
    assert_eq!(r.opts().get(OptionCode::DomainNameServers), None);
}

/// Wraps a client message in `n` RELAY-FORWs, the innermost carrying option 79.
fn relayed(inner: Vec<u8>, n: usize, mac: Option<Mac>) -> Vec<u8> {
    let mut b = inner;
    for i in 0..n {
        let mut o = vec![12u8, i as u8];
        o.extend_from_slice(&a("2001:db8:6::1").octets());
        o.extend_from_slice(&a("fe80::5054:ff:fe00:1").octets());
        if let (0, Some(m)) = (i, mac) {
            o.extend_from_slice(&[0, 79, 0, 8, 0, 1]);
            o.extend_from_slice(&m.0);
        }
        o.extend_from_slice(&[0, 18, 0, 3, b'e', b't', b'h']);
        o.extend_from_slice(&9u16.to_be_bytes());
        o.extend_from_slice(&(b.len() as u16).to_be_bytes());
        o.extend_from_slice(&b);
        b = o;
    }
    b
}

#[test]
fn a_relayed_solicit_is_matched_by_option_79_and_answered_in_relay_replies() {
    let t = table();
    let bytes = relayed(
        msg(MessageType::Solicit, false, vec![(7, vec![])], &[]),
        2,
        Some(MAC),
    );
    let m = parse6(&bytes).unwrap();
    assert_eq!(m.relays.len(), 2);
    assert_eq!(m.relayed_mac(), Some(MAC));
    assert_eq!(m.link_address(), Some(a("2001:db8:6::1")));
    let sid = server_duid();
    let ctx = Context6 {
        table: &t,
        server_id: &sid,
        mac: m.relayed_mac(),
        source: a("2001:db8:99::1"),
        own_addrs: &[],
        now: 0,
        log: true,
    };
    let d = decide6(&m, &ctx, &Leases::default());
    assert_eq!(d.outcome, Outcome6::Advertised);
    let mut out = Vec::new();
    d.reply.unwrap().encode_into(&mut out);
    // two RELAY-REPL layers, each echoing the interface-id, around the ADVERTISE
    let mut b = &out[..];
    for hop in [1u8, 0] {
        assert_eq!((b[0], b[1]), (13, hop));
        assert_eq!(&b[34..41], &[0, 18, 0, 3, b'e', b't', b'h']);
        assert_eq!(&b[41..43], &[0, 9]);
        b = &b[45..];
    }
    assert_eq!(
        Message::decode(&mut Decoder::new(b)).unwrap().msg_type(),
        MessageType::Advertise
    );
}

#[test]
fn hostile_datagrams_are_refused_with_a_reason() {
    let good = msg(MessageType::Solicit, false, vec![(7, vec![])], &[6]);
    assert!(parse6(&good).is_ok());
    assert_eq!(parse6(&good[..3]).unwrap_err(), Malformed6::TooShort);
    // cut inside the last option
    assert!(matches!(
        parse6(&good[..good.len() - 1]).unwrap_err(),
        Malformed6::OptionOverrun(_)
    ));
    // an overlong length on the first option
    let mut b = good.clone();
    b[7] = 0xff;
    assert!(matches!(
        parse6(&b).unwrap_err(),
        Malformed6::OptionOverrun(1)
    ));
    // a status code of one byte inside an IA_NA's address
    let mut b = msg(MessageType::Renew, true, vec![], &[]);
    b.extend_from_slice(&[0, 3, 0, 44, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 28]);
    b.extend_from_slice(&a("2001:db8:6::103").octets());
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 13, 0, 0]);
    assert_eq!(parse6(&b).unwrap_err(), Malformed6::BadOptionLength(13));
    // too many relays, and a relay with no message in it
    assert!(parse6(&relayed(good.clone(), 8, None)).is_ok());
    assert_eq!(
        parse6(&relayed(good.clone(), 9, None)).unwrap_err(),
        Malformed6::TooManyHops
    );
    let mut empty = vec![12u8, 0];
    empty.extend_from_slice(&[0; 32]);
    assert_eq!(parse6(&empty).unwrap_err(), Malformed6::BadRelay);
    // what a server sends is not for a server
    let mut adv = good.clone();
    adv[0] = 2;
    assert_eq!(parse6(&adv).unwrap_err(), Malformed6::UnsupportedType(2));
}

#[test]
fn a_message_without_a_client_id_is_dropped() {
    let t = table();
    let mut m = parse6(&msg(MessageType::Solicit, false, vec![(7, vec![])], &[])).unwrap();
    m.client_id = None;
    let sid = server_duid();
    let ctx = Context6 {
        table: &t,
        server_id: &sid,
        mac: Some(MAC),
        source: a("fe80::1"),
        own_addrs: &[],
        now: 0,
        log: true,
    };
    assert_eq!(
        decide6(&m, &ctx, &Leases::default()).outcome,
        Outcome6::Ignored(Ignored6::NoClientId)
    );
}

proptest! {
    #[test]
    fn parse6_never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse6(&bytes);
    }

    #[test]
    fn parse6_never_panics_on_damaged_messages(cut in 0usize..200, at in 0usize..200, v in any::<u8>()) {
        let mut b = relayed(msg(MessageType::Request, true, vec![(7, vec![a("2001:db8:6::103")])], &[23, 24, 59]), 1, Some(MAC));
        let at = at % b.len();
        b[at] = v;
        b.truncate(b.len().saturating_sub(cut % 8));
        if let Ok(m) = parse6(&b) {
            let t = table();
            let sid = server_duid();
            let ctx = Context6 { table: &t, server_id: &sid, mac: Some(MAC), source: a("fe80::1"), own_addrs: &[], now: 0, log: true };
            let _ = decide6(&m, &ctx, &Leases::default());
        }
    }
}

#[test]
fn with_no_dns_servers_configured_our_own_address_is_announced_unless_dns_is_off() {
    let mut t = table();
    t.subnets[0].options = Options6::default();
    let solicit = msg(MessageType::Solicit, false, vec![(1, vec![])], &[23]);
    let r = reply(&run(&solicit, &t, Some(MAC), &Leases::default()));
    assert_eq!(r.opts().get(OptionCode::DomainNameServers), None, "DNS off");
    t.default_dns_self = true;
    let r = reply(&run(&solicit, &t, Some(MAC), &Leases::default()));
    assert_eq!(
        r.opts().get(OptionCode::DomainNameServers),
        Some(&DhcpOption::DomainNameServers(vec![a("2001:db8:6::2")]))
    );
}

/// RELAY-REPL framing as RFC 8415 §9.2 lays it out, built from the inside out with a copy per
/// relay: the reference the in-place encoder must match byte for byte.
fn wrapped_from_inside(msg: &Message, relays: &[Relay]) -> Vec<u8> {
    let mut out = Vec::new();
    msg.encode(&mut Encoder::new(&mut out)).unwrap();
    for r in relays.iter().rev() {
        let mut o = vec![13, r.hop_count];
        o.extend_from_slice(&r.link.octets());
        o.extend_from_slice(&r.peer.octets());
        if let Some(id) = &r.interface_id {
            o.extend_from_slice(&18u16.to_be_bytes());
            o.extend_from_slice(&(id.len() as u16).to_be_bytes());
            o.extend_from_slice(id);
        }
        o.extend_from_slice(&9u16.to_be_bytes());
        o.extend_from_slice(&(out.len() as u16).to_be_bytes());
        o.extend_from_slice(&out);
        out = o;
    }
    out
}

proptest! {
    #[test]
    fn a_reply_is_wrapped_for_any_relays_as_the_rfc_frames_it(
        ids in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)), 0..=HOP_COUNT_LIMIT),
        xid in any::<[u8; 3]>(),
    ) {
        let relays: Vec<Relay> = ids
            .into_iter()
            .enumerate()
            .map(|(i, interface_id)| Relay {
                hop_count: i as u8,
                link: Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0001u128 + i as u128),
                peer: Ipv6Addr::from(0xfe80_0000_0000_0000_0000_0000_0000_0002u128 + i as u128),
                interface_id,
                client_link_addr: None,
            })
            .collect();
        let mut msg = Message::new_with_id(MessageType::Advertise, xid);
        msg.opts_mut().insert(DhcpOption::ServerId(server_duid().0));
        let mut out = vec![0xee; 7];
        Reply6 { msg: msg.clone(), relays: &relays }.encode_into(&mut out);
        prop_assert_eq!(out, wrapped_from_inside(&msg, &relays));
    }
}

/// The IAIDs of a reply's IA_NAs, in the order they are on the wire.
fn wire_iaids(d: &Decision6) -> Vec<u32> {
    let mut out = Vec::new();
    d.reply.as_ref().expect("a reply").encode_into(&mut out);
    frontdoor::tlvs(&out[4..])
        .filter(|(code, _)| *code == 3)
        .map(|(_, tlv)| u32::from_be_bytes(tlv[4..8].try_into().unwrap()))
        .collect()
}

#[test]
fn several_ia_nas_are_answered_in_the_clients_order() {
    let t = table();
    for kind in [MessageType::Solicit, MessageType::Request] {
        let bytes = msg(
            kind,
            kind == MessageType::Request,
            vec![(7, vec![]), (9, vec![])],
            &[],
        );
        let asked: Vec<u32> = parse6(&bytes)
            .unwrap()
            .ias
            .iter()
            .map(|ia| ia.iaid)
            .collect();
        assert_eq!(asked.len(), 2);
        let d = run(&bytes, &t, Some(MAC), &Leases::default());
        assert_eq!(wire_iaids(&d), asked, "{kind:?}");
    }
}
