//! Creating, updating and deleting networks: ML2's segment rules, `dns_domain`, and a
//! network's members removed with it. Pure, like the rest of the registry.

use crate::error::{invalid, RegistryError};
use crate::model::*;
use crate::registry::*;
use crate::requests::*;
use crate::segments::Requested;

/// A `dns_domain` as Neutron's dns-integration accepts it: a domain name of labels of letters,
/// digits and hyphens (none at a label's ends), at most 255 characters, with or without the
/// final dot; empty means none.
fn valid_dns_domain(d: &str) -> Result<String, RegistryError> {
    let d = d.trim();
    if d.is_empty() {
        return Ok(String::new());
    }
    let bad = |why: &str| {
        invalid(
            "dns_domain",
            format!("'{d}' is not a valid domain name: {why}"),
        )
    };
    if d.len() > 255 {
        return Err(bad("longer than 255 characters"));
    }
    let labels: Vec<&str> = d.trim_end_matches('.').split('.').collect();
    if labels.len() < 2 {
        return Err(bad(
            "it must have at least two labels (a domain, not a host name)",
        ));
    }
    for l in labels {
        if l.is_empty() || l.len() > 63 {
            return Err(bad("each label has 1 to 63 characters"));
        }
        if l.starts_with('-') || l.ends_with('-') {
            return Err(bad("a label cannot start or end with a hyphen"));
        }
        if !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(bad("labels hold letters, digits and hyphens only"));
        }
    }
    Ok(d.to_string())
}

impl Registry {
    /// Creates a network.
    pub fn create_network(
        &mut self,
        req: NetworkReq,
        caller: &Caller,
        env: &mut dyn Env,
    ) -> Result<(Network, Outcome), RegistryError> {
        let project_id = Self::project_for(caller, &req.project_id, &req.tenant_id)?;
        let requested_physnet = req.physical_network.clone().flatten();
        let segment = crate::segments::decide(
            &self.segments,
            &Requested {
                network_type: req.network_type.as_deref(),
                physical_network: requested_physnet.as_deref(),
                segmentation_id: req.segmentation_id.flatten(),
                is_admin: caller.is_admin,
            },
            &self.in_use,
        )?;
        let network_type = segment.network_type;
        let physical_network = segment.physical_network;
        if let Some(pn) = physical_network
            .as_ref()
            .filter(|_| network_type == NetworkType::Flat)
        {
            // ML2's flat type driver: one flat network per physical network
            if self.in_use.has_flat(pn) {
                return Err(RegistryError::FlatNetworkInUse(pn.clone()));
            }
        }
        let mtu = req.mtu.unwrap_or(1500);
        if !(68..=65535).contains(&mtu) {
            return Err(invalid("mtu", format!("{mtu} is not in range 68-65535")));
        }
        let dns_domain = match req.dns_domain {
            Some(d) => valid_dns_domain(&d)?,
            None => String::new(),
        };
        let now = env.now();
        let mut n = Network {
            id: env.new_id().into(),
            dns_domain,
            name: req.name.unwrap_or_default(),
            project_id: project_id.into(),
            admin_state_up: req.admin_state_up.unwrap_or(true),
            mtu,
            shared: req.shared.unwrap_or(false),
            network_type,
            physical_network,
            segmentation_id: segment.segmentation_id,
            description: req.description.unwrap_or_default(),
            created_at: now.clone(),
            updated_at: now,
            revision_number: 1,
        };
        self.share_network(&mut n);
        self.put_network(n.clone());
        let out = Outcome {
            changes: vec![Change::Put(ObjectId::Network(n.id.clone()))],
            effects: vec![Effect::NetworkChanged(n.id.clone())],
        };
        Ok((n, out))
    }

    /// Updates a network's mutable attributes.
    pub fn update_network(
        &mut self,
        id: &str,
        req: NetworkReq,
        env: &mut dyn Env,
    ) -> Result<(Network, Outcome), RegistryError> {
        if req.network_type.is_some()
            || req.physical_network.is_some()
            || req.segmentation_id.is_some()
        {
            return Err(RegistryError::BadRequest(
                "Invalid input for operation: provider attributes cannot be updated.".into(),
            ));
        }
        if let Some(m) = req.mtu {
            if !(68..=65535).contains(&m) {
                return Err(invalid("mtu", format!("{m} is not in range 68-65535")));
            }
        }
        let dns_domain = req
            .dns_domain
            .as_deref()
            .map(valid_dns_domain)
            .transpose()?;
        let now = env.now();
        let n = std::sync::Arc::make_mut(
            self.networks
                .get_mut(id)
                .ok_or_else(|| RegistryError::NetworkNotFound(id.into()))?,
        );
        if let Some(v) = req.name {
            n.name = v;
        }
        if let Some(v) = req.admin_state_up {
            n.admin_state_up = v;
        }
        if let Some(v) = req.mtu {
            n.mtu = v;
        }
        if let Some(v) = req.shared {
            n.shared = v;
        }
        if let Some(v) = req.description {
            n.description = v;
        }
        if let Some(v) = dns_domain {
            n.dns_domain = v;
        }
        n.updated_at = now;
        n.revision_number += 1;
        let n = n.clone();
        Ok((
            n.clone(),
            Outcome {
                changes: vec![Change::Put(ObjectId::Network(n.id.clone()))],
                effects: vec![Effect::NetworkChanged(n.id)],
            },
        ))
    }

    /// Deletes a network with its subnets and DHCP port; refused while other ports remain.
    pub fn delete_network(&mut self, id: &str) -> Result<Outcome, RegistryError> {
        if !self.networks.contains_key(id) {
            return Err(RegistryError::NetworkNotFound(id.into()));
        }
        if self.ports_of(id).any(|p| !p.is_dhcp()) {
            return Err(RegistryError::NetworkInUse(id.into()));
        }
        let mut out = Outcome::default();
        let ports: Vec<Port> = self.ports_of(id).cloned().collect();
        for p in ports {
            self.unindex_port(&p);
            self.ports.remove(&p.id);
            out.changes
                .push(Change::Delete(ObjectId::Port(p.id.clone())));
        }
        let subnets: Vec<SubnetId> = self.subnets_of(id).map(|s| s.id.clone()).collect();
        for s in subnets {
            self.unindex_subnet(&s);
            self.subnets.remove(&s);
            self.ips.remove_subnet(&s);
            self.free_from.remove(&s);
            out.changes.push(Change::Delete(ObjectId::Subnet(s)));
        }
        self.members.remove_network(&self.id_of_network(id));
        self.take_network(id);
        out.changes
            .push(Change::Delete(ObjectId::Network(id.into())));
        out.effects.push(Effect::NetworkDeleted(id.into()));
        Ok(out)
    }
}
