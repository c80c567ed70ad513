//! The one place where a DHCPv6 client message becomes an answer (RFC 8415 §18.3): SOLICIT →
//! ADVERTISE (or REPLY with Rapid Commit), REQUEST / RENEW / REBIND → REPLY with the port's
//! addresses, RELEASE / DECLINE → a lease change, CONFIRM → on-link or not,
//! INFORMATION-REQUEST → options only. Pure: the client's MAC (which the dataplane found from
//! the neighbour table or a relay), the leases and `now` are arguments.

use std::borrow::Cow;
use std::net::Ipv6Addr;

use dhcproto::v6::{
    DhcpOption, DhcpOptions, IAAddr, Message, MessageType, Status, StatusCode, IANA,
};

use crate::types::Mac;
use crate::v6::frontdoor::{Duid, IaNa, Inbound6, Msg6};
pub use crate::v6::lease::{Change6, Lease6, LeaseView6};
use crate::v6::log::Log6;
pub use crate::v6::reply::Reply6;
use crate::v6::table::{Host6, Subnet6, Table6};

/// Lease time when an address lies in no configured subnet (never for a sane table).
const DEFAULT_LEASE: u32 = 3600;

/// Why a message got no answer; each names a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored6 {
    /// No client identifier where RFC 8415 requires one.
    NoClientId,
    /// A server identifier where the message must not carry one.
    UnexpectedServerId,
    /// No server identifier where the message must carry one.
    NoServerId,
    /// Meant for another server.
    NotForUs,
    /// A CONFIRM without addresses.
    NothingToConfirm,
}

impl Ignored6 {
    /// A stable label for counters.
    pub fn label(self) -> &'static str {
        match self {
            Ignored6::NoClientId => "no_client_id",
            Ignored6::UnexpectedServerId => "unexpected_server_id",
            Ignored6::NoServerId => "no_server_id",
            Ignored6::NotForUs => "not_for_us",
            Ignored6::NothingToConfirm => "nothing_to_confirm",
        }
    }
}

/// What became of a message, as the dataplane counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome6 {
    /// ADVERTISE with addresses.
    Advertised,
    /// REPLY binding addresses (REQUEST, RENEW, REBIND, or SOLICIT with Rapid Commit).
    Bound,
    /// No addresses for this client (unknown MAC, or a stateless host).
    NoAddrs,
    /// RENEW or REBIND for addresses no longer this client's.
    NoBinding,
    /// RELEASE answered.
    Released,
    /// DECLINE answered.
    Declined,
    /// CONFIRM answered (on-link or not).
    Confirmed,
    /// INFORMATION-REQUEST answered.
    Informed,
    /// Dropped, and why.
    Ignored(Ignored6),
}

/// Everything the decision needs besides the message and the leases.
pub struct Context6<'a> {
    /// The link's table.
    pub table: &'a Table6,
    /// Our DUID (option 2).
    pub server_id: &'a Duid,
    /// The client's MAC: from a relay's option 79, or the neighbour table for the packet's
    /// link-local source; `None` when neither told.
    pub mac: Option<Mac>,
    /// The packet's source address (the client's, or the nearest relay's).
    pub source: Ipv6Addr,
    /// Our addresses on the link: `[::]` in a DNS server option stands for these.
    pub own_addrs: &'a [Ipv6Addr],
    /// Seconds since the epoch.
    pub now: u64,
    /// Whether to make the log lines: a server logging no DHCP lines (`--quiet-dhcp`) does not
    /// pay for them (a DUID copy each, and the host name).
    pub log: bool,
}

/// The outcome of one client message.
#[derive(Debug, Clone)]
pub struct Decision6<'m> {
    /// What to send, if anything.
    pub reply: Option<Reply6<'m>>,
    /// Lease changes to apply (binds made durable before the reply leaves).
    pub changes: Vec<Change6>,
    /// The log line for the message received (when the context asks for log lines).
    pub received: Option<Log6>,
    /// The log line for the reply (when the context asks for log lines).
    pub sent: Option<Log6>,
    /// What became of it.
    pub outcome: Outcome6,
}

