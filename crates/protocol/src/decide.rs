//! Where a client message becomes a reply: the whole RFC 2131 server decision for
//! reservation-based service, in one function. Pure: the time, the network's table and the
//! lease view are arguments; the result says what to send, what lease change to make durable
//! and what to log. No sockets, no clock, no storage here.

use std::net::Ipv4Addr;

use dhcproto::v4::DhcpOption;

use crate::frontdoor::{ClientMsg, Inbound};
use crate::log::LogLine;
use crate::options::OptionSet;
use crate::reply::{self, LeaseTimes, OptionLayers, Reply, ReplyHeader, ReplyKind};
use crate::types::{ClientId, Mac, NetworkTable, Reservation, Subnet};

/// Server-wide behaviour that operators configure.
#[derive(Debug, Clone)]
pub struct Policy {
    /// How long a declined address is withheld from the client that declined it.
    pub decline_quarantine_secs: u64,
    /// Offer ourselves as router when no router option is configured (dnsmasq's default).
    pub default_router_self: bool,
    /// Offer ourselves as DNS server when no DNS option is configured (dnsmasq's default).
    pub default_dns_self: bool,
    /// Most leases held at once (dnsmasq's `--dhcp-lease-max`); `None` is unlimited.
    pub lease_max: Option<usize>,
    /// Accept option 82 in a message no relay forwarded (giaddr 0). Off by default: a client
    /// that sends relay-agent information itself is spoofing what only a relay may add.
    pub trust_unrelayed_option82: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            decline_quarantine_secs: 600,
            default_router_self: true,
            default_dns_self: true,
            lease_max: None,
            trust_unrelayed_option82: false,
        }
    }
}

/// What the decision needs to know about the interface the packet came in on.
pub struct Context<'a> {
    /// Interface name, for log lines.
    pub iface: &'a str,
    /// Our address on that interface: the server identifier.
    pub server_id: Ipv4Addr,
    /// The network served on that interface.
    pub table: &'a NetworkTable,
    /// Operator policy.
    pub policy: &'a Policy,
}

/// A lease as the server holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Hardware address of the holder.
    pub mac: Mac,
    /// Client id of the holder, if it sent one.
    pub client_id: Option<ClientId>,
    /// Leased address.
    pub ip: Ipv4Addr,
    /// Expiry in seconds since the epoch; `None` never expires.
    pub expires: Option<u64>,
    /// Host name recorded with the lease.
    pub hostname: Option<String>,
}

/// What the decision may ask of the lease state.
pub trait LeaseView {
    /// The current lease of a client, if any.
    fn lease(&self, mac: Mac) -> Option<&Lease>;
    /// True while `ip` is withheld from `mac` after that client declined it.
    fn declined(&self, mac: Mac, ip: Ipv4Addr, now: u64) -> bool;
    /// Number of leases held.
    fn count(&self) -> usize;
}

/// True when a client without a lease cannot get one because the table is full.
fn table_full(policy: &Policy, leases: &dyn LeaseView, mac: Mac) -> bool {
    leases.lease(mac).is_none() && policy.lease_max.is_some_and(|max| leases.count() >= max)
}

/// A lease change the dataplane must apply (and make durable, for `Bind`, before replying).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseChange {
    /// A lease granted or renewed.
    Bind(Lease),
    /// The client gave the address back.
    Release {
        /// Who released.
        mac: Mac,
        /// What was released.
        ip: Ipv4Addr,
    },
    /// The client found the address in use; withhold it until `until`.
    Decline {
        /// Who declined.
        mac: Mac,
        /// The address declined.
        ip: Ipv4Addr,
        /// End of the quarantine, seconds since the epoch.
        until: u64,
    },
}

/// The outcome of one client message.
#[derive(Debug, Clone)]
pub struct Decision {
    /// What to send, if anything.
    pub reply: Option<Reply>,
    /// What lease change to apply.
    pub lease: Option<LeaseChange>,
    /// The log line for the message received.
    pub received: LogLine,
    /// The log line for the reply sent.
    pub sent: Option<LogLine>,
    /// What became of the message, as the dataplane counts it.
    pub outcome: Outcome,
}

