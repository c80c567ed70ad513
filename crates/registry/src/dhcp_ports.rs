//! Neutron's DHCP agent scheduler, kept in the registry (see docs/ARCHITECTURE.md, "Nodes"):
//! a network with a DHCP-enabled subnet has one DHCP port per node serving it
//! (`device_owner` `network:dhcp`, `binding:host_id` the node), on `per_network` of the live
//! nodes, the least loaded first. A port whose node is down moves, with its address and MAC,
//! to a live node that does not serve the network yet (Neutron's automatic DHCP failover
//! hands the dead agent's port to the new one the same way), so that clients renewing with
//! that server identifier are answered again. Pure, like the rest of the registry.

use std::collections::HashSet;

use qdhcp_protocol::Mac;

use crate::model::{FixedIp, NetworkId, NodeName, Port, PortStatus, SubnetId, DHCP_OWNER};
use crate::registry::{Change, Effect, Env, ObjectId, Outcome, Registry};
use crate::scheduling::Scheduling;

/// The `device_id` of a node's DHCP port on a network, as Neutron's agent makes it
/// (`dhcp<host id>-<network id>`).
fn device_id(host: &str, net_id: &str) -> String {
    if host.is_empty() {
        format!("dhcpqdhcp-{net_id}")
    } else {
        format!("dhcp{host}-{net_id}")
    }
}

impl Registry {
    /// Takes the scheduler's settings and live nodes (kept across reloads by the caller); the
    /// ports move on the next [`Registry::reschedule_dhcp`] or subnet change.
    pub fn set_scheduling(&mut self, s: Scheduling) {
        self.scheduling = s;
    }

    /// The scheduler's settings and live nodes as last set.
    pub fn scheduling(&self) -> &Scheduling {
        &self.scheduling
    }

    /// How many DHCP ports are bound to `node` (the networks it serves).
    pub fn dhcp_load(&self, node: &str) -> usize {
        self.dhcp_load.get(node).copied().unwrap_or(0)
    }

    /// Schedules every network again after the live nodes changed: networks short of nodes
    /// get ports on live ones, and ports of nodes that are down move to live nodes.
    pub fn reschedule_dhcp(&mut self, env: &mut dyn Env) -> Outcome {
        let ids: Vec<NetworkId> = self.networks().map(|n| n.id.clone()).collect();
        let mut out = Outcome::default();
        for id in ids {
            let before = out.changes.len();
            self.sync_dhcp_ports(&id, env, &mut out);
            if out.changes.len() > before {
                out.effects.push(Effect::NetworkChanged(id));
            }
        }
        out
    }

    /// Keeps a network's DHCP ports as Neutron's agents and scheduler do: none while the
    /// network has no DHCP-enabled subnet; otherwise ports on as many live nodes as wanted,
    /// each with one address in every DHCP-enabled subnet.
    pub(crate) fn sync_dhcp_ports(&mut self, net_id: &str, env: &mut dyn Env, out: &mut Outcome) {
        let dhcp_subnets: Vec<SubnetId> = self
            .subnets_of(net_id)
            .filter(|s| s.enable_dhcp)
            .map(|s| s.id.clone())
            .collect();
        let existing: Vec<Port> = self.dhcp_ports(net_id).cloned().collect();
        if dhcp_subnets.is_empty() {
            for p in existing {
                self.unindex_port(&p);
                self.ports.remove(&p.id);
                out.changes
                    .push(Change::Delete(ObjectId::Port(p.id.clone())));
                out.effects
                    .push(Effect::PortChanged(Some(Box::new(p)), None));
            }
            return;
        }
        let live = self.scheduling.live.clone();
        if live.is_empty() {
            if existing.is_empty() {
                self.put_dhcp_port(net_id, None, "", &dhcp_subnets, env, out);
            }
            for p in existing {
                let host = p.binding_host_id.clone();
                self.put_dhcp_port(net_id, Some(p), &host, &dhcp_subnets, env, out);
            }
            return;
        }
        let want = self.scheduling.per_network.max(1).min(live.len());
        let mut serving: HashSet<String> = existing
            .iter()
            .filter(|p| live.contains(&p.binding_host_id))
            .map(|p| p.binding_host_id.to_string())
            .collect();
        for p in existing {
            let host = if live.contains(&p.binding_host_id) || serving.len() >= want {
                // on a live node, or kept for its node (Neutron keeps a dead agent's port)
                p.binding_host_id.to_string()
            } else {
                let to = self.least_loaded(&live, &serving);
                serving.insert(to.clone());
                to
            };
            self.put_dhcp_port(net_id, Some(p), &host, &dhcp_subnets, env, out);
        }
        while serving.len() < want {
            let to = self.least_loaded(&live, &serving);
            serving.insert(to.clone());
            self.put_dhcp_port(net_id, None, &to, &dhcp_subnets, env, out);
        }
    }