fn ignored(why: Ignored6) -> Decision6<'static> {
    Decision6 {
        reply: None,
        changes: Vec::new(),
        received: None,
        sent: None,
        outcome: Outcome6::Ignored(why),
    }
}

/// Preferred and valid lifetimes of one address: each the lesser of what the client asked
/// (0: no preference) and the subnet's lease time; asked lifetimes with preferred > valid are
/// ignored (RFC 8415 §21.6), as dnsmasq does.
fn lifetimes(subnet: Option<&Subnet6>, asked: Option<(u32, u32)>) -> (u32, u32) {
    let lease = subnet.map(|s| s.lease_secs).unwrap_or(DEFAULT_LEASE);
    let pick = |a: u32| if a == 0 { lease } else { a.min(lease) };
    match asked {
        Some((p, v)) if p <= v => (pick(p), pick(v)),
        _ => (lease, lease),
    }
}

/// T1 = preferred/2, T2 = 0.875 × preferred (dnsmasq's choice; RFC 8415 §21.4 recommends it).
fn renew_times(preferred: u32) -> (u32, u32) {
    if preferred == u32::MAX {
        return (u32::MAX, u32::MAX);
    }
    (preferred / 2, (u64::from(preferred) * 7 / 8) as u32)
}

fn status(code: Status, msg: &str) -> DhcpOption {
    DhcpOption::StatusCode(StatusCode {
        status: code,
        msg: msg.to_string(),
    })
}

/// The addresses of a host that this link serves (the host's own list when it serves all).
fn served_addrs<'t>(table: &'t Table6, host: Option<&'t Host6>) -> Cow<'t, [Ipv6Addr]> {
    let Some(h) = host else {
        return Cow::Borrowed(&[]);
    };
    let served = |a: &Ipv6Addr| table.subnet_of(*a).is_some();
    if h.addrs.iter().all(served) {
        Cow::Borrowed(&h.addrs)
    } else {
        Cow::Owned(h.addrs.iter().copied().filter(served).collect())
    }
}

/// The subnet whose options a client gets: the one holding its addresses, else the one its
/// source or relay link address lies in, else the only subnet, else the only subnet where no
/// host has an address (a stateless subnet beside a stateful one); else none, as dnsmasq.
fn subnet_for<'t>(ctx: &Context6<'t>, m: &Inbound6, addrs: &[Ipv6Addr]) -> Option<&'t Subnet6> {
    let t = ctx.table;
    if let Some(s) = addrs.iter().find_map(|a| t.subnet_of(*a)) {
        return Some(s);
    }
    let told = [Some(ctx.source), m.link_address()];
    if let Some(s) = told
        .into_iter()
        .flatten()
        .filter(|a| !a.is_unicast_link_local())
        .find_map(|a| t.subnet_of(a))
    {
        return Some(s);
    }
    if t.subnets.len() == 1 {
        return t.subnets.first();
    }
    // A client without addresses here: the link's one stateless subnet (where no host has an
    // address), when there is exactly one.
    let mut stateless = t.stateless_subnets();
    match (stateless.next(), stateless.next()) {
        (Some(s), None) => Some(s),
        _ => None,
    }
}

/// The options asked for (ORO) that are configured: the host's first, then the subnet's, then
/// everyone's; the domain search list falls back to `--domain`.
fn asked_options(
    ctx: &Context6<'_>,
    m: &Inbound6,
    host: Option<&Host6>,
    subnet: Option<&Subnet6>,
    out: &mut Vec<DhcpOption>,
) {
    let t = ctx.table;
    for &code in &m.oro {
        let configured = host
            .and_then(|h| h.options.get(code))
            .or_else(|| subnet.and_then(|s| s.options.get(code)))
            .or_else(|| t.global.get(code));
        match configured {
            Some(Some(o)) => out.push(with_own_addrs(o, ctx.own_addrs)),
            Some(None) => {}
            None if code == 24 => {
                if let Some(o) = t.domain_search() {
                    out.push(o.clone());
                }
            }
            None if code == 23 && t.default_dns_self => {
                // our own address on the client's subnet, else any of ours that is not link-local
                let global = ctx.own_addrs.iter().filter(|a| !a.is_unicast_link_local());
                let mine: Vec<Ipv6Addr> = match subnet {
                    Some(s) => global
                        .clone()
                        .filter(|a| s.net.contains(*a))
                        .copied()
                        .collect(),
                    None => Vec::new(),
                };
                let v = if mine.is_empty() {
                    global.copied().collect()
                } else {
                    mine
                };
                if !v.is_empty() {
                    out.push(DhcpOption::DomainNameServers(v));
                }
            }
            None => {}
        }
    }
}