/// What became of one client message: what the dataplane counts, typed, so that no counter
/// depends on the wording of a log note.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A DISCOVER got an OFFER.
    Offered,
    /// A REQUEST got an ACK, and its lease is to be made durable before it leaves.
    Acked,
    /// An INFORM got an ACK with options only.
    Informed,
    /// A REQUEST got a NAK.
    Naked,
    /// A RELEASE gave an address back.
    Released,
    /// A DECLINE put an address in quarantine.
    Declined,
    /// Nothing is sent, for this reason.
    Ignored(Ignored),
}

/// Why a message gets no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// No reservation (or no usable one) for the client.
    NoAddress,
    /// The lease limit (`--dhcp-lease-max`) is reached.
    LeaseLimit,
    /// The client chose another server.
    OtherServer,
    /// Anything else: unknown lease, wrong network, bad request for our state.
    Other,
}

impl Decision {
    fn silent(received: LogLine) -> Self {
        Self::ignoring(Ignored::Other, received)
    }

    fn ignoring(why: Ignored, received: LogLine) -> Self {
        Decision {
            reply: None,
            lease: None,
            received,
            sent: None,
            outcome: Outcome::Ignored(why),
        }
    }
}

/// Decides the server's answer to one validated client message at time `now` (epoch seconds).
pub fn decide(m: &Inbound, ctx: &Context<'_>, leases: &dyn LeaseView, now: u64) -> Decision {
    let mac = m.chaddr;
    let res = ctx.table.lookup(mac, m.client_id.as_ref());
    let line = |ip: Option<Ipv4Addr>| LogLine::new(m.msg.name(), ip, mac);

    // RFC 3046 §2.1: relay-agent information from a client itself is not to be trusted.
    if m.relay_info.is_some() && m.giaddr.is_unspecified() && !ctx.policy.trust_unrelayed_option82 {
        return Decision::silent(
            line(
                m.requested_ip
                    .or(Some(m.ciaddr))
                    .filter(|i| !i.is_unspecified()),
            )
            .note("option 82 without a relay, ignored"),
        );
    }

    match m.msg {
        ClientMsg::Discover => {
            let received = line(None);
            // Static service: only reserved clients get an address (dnsmasq `static` ranges).
            let Some((r, subnet)) = res.and_then(|r| ctx.table.subnet_of(r.ip).map(|s| (r, s)))
            else {
                return Decision::ignoring(
                    Ignored::NoAddress,
                    received.note("no address available"),
                );
            };
            if leases.declined(mac, r.ip, now) {
                return Decision::ignoring(
                    Ignored::NoAddress,
                    received.note("no address available"),
                );
            }
            if table_full(ctx.policy, leases, mac) {
                return Decision::ignoring(
                    Ignored::LeaseLimit,
                    received.note("no address available: lease limit reached"),
                );
            }
            answer(m, ctx, ReplyKind::Offer, r, subnet, received, None)
        }

        ClientMsg::Request => {
            if let Some(sid) = m.server_id {
                // SELECTING (RFC 2131 §4.3.2): the client names the server it chose.
                let Some(ip) = m.requested_ip else {
                    return Decision::silent(line(None).note("no requested address, ignored"));
                };
                let received = line(Some(ip));
                if sid != ctx.server_id {
                    // It chose another server: our offer is void; say nothing.
                    return Decision::ignoring(
                        Ignored::OtherServer,
                        received.note("for another server, ignored"),
                    );
                }
                match res {
                    Some(r) if r.ip == ip => ack_or_nak(m, ctx, leases, r, ip, received, now),
                    Some(_) => nak(m, ctx, ip, received, "wrong address"),
                    None => nak(m, ctx, ip, received, "address not available"),
                }
            } else if m.ciaddr.is_unspecified() {
                // INIT-REBOOT: the client asks to keep an address it remembers.
                let Some(ip) = m.requested_ip else {
                    return Decision::silent(line(None).note("no requested address, ignored"));
                };
                let received = line(Some(ip));
                match res {
                    Some(r) if r.ip == ip => ack_or_nak(m, ctx, leases, r, ip, received, now),
                    // We hold its reservation: tell it at once, rather than let it wait ~10 s.
                    Some(_) => nak(m, ctx, ip, received, "wrong address"),
                    // Unknown client: we have no record, so stay silent (§4.3.2).
                    None => Decision::silent(received.note("unknown client, ignored")),
                }
            } else {
                // RENEWING (unicast) or REBINDING (broadcast): ciaddr is the address in use.
                let ip = m.ciaddr;
                let received = line(Some(ip));
                match res {
                    Some(r) if r.ip == ip => ack_or_nak(m, ctx, leases, r, ip, received, now),
                    Some(_) => nak(m, ctx, ip, received, "wrong address"),
                    // The port is gone but the address is ours: revoke it.
                    None if ctx.table.subnet_of(ip).is_some() => {
                        nak(m, ctx, ip, received, "lease not found")
                    }
                    None => Decision::silent(received.note("not our network, ignored")),
                }
            }
        }

        ClientMsg::Decline => {
            let Some(ip) = m.requested_ip else {
                return Decision::silent(line(None).note("no address, ignored"));
            };
            let received = line(Some(ip));
            if m.server_id.is_some_and(|s| s != ctx.server_id) {
                return Decision::ignoring(
                    Ignored::OtherServer,
                    received.note("for another server, ignored"),
                );
            }
            // Only the client the address is reserved for may decline it (anti-spoofing).
            match res {
                Some(r) if r.ip == ip => Decision {
                    reply: None,
                    lease: Some(LeaseChange::Decline {
                        mac,
                        ip,
                        until: now.saturating_add(ctx.policy.decline_quarantine_secs),
                    }),
                    received,
                    sent: None,
                    outcome: Outcome::Declined,
                },
                _ => Decision::silent(received.note("not this client's address, ignored")),
            }
        }

        ClientMsg::Release => {
            let ip = m.ciaddr;
            let received = line(Some(ip));
            if m.server_id.is_some_and(|s| s != ctx.server_id) {
                return Decision::ignoring(
                    Ignored::OtherServer,
                    received.note("for another server, ignored"),
                );
            }
            let holds =
                leases.lease(mac).is_some_and(|l| l.ip == ip) || res.is_some_and(|r| r.ip == ip);
            if !holds || ip.is_unspecified() {
                return Decision::silent(received.note("unknown lease"));
            }
            Decision {
                reply: None,
                lease: Some(LeaseChange::Release { mac, ip }),
                received,
                sent: None,
                outcome: Outcome::Released,
            }
        }

        ClientMsg::Inform => {
            // RFC 2131 §4.3.5: options only; no yiaddr, no lease time.
            let ip = m.ciaddr;
            let received = line(Some(ip));
            let Some(subnet) = ctx.table.subnet_of(ip) else {
                return Decision::silent(received.note("not our network, ignored"));
            };
            let computed = computed_options(ctx, subnet, res.filter(|r| r.ip == ip));
            let layers = OptionLayers {
                computed: &computed,
                host: res.filter(|r| r.ip == ip).map(|r| &r.options),
                subnet: Some(&subnet.options),
                global: &ctx.table.global_options,
            };
            let h = ReplyHeader {
                kind: ReplyKind::Ack,
                yiaddr: Ipv4Addr::UNSPECIFIED,
                ciaddr: ip,
                server_id: ctx.server_id,
                lease_secs: None,
            };
            let sent = LogLine::new("DHCPACK", Some(ip), mac)
                .note_opt(res.filter(|r| r.ip == ip).and_then(|r| r.hostname.clone()));
            Decision {
                reply: Some(reply::build(m, &h, &layers)),
                lease: None,
                received,
                sent: Some(sent),
                outcome: Outcome::Informed,
            }
        }
    }
}