    /// A node's name as the registry already holds it (on another DHCP port), so that ten
    /// thousand DHCP ports of one node share one copy.
    fn node_name(&self, host: &str) -> NodeName {
        self.dhcp_load
            .get_key_value(host)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| host.into())
    }

    /// The live node with the fewest DHCP ports that is not in `taken` (ties by name).
    fn least_loaded(&self, live: &[NodeName], taken: &HashSet<String>) -> String {
        live.iter()
            .filter(|n| !taken.contains(n.as_str()))
            .min_by_key(|n| (self.dhcp_load(n), n.as_str()))
            .map(|n| n.to_string())
            .unwrap_or_default()
    }

    /// Creates or updates one DHCP port: bound to `host`, with an address in each of
    /// `subnets`; records the change only when something changed.
    fn put_dhcp_port(
        &mut self,
        net_id: &str,
        before: Option<Port>,
        host: &str,
        subnets: &[SubnetId],
        env: &mut dyn Env,
        out: &mut Outcome,
    ) {
        let mut p = match &before {
            Some(b) => {
                self.unindex_port(b);
                b.clone()
            }
            None => {
                let now = env.now();
                Port {
                    id: env.new_id().into(),
                    name: String::new(),
                    network_id: self
                        .network(net_id)
                        .map(|n| n.id.clone())
                        .unwrap_or_else(|| net_id.into()),
                    project_id: self
                        .network(net_id)
                        .map(|n| n.project_id.clone())
                        .unwrap_or_default(),
                    mac_address: Mac([0; 6]),
                    fixed_ips: vec![],
                    admin_state_up: true,
                    device_id: String::new(),
                    device_owner: DHCP_OWNER.into(),
                    binding_host_id: NodeName::default(),
                    extra_dhcp_opts: vec![],
                    dns_name: String::new(),
                    description: String::new(),
                    status: PortStatus::Active,
                    created_at: now.clone(),
                    updated_at: now,
                    revision_number: 0,
                }
            }
        };
        if before.is_none() {
            p.mac_address = self.generate_mac(net_id, env);
        }
        if p.binding_host_id != host || before.is_none() {
            p.binding_host_id = self.node_name(host);
            p.device_id = device_id(host, net_id);
        }
        p.fixed_ips.retain(|f| subnets.contains(&f.subnet_id));
        for sid in subnets {
            if !p.fixed_ips.iter().any(|f| &f.subnet_id == sid) {
                let auto = self
                    .subnets
                    .get(sid)
                    .and_then(|s| crate::ipv6::auto_address(s, p.mac_address));
                if let Some(ip) = auto.or_else(|| self.next_free(sid)) {
                    p.fixed_ips.push(FixedIp {
                        subnet_id: sid.clone(),
                        ip_address: ip,
                    });
                    // taken at once: the next port of this pass must not get it too
                    self.ips.insert(sid.clone(), ip, p.id.clone());
                }
            }
        }
        if before.as_ref() != Some(&p) {
            p.revision_number += 1;
            p.updated_at = env.now();
            out.changes.push(Change::Put(ObjectId::Port(p.id.clone())));
            out.effects.push(Effect::PortChanged(
                before.map(Box::new),
                Some(Box::new(p.clone())),
            ));
        }
        self.share_port(&mut p);
        self.index_port(&p);
        self.ports.insert(p.id.clone(), std::sync::Arc::new(p));
    }
}