/// `[::]` among DNS servers stands for the server's own addresses, as in dnsmasq.
fn with_own_addrs(o: &DhcpOption, own: &[Ipv6Addr]) -> DhcpOption {
    match o {
        DhcpOption::DomainNameServers(v) if v.iter().any(Ipv6Addr::is_unspecified) => {
            let mut out = Vec::with_capacity(v.len());
            for a in v {
                if a.is_unspecified() {
                    out.extend(own.iter().filter(|a| !a.is_unicast_link_local()).copied());
                } else {
                    out.push(*a);
                }
            }
            DhcpOption::DomainNameServers(out)
        }
        o => o.clone(),
    }
}

/// Decides the answer to one validated client message.
pub fn decide6<'m>(m: &'m Inbound6, ctx: &Context6<'_>, leases: &dyn LeaseView6) -> Decision6<'m> {
    // RFC 8415 §16: which messages carry which identifiers.
    let needs_server_id = matches!(
        m.kind,
        Msg6::Request | Msg6::Renew | Msg6::Release | Msg6::Decline
    );
    let forbids_server_id = matches!(m.kind, Msg6::Solicit | Msg6::Confirm | Msg6::Rebind);
    let anonymous = Duid(Vec::new());
    let Some(client) = m
        .client_id
        .as_ref()
        .or_else(|| (m.kind == Msg6::InformationRequest).then_some(&anonymous))
    else {
        return ignored(Ignored6::NoClientId);
    };
    match &m.server_id {
        Some(_) if forbids_server_id => return ignored(Ignored6::UnexpectedServerId),
        Some(s) if s != ctx.server_id => return ignored(Ignored6::NotForUs),
        None if needs_server_id => return ignored(Ignored6::NoServerId),
        _ => {}
    }
    let t = ctx.table;
    let host = ctx.mac.and_then(|mac| t.host(mac));
    let received = ctx.log.then(|| Log6::new(m.kind.log_name(), None, client));
    let msg_type = if m.kind == Msg6::Solicit && !(m.rapid_commit && t.rapid_commit) {
        MessageType::Advertise
    } else {
        MessageType::Reply
    };
    let mut reply = Message::new_with_id(msg_type, m.xid);
    // The reply's options gathered unsorted in one buffer with room for a usual reply, sorted
    // once at the end (`DhcpOptions::insert` keeps them sorted, and its vector grows as it goes).
    let mut opts: Vec<DhcpOption> = Vec::with_capacity(8);
    if !client.0.is_empty() {
        opts.push(DhcpOption::ClientId(client.0.clone()));
    }
    opts.push(DhcpOption::ServerId(ctx.server_id.0.clone()));
    let mut changes = Vec::new();
    let sent_name = if msg_type == MessageType::Advertise {
        "DHCPADVERTISE"
    } else {
        "DHCPREPLY"
    };
    let name = host.and_then(Host6::short_name);
    let addrs = served_addrs(t, host);
    let mut first_addr = None;
    let outcome = match m.kind {
        Msg6::Solicit | Msg6::Request | Msg6::Renew | Msg6::Rebind => {
            let binding = msg_type == MessageType::Reply;
            if m.kind == Msg6::Solicit && (addrs.is_empty() || m.ias.is_empty()) {
                opts.push(status(Status::NoAddrsAvail, "no addresses available"));
                Outcome6::NoAddrs
            } else {
                let mut given = false;
                let mut outcome = Outcome6::Bound;
                // The IA that holds them gets the host's addresses; else the first IA.
                let holder = m
                    .ias
                    .iter()
                    .position(|ia| {
                        addrs.iter().any(|a| {
                            leases
                                .by_addr(*a)
                                .is_some_and(|l| l.duid == *client && l.iaid == ia.iaid)
                        })
                    })
                    .unwrap_or(0);
                for (i, ia) in m.ias.iter().enumerate() {
                    let mine: &[Ipv6Addr] = if i == holder { &addrs } else { &[] };
                    let (ia_opt, gave, state) = answer_ia(
                        ia,
                        mine,
                        m.kind,
                        client,
                        ctx,
                        name,
                        binding.then_some(&mut changes),
                    );
                    if gave && first_addr.is_none() {
                        first_addr = mine.first().copied();
                    }
                    given |= gave;
                    if let Some(s) = state {
                        outcome = s;
                    }
                    opts.push(ia_opt);
                }
                if m.kind == Msg6::Solicit && binding {
                    opts.push(DhcpOption::RapidCommit);
                }
                match (m.kind, given) {
                    (Msg6::Solicit, _) => Outcome6::Advertised.or_bound(binding),
                    (_, true) => Outcome6::Bound,
                    (_, false) => outcome,
                }
            }
        }
        Msg6::Release | Msg6::Decline => {
            for ia in &m.ias {
                let mut any = false;
                for a in &ia.addrs {
                    if leases
                        .by_addr(a.addr)
                        .is_some_and(|l| l.duid == *client && l.iaid == ia.iaid)
                    {
                        any = true;
                        first_addr.get_or_insert(a.addr);
                        let (duid, iaid, addr) = (client.clone(), ia.iaid, a.addr);
                        changes.push(if m.kind == Msg6::Release {
                            Change6::Release { duid, iaid, addr }
                        } else {
                            Change6::Decline { duid, iaid, addr }
                        });
                    }
                }
                if !any {
                    let mut o = DhcpOptions::new();
                    o.insert(status(Status::NoBinding, "no binding found"));
                    opts.push(DhcpOption::IANA(IANA {
                        id: ia.iaid,
                        t1: 0,
                        t2: 0,
                        opts: o,
                    }));
                }
            }
            let what = if m.kind == Msg6::Release {
                "release received"
            } else {
                "decline received"
            };
            opts.push(status(Status::Success, what));
            if m.kind == Msg6::Release {
                Outcome6::Released
            } else {
                Outcome6::Declined
            }
        }
        Msg6::Confirm => {
            let all: Vec<Ipv6Addr> = m
                .ias
                .iter()
                .flat_map(|ia| ia.addrs.iter().map(|a| a.addr))
                .collect();
            if all.is_empty() {
                return ignored(Ignored6::NothingToConfirm);
            }
            if all.iter().all(|a| t.subnet_of(*a).is_some()) {
                opts.push(status(Status::Success, "all addresses still on link"));
            } else {
                opts.push(status(Status::NotOnLink, "confirm failed"));
            }
            first_addr = all.first().copied();
            Outcome6::Confirmed
        }
        Msg6::InformationRequest => Outcome6::Informed,
    };
    let subnet = subnet_for(ctx, m, &addrs);
    asked_options(ctx, m, host, subnet, &mut opts);
    // Sorted by code, stably: several IA_NAs keep the client's order (`dhcproto` orders by
    // code only and sorts again on collecting, which leaves a sorted vector as it is); the
    // collected vector keeps its buffer.
    opts.sort();
    *reply.opts_mut() = opts.into_iter().collect::<DhcpOptions>();
    let sent = ctx.log.then(|| {
        let mut sent = Log6::new(sent_name, first_addr, client);
        if outcome == Outcome6::NoAddrs {
            sent.note = Some("no addresses available".into());
        } else if first_addr.is_some() {
            sent.note = name.map(str::to_string);
        }
        sent
    });
    Decision6 {
        reply: Some(Reply6 {
            msg: reply,
            relays: &m.relays,
        }),
        changes,
        received,
        sent,
        outcome,
    }
}

