//! What each fuzz target does with its input. Every function must return normally for every
//! input: a panic is a bug. `fuzz/` runs them under libFuzzer; `tests/replay.rs` replays the
//! stored corpora (seeds from real clients, and every crash found) in the normal test run.
#![forbid(unsafe_code)]

use std::net::Ipv4Addr;

use qdhcp_protocol::{
    decide, parse, Context, Lease, LeaseView, Mac, NetworkTable, OptionSet, Policy, Reservation,
    Subnet,
};
use qdhcp_registry::requests::{NetworkReq, PortReq, SubnetReq};
use qdhcp_registry::{Caller, Env, Registry};

struct Empty;
impl LeaseView for Empty {
    fn lease(&self, _: Mac) -> Option<&Lease> {
        None
    }
    fn declined(&self, _: Mac, _: Ipv4Addr, _: u64) -> bool {
        false
    }
    fn count(&self) -> usize {
        0
    }
}

fn table() -> NetworkTable {
    let mut o = OptionSet::default();
    let _ = o.set_text(3, "172.16.1.1", false);
    let _ = o.set_text(
        121,
        "169.254.169.254/32,172.16.1.2,0.0.0.0/0,172.16.1.1",
        false,
    );
    let s = Subnet {
        net: "172.16.1.0/24".parse().expect("static"),
        lease_secs: Some(86400),
        options: o,
    };
    let res = (0u8..=255)
        .map(|i| Reservation {
            mac: Some(Mac([0xfa, 0x16, 0x3e, 0, 0, i])),
            client_id: None,
            ip: Ipv4Addr::new(172, 16, 1, i),
            hostname: Some(format!("host-{i}")),
            options: OptionSet::default(),
            conditional: Vec::new(),
        })
        .collect();
    NetworkTable::new(vec![s], res)
}

/// A datagram through the front door and, if it passes, the decision and reply encoding.
pub fn packet(data: &[u8]) {
    if let Ok(m) = parse(data) {
        let t = table();
        let policy = Policy::default();
        let ctx = Context {
            iface: "ns-fuzz",
            server_id: Ipv4Addr::new(172, 16, 1, 2),
            table: &t,
            policy: &policy,
        };
        let d = decide(&m, &ctx, &Empty, 1_700_000_000);
        if let Some(r) = d.reply {
            assert!(
                r.encode().len() >= 300,
                "reply shorter than the BOOTP minimum"
            );
        }
    }
}

/// Text as a hosts file, an opts file, a leases file and a dnsmasq command line, then a table.
pub fn dnsmasq_files(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (hosts, _) = qdhcp_compat::parse_hosts(&text);
    let (opts, _) = qdhcp_compat::parse_opts(&text);
    let _ = qdhcp_compat::parse_leases(&text);
    let args: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    let cfg = qdhcp_compat::parse_args(&args, |_| Ok(text.to_string())).unwrap_or_default();
    let _ = qdhcp_compat::build_table(&cfg, hosts, &opts);
    let (hosts6, _) = qdhcp_compat::files::parse_hosts6(&text);
    let (opts6, _) = qdhcp_compat::files::parse_opts6(&text);
    let _ = qdhcp_compat::leases6::parse_leases6(&text);
    let _ = qdhcp_compat::build_table6(&cfg, hosts6, &opts6);
}

/// The DHCPv6 table the `packet6` target decides against: a stateful subnet with a host per
/// MAC `fa:16:3e:00:00:NN` holding `2001:db8:6::NN`, and a stateless one.
fn table6() -> qdhcp_protocol::v6::Table6 {
    use qdhcp_protocol::v6::{Host6, Options6, Subnet6, Table6};
    let mut o = Options6::default();
    let _ = o.set_text(23, "[2001:db8:6::53],[::]");
    let _ = o.set_text(24, "openstacklocal");
    let _ = o.set_text(59, "http://[2001:db8:6::1]/boot.ipxe");
    let subnets = vec![
        Subnet6 {
            net: "2001:db8:6::/64".parse().expect("static"),
            lease_secs: 86400,
            options: o.clone(),
        },
        Subnet6 {
            net: "2001:db8:7::/64".parse().expect("static"),
            lease_secs: u32::MAX,
            options: o,
        },
    ];
    let hosts = (0u8..=255).map(|i| Host6 {
        mac: Mac([0xfa, 0x16, 0x3e, 0, 0, i]),
        addrs: vec![std::net::Ipv6Addr::new(
            0x2001,
            0xdb8,
            6,
            0,
            0,
            0,
            0,
            u16::from(i),
        )],
        hostname: Some(format!("host-{i}.openstacklocal")),
        options: Default::default(),
    });
    Table6::new(subnets, hosts)
}

