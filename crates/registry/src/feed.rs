//! What other nodes' writes change here, as effects for the DHCP side (see
//! docs/ARCHITECTURE.md, "Nodes"): the objects changed since a revision applied in place
//! (`apply_stored`), or a whole registry read back compared with the old one
//! (`effects_between`).

use crate::{Effect, Network, NetworkId, ObjectId, Port, Registry, Subnet};

/// What changed from `old` to `new` (a registry read back after other nodes wrote), as the
/// effects the DHCP side applies: networks gone, networks whose attributes or subnets changed
/// (new ones too), and every port added, changed or removed.
pub fn effects_between(old: &Registry, new: &Registry) -> Vec<Effect> {
    let mut out = Vec::new();
    for n in old.networks() {
        if new.network(&n.id).is_none() {
            out.push(Effect::NetworkDeleted(n.id.clone()));
        }
    }
    for n in new.networks() {
        let same = old.network(&n.id) == Some(n) && old.subnets_of(&n.id).eq(new.subnets_of(&n.id));
        if !same {
            out.push(Effect::NetworkChanged(n.id.clone()));
        }
    }
    for p in old.ports() {
        if new.port(&p.id).is_none() {
            out.push(Effect::PortChanged(Some(Box::new(p.clone())), None));
        }
    }
    for p in new.ports() {
        match old.port(&p.id) {
            Some(o) if o == p => {}
            o => out.push(Effect::PortChanged(
                o.map(|o| Box::new(o.clone())),
                Some(Box::new(p.clone())),
            )),
        }
    }
    out
}

/// An object as the database holds it now, or its absence: what a node reads to catch up
/// with other nodes' writes without reading everything back.
#[derive(Debug, Clone)]
pub enum Stored {
    /// A network as written last.
    Network(Network),
    /// A subnet as written last.
    Subnet(Subnet),
    /// A port as written last.
    Port(Port),
    /// Deleted.
    Gone(ObjectId),
}

impl Registry {
    /// Takes what other nodes wrote (every object changed since this registry's revision, in
    /// any order) and returns the effects for the DHCP side: ports added, changed or removed,
    /// networks changed (their attributes or subnets), networks gone. An object written as it
    /// already is here (this node's own write) has no effect.
    pub fn apply_stored(&mut self, changes: Vec<Stored>) -> Vec<Effect> {
        let (mut nets, mut subs, mut ports, mut gone) = (vec![], vec![], vec![], vec![]);
        for c in changes {
            match c {
                Stored::Network(n) => nets.push(n),
                Stored::Subnet(s) => subs.push(s),
                Stored::Port(p) => ports.push(p),
                Stored::Gone(id) => gone.push(id),
            }
        }
        let mut changed: Vec<NetworkId> = Vec::new();
        let mut out = Vec::new();
        // ports deleted first: a port written since may hold their addresses now
        gone.retain(|id| {
            let ObjectId::Port(id) = id else {
                return true;
            };
            if let Some(p) = self.ports.remove(id) {
                self.unindex_port(&p);
                out.push(Effect::PortChanged(Some(Box::new(Port::clone(&p))), None));
            }
            false
        });
        let mut deleted: Vec<NetworkId> = Vec::new();
        for mut n in nets {
            self.share_network(&mut n);
            if self.networks.get(&n.id).map(|b| &**b) != Some(&n) {
                changed.push(n.id.clone());
                self.put_network(n);
            }
        }
        for mut s in subs {
            self.share_subnet(&mut s);
            if self.subnets.get(&s.id).map(|b| &**b) != Some(&s) {
                changed.push(s.network_id.clone());
                // its pools may have changed: the free-address search starts over
                self.free_from.remove(&s.id);
                self.index_subnet(&s);
                self.subnets.insert(s.id.clone(), std::sync::Arc::new(s));
            }
        }
        for mut p in ports {
            self.share_port(&mut p);
            let before = self.ports.get(&p.id).cloned();
            if before.as_deref() == Some(&p) {
                continue;
            }
            if let Some(b) = &before {
                self.unindex_port(b);
            }
            self.index_port(&p);
            self.ports
                .insert(p.id.clone(), std::sync::Arc::new(p.clone()));
            out.push(Effect::PortChanged(
                before.map(|b| Box::new(Port::clone(&b))),
                Some(Box::new(p)),
            ));
        }
        // then subnets, then networks (a network goes with its members)
        gone.sort_by_key(|id| matches!(id, ObjectId::Network(_)));
        for id in gone {
            match id {
                ObjectId::Port(_) => {}
                ObjectId::Subnet(id) => {
                    if let Some(s) = self.subnets.get(&id).cloned() {
                        let net = s.network_id.clone();
                        self.unindex_subnet(&id);
                        self.subnets.remove(&id);
                        self.ips.remove_subnet(&s.id);
                        self.free_from.remove(&id);
                        changed.push(net);
                    }
                }
                ObjectId::Network(id) => {
                    if let Some(n) = self.take_network(&id) {
                        self.members.remove_network(&n.id);
                        deleted.push(n.id.clone());
                    }
                }
            }
        }
        changed.sort();
        changed.dedup();
        for id in changed {
            if !deleted.contains(&id) && self.networks.contains_key(&id) {
                out.push(Effect::NetworkChanged(id));
            }
        }
        out.extend(deleted.into_iter().map(Effect::NetworkDeleted));
        out
    }
}