impl Outcome6 {
    fn or_bound(self, bound: bool) -> Outcome6 {
        if bound {
            Outcome6::Bound
        } else {
            self
        }
    }
}

/// One IA_NA of the reply: the addresses the client gets (with lifetimes), what it held that is
/// no longer its own (lifetimes 0), or a status. Returns the option, whether addresses were
/// given, and an outcome when nothing was.
#[allow(clippy::too_many_arguments)]
fn answer_ia(
    ia: &IaNa,
    mine: &[Ipv6Addr],
    kind: Msg6,
    client: &Duid,
    ctx: &Context6<'_>,
    name: Option<&str>,
    mut changes: Option<&mut Vec<Change6>>,
) -> (DhcpOption, bool, Option<Outcome6>) {
    let t = ctx.table;
    let mut o = DhcpOptions::new();
    let mut min_pref = u32::MAX;
    for &a in mine {
        let asked = ia
            .addrs
            .iter()
            .find(|x| x.addr == a)
            .map(|x| (x.preferred, x.valid));
        let (preferred, valid) = lifetimes(t.subnet_of(a), asked);
        min_pref = min_pref.min(preferred);
        o.insert(DhcpOption::IAAddr(IAAddr {
            addr: a,
            preferred_life: preferred,
            valid_life: valid,
            opts: DhcpOptions::new(),
        }));
        if let (Some(ch), Some(mac)) = (changes.as_deref_mut(), ctx.mac) {
            ch.push(Change6::Bind(Lease6 {
                duid: client.clone(),
                iaid: ia.iaid,
                addr: a,
                mac,
                expires: (valid != u32::MAX).then(|| ctx.now + u64::from(valid)),
                hostname: name.map(str::to_string),
            }));
        }
    }
    // What the client holds that is not (or no longer) its own: lifetimes 0 (RFC 8415 §18.3.4).
    let stale: Vec<Ipv6Addr> = ia
        .addrs
        .iter()
        .map(|x| x.addr)
        .filter(|a| !mine.contains(a))
        .collect();
    if !mine.is_empty() {
        if matches!(kind, Msg6::Renew | Msg6::Rebind | Msg6::Request) {
            for a in stale {
                o.insert(DhcpOption::IAAddr(IAAddr {
                    addr: a,
                    preferred_life: 0,
                    valid_life: 0,
                    opts: DhcpOptions::new(),
                }));
            }
        }
        let (t1, t2) = renew_times(min_pref);
        return (
            DhcpOption::IANA(IANA {
                id: ia.iaid,
                t1,
                t2,
                opts: o,
            }),
            true,
            None,
        );
    }
    match kind {
        Msg6::Rebind if !stale.is_empty() => {
            // RFC 8415 §18.3.5: addresses not appropriate for the link go back with lifetimes 0
            for a in stale {
                o.insert(DhcpOption::IAAddr(IAAddr {
                    addr: a,
                    preferred_life: 0,
                    valid_life: 0,
                    opts: DhcpOptions::new(),
                }));
            }
            (
                DhcpOption::IANA(IANA {
                    id: ia.iaid,
                    t1: 0,
                    t2: 0,
                    opts: o,
                }),
                false,
                Some(Outcome6::NoBinding),
            )
        }
        Msg6::Renew | Msg6::Rebind => {
            o.insert(status(Status::NoBinding, "no binding found"));
            (
                DhcpOption::IANA(IANA {
                    id: ia.iaid,
                    t1: 0,
                    t2: 0,
                    opts: o,
                }),
                false,
                Some(Outcome6::NoBinding),
            )
        }
        _ => {
            o.insert(status(Status::NoAddrsAvail, "no addresses available"));
            (
                DhcpOption::IANA(IANA {
                    id: ia.iaid,
                    t1: 0,
                    t2: 0,
                    opts: o,
                }),
                false,
                Some(Outcome6::NoAddrs),
            )
        }
    }
}