/// Leases for the `packet6` target: every address held by one DUID.
struct Held6(Vec<qdhcp_protocol::v6::Lease6>);
impl qdhcp_protocol::v6::LeaseView6 for Held6 {
    fn by_addr(&self, addr: std::net::Ipv6Addr) -> Option<&qdhcp_protocol::v6::Lease6> {
        self.0.iter().find(|l| l.addr == addr)
    }
}

/// A datagram to port 547 through the DHCPv6 front door and, if it passes, the decision (the
/// client's MAC from the relay, else from the first payload byte) and the reply's encoding; an
/// unrelayed reply must decode again.
pub fn packet6(data: &[u8]) {
    use qdhcp_protocol::v6::{decide6, parse6, Context6, Duid, Lease6};
    let Ok(m) = parse6(data) else { return };
    let t = table6();
    let server = Duid::llt(1, Mac([0xfa, 0x16, 0x3e, 0, 0, 0xfe]));
    let mac = m
        .relayed_mac()
        .or_else(|| data.get(4).map(|b| Mac([0xfa, 0x16, 0x3e, 0, 0, *b])));
    let leases = Held6(
        (0u16..4)
            .map(|i| Lease6 {
                duid: m.client_id.clone().unwrap_or(Duid(vec![0, 3])),
                iaid: u32::from(i),
                addr: std::net::Ipv6Addr::new(0x2001, 0xdb8, 6, 0, 0, 0, 0, i),
                mac: Mac([0xfa, 0x16, 0x3e, 0, 0, i as u8]),
                expires: Some(1_700_086_400),
                hostname: None,
            })
            .collect(),
    );
    let own = ["2001:db8:6::2".parse().expect("static")];
    let ctx = Context6 {
        table: &t,
        server_id: &server,
        mac,
        source: "fe80::1".parse().expect("static"),
        own_addrs: &own,
        now: 1_700_000_000,
        log: true,
    };
    let d = decide6(&m, &ctx, &leases);
    if let Some(r) = d.reply {
        let mut out = Vec::new();
        r.encode_into(&mut out);
        if !r.via_relay() {
            use dhcproto::Decodable;
            assert!(
                dhcproto::v6::Message::decode(&mut dhcproto::Decoder::new(&out)).is_ok(),
                "a reply that does not decode"
            );
        }
    }
}

struct FuzzEnv(u32);
impl Env for FuzzEnv {
    fn now(&mut self) -> qdhcp_registry::Stamp {
        "2026-11-25T00:00:00Z".into()
    }
    fn new_id(&mut self) -> qdhcp_registry::ArcStr {
        self.0 += 1;
        format!("id-{}", self.0).into()
    }
    fn random(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        self.0
    }
}

