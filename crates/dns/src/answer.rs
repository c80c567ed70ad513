//! Where a DNS query becomes an answer, a refusal, a forward or silence: [`decide`], one
//! function read top to bottom. Typed messages in and out; bytes are decoded here only because
//! a malformed query still gets a FORMERR, and encoded at the edge. No I/O, no clock here.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR, SOA, TXT};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use ipnet::IpNet;

use crate::zone::Zone;

/// The largest UDP answer offered to EDNS clients (the DNS flag day's 1232 bytes).
pub const EDNS_PAYLOAD: u16 = 1232;

/// What a network's DNS server knows when a query arrives.
pub struct Context<'a> {
    /// Its local names.
    pub zone: &'a Zone,
    /// The network's domains (the server's, and the network's own `dns_domain`): names under
    /// them that the zone lacks do not exist.
    pub domains: &'a [Name],
    /// The network's subnets: clients that may ask (`--local-service`), and the reverse space
    /// answered here.
    pub local_nets: &'a [IpNet],
    /// Only clients inside `local_nets` get answers (no open resolver).
    pub local_only: bool,
    /// Upstream servers are configured.
    pub can_forward: bool,
    /// TTL of local answers: 0, as dnsmasq's default `--local-ttl`, so that a renamed or
    /// deleted port is seen by the next query.
    pub local_ttl: u32,
}

/// The question, kept for logs, counters and the cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Question {
    /// The name asked, lower case.
    pub name: LowerName,
    /// The type asked.
    pub qtype: RecordType,
}

/// How a reply answered, for logs and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Answered {
    /// From the local names.
    Local,
    /// A local name without records of that type.
    NoData,
    /// Under the network's domain (or its reverse space) and unknown.
    NxDomain,
    /// Nowhere to forward to.
    Refused,
    /// The query was malformed.
    FormErr,
    /// An opcode, class or type this server does not serve.
    NotImp,
}

/// Why a datagram got no reply at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dropped {
    /// From outside the network's subnets (`--local-service`).
    NotLocal,
    /// Not even a DNS header.
    Unparseable,
    /// A response, not a query: answering it could start a loop.
    NotAQuery,
}

/// What to do with one query.
#[derive(Debug)]
pub enum Outcome {
    /// Send this reply.
    Reply {
        /// The reply.
        msg: Message,
        /// How it answers.
        how: Answered,
        /// The question, when there was one.
        question: Option<Question>,
    },
    /// Ask upstream, then relay the answer.
    Forward {
        /// The query as received.
        msg: Message,
        /// Its question.
        question: Question,
    },
    /// Send nothing.
    Drop(Dropped),
}

fn in_nets(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(&ip))
}

/// A reply to `q` with its header, question and EDNS echoed.
fn reply_to(q: &Message, rcode: ResponseCode, ctx: &Context<'_>) -> Message {
    let mut r = Message::response(q.metadata.id, q.metadata.op_code);
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.recursion_available = ctx.can_forward;
    r.metadata.response_code = rcode;
    r.queries = q.queries.clone();
    if q.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        r.edns = Some(e);
    }
    r
}

/// The SOA that says how long a "no such name" may be cached: not at all, since ports come
/// and go between two queries.
fn soa(domain: &Name) -> Record {
    let host = Name::from_ascii("hostmaster")
        .ok()
        .and_then(|h| h.append_domain(domain).ok())
        .unwrap_or_else(|| domain.clone());
    Record::from_rdata(
        domain.clone(),
        0,
        RData::SOA(SOA::new(domain.clone(), host, 1, 1200, 180, 1_209_600, 0)),
    )
}