/// ACK a request for the client's own reserved address, unless its subnet is gone or the
/// client declined the address and it is still withheld.
fn ack_or_nak(
    m: &Inbound,
    ctx: &Context<'_>,
    leases: &dyn LeaseView,
    r: &Reservation,
    ip: Ipv4Addr,
    received: LogLine,
    now: u64,
) -> Decision {
    let Some(subnet) = ctx.table.subnet_of(ip) else {
        return nak(m, ctx, ip, received, "wrong network");
    };
    if leases.declined(m.chaddr, ip, now) {
        return nak(m, ctx, ip, received, "address declined");
    }
    if table_full(ctx.policy, leases, m.chaddr) {
        return nak(m, ctx, ip, received, "no leases left");
    }
    let lease = Lease {
        mac: m.chaddr,
        client_id: m.client_id.clone(),
        ip,
        expires: subnet.lease_secs.map(|s| now.saturating_add(u64::from(s))),
        hostname: r.hostname.clone().or_else(|| m.hostname.clone()),
    };
    answer(m, ctx, ReplyKind::Ack, r, subnet, received, Some(lease))
}

fn answer(
    m: &Inbound,
    ctx: &Context<'_>,
    kind: ReplyKind,
    r: &Reservation,
    subnet: &Subnet,
    received: LogLine,
    lease: Option<Lease>,
) -> Decision {
    let computed = computed_options(ctx, subnet, Some(r));
    let host = r.options_for(m);
    let layers = OptionLayers {
        computed: &computed,
        host: Some(&host),
        subnet: Some(&subnet.options),
        global: &ctx.table.global_options,
    };
    let renewing = kind == ReplyKind::Ack && !m.ciaddr.is_unspecified();
    let h = ReplyHeader {
        kind,
        yiaddr: r.ip,
        ciaddr: if renewing {
            m.ciaddr
        } else {
            Ipv4Addr::UNSPECIFIED
        },
        server_id: ctx.server_id,
        lease_secs: Some(subnet.lease_secs.unwrap_or(u32::MAX)),
    };
    let mut sent = LogLine::new(kind.name(), Some(r.ip), m.chaddr);
    if kind == ReplyKind::Ack {
        sent = sent.note_opt(r.hostname.clone());
    }
    Decision {
        reply: Some(reply::build(m, &h, &layers)),
        lease: lease.map(LeaseChange::Bind),
        received,
        sent: Some(sent),
        outcome: if kind == ReplyKind::Offer {
            Outcome::Offered
        } else {
            Outcome::Acked
        },
    }
}

