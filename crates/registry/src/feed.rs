//! What a registry read back from the database (other nodes' writes) changed, as effects for
//! the DHCP side (see docs/ARCHITECTURE.md, "Nodes").

use crate::{Effect, Registry};

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