/// Decides what to do with the datagram `bytes` from `client`.
pub fn decide(bytes: &[u8], client: IpAddr, ctx: &Context<'_>) -> Outcome {
    // --local-service: nobody outside the network's subnets gets anything, not even an error
    // (no amplification, no open resolver).
    let local = in_nets(ctx.local_nets, client);
    if ctx.local_only && !local {
        return Outcome::Drop(Dropped::NotLocal);
    }
    let q = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(_) if bytes.len() >= 12 && bytes[2] & 0x80 == 0 => {
            // a query header we can answer: FORMERR, RFC 1035 §4.1.1
            let id = u16::from_be_bytes([bytes[0], bytes[1]]);
            let mut r = Message::response(id, OpCode::Query);
            r.metadata.response_code = ResponseCode::FormErr;
            return Outcome::Reply {
                msg: r,
                how: Answered::FormErr,
                question: None,
            };
        }
        Err(_) => return Outcome::Drop(Dropped::Unparseable),
    };
    if q.metadata.message_type != MessageType::Query {
        return Outcome::Drop(Dropped::NotAQuery);
    }
    let reply = |rcode, how: Answered, question: Option<Question>| Outcome::Reply {
        msg: reply_to(&q, rcode, ctx),
        how,
        question,
    };
    if q.metadata.op_code != OpCode::Query {
        return reply(ResponseCode::NotImp, Answered::NotImp, None);
    }
    let [query] = q.queries.as_slice() else {
        return reply(ResponseCode::FormErr, Answered::FormErr, None);
    };
    let question = Question {
        name: LowerName::new(query.name()),
        qtype: query.query_type(),
    };
    if query.query_class() != DNSClass::IN || question.qtype == RecordType::ANY {
        // ANY is answered by nobody here (RFC 8482): it is the amplifier's favourite
        return reply(ResponseCode::NotImp, Answered::NotImp, Some(question));
    }
    let name = query.name();

    // 1. A local TXT record (`--txt-record`); a name with only TXT has no other data.
    if let Some(texts) = ctx.zone.txt(&question.name) {
        let is_txt = question.qtype == RecordType::TXT;
        if is_txt || ctx.zone.addresses(&question.name).is_none() {
            let mut r = reply_to(&q, ResponseCode::NoError, ctx);
            r.metadata.authoritative = true;
            if is_txt {
                r.answers.push(Record::from_rdata(
                    name.clone(),
                    ctx.local_ttl,
                    RData::TXT(TXT::new(texts.to_vec())),
                ));
            }
            return Outcome::Reply {
                msg: r,
                how: if is_txt {
                    Answered::Local
                } else {
                    Answered::NoData
                },
                question: Some(question),
            };
        }
    }

    // 2. A local name: its addresses, or no data of the type asked.
    if let Some(ips) = ctx.zone.addresses(&question.name) {
        let mut r = reply_to(&q, ResponseCode::NoError, ctx);
        r.metadata.authoritative = true;
        let records: Vec<RData> = ips
            .iter()
            .filter_map(|ip| match (question.qtype, ip) {
                (RecordType::A, IpAddr::V4(a)) => Some(RData::A(A(*a))),
                (RecordType::AAAA, IpAddr::V6(a)) => Some(RData::AAAA(AAAA(*a))),
                _ => None,
            })
            .collect();
        if !records.is_empty() {
            for rdata in records {
                r.answers
                    .push(Record::from_rdata(name.clone(), ctx.local_ttl, rdata));
            }
            return Outcome::Reply {
                msg: r,
                how: Answered::Local,
                question: Some(question),
            };
        }
        if let Some(d) = ctx
            .domains
            .iter()
            .find(|d| d.zone_of(name))
            .or(ctx.domains.first())
        {
            r.authorities.push(soa(d));
        }
        return Outcome::Reply {
            msg: r,
            how: Answered::NoData,
            question: Some(question),
        };
    }

    // 3. The reverse name of an address of the network's subnets: answered here.
    if question.qtype == RecordType::PTR {
        if let Ok(n) = name.parse_arpa_name() {
            if n.prefix_len() == n.max_prefix_len() {
                let ip = n.addr();
                if let Some(target) = ctx.zone.name_of(ip) {
                    let mut r = reply_to(&q, ResponseCode::NoError, ctx);
                    r.metadata.authoritative = true;
                    r.answers.push(Record::from_rdata(
                        name.clone(),
                        ctx.local_ttl,
                        RData::PTR(PTR(target.clone())),
                    ));
                    return Outcome::Reply {
                        msg: r,
                        how: Answered::Local,
                        question: Some(question),
                    };
                }
                if in_nets(ctx.local_nets, ip) {
                    let mut r = reply_to(&q, ResponseCode::NXDomain, ctx);
                    r.metadata.authoritative = true;
                    return Outcome::Reply {
                        msg: r,
                        how: Answered::NxDomain,
                        question: Some(question),
                    };
                }
            }
        }
    }

    // 4. Under the network's domain, or a bare name: it would be local if it existed.
    let under = ctx.domains.iter().find(|d| d.zone_of(name));
    if under.is_some() || name.num_labels() <= 1 {
        let mut r = reply_to(&q, ResponseCode::NXDomain, ctx);
        r.metadata.authoritative = under.is_some();
        if let Some(d) = under {
            r.authorities.push(soa(d));
        }
        return Outcome::Reply {
            msg: r,
            how: Answered::NxDomain,
            question: Some(question),
        };
    }

    // 5. Everything else belongs to the upstream servers.
    if ctx.can_forward {
        return Outcome::Forward { msg: q, question };
    }
    reply(ResponseCode::Refused, Answered::Refused, Some(question))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use std::net::Ipv4Addr;

    fn zone() -> Zone {
        Zone::parse_hosts(
            "172.16.1.103 host-172-16-1-103.openstacklocal. host-172-16-1-103\n\
             172.16.1.104 vm2.openstacklocal. vm2\n\
             2001:db8:16::10 host-2001-db8-16--10.openstacklocal. host-2001-db8-16--10\n\
             172.16.1.105 dual.openstacklocal. dual\n\
             2001:db8:16::11 dual.openstacklocal. dual\n",
        )
        .0
    }

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 4242;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    fn run(bytes: &[u8], client: &str, forward: bool) -> Outcome {
        let z = zone();
        let d = Name::from_ascii("openstacklocal.").unwrap();
        let nets = ["172.16.1.0/24".parse().unwrap()];
        let ctx = Context {
            zone: &z,
            domains: std::slice::from_ref(&d),
            local_nets: &nets,
            local_only: true,
            can_forward: forward,
            local_ttl: 0,
        };
        decide(bytes, client.parse().unwrap(), &ctx)
    }

    fn reply(o: Outcome) -> (Message, Answered) {
        match o {
            Outcome::Reply { msg, how, .. } => (msg, how),
            other => panic!("not a reply: {other:?}"),
        }
    }

    const VM: &str = "172.16.1.50";

    #[test]
    fn aaaa_and_ip6_arpa_ptr_are_answered_from_the_ports_ipv6_addresses() {
        let (m, how) = reply(run(
            &query("host-2001-db8-16--10.openstacklocal.", RecordType::AAAA),
            VM,
            true,
        ));
        assert_eq!(how, Answered::Local);
        let v6: std::net::Ipv6Addr = "2001:db8:16::10".parse().unwrap();
        assert_eq!(m.answers.len(), 1);
        assert_eq!(&m.answers[0].data, &RData::AAAA(AAAA(v6)));
        // a dual-stack name: A gets only its IPv4 address, AAAA only its IPv6 one
        let (m, _) = reply(run(&query("dual.", RecordType::A), VM, true));
        assert_eq!(m.answers.len(), 1);
        assert_eq!(
            &m.answers[0].data,
            &RData::A(A(Ipv4Addr::new(172, 16, 1, 105)))
        );
        let (m, _) = reply(run(&query("dual.", RecordType::AAAA), VM, true));
        assert_eq!(m.answers.len(), 1);
        let dual: std::net::Ipv6Addr = "2001:db8:16::11".parse().unwrap();
        assert_eq!(&m.answers[0].data, &RData::AAAA(AAAA(dual)));
        // an IPv6-only name asked for A: no data, not no such name
        let (m, how) = reply(run(
            &query("host-2001-db8-16--10.", RecordType::A),
            VM,
            true,
        ));
        assert_eq!((how, m.answers.len()), (Answered::NoData, 0));
        let arpa = "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.1.0.0.8.b.d.0.1.0.0.2.ip6.arpa.";
        let (m, how) = reply(run(&query(arpa, RecordType::PTR), VM, true));
        assert_eq!(how, Answered::Local);
        assert_eq!(
            &m.answers[0].data,
            &RData::PTR(PTR(Name::from_ascii(
                "host-2001-db8-16--10.openstacklocal."
            )
            .unwrap()))
        );
    }

    #[test]
    fn fqdn_and_bare_name_get_the_ports_address() {
        for n in ["host-172-16-1-103.openstacklocal.", "HOST-172-16-1-103."] {
            let (m, how) = reply(run(&query(n, RecordType::A), VM, true));
            assert_eq!(how, Answered::Local);
            assert_eq!(m.metadata.id, 4242);
            assert!(m.metadata.authoritative && m.metadata.recursion_desired);
            assert_eq!(
                &m.answers[0].data,
                &RData::A(A(Ipv4Addr::new(172, 16, 1, 103)))
            );
        }
    }

    #[test]
    fn ptr_names_the_port_and_unknown_local_addresses_do_not_exist() {
        let (m, how) = reply(run(
            &query("103.1.16.172.in-addr.arpa.", RecordType::PTR),
            VM,
            true,
        ));
        assert_eq!(how, Answered::Local);
        assert_eq!(
            &m.answers[0].data,
            &RData::PTR(PTR(
                Name::from_ascii("host-172-16-1-103.openstacklocal.").unwrap()
            ))
        );
        let (m, how) = reply(run(
            &query("99.1.16.172.in-addr.arpa.", RecordType::PTR),
            VM,
            true,
        ));
        assert_eq!(
            (how, m.metadata.response_code),
            (Answered::NxDomain, ResponseCode::NXDomain)
        );
        // another network's reverse space is upstream's business
        assert!(matches!(
            run(&query("8.8.8.8.in-addr.arpa.", RecordType::PTR), VM, true),
            Outcome::Forward { .. }
        ));
    }

    #[test]
    fn unknown_names_under_the_domain_are_nxdomain_with_a_soa() {
        let (m, how) = reply(run(&query("nope.openstacklocal.", RecordType::A), VM, true));
        assert_eq!(how, Answered::NxDomain);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        // a local name asked for AAAA: no data, not "no such name"
        let (m, how) = reply(run(
            &query("vm2.openstacklocal.", RecordType::AAAA),
            VM,
            true,
        ));
        assert_eq!(
            (how, m.metadata.response_code),
            (Answered::NoData, ResponseCode::NoError)
        );
        assert!(m.answers.is_empty());
    }

    #[test]
    fn txt_records_are_answered_locally() {
        let mut z = zone();
        z.add_txt("info.openstacklocal,cloud one,\"zone b\"")
            .unwrap();
        let d = Name::from_ascii("openstacklocal.").unwrap();
        let nets = ["172.16.1.0/24".parse().unwrap()];
        let ctx = Context {
            zone: &z,
            domains: std::slice::from_ref(&d),
            local_nets: &nets,
            local_only: true,
            can_forward: true,
            local_ttl: 0,
        };
        let (m, how) = reply(decide(
            &query("info.openstacklocal.", RecordType::TXT),
            VM.parse().unwrap(),
            &ctx,
        ));
        assert_eq!(how, Answered::Local);
        assert_eq!(
            m.answers[0].data,
            RData::TXT(TXT::new(vec!["cloud one".into(), "zone b".into()]))
        );
        let (_, how) = reply(decide(
            &query("info.openstacklocal.", RecordType::A),
            VM.parse().unwrap(),
            &ctx,
        ));
        assert_eq!(how, Answered::NoData);
    }

    #[test]
    fn hostile_queries_get_formerr_or_nothing_never_a_hang() {
        let header = |qd: u16| {
            let mut b = vec![0x12, 0x34, 0x01, 0x00];
            b.extend_from_slice(&qd.to_be_bytes());
            b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            b
        };
        // a name that points at itself (compression loop)
        let mut lp = header(1);
        lp.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        // a count of 65,535 questions and one present
        let mut many = header(u16::MAX);
        many.extend_from_slice(&[3, b'f', b'o', b'o', 0, 0, 1, 0, 1]);
        // truncated inside the question
        let mut cut = header(1);
        cut.extend_from_slice(&[7, b'e', b'x']);
        // a header and 4 KiB of junk
        let mut big = header(1);
        big.extend(std::iter::repeat_n(0xffu8, 4096));
        for (what, b) in [("loop", lp), ("many", many), ("cut", cut), ("big", big)] {
            let (m, how) = reply(run(&b, VM, true));
            assert_eq!((how, m.metadata.id), (Answered::FormErr, 0x1234), "{what}");
            let bytes = crate::server::encode_within(&m, 512).unwrap();
            assert!(
                bytes.len() <= 512,
                "{what}: no answer larger than the limit"
            );
        }
        // a lone byte or a response-flagged header: nothing at all
        assert!(matches!(run(&[0], VM, true), Outcome::Drop(_)));
        let mut resp = header(0);
        resp[2] |= 0x80;
        assert!(matches!(run(&resp, VM, true), Outcome::Drop(_)));
    }

    #[test]
    fn other_names_are_forwarded_or_refused_without_upstream() {
        assert!(matches!(
            run(&query("example.org.", RecordType::A), VM, true),
            Outcome::Forward { .. }
        ));
        let (m, how) = reply(run(&query("example.org.", RecordType::A), VM, false));
        assert_eq!(
            (how, m.metadata.response_code),
            (Answered::Refused, ResponseCode::Refused)
        );
    }

    #[test]
    fn strangers_hostile_and_odd_queries_get_nothing_or_an_error() {
        assert!(matches!(
            run(
                &query("vm2.openstacklocal.", RecordType::A),
                "10.9.9.9",
                true
            ),
            Outcome::Drop(Dropped::NotLocal)
        ));
        assert!(matches!(
            run(&[1, 2, 3], VM, true),
            Outcome::Drop(Dropped::Unparseable)
        ));
        // a header and garbage: FORMERR with the query's id
        let mut junk = query("vm2.openstacklocal.", RecordType::A);
        junk.truncate(20);
        let (m, how) = reply(run(&junk, VM, true));
        assert_eq!((how, m.metadata.id), (Answered::FormErr, 4242));
        // a response is never answered (loops)
        let mut resp = Message::from_vec(&query("vm2.", RecordType::A)).unwrap();
        resp.metadata.message_type = MessageType::Response;
        assert!(matches!(
            run(&resp.to_vec().unwrap(), VM, true),
            Outcome::Drop(Dropped::NotAQuery)
        ));
        // two questions, ANY
        let mut two = Message::from_vec(&query("vm2.", RecordType::A)).unwrap();
        two.add_query(Query::query(Name::from_ascii("x.").unwrap(), RecordType::A));
        assert_eq!(
            reply(run(&two.to_vec().unwrap(), VM, true)).1,
            Answered::FormErr
        );
        assert_eq!(
            reply(run(
                &query("vm2.openstacklocal.", RecordType::ANY),
                VM,
                true
            ))
            .1,
            Answered::NotImp
        );
    }
}