/// Bytes as JSON bodies for network, subnet and port create and update, against a registry
/// holding a network and a subnet.
pub fn api_body(data: &[u8]) {
    let caller = Caller {
        project_id: "p".into(),
        is_admin: false,
    };
    let mut env = FuzzEnv(0);
    let mut reg = Registry::default();
    let Ok((n, _)) = reg.create_network(NetworkReq::default(), &caller, &mut env) else {
        return;
    };
    let base = SubnetReq {
        network_id: Some(n.id.to_string()),
        cidr: Some("10.0.0.0/24".into()),
        ..Default::default()
    };
    let Ok((s, _)) = reg.create_subnet(base, &caller, &mut env) else {
        return;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(mut r) = serde_json::from_value::<PortReq>(v.clone()) {
        r.network_id = r.network_id.or(Some(n.id.to_string()));
        if let Ok((p, _)) = reg.create_port(r.clone(), &caller, &mut env) {
            let _ = reg.update_port(&p.id, r, &mut env);
        }
    }
    if let Ok(mut r) = serde_json::from_value::<SubnetReq>(v.clone()) {
        r.network_id = r.network_id.or(Some(n.id.to_string()));
        let _ = reg.create_subnet(r.clone(), &caller, &mut env);
        r.cidr = None;
        r.network_id = None;
        r.ip_version = None;
        let _ = reg.update_subnet(&s.id, r, &mut env);
    }
    if let Ok(r) = serde_json::from_value::<NetworkReq>(v) {
        let _ = reg.create_network(r.clone(), &caller, &mut env);
        let _ = reg.update_network(&n.id, r, &mut env);
    }
}

/// A datagram as a DNS query to a network's DNS server (from a client of the network, or a
/// stranger, by the first byte's low bit), through the decision and the encoding of what it
/// answers; then the same bytes as an upstream's answer, through the cache.
pub fn dns_query(data: &[u8]) {
    use qdhcp_dns::server::encode_within;
    use qdhcp_dns::{decide, Context, Outcome, Zone};
    let (zone, _) = Zone::parse_hosts(
        "172.16.1.103 host-172-16-1-103.openstacklocal. host-172-16-1-103\n\
         172.16.1.104 vm2.openstacklocal. vm2\n",
    );
    let domain = hickory_proto::rr::Name::from_ascii("openstacklocal.").expect("static");
    let nets = ["172.16.1.0/24".parse().expect("static")];
    let client = if data.first().is_some_and(|b| b & 1 == 1) {
        "10.9.9.9"
    } else {
        "172.16.1.50"
    };
    let ctx = Context {
        zone: &zone,
        domains: std::slice::from_ref(&domain),
        local_nets: &nets,
        local_only: true,
        can_forward: true,
        local_ttl: 0,
    };
    let mut cache = qdhcp_dns::cache::Cache::new(4);
    match decide(data, client.parse().expect("static"), &ctx) {
        Outcome::Reply { msg, .. } => {
            let _ = encode_within(&msg, 512);
        }
        Outcome::Forward { msg, question } => {
            let _ = encode_within(&msg, 512);
            if let Ok(answer) = hickory_proto::op::Message::from_vec(data) {
                cache.put(&question, &answer, 100);
                if let Some(m) = cache.get(&question, 101) {
                    let _ = encode_within(&m, 512);
                }
            }
        }
        Outcome::Drop(_) => {}
    }
}

/// A network with a VM port (10.0.0.10, instance `vm-1`) and a port without an instance
/// (10.0.0.11), made once.
fn metadata_world() -> &'static (Registry, String) {
    static WORLD: std::sync::OnceLock<(Registry, String)> = std::sync::OnceLock::new();
    WORLD.get_or_init(|| {
        let caller = Caller {
            project_id: "p".into(),
            is_admin: true,
        };
        let mut env = FuzzEnv(0);
        let mut reg = Registry::default();
        let (n, _) = reg
            .create_network(NetworkReq::default(), &caller, &mut env)
            .expect("network");
        let net = n.id.to_string();
        reg.create_subnet(
            SubnetReq {
                network_id: Some(net.clone()),
                cidr: Some("10.0.0.0/24".into()),
                ..Default::default()
            },
            &caller,
            &mut env,
        )
        .expect("subnet");
        for (ip, dev) in [("10.0.0.10", "vm-1"), ("10.0.0.11", "")] {
            reg.create_port(
                PortReq {
                    network_id: Some(net.clone()),
                    device_id: Some(dev.into()),
                    fixed_ips: Some(vec![qdhcp_registry::requests::FixedIpReq {
                        subnet_id: None,
                        ip_address: Some(ip.into()),
                    }]),
                    ..Default::default()
                },
                &caller,
                &mut env,
            )
            .expect("port");
        }
        (reg, net)
    })
}

/// The first byte picks the mode and the source; the rest is what a VM sent to
/// 169.254.169.254:80: every whole request in it read (pipelined), decided in built-in or
/// proxy mode for the VM, a port without an instance or a stranger, and its answer written; a
/// refused head answered with its status.
pub fn metadata_request(data: &[u8]) {
    use qdhcp_metadata::{decide, parse, Asked, Mode, Parsed, Response};
    let (reg, net) = metadata_world();
    let flags = data.first().copied().unwrap_or(0);
    let mode = if flags & 1 == 1 {
        Mode::Proxy {
            secret: b"fuzz".to_vec().into(),
        }
    } else {
        Mode::Builtin
    };
    let source = ["10.0.0.10", "10.0.0.11", "10.0.0.99"][usize::from(flags >> 1) % 3];
    let asked = Asked {
        reg,
        network_id: net,
        source: source.parse().expect("static"),
        domain: Some("openstacklocal"),
    };
    let mut rest = data.get(1..).unwrap_or_default();
    for _ in 0..64 {
        match parse(rest) {
            Parsed::Partial => return,
            Parsed::Bad(bad) => {
                let _ = Response::error(bad.status()).encode(false, false, false);
                return;
            }
            Parsed::Done(req, used) => {
                assert!(used > 0 && used <= rest.len(), "a request takes its bytes");
                rest = &rest[used..];
                let (decision, _) = decide(&req, &asked, &mode);
                if let qdhcp_metadata::Decision::Respond(r) = decision {
                    let _ = r.encode(req.keep_alive, req.http10, false);
                }
            }
        }
    }
}