/// The time a still-durable lease has left, if it has: what a renewal is answered with when
/// the lease it would extend cannot be made durable (`u32::MAX`: infinite).
pub fn time_left(durable: &Lease, now: u64) -> Option<u32> {
    match durable.expires {
        None => Some(u32::MAX),
        Some(e) if e > now + 1 => Some((e - now).min(u64::from(u32::MAX - 1)) as u32),
        Some(_) => None,
    }
}

/// The answer to a REQUEST whose ACK was decided but whose lease change could not be made
/// durable (the disk is full or failing): a client renewing the lease it durably holds — the
/// address the ACK gives, not expired — is ACKed with the time that lease has left, so it keeps
/// its address and promises nothing new; anyone else gets nothing (the client retries).
pub fn renew_from_durable(decided: &Reply, durable: Option<&Lease>, now: u64) -> Option<Reply> {
    let durable = durable?;
    let times = decided.lease?;
    if decided.kind != ReplyKind::Ack || decided.yiaddr != durable.ip {
        return None;
    }
    let lease = time_left(durable, now)?;
    Some(Reply {
        lease: Some(LeaseTimes { lease, ..times }),
        ..decided.clone()
    })
}

fn nak(m: &Inbound, ctx: &Context<'_>, ip: Ipv4Addr, received: LogLine, why: &str) -> Decision {
    let h = ReplyHeader {
        kind: ReplyKind::Nak,
        yiaddr: Ipv4Addr::UNSPECIFIED,
        ciaddr: Ipv4Addr::UNSPECIFIED,
        server_id: ctx.server_id,
        lease_secs: None,
    };
    let empty = OptionSet::default();
    let layers = OptionLayers {
        computed: &empty,
        host: None,
        subnet: None,
        global: &empty,
    };
    Decision {
        reply: Some(reply::build(m, &h, &layers)),
        lease: None,
        received,
        sent: Some(LogLine::new("DHCPNAK", Some(ip), m.chaddr).note(why)),
        outcome: Outcome::Naked,
    }
}

/// Options the server derives rather than reads from configuration.
fn computed_options(ctx: &Context<'_>, subnet: &Subnet, r: Option<&Reservation>) -> OptionSet {
    let mut o = OptionSet::default();
    o.set(DhcpOption::SubnetMask(subnet.net.netmask()), false);
    o.set(DhcpOption::BroadcastAddr(subnet.net.broadcast()), false);
    if ctx.policy.default_router_self {
        o.set(DhcpOption::Router(vec![ctx.server_id]), false);
    }
    if ctx.policy.default_dns_self {
        o.set(DhcpOption::DomainNameServer(vec![ctx.server_id]), false);
    }
    if let Some(name) = r.and_then(|r| r.hostname.as_ref()) {
        o.set(DhcpOption::Hostname(name.clone()), false);
    }
    if let Some(d) = &ctx.table.domain {
        o.set(DhcpOption::DomainName(d.clone()), false);
    }
    o
}
