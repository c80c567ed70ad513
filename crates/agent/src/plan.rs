//! What one published change means for the DHCP side, step by step, decided without touching
//! a namespace, a socket or a server: `DhcpSync::apply` walks these steps. Costly work is
//! done once per network per change, however many effects name it, and a port change touches
//! only that port's names: a bulk create of 1,000 ports moves 1,000 ports' names, not 1,000
//! times the network's.

use std::collections::HashSet;

use qdhcp_registry::{Effect, Port};

/// A port as it was and as it is (`None`: not there).
pub(crate) type PortPair<'a> = (Option<&'a Port>, Option<&'a Port>);

/// One thing the DHCP side does, in order.
#[derive(Debug, PartialEq)]
pub(crate) enum Step<'a> {
    /// Check the network's plumbing, rebuild its subnets, reservations and names from the
    /// registry (all of it, so nothing else of that network is needed in this change).
    Sync(&'a str),
    /// Stop serving the network and remove its plumbing.
    Teardown(&'a str),
    /// Update one port's DHCPv4 reservation and DHCPv6 host (its names come with `Names`).
    Port(&'a str, Option<&'a Port>, Option<&'a Port>),
    /// Move the DNS names of the network's changed ports (before, after), after all of its
    /// ports' steps: every old name out, then every new one in, so two ports trading
    /// addresses in one change keep both their names.
    Names(&'a str, Vec<PortPair<'a>>),
}

/// The steps for `effects`, all applied from the registry as it is after every one of them.
pub(crate) fn steps(effects: &[Effect]) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    // a network synced once is up to date for the rest of the change (a subnet create tells
    // of its network and of its DHCP port; each check of the plumbing costs a dozen netlink
    // round trips)
    let mut synced: HashSet<&str> = HashSet::new();
    let mut names: Vec<(&str, Vec<PortPair<'_>>)> = Vec::new();
    for e in effects {
        match e {
            Effect::NetworkChanged(id) => {
                if synced.insert(id.as_str()) {
                    out.push(Step::Sync(id.as_str()));
                }
            }
            Effect::NetworkDeleted(id) => {
                synced.remove(id.as_str());
                names.retain(|(n, _)| *n != id.as_str());
                out.push(Step::Teardown(id.as_str()));
            }
            Effect::PortChanged(before, after) => {
                let (before, after) = (before.as_deref(), after.as_deref());
                let Some(net) = after.or(before).map(|p| p.network_id.as_str()) else {
                    continue;
                };
                // a DHCP port moves the network's plumbing and addresses: sync all of it
                if [before, after].iter().any(|p| p.is_some_and(Port::is_dhcp)) {
                    if synced.insert(net) {
                        out.push(Step::Sync(net));
                    }
                    continue;
                }
                out.push(Step::Port(net, before, after));
                match names.iter_mut().find(|(n, _)| *n == net) {
                    Some((_, ports)) => ports.push((before, after)),
                    None => names.push((net, vec![(before, after)])),
                }
            }
        }
    }
    // a sync rebuilds the names too, from the same registry
    out.extend(
        names
            .into_iter()
            .filter(|(n, _)| !synced.contains(n))
            .map(|(n, ports)| Step::Names(n, ports)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use qdhcp_registry::{NetworkId, PortStatus};

    fn port(net: &str, owner: &str, i: u32) -> Box<Port> {
        Box::new(Port {
            id: format!("p{i}").as_str().into(),
            name: String::new(),
            network_id: NetworkId::from(net),
            project_id: "t".into(),
            mac_address: format!("fa:16:3e:00:{:02x}:{:02x}", i >> 8, i & 255)
                .parse()
                .unwrap(),
            fixed_ips: vec![],
            admin_state_up: true,
            device_id: String::new(),
            device_owner: owner.into(),
            binding_host_id: "".into(),
            extra_dhcp_opts: vec![],
            dns_name: String::new(),
            description: String::new(),
            status: PortStatus::Down,
            created_at: "".into(),
            updated_at: "".into(),
            revision_number: 1,
        })
    }

    #[test]
    fn a_bulk_create_of_a_thousand_ports_rebuilds_the_networks_names_once() {
        let effects: Vec<Effect> = (0..1000)
            .map(|i| Effect::PortChanged(None, Some(port("n1", "compute:nova", i))))
            .collect();
        let s = steps(&effects);
        assert_eq!(s.len(), 1001);
        assert!(s[..1000]
            .iter()
            .all(|x| matches!(x, Step::Port("n1", None, Some(_)))));
        let Step::Names("n1", ports) = &s[1000] else {
            panic!("{:?}", s[1000]);
        };
        assert_eq!(ports.len(), 1000);
        assert!(ports.iter().all(|(b, a)| b.is_none() && a.is_some()));
    }

    #[test]
    fn names_of_each_network_touched_are_rebuilt_once_after_its_ports() {
        let effects = vec![
            Effect::PortChanged(None, Some(port("a", "", 1))),
            Effect::PortChanged(None, Some(port("b", "", 2))),
            Effect::PortChanged(Some(port("a", "", 1)), None),
        ];
        let s = steps(&effects);
        let nets: Vec<(&str, usize)> = s[3..]
            .iter()
            .map(|x| match x {
                Step::Names(n, ports) => (*n, ports.len()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(nets, [("a", 2), ("b", 1)]);
    }

    #[test]
    fn a_subnet_create_syncs_its_network_once_and_needs_no_other_step() {
        let effects = vec![
            Effect::NetworkChanged(NetworkId::from("n")),
            Effect::PortChanged(None, Some(port("n", "network:dhcp", 1))),
            Effect::PortChanged(None, Some(port("n", "compute:nova", 2))),
        ];
        assert_eq!(
            steps(&effects),
            vec![
                Step::Sync("n"),
                Step::Port(
                    "n",
                    None,
                    Some(match &effects[2] {
                        Effect::PortChanged(_, Some(p)) => p,
                        _ => unreachable!(),
                    })
                ),
            ]
        );
    }

    #[test]
    fn a_deleted_network_gets_no_names_rebuilt() {
        let effects = vec![
            Effect::PortChanged(Some(port("n", "", 1)), None),
            Effect::NetworkDeleted(NetworkId::from("n")),
        ];
        let s = steps(&effects);
        assert!(
            matches!(s[..], [Step::Port("n", Some(_), None), Step::Teardown("n")]),
            "{s:?}"
        );
    }
}
