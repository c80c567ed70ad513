//! The registry's indexes as persistent maps (`imbl`), so that a copy of the whole registry
//! costs a few reference counts and readers can be handed a snapshot while the writer goes on
//! (see docs/ARCHITECTURE.md, "Snapshots"). Each index is one flat map keyed by pairs, not a
//! map of small maps: a persistent map's first node is a fixed kilobyte, too much for each
//! of ten thousand networks.

use std::net::{IpAddr, Ipv4Addr};

use imbl::{OrdMap, OrdSet};

use crate::model::{NetworkId, PortId, SubnetId};

/// (subnet, address) → the port holding it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Ips(OrdMap<(SubnetId, IpAddr), PortId>);

impl Ips {
    /// The port holding `ip` in `subnet`.
    pub(crate) fn port_at(&self, subnet: &SubnetId, ip: IpAddr) -> Option<&PortId> {
        self.0.get(&(subnet.clone(), ip))
    }

    pub(crate) fn contains(&self, subnet: &SubnetId, ip: IpAddr) -> bool {
        self.0.contains_key(&(subnet.clone(), ip))
    }

    pub(crate) fn insert(&mut self, subnet: SubnetId, ip: IpAddr, port: PortId) {
        self.0.insert((subnet, ip), port);
    }

    pub(crate) fn remove(&mut self, subnet: &SubnetId, ip: IpAddr) {
        self.0.remove(&(subnet.clone(), ip));
    }

    /// The addresses in use in `subnet`, in order, with their ports.
    pub(crate) fn of<'a>(
        &'a self,
        subnet: &'a SubnetId,
    ) -> impl Iterator<Item = (IpAddr, &'a PortId)> {
        self.0
            .range((subnet.clone(), IpAddr::V4(Ipv4Addr::UNSPECIFIED))..)
            .take_while(move |((s, _), _)| s == subnet)
            .map(|((_, ip), p)| (*ip, p))
    }

    /// The addresses in use in `subnet` from `from` on, in order, with the port holding each
    /// (IPv6 IPAM walks these to find the first gap instead of probing address by address).
    pub(crate) fn of_from<'a>(
        &'a self,
        subnet: &'a SubnetId,
        from: IpAddr,
    ) -> impl Iterator<Item = (IpAddr, &'a PortId)> + 'a {
        self.0
            .range((subnet.clone(), from)..)
            .take_while(move |((s, _), _)| s == subnet)
            .map(|((_, ip), port)| (*ip, port))
    }

    /// Forgets every address of a subnet that goes away.
    pub(crate) fn remove_subnet(&mut self, subnet: &SubnetId) {
        let ips: Vec<IpAddr> = self.of(subnet).map(|(ip, _)| ip).collect();
        for ip in ips {
            self.remove(subnet, ip);
        }
    }
}

/// Each network's subnets and ports, as (network, member) pairs in id order: a network's
/// members are found without a scan of every subnet and port.
#[derive(Debug, Default, Clone)]
pub(crate) struct Members {
    subnets: OrdSet<(NetworkId, SubnetId)>,
    ports: OrdSet<(NetworkId, PortId)>,
}

/// The second halves of the pairs in `set` whose first half is `net`.
fn of<'a, M: Ord + Clone + Default>(
    set: &'a OrdSet<(NetworkId, M)>,
    net: &'a NetworkId,
) -> impl Iterator<Item = &'a M> {
    set.range((net.clone(), M::default())..)
        .take_while(move |(n, _)| n == net)
        .map(|(_, m)| m)
}

impl Members {
    pub(crate) fn add_subnet(&mut self, net: &NetworkId, subnet: &SubnetId) {
        self.subnets.insert((net.clone(), subnet.clone()));
    }
    pub(crate) fn remove_subnet(&mut self, net: &NetworkId, subnet: &SubnetId) {
        self.subnets.remove(&(net.clone(), subnet.clone()));
    }
    pub(crate) fn add_port(&mut self, net: &NetworkId, port: &PortId) {
        self.ports.insert((net.clone(), port.clone()));
    }
    pub(crate) fn remove_port(&mut self, net: &NetworkId, port: &PortId) {
        self.ports.remove(&(net.clone(), port.clone()));
    }
    pub(crate) fn subnets_of<'a>(
        &'a self,
        net: &'a NetworkId,
    ) -> impl Iterator<Item = &'a SubnetId> {
        of(&self.subnets, net)
    }
    pub(crate) fn ports_of<'a>(&'a self, net: &'a NetworkId) -> impl Iterator<Item = &'a PortId> {
        of(&self.ports, net)
    }
    /// Forgets a network that goes away with whatever it still lists.
    pub(crate) fn remove_network(&mut self, net: &NetworkId) {
        let subnets: Vec<SubnetId> = self.subnets_of(net).cloned().collect();
        for s in subnets {
            self.remove_subnet(net, &s);
        }
        let ports: Vec<PortId> = self.ports_of(net).cloned().collect();
        for p in ports {
            self.remove_port(net, &p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subnets_addresses_are_its_own_and_in_order() {
        let (a, b) = (SubnetId::from("a"), SubnetId::from("ab"));
        let mut ips = Ips::default();
        ips.insert(b.clone(), IpAddr::from([10, 0, 0, 1]), "p1".into());
        ips.insert(a.clone(), IpAddr::from([10, 0, 0, 9]), "p2".into());
        ips.insert(a.clone(), IpAddr::from([10, 0, 0, 3]), "p3".into());
        let of_a: Vec<_> = ips
            .of(&a)
            .map(|(ip, p)| (ip.to_string(), p.to_string()))
            .collect();
        assert_eq!(
            of_a,
            [
                ("10.0.0.3".into(), "p3".into()),
                ("10.0.0.9".into(), "p2".into())
            ]
        );
        ips.remove_subnet(&a);
        assert_eq!(ips.of(&a).count(), 0);
        assert_eq!(
            ips.port_at(&b, IpAddr::from([10, 0, 0, 1]))
                .map(|p| p.as_str()),
            Some("p1")
        );
    }

    #[test]
    fn a_networks_members_are_only_its_own() {
        let (n1, n2) = (NetworkId::from("n"), NetworkId::from("n2"));
        let mut m = Members::default();
        m.add_port(&n1, &"p2".into());
        m.add_port(&n1, &"p1".into());
        m.add_port(&n2, &"p0".into());
        m.add_subnet(&n2, &"s".into());
        let ports: Vec<&str> = m.ports_of(&n1).map(|p| p.as_str()).collect();
        assert_eq!(ports, ["p1", "p2"]);
        assert_eq!(m.subnets_of(&n1).count(), 0);
        m.remove_network(&n2);
        assert_eq!(m.ports_of(&n2).count() + m.subnets_of(&n2).count(), 0);
        assert_eq!(m.ports_of(&n1).count(), 2);
    }
}
